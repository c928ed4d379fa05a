"""Settings: built from a mapping, every problem named at once, secrets never shown."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stembot.config import Secret, env_example, load_settings, setting_names
from stembot.errors import ConfigError
from stembot.models import Mode

TOKEN = "MTIz.discord-token-value"
KEY = "sv-live-api-key-value"
REPO = Path(__file__).resolve().parents[1]


def test_defaults_when_nothing_is_set() -> None:
    """An empty mapping gives the documented defaults."""
    settings = load_settings({})
    assert settings.discord_api_base == "https://discord.com/api/v10"
    assert settings.discord_gateway_url == "wss://gateway.discord.gg"
    assert settings.soundverse_api_base == "https://api.soundverse.ai"
    assert settings.max_input_bytes == 10 * 1024 * 1024
    assert settings.allow_private_urls is False
    assert settings.quota.cost_of(Mode.ALL) == 2


def test_values_are_parsed_from_the_mapping() -> None:
    """Typed values come from the mapping's strings."""
    settings = load_settings(
        {
            "DISCORD_TOKEN": TOKEN,
            "STEMBOT_MAX_CONCURRENT_JOBS": "8",
            "STEMBOT_ALLOW_PRIVATE_URLS": "TRUE",
            "STEMBOT_DEV_GUILD_ID": "123456789012345678",
            "STEMBOT_COST_ALL": "3",
            "SOUNDVERSE_API_BASE": "http://127.0.0.1:8765/",
        },
        need_discord=True,
    )
    assert settings.max_concurrent_jobs == 8
    assert settings.allow_private_urls is True
    assert settings.dev_guild_id == 123456789012345678
    assert settings.quota.cost_of(Mode.ALL) == 3
    assert settings.soundverse_api_base == "http://127.0.0.1:8765"
    assert settings.discord_token is not None
    assert settings.discord_token.reveal() == TOKEN


def test_every_problem_is_named_in_one_error() -> None:
    """Several bad values produce one error listing each of them."""
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "STEMBOT_MAX_CONCURRENT_JOBS": "zero",
                "STEMBOT_MAX_INPUT_MB": "-1",
                "STEMBOT_ALLOW_PRIVATE_URLS": "maybe",
                "DISCORD_GATEWAY_URL": "https://gateway.example",
                "STEMBOT_GUILD_DAILY_LIMIT": "-5",
                "STEMBOT_API_TIMEOUT_S": "3600",
            },
            need_discord=True,
            need_soundverse=True,
        )
    named = " ".join(caught.value.problems)
    for name in (
        "STEMBOT_MAX_CONCURRENT_JOBS",
        "STEMBOT_MAX_INPUT_MB",
        "STEMBOT_ALLOW_PRIVATE_URLS",
        "DISCORD_GATEWAY_URL",
        "STEMBOT_GUILD_DAILY_LIMIT",
        "STEMBOT_API_TIMEOUT_S",
        "DISCORD_TOKEN",
        "SOUNDVERSE_API_KEY",
    ):
        assert name in named
    assert len(caught.value.problems) == 8


def test_secrets_are_absent_from_reprs() -> None:
    """Neither the token nor the key shows in the settings' repr or str."""
    settings = load_settings({"DISCORD_TOKEN": TOKEN, "SOUNDVERSE_API_KEY": KEY})
    for text in (repr(settings), str(settings), repr(Secret(KEY)), f"{Secret(KEY)}"):
        assert TOKEN not in text
        assert KEY not in text


def test_a_secret_put_in_the_wrong_setting_is_not_echoed() -> None:
    """A key pasted into a numeric setting is reported by name, never by value."""
    with pytest.raises(ConfigError) as caught:
        load_settings({"STEMBOT_MAX_CONCURRENT_JOBS": KEY})
    assert KEY not in caught.value.user_message


def test_logging_keeps_webhook_loggers_above_debug() -> None:
    """discord.py's loggers that print webhook URLs (tokens) stay at INFO even in DEBUG."""
    from stembot.logs import configure_logging

    configure_logging("DEBUG")
    assert logging.getLogger("discord.webhook").getEffectiveLevel() >= logging.INFO
    assert logging.getLogger("discord.http").getEffectiveLevel() >= logging.INFO


