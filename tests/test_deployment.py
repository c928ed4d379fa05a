"""What a new operator installs and runs: .env.example, the Dockerfile, README's commands, the
pinned dependencies and CI's script, held in step. No Docker engine here, so the Dockerfile is
read, not built."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from stembot.cli import healthcheck
from stembot.config import load_settings, setting_names
from tests import compose_file

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
SECRETS = {"DISCORD_TOKEN", "SOUNDVERSE_API_KEY"}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    return instructions


def docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile():
        if word == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def docker_volumes() -> list[str]:
    return [v for word, rest in dockerfile() if word == "VOLUME" for v in json.loads(rest)]


def docker_env_file(text: str) -> dict[str, str]:
    """What `docker run --env-file` sets from ``text``: NAME=value lines taken literally, lines
    starting with # ignored."""
    env = {}
    for line in text.splitlines():
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition("=")
        if sep:
            env[name] = value
    return env


def readme_command(starting: str) -> str:
    [line] = [line for line in README.splitlines() if line.startswith(starting)]
    return line


# --- .env.example, the Dockerfile and README's Docker command ----------------------------------


def test_the_container_database_stays_on_the_volume_with_env_example_as_dot_env() -> None:
    """README's Docker command with .env copied from .env.example keeps the database on the
    image's volume: the file sets no default that overrides the image's STEMBOT_DB_PATH."""
    command = readme_command("docker build")
    assert "cp .env.example .env" in README
    run = shlex.split(command.split("&&")[1])
    env_file = run[run.index("--env-file") + 1]
    mount_target = run[run.index("-v") + 1].split(":")[1]
    assert env_file == ".env"

    in_container = {**docker_env(), **docker_env_file((REPO / ".env.example").read_text())}
    db_path = PurePosixPath(str(load_settings(in_container).db_path))
    [volume] = docker_volumes()
    assert mount_target == volume
    assert db_path.is_relative_to(volume), db_path


def test_env_example_assigns_only_the_two_secrets_and_leaves_them_empty() -> None:
    """Every default is commented out; the secrets are there to fill in, empty."""
    assigned = docker_env_file((REPO / ".env.example").read_text())
    assert assigned == dict.fromkeys(SECRETS, "")


def test_every_commented_default_is_the_code_default() -> None:
    """A line `# NAME=value` shows what the bot uses without it, so uncommenting changes nothing."""
    example = (REPO / ".env.example").read_text()
    shown = dict(re.findall(r"(?m)^# ([A-Z][A-Z0-9_]*)=(.*)$", example))
    assert set(shown) == setting_names() - SECRETS
    assert load_settings(shown) == load_settings({})


# --- the Dockerfile ---------------------------------------------------------------------------


def test_the_base_image_is_pinned_to_a_patch_release_the_constraints_support() -> None:
    [(_, image)] = [i for i in dockerfile() if i[0] == "FROM"]
    match = re.fullmatch(r"python:(3)\.(\d+)\.(\d+)-slim(-[a-z]+)?", image)
    assert match, image
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11" and 11 <= int(match.group(2)) <= 13


def test_dependencies_are_installed_from_the_constraints_before_the_code_is_copied() -> None:
    """A code change reuses the dependency layer; the layer installs the pinned versions."""
    steps = dockerfile()
    code_copy = next(n for n, (w, rest) in enumerate(steps) if w == "COPY" and "stembot" in rest)
    installs = [
        n for n, (w, rest) in enumerate(steps) if w == "RUN" and "-c constraints.txt" in rest
    ]
    assert installs and installs[0] < code_copy
    copied_first = " ".join(rest for w, rest in steps[: installs[0]] if w == "COPY")
    assert "constraints.txt" in copied_first
    assert "stembot" not in copied_first.split() and " . " not in f" {copied_first} "
    assert "--no-deps" in steps[installs[-1]][1] and installs[-1] > code_copy


def test_the_bot_runs_as_an_unprivileged_user() -> None:
    steps = dockerfile()
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    last_user = max(n for n, (word, _) in enumerate(steps) if word == "USER")
    entry = next(n for n, (word, _) in enumerate(steps) if word == "ENTRYPOINT")
    assert last_user < entry


