"""Reserve + settle throughput and latency with synchronous=FULL, one and two processes.

Run: ``.venv/bin/python -m tests.benchmarks.bench_ledger [--pairs N] [--guilds N]``.
Prints numbers; asserts nothing. The machine may be shared: the load average is printed too.

Two ways in: the synchronous store, one pair after another (one fsync per commit caps it at
half the bare commit rate), and the asynchronous store the bot uses, with ``--clients``
concurrent requesters whose writes share commits (group commit). Target for the latter: at
least 5,000 durable pairs/s, p99 under 5 ms, and zero over-grant with two processes
contending for one server's last units.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import multiprocessing
import os
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stembot.config import QuotaPolicy
from stembot.errors import QuotaLimitReached, StembotError
from stembot.models import Mode, NewRequest, Separation, Stem
from stembot.store import Store
from stembot.store.asynchronous import AsyncStore
from stembot.store.interface import LedgerStore

NOW = datetime(2026, 5, 14, 12, 0, tzinfo=UTC)
# Limits no benchmark run reaches: every reserve does the full check and then records.
POLICY = QuotaPolicy(
    guild_daily_limit=10**8,
    guild_monthly_limit=10**8,
    user_daily_limit=10**8,
    user_active_jobs=10**8,
)
SEPARATION = Separation(
    mode=Mode.VOCALS,
    stems=(Stem("vocals", "https://stems.example/vocals.mp3"),),
    issued_at=NOW,
)
WARM_UP = 200


def _percentiles(latencies_ms: list[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies_ms)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99, ordered[-1]


@dataclass
class Run:
    pairs: int
    seconds: float
    pair_ms: list[float]
    reserve_ms: list[float]
    errors: int

    def line(self, label: str) -> str:
        p50, p99, worst = _percentiles(self.pair_ms)
        r50, r99, _ = _percentiles(self.reserve_ms)
        return (
            f"{label:<26} {self.pairs / self.seconds:>6.0f} pairs/s | pair p50 {p50:5.2f} "
            f"p99 {p99:5.2f} max {worst:7.2f} ms | reserve p50 {r50:5.2f} p99 {r99:5.2f} ms "
            f"| errors {self.errors}"
        )


def _request(proc: int, index: int, guilds: int) -> NewRequest:
    ident = proc * 10**9 + index
    return NewRequest(
        guild_id=1 + index % guilds,
        channel_id=7,
        user_id=1000 + index % 500,
        interaction_id=ident,
        mode=Mode.VOCALS,
        source_url="https://cdn.example/a.mp3",
        source_name="a.mp3",
        source_key=f"attachment:{ident}",
    )


def run_pairs(path: Path, proc: int, pairs: int, guilds: int, start: Any = None) -> Run:
    """Reserve then settle ``pairs`` requests on one connection, timing each pair."""
    store = Store.open(path, POLICY)
    try:
        for index in range(WARM_UP):
            _pair(store, _request(proc, -1 - index, guilds))
        if start is not None:
            start.wait(60)
        pair_ms: list[float] = []
        reserve_ms: list[float] = []
        errors = 0
        began = time.perf_counter()
        for index in range(pairs):
            t0 = time.perf_counter()
            try:
                reserved = _pair(store, _request(proc, index, guilds))
            except StembotError:
                errors += 1
                reserved = time.perf_counter()
            done = time.perf_counter()
            pair_ms.append((done - t0) * 1000)
            reserve_ms.append((reserved - t0) * 1000)
        seconds = time.perf_counter() - began
    finally:
        store.close()
    return Run(pairs, seconds, pair_ms, reserve_ms, errors)


def _pair(store: Store, asked: NewRequest) -> float:
    """Reserve then settle one request; returns when the reservation was done."""
    request = store.ledger.reserve(asked, NOW)
    reserved = time.perf_counter()
    store.ledger.settle(request.id, SEPARATION, asked.source_key, NOW)
    return reserved


def run_async_pairs(
    path: Path, proc: int, pairs: int, guilds: int, clients: int, start: Any = None
) -> Run:
    """``pairs`` reserve+settle pairs through the asynchronous store, ``clients`` at a time."""
    return asyncio.run(_async_pairs(path, proc, pairs, guilds, clients, start))


async def _async_pairs(
    path: Path, proc: int, pairs: int, guilds: int, clients: int, start: Any
) -> Run:
    store = await AsyncStore.open(path, POLICY)
    try:
        await _drive(store, proc, -WARM_UP, 0, guilds, clients)
        if start is not None:
            await asyncio.to_thread(start.wait, 60)
        began = time.perf_counter()
        pair_ms, reserve_ms, errors = await _drive(store, proc, 0, pairs, guilds, clients)
        seconds = time.perf_counter() - began
    finally:
        await store.close()
    return Run(pairs, seconds, pair_ms, reserve_ms, errors)


async def _drive(
    store: LedgerStore, proc: int, first: int, end: int, guilds: int, clients: int
) -> tuple[list[float], list[float], int]:
    indexes = iter(range(first, end))
    pair_ms: list[float] = []
    reserve_ms: list[float] = []
    errors = 0

    async def client() -> None:
        nonlocal errors
        for index in indexes:
            request = _request(proc, index, guilds)
            t0 = time.perf_counter()
            try:
                job = await store.ledger.reserve(request, NOW)
                reserved = time.perf_counter()
                await store.ledger.settle(job.id, SEPARATION, request.source_key, NOW)
            except StembotError:
                errors += 1
                reserved = time.perf_counter()
            pair_ms.append((time.perf_counter() - t0) * 1000)
            reserve_ms.append((reserved - t0) * 1000)

    await asyncio.gather(*(client() for _ in range(clients)))
    return pair_ms, reserve_ms, errors


def contend_for_the_last_units(path: Path, limit: int, clients: int) -> tuple[int, int]:
    """Two processes, ``clients`` requesters each, race for one server's ``limit`` units;
    (granted, refused) in all. Anything granted past the limit is an over-grant."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(3)
    out = ctx.Queue()
    children = [
        ctx.Process(target=_contender, args=(str(path), proc, limit, clients, start, out))
        for proc in (1, 2)
    ]
    for child in children:
        child.start()
    start.wait(120)
    results = [out.get(timeout=600), out.get(timeout=600)]
    for child in children:
        child.join(30)
    return sum(r[0] for r in results), sum(r[1] for r in results)


