"""`stembot run` as an operator starts it: Discord problems are one clear line, not a traceback."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.stack import API_KEY, run_stembot, stack_env
from tests.standins.discord import DiscordEmulator
from tests.standins.soundverse import SoundverseStandin


async def test_a_refused_bot_token_is_named_with_exit_status_2(tmp_path: Path) -> None:
    """Discord answers 401 to the token: one line naming DISCORD_TOKEN, status 2."""
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY) as api:
        env = {**stack_env(discord, api, tmp_path / "db.sqlite"), "DISCORD_TOKEN": "wrong.token"}
        status, stderr = await run_stembot(env, "run", cwd=tmp_path)
    assert status == 2
    assert "DISCORD_TOKEN" in stderr
    assert "Traceback" not in stderr
    assert "wrong.token" not in stderr


async def test_an_unreachable_discord_is_one_line_with_exit_status_1(tmp_path: Path) -> None:
    """Nothing listens at DISCORD_API_BASE: the bot says where it tried, status 1."""
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY) as api:
        env = stack_env(discord, api, tmp_path / "db.sqlite")
    # Both stand-ins are closed now: their ports refuse connections.
    status, stderr = await run_stembot(env, "run", cwd=tmp_path)
    assert status == 1
    assert f"could not reach Discord at {env['DISCORD_API_BASE']}" in stderr
    assert "Traceback" not in stderr


async def test_start_up_logs_what_it_uses_in_one_line_without_secrets(tmp_path: Path) -> None:
    """The first log line names the database, the Discord and Soundverse bases and the env
    file read, so a wrong path shows at once; neither secret appears."""
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY) as api:
        env = stack_env(discord, api, tmp_path / "db.sqlite")
    env_file = tmp_path / "bot.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    _, text = await run_stembot({}, "run", env_file=env_file, cwd=tmp_path)
    lines = [line for line in text.splitlines() if "starting with database" in line]
    assert len(lines) == 1, text
    for shown in (
        str(tmp_path / "db.sqlite"),
        env["DISCORD_API_BASE"],
        env["DISCORD_GATEWAY_URL"],
        env["SOUNDVERSE_API_BASE"],
        f"settings from {env_file}",
    ):
        assert shown in lines[0]
    assert env["DISCORD_TOKEN"] not in text
    assert API_KEY not in text