def test_the_image_health_check_asks_the_bot_through_stembot_healthcheck() -> None:
    """The image's HEALTHCHECK runs `stembot healthcheck` (no curl in the image), which asks
    /healthz on the port the image sets, within Docker's timeout for the check."""
    [rest] = [rest for word, rest in dockerfile() if word == "HEALTHCHECK"]
    options, _, command = rest.partition("CMD ")
    [entrypoint] = [json.loads(rest) for word, rest in dockerfile() if word == "ENTRYPOINT"]
    assert json.loads(command) == [*entrypoint, "healthcheck"]
    timeout = re.search(r"--timeout=(\d+)s", options)
    assert timeout and "--interval" in options and "--start-period" in options
    assert int(timeout.group(1)) > healthcheck.TIMEOUT_S
    settings = load_settings(docker_env())
    assert settings.http_port is not None and settings.http_host == "127.0.0.1"


@pytest.mark.parametrize(
    ("cmdline", "state", "healthy"),
    [
        (b"/app/.venv/bin/python\0/app/.venv/bin/stembot\0run\0", "S", True),
        (b"/app/.venv/bin/python\0/app/.venv/bin/stembot\0run\0", "Z", False),
        (b"/app/.venv/bin/python\0/app/.venv/bin/stembot\0run\0", "T", False),
        (b"/app/.venv/bin/python\0/app/.venv/bin/stembot\0sync\0", "S", False),
        (b"/bin/sh\0-c\0sleep 1\0", "S", False),
    ],
)
def test_without_the_port_the_health_check_passes_only_while_the_bot_runs(
    tmp_path: Path, cmdline: bytes, state: str, healthy: bool
) -> None:
    """STEMBOT_HTTP_PORT emptied: the check of the container's PID 1, here a stand-in /proc/1."""
    (tmp_path / "cmdline").write_bytes(cmdline)
    (tmp_path / "stat").write_text(f"1 (stembot run) {state} 0 1 1 0 -1\n")
    assert healthcheck.bot_process_running(tmp_path) is healthy
    assert not healthcheck.bot_process_running(tmp_path / "absent")


def test_the_image_keeps_its_database_on_a_volume() -> None:
    [volume] = docker_volumes()
    assert PurePosixPath(docker_env()["STEMBOT_DB_PATH"]).is_relative_to(volume)


# --- docker-compose.yml ----------------------------------------------------------------------

POSTGRES_PASSWORD = "compose-test-password"


def compose() -> dict[str, Any]:
    return compose_file.load((REPO / "docker-compose.yml").read_text())


def interpolated(value: str) -> str:
    """Compose's ${NAME:?message} with the operator's .env: here, a test password."""
    return re.sub(r"\$\{POSTGRES_PASSWORD:\?[^}]*\}", POSTGRES_PASSWORD, value)


def bot_replicas() -> dict[str, dict[str, Any]]:
    services = compose()["services"]
    return {name: s for name, s in services.items() if "STEMBOT_SHARD_IDS" in s["environment"]}


def replica_settings(service: dict[str, Any]) -> dict[str, str]:
    """The replica's settings as the container sees them: the image's, then compose's."""
    environment = {k: interpolated(str(v)) for k, v in service["environment"].items()}
    return {**docker_env(), **environment}


def test_the_compose_file_reads_as_the_yaml_it_is_written_in() -> None:
    """The reader takes this file's YAML and refuses what it does not know (so the checks
    below read the file as Compose would, or fail)."""
    document = compose()
    assert set(document["services"]) == {"postgres", "bot-0", "bot-1", "bot-2"}
    for bad in ("a:\n\tb: 1\n", "a: 1\n  b: 2\n", "a: {b: 1}\n", "a:\n  - 1\n  b: 2\n"):
        with pytest.raises(compose_file.ComposeSyntaxError):
            compose_file.load(bad)
    merged = compose_file.load("x: &x\n  a: 1\n  b: 2\ny:\n  <<: *x\n  b: 3\n")
    assert merged["y"] == {"a": "1", "b": "3"}


def test_the_replicas_run_every_shard_exactly_once() -> None:
    """Every replica has the same STEMBOT_SHARD_COUNT, and their STEMBOT_SHARD_IDS ranges
    (checked as stembot checks them at start) cover 0..count-1 with no shard twice."""
    replicas = bot_replicas()
    assert len(replicas) >= 2
    settings = [load_settings(replica_settings(s)) for s in replicas.values()]
    [count] = {s.shard_count for s in settings}
    assert count is not None
    run = [shard for s in settings for shard in s.shard_ids or ()]
    assert sorted(run) == list(range(count)), run


