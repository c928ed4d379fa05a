"""The settings file as a new operator meets it: a broken .env is one line and exit status 2,
and a mistyped setting name is pointed out with the name that was meant."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import stembot.config
from stembot.cli import main

GUILD = "123456789012345678"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No stembot settings from the developer's environment; run from an empty folder."""
    for key in list(os.environ):
        if key.startswith(("STEMBOT_", "DISCORD_", "SOUNDVERSE_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(list(args))
    return status, capsys.readouterr().err


def only_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --- a settings file that cannot be used ------------------------------------------------------


@pytest.mark.parametrize("explicit", [True, False], ids=["--env-file", "default .env"])
def test_a_file_that_is_not_utf8_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, explicit: bool
) -> None:
    """Saved as Latin-1 by an editor: exit 2, the file and the line named, no traceback."""
    env_file = tmp_path / ".env"
    env_file.write_bytes(b"DISCORD_TOKEN=abc\n# caf\xe9 settings\nSTEMBOT_LOG_LEVEL=INFO\n")
    args = ["--env-file", str(env_file)] if explicit else []
    status, err = run(capsys, *args, "usage", GUILD)
    assert status == 2
    shown = str(env_file) if explicit else ".env"
    assert only_line(err) == (
        f"stembot: settings file {shown} is not UTF-8 text (line 2); save it as UTF-8"
    )


@pytest.mark.parametrize("explicit", [True, False], ids=["--env-file", "default .env"])
def test_a_folder_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, explicit: bool
) -> None:
    """`.env` made a folder (a Docker bind mount of a missing file does that): exit 2."""
    (tmp_path / ".env").mkdir()
    args = ["--env-file", str(tmp_path / ".env")] if explicit else []
    status, err = run(capsys, *args, "usage", GUILD)
    assert status == 2
    shown = str(tmp_path / ".env") if explicit else ".env"
    assert only_line(err) == f"stembot: settings file {shown} is a folder, not a file"


def test_a_missing_env_file_given_by_name_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--env-file names a file that is not there: exit 2 instead of running without it."""
    status, err = run(capsys, "--env-file", "prod.env", "usage", GUILD)
    assert status == 2
    assert only_line(err) == (
        "stembot: settings file prod.env does not exist (given with --env-file)"
    )


def test_no_default_env_file_is_fine(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without a .env the environment alone is used, silently (as in Docker)."""
    monkeypatch.setenv("STEMBOT_DB_PATH", str(tmp_path / "none.db"))
    status, err = run(capsys, "usage", GUILD)
    assert status == 1
    assert (
        only_line(err) == f"stembot: no database at {tmp_path / 'none.db'}; check STEMBOT_DB_PATH"
    )


def test_a_byte_order_mark_does_not_hide_the_first_setting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Windows editors start UTF-8 files with a BOM; the first name still counts."""
    (tmp_path / ".env").write_text(
        f"\ufeffSTEMBOT_DB_PATH={tmp_path / 'bom.db'}\n", encoding="utf-8"
    )
    status, err = run(capsys, "usage", GUILD)
    assert status == 1
    assert only_line(err) == f"stembot: no database at {tmp_path / 'bom.db'}; check STEMBOT_DB_PATH"


# --- names that are not settings -------------------------------------------------------------


def test_a_mistyped_name_in_the_file_gets_the_closest_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A typo would silently leave the default in force; the warning names the real key."""
    (tmp_path / ".env").write_text("STEMBOT_DB_PAHT=x.db\nSOUNDVERSE_API_KYE=k\nOTHER_TOOL=1\n")
    monkeypatch.setenv("STEMBOT_DB_PATH", str(tmp_path / "real.db"))
    _, err = run(capsys, "usage", GUILD)
    lines = err.splitlines()
    assert lines[:2] == [
        "stembot: warning: SOUNDVERSE_API_KYE in "
        f"{tmp_path / '.env'} is not a setting; did you mean SOUNDVERSE_API_KEY?",
        f"stembot: warning: STEMBOT_DB_PAHT in {tmp_path / '.env'} is not a setting; "
        "did you mean STEMBOT_DB_PATH?",
    ]
    assert not any("OTHER_TOOL" in line for line in lines)


def test_a_mistyped_name_in_the_environment_is_named_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """STEMBOT_* names in the environment are checked; other programs' names are not."""
    monkeypatch.setenv("STEMBOT_DB_PATH", str(tmp_path / "real.db"))
    monkeypatch.setenv("STEMBOT_LOGLEVEL", "DEBUG")
    monkeypatch.setenv("STEMBOT_ZZZ", "1")
    monkeypatch.setenv("DISCORD_SOMETHING_ELSE", "1")
    _, err = run(capsys, "usage", GUILD)
    assert err.splitlines()[:2] == [
        "stembot: warning: STEMBOT_LOGLEVEL in the environment is not a setting; "
        "did you mean STEMBOT_LOG_LEVEL?",
        "stembot: warning: STEMBOT_ZZZ in the environment is not a setting; "
        "see .env.example for the settings",
    ]
    assert "DISCORD_SOMETHING_ELSE" not in err


def test_a_declared_setting_is_known_without_a_list(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The known names are the declared settings: a new setting needs no second list."""
    original = stembot.config.declared_settings
    brand_new = stembot.config.Setting(
        "STEMBOT_BRAND_NEW", None, stembot.config.Kind(str, "text"), "Inputs", "New."
    )

    def with_a_new_setting() -> Iterator[stembot.config.Setting]:
        yield from original()
        yield brand_new

    monkeypatch.setattr(stembot.config, "declared_settings", with_a_new_setting)
    monkeypatch.setenv("STEMBOT_DB_PATH", str(tmp_path / "x.db"))
    monkeypatch.setenv("STEMBOT_BRAND_NEW", "1")
    _, err = run(capsys, "usage", GUILD)
    assert "warning" not in err


@pytest.mark.slow
def test_a_broken_env_file_as_a_real_process(tmp_path: Path) -> None:
    """As the operator runs it: `stembot run` with a Latin-1 .env prints one line, status 2."""
    (tmp_path / ".env").write_bytes(b"DISCORD_TOKEN=x\nSTEMBOT_LOG_LEVEL=d\xe9bug\n")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "stembot", "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "stembot: settings file .env is not UTF-8 text (line 2); save it as UTF-8"
    ]
