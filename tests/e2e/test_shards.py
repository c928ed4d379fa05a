"""The bot sharded, against the loopback Discord's sharded gateway: every server is served by
the shard Discord routes it to, in one process or split over two; a shard count Discord refuses
(4011) ends the process with one line; and a nearly spent session start limit is waited out,
said in the log, instead of spent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import sqlite3
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from stembot.bot.client import StemBot
from stembot.config import load_settings
from tests.e2e.stack import (
    API_KEY,
    WAV,
    BotProcess,
    bot_connected,
    eventually,
    is_result,
    run_stembot,
    stack_env,
)
from tests.standins.discord import DiscordEmulator, Guild, InteractionRecord
from tests.standins.discord.sharding import SessionStartLimit
from tests.standins.soundverse import SoundverseStandin

SHARDS = 3
SHARDED_ENV = {"STEMBOT_SHARD_COUNT": str(SHARDS), "STEMBOT_SHARD_IDS": f"0-{SHARDS - 1}"}


def sharded_discord() -> DiscordEmulator:
    """Discord with IDENTIFY pacing enforced and room for every shard to start at once."""
    limit = SessionStartLimit(max_concurrency=SHARDS)
    return DiscordEmulator(identify_window_s=5.0, session_start_limit=limit)


async def guilds_on_every_shard(discord: DiscordEmulator, per_shard: int = 2) -> list[Guild]:
    return [
        await discord.add_guild(f"server {n}", shard=(n % SHARDS, SHARDS))
        for n in range(SHARDS * per_shard)
    ]


@contextlib.asynccontextmanager
async def bot_in_process(
    discord: DiscordEmulator, api: SoundverseStandin, db: Path, env: Mapping[str, str]
) -> AsyncIterator[StemBot]:
    """The real bot built as `stembot run` builds it, ready on all its shards."""
    settings = load_settings(
        {**stack_env(discord, api, db), **env}, need_discord=True, need_soundverse=True
    )
    async with bot_connected(discord, settings) as bot:
        await asyncio.wait_for(bot.wait_until_ready(), 30)
        yield bot


async def split(discord: DiscordEmulator, guild: Guild) -> InteractionRecord:
    """`/stems vocals` by a new member of ``guild``, answered with a result."""
    member = discord.add_member(guild, f"member of {guild.name}")
    track = discord.upload_attachment(WAV, "song.wav", "audio/wav", channel=guild.default_channel)
    interaction = await discord.slash(
        "stems vocals", member=member, channel=guild.default_channel, options={"file": track}
    )
    await eventually(lambda: is_result(interaction.view().original or {}), timeout_s=15)
    return interaction


def guilds_served_from(db: Path) -> set[int]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as ledger:
        return {row[0] for row in ledger.execute("SELECT guild_id FROM requests")}


async def test_one_process_runs_three_shards_and_serves_every_server_on_its_shard(
    tmp_path: Path,
) -> None:
    """STEMBOT_SHARD_COUNT=3, STEMBOT_SHARD_IDS=0-2: three sessions, each holding the servers
    Discord routes to it, none refused for pacing; a command in each server is answered."""
    async with sharded_discord() as discord, SoundverseStandin(api_key=API_KEY) as api:
        guilds = await guilds_on_every_shard(discord)
        async with bot_in_process(discord, api, tmp_path / "stembot.db", SHARDED_ENV) as bot:
            sessions = await discord.wait_shards(SHARDS)
            assert [s.shard for s in sessions] == [(i, SHARDS) for i in range(SHARDS)]
            assert sorted(bot.shards) == list(range(SHARDS))
            for guild in guilds:
                seen = bot.get_guild(guild.id)
                assert seen is not None and seen.shard_id == discord.shard_of(guild, SHARDS)
            for guild in guilds:
                await split(discord, guild)
            for shard_id, session in enumerate(sessions):
                on_it = {g.id for g in guilds if discord.shard_of(g, SHARDS) == shard_id}
                assert {int(g["id"]) for g in session.dispatched("GUILD_CREATE")} == on_it
                asked = session.dispatched("INTERACTION_CREATE")
                assert {int(i["guild_id"]) for i in asked} == on_it
        assert guilds_served_from(tmp_path / "stembot.db") == {g.id for g in guilds}
        assert {e.outcome for e in discord.gateway.log} == {"ready"}


@pytest.mark.slow
async def test_two_processes_split_the_shards_and_each_serves_its_own_servers(
    tmp_path: Path,
) -> None:
    """Shards 0-1 in one `stembot run`, shard 2 in another (a database each): every server's
    command is answered, by the process that runs its shard, and only by it."""
    async with sharded_discord() as discord, SoundverseStandin(api_key=API_KEY) as api:
        guilds = await guilds_on_every_shard(discord)
        processes = []
        for name, ids in (("a", "0-1"), ("b", "2")):
            env = stack_env(discord, api, tmp_path / f"{name}.db")
            env |= {"STEMBOT_SHARD_COUNT": str(SHARDS), "STEMBOT_SHARD_IDS": ids}
            processes.append(BotProcess(env, tmp_path / f"{name}.log"))
        try:
            for process in processes:
                await process.start()
            await discord.wait_shards(SHARDS, timeout_s=40)
            for guild in guilds:
                await split(discord, guild)
        finally:
            for process in processes:
                process.signal(signal.SIGTERM)
            statuses = [await process.wait() for process in processes]
        assert statuses == [0, 0], [p.log_text() for p in processes]
        on = {i: {g.id for g in guilds if discord.shard_of(g, SHARDS) == i} for i in range(SHARDS)}
        assert guilds_served_from(tmp_path / "a.db") == on[0] | on[1]
        assert guilds_served_from(tmp_path / "b.db") == on[2]
        assert "connecting shard(s) 2 of 3" in processes[1].log_text()


@pytest.mark.slow
async def test_too_few_shards_end_the_process_with_one_line_naming_the_setting(
    tmp_path: Path,
) -> None:
    """A shard that would hold more servers than Discord allows is closed with 4011: discord.py
    does not retry, so `stembot run` exits 1 with one line saying what to change, after one
    IDENTIFY. Left unset, the count is Discord's recommendation, and the bot connects."""
    async with (
        DiscordEmulator(max_guilds_per_shard=2) as discord,
        SoundverseStandin(api_key=API_KEY) as api,
    ):
        for n in range(4):
            await discord.add_guild(f"server {n}", shard=(n % 2, 2))
        env = stack_env(discord, api, tmp_path / "stembot.db")
        status, out = await run_stembot({**env, "STEMBOT_SHARD_COUNT": "1"}, "run")
        assert status == 1, out
        assert (
            "stembot: Discord requires more shards (close code 4011: shard 0 would hold more "
            "than 2,500 servers); raise STEMBOT_SHARD_COUNT (now 1) on every process, or leave "
            "it empty to use Discord's recommendation." in out.splitlines()
        ), out
        assert "Traceback" not in out
        assert [(e.shard, e.outcome) for e in discord.gateway.log] == [
            ((0, 1), "sharding required")
        ]
        discord.recommended_shards = 2
        bot = BotProcess(env, tmp_path / "recommended.log")
        await bot.start()
        try:
            await discord.wait_shards(2, timeout_s=30)
        finally:
            bot.signal(signal.SIGTERM)
            assert await bot.wait() == 0, bot.log_text()
        assert "connecting shard(s) 0, 1 of 2" in bot.log_text()


