"""Reserve + settle throughput and latency with synchronous=FULL, one and two processes.

Run: ``.venv/bin/python -m tests.benchmarks.bench_ledger [--pairs N] [--guilds N]``.
Prints numbers; asserts nothing. Target on the 2-core dev machine: at least 3,000 pairs/s in
one process with p99 under 5 ms. The machine may be shared: the load average is printed too.
"""

from __future__ import annotations

import argparse
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
from stembot.errors import StembotError
from stembot.models import Mode, NewRequest, Separation, Stem
from stembot.store import Store

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


def _child(path: str, proc: int, pairs: int, guilds: int, start: Any, out: Any) -> None:
    out.put(run_pairs(Path(path), proc, pairs, guilds, start))


def run_two_processes(path: Path, pairs: int, guilds: int) -> tuple[Run, Run, float]:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(3)
    out = ctx.Queue()
    children = [
        ctx.Process(target=_child, args=(str(path), proc, pairs, guilds, start, out))
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
        print(first.line("two processes: #1"))
        print(second.line("two processes: #2"))
        total = first.pairs + second.pairs
        print(
            f"{'two processes: together':<26} {total / wall:>6.0f} pairs/s | "
            f"errors {first.errors + second.errors}"
        )
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