def test_the_replicas_share_one_postgresql_ledger_and_serve_their_health() -> None:
    """One database for all (the postgres service's), each replica waits for it to be
    healthy, serves /healthz and /metrics to the compose network, keeps its own stem cache,
    and gets more time to stop than its shutdown grace."""
    services = compose()["services"]
    postgres = services["postgres"]
    assert str(postgres["image"]).startswith("postgres:") and postgres["healthcheck"]["test"]
    database = postgres["environment"]["POSTGRES_DB"]
    replicas = bot_replicas()
    urls = set()
    volumes = []
    for service in replicas.values():
        env = replica_settings(service)
        assert set(service["environment"]) <= setting_names()
        settings = load_settings(env)
        url = env["STEMBOT_DATABASE_URL"]
        assert url == f"postgresql://stembot:{POSTGRES_PASSWORD}@postgres:5432/{database}"
        urls.add(url)
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert settings.http_port is not None and settings.http_host == "0.0.0.0"
        assert service["env_file"] == ".env"
        [volume] = service["volumes"]
        name, _, target = volume.partition(":")
        assert PurePosixPath(target) == PurePosixPath(docker_volumes()[0])
        volumes.append(name)
        grace = int(str(service["stop_grace_period"]).removesuffix("s"))
        assert grace > settings.shutdown_grace_s
    assert len(urls) == 1
    assert len(set(volumes)) == len(volumes) and set(volumes) <= set(compose()["volumes"])


# --- pinned installs, the licence, CI ---------------------------------------------------------


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^ ;]+)( ; .+)?", line)
            assert match, line
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def test_every_dependency_and_tool_is_pinned() -> None:
    """A new release of anything, ruff and mypy included, cannot change what CI installs."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["test"]
    names = {
        re.sub(r"[-_.]+", "-", re.split(r"[<>=!~ \[;]", w, maxsplit=1)[0]).lower() for w in wanted
    }
    pins = _pins()
    assert names <= set(pins), names - set(pins)
    assert {"ruff", "mypy", "pytest"} <= set(pins)


def test_readme_commands_ci_and_the_image_install_from_the_constraints() -> None:
    run_command = readme_command(
        "python3 -m venv .venv && .venv/bin/pip install -c constraints.txt ."
    )
    test_command = readme_command(
        "python3 -m venv .venv && .venv/bin/pip install -c constraints.txt -e"
    )
    assert run_command.endswith("&& .venv/bin/stembot run")
    assert test_command.endswith("&& .venv/bin/pytest")
    ci = [
        line
        for line in (REPO / ".ci/run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd ", "export ", "bash .ci/"))
    ]
    assert ci[0] == test_command
    installs = [line for line in ci[1:] if re.search(r"pip\"? install", line)]
    assert installs and all("-c constraints.txt" in line for line in installs)


def test_the_licence_is_an_spdx_expression_with_its_file() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "MIT"
    assert pyproject["project"]["license-files"] == ["LICENSE"]
    assert (REPO / "LICENSE").read_text().startswith("MIT License\n")
    [setuptools] = [r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    assert int(re.findall(r">=(\d+)", setuptools)[0]) >= 77  # PEP 639 licence fields


def test_ci_finds_the_other_pythons_it_promises() -> None:
    """.ci/pythons lists 3.12 and 3.13, each an interpreter of that version or '-' when absent."""
    done = subprocess.run(
        ["bash", str(REPO / ".ci/pythons")], capture_output=True, text=True, timeout=60, check=True
    )
    found = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert set(found) == {"3.12", "3.13"}
    for version, python in found.items():
        if python == "-":
            continue
        shown = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert shown.stdout.strip() == version


def test_the_warning_filter_fails_on_warnings_from_project_code() -> None:
    """pyproject's filterwarnings: a warning from stembot, the tests or the standard library
    (a deprecation our call triggers there) is an error; a third-party package's own is not."""
    import warnings

    from _pytest.config import parse_warning_filter

    filters = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"][
        "filterwarnings"
    ]
    with warnings.catch_warnings():
        warnings.resetwarnings()
        for text in filters:
            action, message, category, module, lineno = parse_warning_filter(text, escape=False)
            warnings.filterwarnings(action, message, category, module, lineno)
        for module in ("stembot.stem_service", "tests.test_stem_service", "copy", "asyncio.events"):
            with pytest.raises(DeprecationWarning):
                warnings.warn_explicit("x", DeprecationWarning, "f.py", 1, module=module)
        with warnings.catch_warnings(record=True):
            warnings.warn_explicit("x", DeprecationWarning, "f.py", 1, module="discord.utils")
