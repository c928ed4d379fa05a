"""IDENTIFY pacing shared by the processes on one token, on the real PostgreSQL: each process a
store (a pool) of its own. A bucket's IDENTIFYs from every process come an interval apart and
are accepted by the loopback Discord enforcing its window; other buckets go at once; a waiting
turn holds no connection and a gone process no bucket; processes crash-looping together stop
at the reserve of session starts together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from itertools import pairwise

import pytest

from stembot.bot.identify import IdentifyGate, SessionStartLimit, SharedIdentifyPacer
from stembot.store.postgres import PostgresStore
from tests.postgres import empty_tables
from tests.standins.discord import DiscordEmulator
from tests.standins.discord import sharding as emulated
from tests.test_discord_emulator_sharding import raw_shard
from tests.test_identify_gate import asking
from tests.test_store import POLICY

# The tests' Discord window, and the pacers' interval a little above it (as 5.5 s for 5 s).
WINDOW_S = 1.0
INTERVAL_S = 1.15


@pytest.fixture(name="stores")
async def stores_fixture(postgres_url: str) -> AsyncIterator[list[PostgresStore]]:
    """Three processes' stores on the run's database, its tables emptied first."""
    first = await PostgresStore.open(postgres_url, POLICY)
    empty_tables(postgres_url)
    stores = [first] + [await PostgresStore.open(postgres_url, POLICY) for _ in range(2)]
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()


def pacer(store: PostgresStore, interval_s: float = INTERVAL_S) -> SharedIdentifyPacer:
    return SharedIdentifyPacer(store.identify, interval_s=interval_s)


def gaps(moments: Iterable[float]) -> list[float]:
    ordered = sorted(moments)
    return [later - earlier for earlier, later in pairwise(ordered)]


async def test_a_buckets_turns_from_three_processes_come_an_interval_apart(
    stores: list[PostgresStore],
) -> None:
    """Three processes, two shards each in bucket 0, all asking at once: six turns, one at a
    time, each at least the interval after the last (give or take the clocks' reading)."""
    interval_s = 0.3
    turns: list[float] = []

    async def turn(store: PostgresStore) -> None:
        await pacer(store, interval_s).take_turn(0)
        turns.append(time.monotonic())

    await asyncio.gather(*(turn(store) for store in stores for _ in range(2)))
    assert len(turns) == 6
    assert min(gaps(turns)) >= interval_s - 0.05, gaps(turns)


async def test_a_waiting_turn_holds_no_connection_and_other_buckets_go_at_once(
    postgres_url: str, stores: list[PostgresStore]
) -> None:
    """On a pool of one connection, a turn of bucket 0 waiting for the interval lets a turn of
    bucket 1 through at once; a process gone after its turn (its store closed) keeps its bucket
    no longer than the interval."""
    small = await PostgresStore.open(postgres_url, POLICY, pool_size=1)
    try:
        alone = pacer(small, interval_s=2.0)
        await alone.take_turn(0)
        waiting = asyncio.create_task(alone.take_turn(0))
        await asyncio.sleep(0.1)
        await alone.take_turn(1)
        assert not waiting.done()
        await waiting
    finally:
        await small.close()
    await pacer(stores[0], interval_s=0.5).take_turn(2)
    await stores[0].close()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(seconds)

    await SharedIdentifyPacer(stores[1].identify, interval_s=0.5, sleep=sleep).take_turn(2)
    assert 0 < sum(sleeps) <= 0.5


async def test_processes_crash_looping_together_stop_at_the_reserve_together(
    stores: list[PostgresStore],
) -> None:
    """Discord says 103 of 1,000 left (100 kept) to three processes starting four shards each
    at once: three starts are taken in all, the nine others wait. Discord counting more spent
    (starts made elsewhere) is believed; once its window has reset, starts are counted anew."""
    told = SessionStartLimit(total=1000, remaining=103, reset_after_s=0.5, max_concurrency=1)
    kept = told.reserve(shard_count=12)
    assert kept == 100
    pacers = [pacer(store) for store in stores]
    left = await asyncio.gather(*(p.take_start(told, kept) for p in pacers for _ in range(4)))
    assert sorted(left) == [100] * 9 + [101, 102, 103]
    assert await pacers[0].take_start(told, kept) == 100
    assert await pacers[1].take_start(SessionStartLimit(1000, 50, 0.5, 1), kept) == 50
    await asyncio.sleep(0.6)
    fresh = SessionStartLimit(total=1000, remaining=1000, reset_after_s=86_400, max_concurrency=1)
    assert [await p.take_start(fresh, kept) for p in pacers] == [1000, 999, 998]


async def test_two_processes_identify_through_the_loopback_discords_window(
    stores: list[PostgresStore],
) -> None:
    """A 1 s window enforced. With max_concurrency 2, shards of different buckets in two
    processes identify together. With max_concurrency 1, two processes starting two shards
    each at once (each its shards one after the other, as discord.py does) are all accepted,
    their IDENTIFYs at least the window apart."""
    limit = emulated.SessionStartLimit(max_concurrency=2)
    async with DiscordEmulator(
        validate_spec=False, identify_window_s=WINDOW_S, session_start_limit=limit
    ) as discord:
        await asyncio.gather(
            start_shards(discord, stores[0], [0], 2), start_shards(discord, stores[1], [1], 2)
        )
        identifies = [e for e in discord.gateway.log if e.op == "IDENTIFY"]
        assert [e.outcome for e in identifies] == ["ready"] * 2
        assert gaps(e.at for e in identifies)[0] < WINDOW_S / 2
        limit.max_concurrency = 1
        discord.gateway.log.clear()
        await asyncio.gather(
            start_shards(discord, stores[1], [0, 2], 4), start_shards(discord, stores[2], [1, 3], 4)
        )
        identifies = [e for e in discord.gateway.log if e.op == "IDENTIFY"]
        assert [e.outcome for e in identifies] == ["ready"] * 4
        assert min(gaps(e.at for e in identifies)) >= WINDOW_S


async def start_shards(
    discord: DiscordEmulator, store: PostgresStore, shard_ids: list[int], count: int
) -> None:
    """One process's shards, one after the other, each through its gate to READY."""
    gate = IdentifyGate(asking(discord), lambda: count, pacer(store))
    for shard_id in shard_ids:
        await gate.wait_for_starts(shard_id)
        await gate.before_identify(shard_id)
        async with raw_shard(discord, [shard_id, count]) as shard:
            await shard.until_event("READY")


async def test_without_an_answer_from_the_database_a_process_paces_alone(
    stores: list[PostgresStore], caplog: pytest.LogCaptureFixture
) -> None:
    """Its pool closed (the database unreachable): turns are this process's own, still an
    interval apart in a bucket, and the starts left are Discord's count; each said in the
    log."""
    await stores[0].close()
    alone = pacer(stores[0], interval_s=0.3)
    await alone.take_turn(0)
    started = time.monotonic()
    await alone.take_turn(0)
    assert time.monotonic() - started >= 0.25
    told = SessionStartLimit(total=1000, remaining=500, reset_after_s=60, max_concurrency=1)
    assert await alone.take_start(told, kept=100) == 500
    assert "this process paces its own IDENTIFYs" in caplog.text
    assert "session starts counted by Discord only" in caplog.text
