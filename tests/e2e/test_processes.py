"""Several `stembot run` processes on one PostgreSQL ledger, a shard each, against the sharded
loopback Discord: each holds a lease; a process killed mid-call has its request refunded and
told once by a survivor, never a live process's; a process killed or stopped with calls
queued has them made once by a survivor; a process frozen past its lease and then
resumed tells nothing and stops; the slash commands are synced once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.stack import (
    API_KEY,
    WAV,
    BotProcess,
    channel_posts,
    eventually,
    final_answer,
    is_result,
    stack_env,
)
from tests.postgres import admin_url, fresh_database
from tests.standins.discord import DiscordEmulator, Guild, InteractionRecord, MessageRecord
from tests.standins.discord.sharding import SessionStartLimit
from tests.standins.soundverse import SoundverseStandin

pytestmark = pytest.mark.slow

# Short, so that the tests see leases run out; a third of it between beats, as the settings ask.
LEASE_S = 3.0
HEARTBEAT_S = 0.5
LOST_LINE = "stembot: this process lost its lease"


@dataclass
class Fleet:
    """The outside world and the bot processes, one per shard, on one PostgreSQL ledger."""

    discord: DiscordEmulator
    api: SoundverseStandin
    url: str
    guilds: list[Guild]
    bots: list[BotProcess]

    def guild_of(self, process: int) -> Guild:
        """A server the ``process``-th bot serves (its shard)."""
        shards = len(self.bots)
        return next(g for g in self.guilds if self.discord.shard_of(g, shards) == process)

    async def split(self, guild: Guild, url: str | None = None) -> InteractionRecord:
        """`/stems vocals` by a new member of ``guild``: a file of its own, or the link."""
        member = self.discord.add_member(guild, f"member of {guild.name}")
        interaction = await self.discord.slash(
            "stems vocals",
            member=member,
            channel=guild.default_channel,
            options={"file": self.upload(guild)} if url is None else {"url": url},
        )
        await self.discord.acknowledged(interaction)
        return interaction

    def upload(self, guild: Guild) -> dict[str, Any]:
        return self.discord.upload_attachment(
            WAV, "song.wav", "audio/wav", channel=guild.default_channel
        )

    def ledger(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(sql.encode(), params or None).fetchall()


@contextlib.asynccontextmanager
async def fleet(
    tmp_path: Path,
    processes: int,
    env: dict[str, str] | None = None,
    servers: int = 0,
    max_concurrency: int | None = None,
) -> AsyncIterator[Fleet]:
    """``processes`` bots, a shard each, and ``servers`` servers spread over the shards (at
    least one per shard); Discord's max_concurrency is one bucket per shard unless given."""
    limit = SessionStartLimit(max_concurrency=max_concurrency or processes)
    discord = DiscordEmulator(identify_window_s=5.0, session_start_limit=limit)
    async with discord, SoundverseStandin(api_key=API_KEY) as api:
        guilds = [
            await discord.add_guild(f"server {n}", shard=(n % processes, processes))
            for n in range(max(servers, processes))
        ]
        with fresh_database(admin_url()) as url:
            bots = [
                BotProcess({**each, **(env or {})}, tmp_path / f"bot{n}.log")
                for n, each in enumerate(_envs(discord, api, url, tmp_path, processes))
            ]
            for bot in bots:
                await bot.start()
            try:
                await discord.wait_shards(processes, timeout_s=60)
                yield Fleet(discord, api, url, guilds, bots)
            finally:
                for bot in bots:
                    with contextlib.suppress(ProcessLookupError):
                        bot.signal(signal.SIGCONT)
                        bot.signal(signal.SIGTERM)
                for bot in bots:
                    with contextlib.suppress(ProcessLookupError):
                        await bot.wait(30)


def _envs(
    discord: DiscordEmulator, api: SoundverseStandin, url: str, tmp_path: Path, processes: int
) -> Iterator[dict[str, str]]:
    for n in range(processes):
        yield {
            **stack_env(discord, api, tmp_path / "unused.db"),
            "STEMBOT_DATABASE_URL": url,
            "STEMBOT_SHARD_COUNT": str(processes),
            "STEMBOT_SHARD_IDS": str(n),
            "STEMBOT_LEASE_S": str(LEASE_S),
            "STEMBOT_HEARTBEAT_S": str(HEARTBEAT_S),
            "STEMBOT_API_TIMEOUT_S": "120",
        }