def test_cli_reports_bad_settings_with_exit_status_2(tmp_path: Path) -> None:
    """The command prints one error naming each problem, exits 2, and shows no traceback."""
    env = {
        "PATH": "/usr/bin:/bin",
        "STEMBOT_MAX_INPUT_MB": "lots",
        "STEMBOT_GUILD_MONTHLY_LIMIT": "many",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stembot",
            "--env-file",
            os.devnull,
            "quota",
            "show",
            "1234",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "STEMBOT_MAX_INPUT_MB" in done.stderr
    assert "STEMBOT_GUILD_MONTHLY_LIMIT" in done.stderr
    assert "Traceback" not in done.stderr


def test_log_lines_never_show_tokens_even_from_debug_loggers() -> None:
    """The handler's formatter redacts the secrets and token-shaped parts of every line."""
    from stembot.logs import RedactingFormatter

    formatter = RedactingFormatter("%(message)s", [TOKEN, KEY])
    lines = [
        f"PATCH https://discord.com/api/v10/webhooks/123/{'a' * 60}/messages/@original",
        f"POST /api/v10/interactions/456/{'b' * 60}/callback",
        '{"op": 0, "d": {"token": "aW50ZXJhY3Rpb246MTIz", "id": "1"}}',
        f"Authorization: Bot {TOKEN}",
        f"key was {KEY}",
    ]
    for line in lines:
        record = logging.LogRecord("discord.webhook", logging.DEBUG, __file__, 1, line, None, None)
        shown = formatter.format(record)
        assert "[redacted]" in shown
        for secret in (TOKEN, KEY, "a" * 60, "b" * 60, "aW50ZXJhY3Rpb246MTIz"):
            assert secret not in shown


def env_example_settings() -> dict[str, str]:
    """Every setting .env.example names: assigned, or shown commented out as ``# NAME=value``."""
    import re

    found = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"(?:# ?)?([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_env_example_lists_every_setting_with_a_valid_default() -> None:
    """.env.example names each setting the code reads, and its values load as they are."""
    example = env_example_settings()
    read = setting_names()
    assert read - set(example) == set()
    assert set(example) - read == set()
    load_settings(example)


def test_default_limits_above_the_operators_ceilings_are_a_settings_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A default a moderator could not set is refused at start: both named, exit status 2."""
    from stembot.cli import main

    env = {
        "STEMBOT_DB_PATH": str(tmp_path / "ledger.db"),
        "STEMBOT_MAX_GUILD_DAILY_LIMIT": "40",
        "STEMBOT_MAX_GUILD_MONTHLY_LIMIT": "499",
    }
    with pytest.raises(ConfigError) as error:
        load_settings(env)
    assert error.value.problems == (
        "STEMBOT_GUILD_DAILY_LIMIT (50) is above STEMBOT_MAX_GUILD_DAILY_LIMIT (40): "
        "lower the default or raise the ceiling",
        "STEMBOT_GUILD_MONTHLY_LIMIT (500) is above STEMBOT_MAX_GUILD_MONTHLY_LIMIT (499): "
        "lower the default or raise the ceiling",
    )
    assert main(["quota", "show", "1234"], env=env) == 2
    assert "STEMBOT_MAX_GUILD_DAILY_LIMIT (40)" in capsys.readouterr().err
    assert not (tmp_path / "ledger.db").exists()
    within = load_settings(
        {**env, "STEMBOT_GUILD_DAILY_LIMIT": "40", "STEMBOT_GUILD_MONTHLY_LIMIT": "499"}
    )
    assert (within.quota.max_guild_daily_limit, within.quota.api_daily_budget) == (40, None)


def test_setting_names_come_from_the_declarations() -> None:
    """The known names are the declared settings load_settings reads: a new one is known at once."""
    names = setting_names()
    assert {"DISCORD_TOKEN", "SOUNDVERSE_API_KEY", "STEMBOT_DB_PATH"} <= names
    assert {f"STEMBOT_COST_{mode.name}" for mode in Mode} <= names
    assert all(name.startswith(("DISCORD_", "SOUNDVERSE_", "STEMBOT_")) for name in names)


def test_env_example_is_generated_from_the_declarations() -> None:
    """Names, defaults, help and sections in .env.example cannot drift from the code."""
    committed = (REPO / ".env.example").read_text()
    assert committed == env_example(), "regenerate it: python -m stembot.config > .env.example"


def test_every_declared_default_is_valid_and_api_timeout_is_bounded() -> None:
    """Bounds live in the declaration: 840 s is accepted, one second more is not."""
    assert load_settings({"STEMBOT_API_TIMEOUT_S": "840"}).api_timeout_s == 840
    with pytest.raises(ConfigError) as caught:
        load_settings({"STEMBOT_API_TIMEOUT_S": "841"})
    assert caught.value.problems == (
        "STEMBOT_API_TIMEOUT_S must be a positive number of seconds, at most 840 "
        "(Discord's interaction token lasts 15 minutes)",
    )


def test_a_mode_without_a_default_cost_is_a_settings_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A mode added with no default cost: start-up names its STEMBOT_COST_ setting, no KeyError."""
    monkeypatch.setattr(Mode.ALL, "default_cost", None)
    with pytest.raises(ConfigError) as caught:
        load_settings({})
    assert caught.value.problems == (
        "STEMBOT_COST_ALL is missing: set it to a whole number of at least 0",
    )
    assert load_settings({"STEMBOT_COST_ALL": "3"}).quota.cost_of(Mode.ALL) == 3
    assert "# STEMBOT_COST_ALL=\n" in env_example()


def test_stembot_run_stops_on_a_mode_without_a_cost(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Start-up, not only load_settings: `stembot run` names the missing STEMBOT_COST_ setting
    like any other bad setting and exits 2, before it opens a database."""
    from stembot.cli import main

    monkeypatch.setattr(Mode.INSTRUMENTS, "default_cost", None)
    env = {
        "DISCORD_TOKEN": "a-token",
        "SOUNDVERSE_API_KEY": "a-key",
        "STEMBOT_DB_PATH": str(tmp_path / "stembot.db"),
    }
    assert main(["run"], env=env) == 2
    err = capsys.readouterr().err
    assert "STEMBOT_COST_INSTRUMENTS is missing: set it to a whole number of at least 0" in err
    assert "KeyError" not in err and "Traceback" not in err
    assert not (tmp_path / "stembot.db").exists()


def test_audio_workers_default_to_two_and_must_be_at_least_one() -> None:
    """STEMBOT_AUDIO_WORKERS: 2 (a 2-core machine) unless set; 0 is refused by name."""
    assert load_settings({}).audio_workers == 2
    assert load_settings({"STEMBOT_AUDIO_WORKERS": "3"}).audio_workers == 3
    with pytest.raises(ConfigError, match="STEMBOT_AUDIO_WORKERS"):
        load_settings({"STEMBOT_AUDIO_WORKERS": "0"})


def test_shard_settings_read_ranges_and_lists_and_default_to_discords_choice() -> None:
    """STEMBOT_SHARD_IDS takes 0-3, 0,2,5 or both; unset, the count is Discord's to recommend."""
    assert (load_settings({}).shard_count, load_settings({}).shard_ids) == (None, None)
    settings = load_settings({"STEMBOT_SHARD_COUNT": "8", "STEMBOT_SHARD_IDS": "0-2, 5,2"})
    assert (settings.shard_count, settings.shard_ids) == (8, (0, 1, 2, 5))
    assert load_settings({"STEMBOT_SHARD_COUNT": "3"}).shard_ids is None


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        (
            {"STEMBOT_SHARD_IDS": "0-1"},
            "STEMBOT_SHARD_IDS needs STEMBOT_SHARD_COUNT: set the bot's total number of shards too",
        ),
        (
            {"STEMBOT_SHARD_COUNT": "3", "STEMBOT_SHARD_IDS": "2-4"},
            "STEMBOT_SHARD_IDS names shard(s) 3, 4, but STEMBOT_SHARD_COUNT is 3: "
            "shard ids go from 0 to 2",
        ),
        (
            {"STEMBOT_SHARD_COUNT": "3", "STEMBOT_SHARD_IDS": "2-1"},
            "STEMBOT_SHARD_IDS must be shard ids such as 0-3 or 0,2,5 "
            "(from 0, below STEMBOT_SHARD_COUNT)",
        ),
        (
            {"STEMBOT_SHARD_COUNT": "0"},
            "STEMBOT_SHARD_COUNT must be a whole number of at least 1",
        ),
    ],
)
def test_shard_ids_outside_the_count_are_a_settings_error_naming_both(
    env: dict[str, str], problem: str
) -> None:
    """A process must not run shards the bot does not have, nor guess the count of the rest."""
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.problems == (problem,)