def _contender(path: str, proc: int, limit: int, clients: int, start: Any, out: Any) -> None:
    out.put(asyncio.run(_contend(Path(path), proc, limit, clients, start)))


async def _contend(path: Path, proc: int, limit: int, clients: int, start: Any) -> tuple[int, int]:
    policy = QuotaPolicy(
        guild_daily_limit=limit,
        guild_monthly_limit=limit,
        user_daily_limit=limit,
        user_active_jobs=10**8,
    )
    store = await AsyncStore.open(path, policy, busy_timeout_s=30)
    counted = itertools.count()
    granted = refused = 0

    async def client() -> None:
        nonlocal granted, refused
        while (index := next(counted)) < limit:  # each process alone asks for all of it
            request = dataclasses.replace(_request(proc, index, 1), guild_id=1)
            try:
                await store.ledger.reserve(request, NOW)
                granted += 1
            except QuotaLimitReached:
                refused += 1

    try:
        await asyncio.to_thread(start.wait, 60)
        await asyncio.gather(*(client() for _ in range(clients)))
    finally:
        await store.close()
    return granted, refused


def commit_floor(path: Path, commits: int = 2000) -> float:
    """Bare one-row commits per second with WAL and synchronous=FULL: the disk's fsync floor."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (n INTEGER)")
        began = time.perf_counter()
        for n in range(commits):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?)", (n,))
            conn.execute("COMMIT")
        return commits / (time.perf_counter() - began)
    finally:
        conn.close()


def _child(
    path: str, proc: int, pairs: int, guilds: int, clients: int, start: Any, out: Any
) -> None:
    if clients:
        out.put(run_async_pairs(Path(path), proc, pairs, guilds, clients, start))
    else:
        out.put(run_pairs(Path(path), proc, pairs, guilds, start))


def run_two_processes(
    path: Path, pairs: int, guilds: int, clients: int = 0
) -> tuple[Run, Run, float]:
    """Both processes at once: synchronous (``clients`` 0) or asynchronous stores."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(3)
    out = ctx.Queue()
    children = [
        ctx.Process(target=_child, args=(str(path), proc, pairs, guilds, clients, start, out))
        for proc in (1, 2)
    ]
    for child in children:
        child.start()
    start.wait(120)
    began = time.perf_counter()
    first, second = out.get(timeout=600), out.get(timeout=600)
    wall = time.perf_counter() - began
    for child in children:
        child.join(30)
    return first, second, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5000, help="pairs per run (default 5000)")
    parser.add_argument("--guilds", type=int, default=100, help="guilds the requests spread over")
    parser.add_argument(
        "--clients", type=int, default=64, help="concurrent requesters on the asynchronous store"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_ledger_") as tmp:
        folder = Path(tmp)
        probe = Store.open(folder / "probe.db", POLICY)
        sync = probe.connection.db.conn.execute("PRAGMA synchronous").fetchone()[0]
        probe.close()
        print(
            f"cores {os.cpu_count()}  load {os.getloadavg()[0]:.2f}  synchronous={sync} "
            f"(2 = FULL)  WAL  pairs {args.pairs}  guilds {args.guilds}  temp dir {folder}"
        )

        floor = commit_floor(folder / "floor.db")
        print(
            f"{'bare commits (fsync floor)':<26} {floor:>6.0f} commits/s, so at most "
            f"{floor / 2:.0f} pairs/s (a pair is two durable commits)"
        )

        one = run_pairs(folder / "one.db", 1, args.pairs, args.guilds)
        print(one.line("one process"))

        hot = run_pairs(folder / "hot.db", 1, args.pairs, 1)
        print(hot.line("one process, one guild"))

        first, second, wall = run_two_processes(folder / "two.db", args.pairs, args.guilds)
        _print_two("two processes", first, second, wall)

        grouped = run_async_pairs(folder / "async.db", 1, args.pairs, args.guilds, args.clients)
        print(grouped.line(f"async, {args.clients} clients"))
        print(
            f"{'':<26} {one.pairs / one.seconds:>6.0f} -> {grouped.pairs / grouped.seconds:.0f} "
            f"pairs/s: x{one.seconds / grouped.seconds:.2f} against one process above"
        )

        first, second, wall = run_two_processes(
            folder / "async-two.db", args.pairs, args.guilds, args.clients
        )
        _print_two("async, two processes", first, second, wall)

        limit = args.pairs // 2
        granted, refused = contend_for_the_last_units(folder / "race.db", limit, args.clients)
        print(
            f"{'async, two processes race':<26} limit {limit} units, granted {granted}, "
            f"refused {refused}: over-grant {max(0, granted - limit)}"
        )
        print(f"load average after: {os.getloadavg()[0]:.2f}")


def _print_two(label: str, first: Run, second: Run, wall: float) -> None:
    print(first.line(f"{label}: #1"))
    print(second.line(f"{label}: #2"))
    print(
        f"{label + ': together':<26} {(first.pairs + second.pairs) / wall:>6.0f} pairs/s | "
        f"errors {first.errors + second.errors}"
    )


if __name__ == "__main__":
    main()