def notices(fleet: Fleet, guild: Guild) -> list[str]:
    """The bot's plain posts in the server's channel (the restart notices), as text."""
    return [str(post.embeds) for post in channel_posts(fleet.discord, guild.default_channel)]


async def test_processes_in_one_bucket_identify_5_s_apart_and_none_is_refused(
    tmp_path: Path,
) -> None:
    """Two processes started at once, one IDENTIFY bucket (max_concurrency 1), Discord's 5 s
    window enforced: they take turns through the shared database, so neither is answered
    with an invalid session, and their IDENTIFYs reach Discord at least 5 s apart."""
    async with fleet(tmp_path, 2, max_concurrency=1) as running:
        identifies = [e for e in running.discord.gateway.log if e.op == "IDENTIFY"]
        assert [e.outcome for e in identifies] == ["ready", "ready"]
        assert identifies[1].at - identifies[0].at >= 5.0
        assert running.ledger("SELECT spent FROM session_starts") == [(2,)]


async def test_a_killed_process_is_refunded_and_told_once_by_a_survivor_never_a_live_one(
    tmp_path: Path,
) -> None:
    """Three processes, the API holding every call: A is killed mid-call. One survivor
    refunds A's request and tells its member once (a notice in the channel); B's call, held
    for several leases meanwhile, is never touched and is answered once the API answers; the
    commands were synced once for all three."""
    async with fleet(tmp_path, 3) as running:
        running.api.hold()
        killed, live = running.guild_of(0), running.guild_of(1)
        await running.split(killed)
        waiting = await running.split(live)
        await eventually(lambda: len(running.api.requests) == 2, timeout_s=20)
        running.bots[0].signal(signal.SIGKILL)
        await running.bots[0].wait()
        await eventually(lambda: notices(running, killed), timeout_s=LEASE_S * 6)
        await asyncio.sleep(LEASE_S * 2)  # several more sweeps: none may touch B's request
        assert notices(running, live) == []
        running.api.release()
        await eventually(lambda: is_result(waiting.view().original or {}), timeout_s=20)
        (notice,) = notices(running, killed)
        assert "not charged" in notice.lower()
        statuses = running.ledger("SELECT guild_id, status, cost FROM requests")
        assert sorted(statuses) == sorted(
            [(killed.id, "interrupted", 1), (live.id, "succeeded", 1)]
        )
        assert len(running.api.requests) == 2
        assert [scope for _, scope in running.discord.command_syncs] == [None]
    assert notices(running, killed) == [notice]


def _member_of(interaction: InteractionRecord) -> int:
    assert interaction.invoker is not None
    return interaction.invoker.id