async def test_a_nearly_spent_session_start_limit_is_waited_out_and_said_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With only the reserve of session starts left, the bot identifies nothing until Discord's
    limit resets, says so in one line with the wait, then connects."""
    limit = SessionStartLimit(total=1000, remaining=60, reset_after_s=3.0, max_concurrency=SHARDS)
    caplog.set_level(logging.INFO, "stembot.bot.identify")
    async with (
        DiscordEmulator(identify_window_s=5.0, session_start_limit=limit) as discord,
        SoundverseStandin(api_key=API_KEY) as api,
    ):
        guilds = await guilds_on_every_shard(discord, per_shard=1)
        resets_at = limit.resets_at
        async with bot_in_process(discord, api, tmp_path / "stembot.db", SHARDED_ENV):
            await split(discord, guilds[2])
        waits = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(waits) == 1, waits
        assert re.fullmatch(
            r"Discord's session start limit is nearly spent \(60 of 1000 left today, 100 kept "
            r"in reserve so that Discord never resets the token\): shard 0 waits [0-3]\.\d s, "
            r"until [-0-9]+ [:0-9]+ UTC, for the limit to reset instead of identifying",
            waits[0],
        ), waits[0]
        identifies = [e for e in discord.gateway.log if e.op == "IDENTIFY"]
        assert [e.outcome for e in identifies] == ["ready"] * SHARDS
        assert all(e.at >= resets_at for e in identifies)
        assert limit.left() == 1000 - SHARDS
