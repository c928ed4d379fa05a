"""`stembot run` as an operator starts it: Discord problems are one clear line, not a traceback."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.e2e.stack import API_KEY, stack_env
from tests.standins.discord import DiscordEmulator
from tests.standins.soundverse import SoundverseStandin


async def run_bot_command(env: dict[str, str], cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stembot",
        "--env-file",
        os.devnull,
        "run",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_a_refused_bot_token_is_named_with_exit_status_2(tmp_path: Path) -> None:
    """Discord answers 401 to the token: one line naming DISCORD_TOKEN, status 2."""
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY) as api:
        env = {**stack_env(discord, api, tmp_path / "db.sqlite"), "DISCORD_TOKEN": "wrong.token"}
        status, stderr = await run_bot_command(env, tmp_path)
    assert status == 2
    assert "DISCORD_TOKEN" in stderr
    assert "Traceback" not in stderr
    assert "wrong.token" not in stderr


async def test_an_unreachable_discord_is_one_line_with_exit_status_1(tmp_path: Path) -> None:
    """Nothing listens at DISCORD_API_BASE: the bot says where it tried, status 1."""
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY) as api:
        env = stack_env(discord, api, tmp_path / "db.sqlite")
    # Both stand-ins are closed now: their ports refuse connections.
    status, stderr = await run_bot_command(env, tmp_path)
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
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stembot",
        "--env-file",
        str(env_file),
        "run",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    text = stderr.decode()
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