def _mentioned(post: MessageRecord) -> int:
    """The member a channel post mentions first (``<@id> ...``)."""
    return int(str(post.content).removeprefix("<@").split(">", 1)[0])


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
async def test_a_gone_process_queued_calls_are_made_once_by_a_survivor(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """A cap of one for all, held by B's call at the API; A's members queue three files and
    a fourth member rides on one of them. A is killed (or stopped cleanly): a survivor takes
    A's queued calls over (at once after a clean stop, which tells A's members their requests
    keep their place), makes each once when the cap allows, and posts each member's stems in
    the channel, mentioning them, once; nobody is told of a refund; each file is charged
    once, the rider nothing."""
    async with fleet(tmp_path, 3, {"STEMBOT_MAX_CONCURRENT_JOBS": "1"}) as running:
        gone, live = running.guild_of(0), running.guild_of(1)
        running.api.hold()
        await running.split(live)
        await eventually(lambda: len(running.api.requests) == 1, timeout_s=20)
        link = running.upload(gone)["url"]
        queued = [await running.split(gone) for _ in range(2)]
        queued += [await running.split(gone, link) for _ in range(2)]
        await eventually(
            lambda: len(running.ledger("SELECT 1 FROM requests WHERE status = 'queued'")) == 4,
            timeout_s=20,
        )
        running.bots[0].signal(stop)
        assert await running.bots[0].wait(30) in (0, -signal.SIGKILL)
        survivors = [b.pid for b in running.bots[1:]]
        taken = (
            "SELECT count(*) FROM requests AS r JOIN stembot_processes AS p ON p.id = r.lease_id "
            "WHERE r.status = 'queued' AND p.pid = ANY(%s) AND p.ended_at IS NULL"
        )
        await eventually(
            lambda: running.ledger(taken, (survivors,)) == [(4,)], timeout_s=LEASE_S * 6
        )
        if stop == signal.SIGTERM:
            for interaction in queued:
                assert "keeps its place" in str((interaction.view().original or {})["embeds"])
        running.api.release()
        members = {_member_of(i) for i in queued}

        def results() -> list[MessageRecord]:
            posts = channel_posts(running.discord, gone.default_channel)
            return [p for p in posts if is_result(p.data)]

        await eventually(lambda: len(results()) == 4, timeout_s=30)
        await asyncio.sleep(LEASE_S)  # room for a second answer or a notice to show itself
        posts = channel_posts(running.discord, gone.default_channel)
        assert len(posts) == 4 and {_mentioned(p) for p in posts} == members
        assert all("not charged" not in str(p.embeds).lower() for p in posts)
        made = Counter(str(r.json()["audioUrl"]) for r in running.api.requests)
        assert len(made) == 4 and set(made.values()) == {1}, made
        rows = running.ledger(
            "SELECT status, cost FROM requests WHERE guild_id = %s ORDER BY id", (gone.id,)
        )
        assert rows == [("succeeded", 1), ("succeeded", 1), ("succeeded", 1), ("succeeded", 0)]


async def test_a_process_frozen_past_its_lease_tells_nothing_when_it_wakes_and_stops(
    tmp_path: Path,
) -> None:
    """A is stopped (SIGSTOP) mid-call for longer than its lease: B refunds A's request and
    tells its member once. A is resumed and its API call then answers: A delivers nothing,
    writes nothing, refunds nothing again, says it lost its lease and exits with status 1."""
    async with fleet(tmp_path, 2) as running:
        running.api.hold()
        frozen = running.guild_of(0)
        interaction = await running.split(frozen)
        await eventually(lambda: len(running.api.requests) == 1, timeout_s=20)
        running.bots[0].signal(signal.SIGSTOP)
        await eventually(lambda: notices(running, frozen), timeout_s=LEASE_S * 6)
        shown = interaction.view().original
        running.api.release()
        running.bots[0].signal(signal.SIGCONT)
        assert await running.bots[0].wait(30) == 1
        log = running.bots[0].log_text()
        assert LOST_LINE in log
        assert interaction.view().original == shown  # no result, no failure edited in
        assert len(notices(running, frozen)) == 1
        assert running.ledger("SELECT status, cost FROM requests") == [("interrupted", 1)]
        assert len(running.api.requests) == 1


async def test_the_cap_the_turns_and_one_call_per_file_hold_across_processes(
    tmp_path: Path,
) -> None:
    """Three processes, STEMBOT_MAX_CONCURRENT_JOBS=2 meaning all of them: server A's crowd
    of 8 on one process holds both turns; server B's one request on another process goes
    next, before A's other six (servers take turns across processes), and never a third call
    at once. Then members of all three servers split one link at once: one API call in all,
    every one of them answered, the file charged once."""
    async with fleet(tmp_path, 3, {"STEMBOT_MAX_CONCURRENT_JOBS": "2"}) as running:
        big, small, third = (running.guild_of(n) for n in range(3))
        running.api.hold()
        crowd = [await running.split(big) for _ in range(8)]
        await eventually(lambda: len(running.api.requests) == 2, timeout_s=20)
        alone = await running.split(small)
        await asyncio.sleep(1.0)  # B's call waits: the two turns are taken
        assert len(running.api.requests) == 2
        running.api.release()
        await answered(*crowd, alone)
        assert running.api.max_in_flight <= 2
        order = [r.json()["audioUrl"] for r in running.api.requests]
        assert order.index(_url_of(alone)) < 4, order
        running.api.clear()

        link = running.upload(third)["url"]
        running.api.hold()
        shared = [
            await running.split(guild, link) for guild in (big, small, third) for _ in range(2)
        ]
        await eventually(lambda: len(running.api.requests) == 1, timeout_s=20)
        await asyncio.sleep(0.5)
        running.api.release()
        await answered(*shared)
        assert len(running.api.requests) == 1
        rows = running.ledger(
            "SELECT cost FROM requests WHERE source_key LIKE 'url:%' AND status = 'succeeded'"
        )
        assert sorted(int(str(cost)) for (cost,) in rows) == [0, 0, 0, 0, 0, 1]


async def answered(*interactions: InteractionRecord) -> None:
    def done() -> bool:
        return all(is_result(i.view().original or {}) for i in interactions)

    await eventually(done, timeout_s=30)


def _url_of(interaction: InteractionRecord) -> str:
    """The attachment's URL the bot handed the API for this interaction's file."""
    (attachment,) = interaction.payload["data"]["resolved"]["attachments"].values()
    return str(attachment["url"])


async def test_three_processes_thirty_servers_a_kill_and_cut_connections(tmp_path: Path) -> None:
    """3 processes, 3 shards, 30 servers; 60 requests (a file of each server's own, and one of
    three links every server shares) with the calls held at the API; then every database
    connection is cut and process A is killed. A survivor refunds and tells each of A's
    running requests once and makes its queued calls, posting each result in the channel
    once; everyone on B and C is answered (a request riding on a call A was making is told to
    run it again, at no cost); nothing stays in progress; no server is charged past its
    limit; nobody is charged for what they were not given."""
    env = {"STEMBOT_MAX_CONCURRENT_JOBS": "4", "STEMBOT_GUILD_DAILY_LIMIT": "2"}
    async with fleet(tmp_path, 3, env, servers=30) as running:
        links = [running.upload(running.guilds[0])["url"] for _ in range(3)]
        running.api.hold()
        asked: list[tuple[Guild, InteractionRecord]] = []
        for n, guild in enumerate(running.guilds):
            asked.append((guild, await running.split(guild)))
            asked.append((guild, await running.split(guild, links[n % 3])))
        await eventually(lambda: len(running.api.requests) == 4, timeout_s=30)
        await asyncio.to_thread(_cut_connections, running.url)
        running.bots[0].signal(signal.SIGKILL)
        await running.bots[0].wait()
        killed = {g.id for g in running.guilds if running.discord.shard_of(g, 3) == 0}
        running.api.release()
        live = [i for g, i in asked if g.id not in killed]
        await eventually(lambda: all(final_answer(i) for i in live), timeout_s=60)
        await eventually(
            lambda: (
                not running.ledger("SELECT 1 FROM requests WHERE status IN ('queued', 'running')")
            ),
            timeout_s=LEASE_S * 6,
        )
        posts_of_a = [
            post
            for g in running.guilds
            if g.id in killed
            for post in channel_posts(running.discord, g.default_channel)
        ]
        told_of_a = [str(p.embeds) for p in posts_of_a if not is_result(p.data)]
        results_of_a = {_mentioned(p) for p in posts_of_a if is_result(p.data)}
        of_a = running.ledger(
            "SELECT interaction_id, status FROM requests WHERE guild_id = ANY(%s)", (list(killed),)
        )
        assert {status for _, status in of_a} <= {"interrupted", "succeeded"}
        interrupted = [i for i, status in of_a if status == "interrupted"]
        assert len(told_of_a) == len(interrupted)
        assert all("not charged" in notice.lower() for notice in told_of_a)
        assert len(results_of_a) == len(of_a) - len(interrupted) > 0  # its queued calls made
        charged = running.ledger(
            "SELECT guild_id, sum(cost) FROM requests WHERE status = 'succeeded' GROUP BY guild_id"
        )
        assert all(int(str(units)) <= 2 for _, units in charged)
        with_stems = {i.id for _, i in asked if final_answer(i) == "stems"}
        with_stems |= {i.id for _, i in asked if _member_of(i) in results_of_a}
        paid = running.ledger(
            "SELECT interaction_id FROM requests WHERE status = 'succeeded' AND cost > 0"
        )
        assert {int(str(i)) for (i,) in paid} <= with_stems
    assert [bot.process.returncode for bot in running.bots[1:] if bot.process] == [0, 0]


def _cut_connections(url: str) -> None:
    """Every connection the bots hold to their database, terminated by the server."""
    name = url.rsplit("/", 1)[-1]
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
