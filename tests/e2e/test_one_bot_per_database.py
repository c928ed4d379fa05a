"""One bot per SQLite database, enforced with real processes: a second `stembot run` refuses
in one line naming the database and its holder; the lock goes with its holder, however it
ends; the operator's commands and other readers keep working beside a running bot. (Several
processes share a PostgreSQL ledger: tests/e2e/test_processes.py.)"""

from __future__ import annotations

import signal
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stembot.config import QuotaPolicy
from stembot.database_lock import lock_path_of
from stembot.store import Store
from tests.e2e.stack import (
    API_KEY,
    WAV,
    BotProcess,
    eventually,
    is_result,
    new_gateway_session,
    run_stembot,
    stack_env,
)
from tests.standins.discord import DiscordEmulator, Guild, Member
from tests.standins.soundverse import SoundverseStandin

pytestmark = pytest.mark.slow

REFUSAL = "stembot: another stembot is already running on the database"


async def served(discord: DiscordEmulator, guild: Guild, member: Member) -> bool:
    attachment = discord.upload_attachment(WAV, f"{member.id}.wav", "audio/wav")
    interaction = await discord.slash(
        "stems vocals", member=member, channel=guild.default_channel, options={"file": attachment}
    )
    await eventually(lambda: is_result(interaction.view().original or {}), timeout_s=15)
    return True


async def test_a_second_bot_on_the_same_database_refuses_in_one_line(tmp_path: Path) -> None:
    """The second `stembot run` names the database and who holds it, exits non-zero and never
    touches Discord or the ledger; the operator's commands run beside the bot, and it still
    serves."""
    db = tmp_path / "stembot.db"
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY) as api:
        guild = await discord.add_guild()
        alice = discord.add_member(guild, "alice")
        env = stack_env(discord, api, db)
        first = BotProcess(env, tmp_path / "first.log")
        await first.start()
        try:
            await discord.wait_ready(timeout_s=20)
            session = discord.gateway.current
            logins = len([c for c in discord.calls if c.route == "/users/@me"])
            status, out = await run_stembot(env, "run")
            assert status == 1, out
            (line,) = [n for n in out.splitlines() if n.strip()]
            assert line.startswith(f"{REFUSAL} {db} (pid {first.pid} on {socket.gethostname()}")
            assert "since" in line
            assert discord.gateway.current is session
            assert len([c for c in discord.calls if c.route == "/users/@me"]) == logins
            for command in (("quota", "show", str(guild.id)), ("usage", str(guild.id)), ("sync",)):
                status, out = await run_stembot(env, *command)
                assert status == 0, (command, out)
            reader = Store.open(db, QuotaPolicy())
            assert (
                reader.quotas.quota_status(guild.id, None, datetime.now(UTC)).guild_daily.used == 0
            )
            reader.close()
            assert await served(discord, guild, alice)
        finally:
            first.signal(signal.SIGTERM)
            assert await first.wait() == 0, first.log_text()


async def test_the_database_is_taken_over_after_a_crash_and_released_on_exit(
    tmp_path: Path,
) -> None:
    """SIGKILL leaves the lock file behind but not the lock: the next bot starts and serves;
    after a clean stop the next one starts too."""
    db = tmp_path / "stembot.db"
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY) as api:
        guild = await discord.add_guild()
        alice = discord.add_member(guild, "alice")
        env = stack_env(discord, api, db)
        crashed = BotProcess(env, tmp_path / "bot.log")
        await crashed.start()
        try:
            await discord.wait_ready(timeout_s=20)
        finally:
            crashed.signal(signal.SIGKILL)
            await crashed.wait()
        assert f"pid {crashed.pid} " in lock_path_of(db).read_text()
        for _ in range(2):  # after the crash, then after a clean stop
            session = discord.gateway.current
            bot = BotProcess(env, tmp_path / "bot.log")
            await bot.start()
            try:
                await new_gateway_session(discord, session)
                assert f"pid {bot.pid} " in lock_path_of(db).read_text()
                assert await served(discord, guild, alice)
            finally:
                bot.signal(signal.SIGTERM)
                assert await bot.wait() == 0, bot.log_text()
        assert REFUSAL not in bot.log_text()
        # Only the first start found no database, and said so.
        assert bot.log_text().count(f"no database at {db}: starting a new, empty ledger") == 1
