"""Reserve + settle on the PostgreSQL ledger with several processes (issue 14's target: at
least 2,000 pairs/s with 4 processes, zero over-grant), beside another implementation.

Run: ``.venv/bin/python -m tests.benchmarks.bench_postgres_ledger [--url URL]
[--baseline DIR] [--rounds N] [--processes N] [--pairs N] [--clients N] [--guilds N]
[--budget N]``; the URL defaults to STEMBOT_TEST_POSTGRES_URL. ``--baseline`` names another
checkout of stembot (``git worktree add /tmp/base <commit>``): each round then measures it and
this one, the order flipping every round, each on a database of its own made on that server
and dropped afterwards, and prints the ratio per round and the medians. ``--budget`` sets a
bot-wide daily budget of paid calls (far above what the run uses: the check and its lock are
paid, nothing is refused). Prints numbers; asserts nothing. The machine may be shared: the
load average is printed with every run.

Each run: ``--processes`` processes of ``--clients`` requesters each reserve and settle
``--pairs`` requests over ``--guilds`` servers, after a warm-up; then the same processes race
for one server's last units (its limit set to ``--race-units``, each process asking for all of
them), and for a bot-wide budget of ``--race-units`` paid calls spread over the servers: every
unit or call granted past the limit is an over-grant. The CPU per pair is the bot processes'
own and that of the server processes serving their connections (/proc: the server must run on
this machine), which holds when other work shares the cores and pairs/s does not.

Measured 2026-12-07 (README "Benchmarks", load average 4.1-8.4 from other sessions): 550 pairs/s
(median of 3, 376-556) against 256 (228-301) for 7781f9c, 1.84 times (1.65-2.15 per round);
CPU per pair 0.90 + 1.36 ms (bot + server) against 1.79 + 2.15; over-grant 0 in every race.
Again against 8f681cd (load 1.2-9.0): 565 (477-895) against 330 (288-567), 1.58 times.
Below the 2,000 target: the bound is CPU per pair, 2.3 ms, so at most about 880 pairs/s on two
idle cores. With ``--budget``: 208 pairs/s (191-224) against 63 (50-76), 3.37 times, over-grant
0; every paid reservation waits for the budget's lock, which it now holds for one statement.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from stembot.config import QuotaPolicy
from stembot.errors import QuotaLimitReached
from stembot.store.postgres import PostgresStore
from tests.benchmarks.bench_ledger import NOW, POLICY, WARM_UP, Run, _drive, _percentiles, _request
from tests.postgres import URL_VARIABLE, empty_tables, fresh_database

HERE = Path(__file__).resolve()
THIS_TREE = HERE.parents[2]


def _policy(budget: int | None) -> QuotaPolicy:
    return dataclasses.replace(POLICY, api_daily_budget=budget)


@dataclasses.dataclass
class Pairs:
    """One process's pairs, and the CPU they took: its own and its database connections'."""

    run: Run
    client_cpu_s: float
    server_cpu_s: float


def _child(
    url: str,
    proc: int,
    pairs: int,
    guilds: int,
    clients: int,
    budget: int | None,
    start: Any,
    out: Any,
) -> None:
    os.environ["PGAPPNAME"] = f"bench-{proc}"  # names this process's connections
    out.put(asyncio.run(_pairs(url, proc, pairs, guilds, clients, budget, start)))


async def _pairs(
    url: str, proc: int, pairs: int, guilds: int, clients: int, budget: int | None, start: Any
) -> Pairs:
    store = await PostgresStore.open(url, _policy(budget), busy_timeout_s=30, pool_size=clients)
    try:
        await _drive(store, proc, -WARM_UP, 0, guilds, clients)
        await asyncio.to_thread(start.wait, 120)
        server = await _server_cpu(store)
        client = time.process_time()
        began = time.perf_counter()
        pair_ms, reserve_ms, errors = await _drive(store, proc, 0, pairs, guilds, clients)
        seconds = time.perf_counter() - began
        client = time.process_time() - client
        after = await _server_cpu(store)
        server = {pid: cpu - server.get(pid, 0.0) for pid, cpu in after.items()}
    finally:
        await store.close()
    return Pairs(Run(pairs, seconds, pair_ms, reserve_ms, errors), client, sum(server.values()))


async def _server_cpu(store: PostgresStore) -> dict[int, float]:
    """CPU seconds so far of each server process serving this process's connections (the
    server runs on this machine: its /proc). Asked on one of them: the server's
    connections are shared with whatever else runs on it."""
    async with store._db.connection() as conn:
        cursor = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (os.environ["PGAPPNAME"],),
        )
        pids = [pid for (pid,) in await cursor.fetchall()]
    return _cpu_of(pids)


def _cpu_of(pids: list[int]) -> dict[int, float]:
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / tick
    return used


def _race(url: str, proc: int, units: int, clients: int, guilds: int, start: Any, out: Any) -> None:
    out.put(asyncio.run(_contend(url, proc, units, clients, guilds, start)))


async def _contend(
    url: str, proc: int, units: int, clients: int, guilds: int, start: Any
) -> tuple[int, int]:
    """Ask for ``units`` units: of server 1 (its limit set to ``units``) when ``guilds`` is 1,
    else spread over ``guilds`` servers under a bot-wide budget of ``units`` paid calls."""
    budget = None if guilds == 1 else units
    store = await PostgresStore.open(url, _policy(budget), busy_timeout_s=30, pool_size=clients)
    if guilds == 1:
        await store.guilds.set_limits(1, daily=units, monthly=units, per_user=units)
    counted = iter(range(units))  # each process alone asks for all of it
    granted = refused = 0

    async def client() -> None:
        nonlocal granted, refused
        for index in counted:
            try:
                await store.ledger.reserve(_request(proc + 100, index, guilds), NOW)
                granted += 1
            except QuotaLimitReached:
                refused += 1

    try:
        await asyncio.to_thread(start.wait, 120)
        await asyncio.gather(*(client() for _ in range(clients)))
    finally:
        await store.close()
    return granted, refused


def _in_processes(target: Any, count: int, *args: Any) -> tuple[list[Any], float]:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(count + 1)
    out = ctx.Queue()
    children = [
        ctx.Process(target=target, args=(*args[:1], proc, *args[1:], start, out))
        for proc in range(1, count + 1)
    ]
    for child in children:
        child.start()
    start.wait(180)
    began = time.perf_counter()
    results = [out.get(timeout=900) for _ in children]
    wall = time.perf_counter() - began
    for child in children:
        child.join(30)
    return results, wall


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One run of the implementation importable here, on the empty database ``args.url``."""
    import stembot

    asyncio.run(_migrate(args.url, args.budget))
    load = os.getloadavg()[0]
    runs, wall = _in_processes(
        _child, args.processes, args.url, args.pairs, args.guilds, args.clients, args.budget
    )
    pair_ms = [ms for done in runs for ms in done.run.pair_ms]
    reserve_ms = [ms for done in runs for ms in done.run.reserve_ms]
    total = sum(done.run.pairs for done in runs)
    p50, p99, worst = _percentiles(pair_ms)
    over = {}
    for label, guilds in (("server", 1), ("budget", args.guilds)):
        empty_tables(args.url)
        results, _ = _in_processes(
            _race, args.processes, args.url, args.race_units, args.clients, guilds
        )
        granted = sum(r[0] for r in results)
        over[label] = {"granted": granted, "refused": sum(r[1] for r in results)}
    return {
        "tree": str(Path(stembot.__file__).parents[1]),
        "load": load,
        "load_after": os.getloadavg()[0],
        "pairs_s": total / wall,
        "client_ms": sum(done.client_cpu_s for done in runs) / total * 1000,
        "server_ms": sum(done.server_cpu_s for done in runs) / total * 1000,
        "p50": p50,
        "p99": p99,
        "max": worst,
        "reserve_p99": _percentiles(reserve_ms)[1],
        "errors": sum(done.run.errors for done in runs),
        "race": over,
    }


async def _migrate(url: str, budget: int | None) -> None:
    await (await PostgresStore.open(url, _policy(budget))).close()


def _run_tree(tree: Path, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """A run of the stembot checked out at ``tree``, in a fresh database, as a process of its
    own (its modules importable first)."""
    options = ["--processes", args.processes, "--pairs", args.pairs, "--clients", args.clients]
    options += ["--guilds", args.guilds, "--race-units", args.race_units]
    if args.budget is not None:
        options += ["--budget", args.budget]
    with fresh_database(url) as fresh:
        done = subprocess.run(
            [sys.executable, str(HERE), "--measure", "--url", fresh, *map(str, options)],
            env={**os.environ, "PYTHONPATH": str(tree)},
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"the run of {tree} failed (its errors above)")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _line(label: str, run: dict[str, Any], units: int) -> str:
    server, budget = run["race"]["server"], run["race"]["budget"]
    return (
        f"{label:<10} {run['pairs_s']:>6.0f} pairs/s | pair p50 {run['p50']:6.1f} p99 "
        f"{run['p99']:6.1f} max {run['max']:7.1f} ms | reserve p99 {run['reserve_p99']:6.1f} ms "
        f"| CPU per pair: client {run['client_ms']:.2f} server {run['server_ms']:.2f} ms "
        f"| errors {run['errors']} | over-grant: server {max(0, server['granted'] - units)} "
        f"({server['granted']} of {units}), budget {max(0, budget['granted'] - units)} "
        f"({budget['granted']} of {units}) | load {run['load']:.1f} -> {run['load_after']:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", default=os.environ.get(URL_VARIABLE), help=f"server (default ${URL_VARIABLE})"
    )
    parser.add_argument("--baseline", type=Path, help="another stembot checkout, measured beside")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=5000, help="pairs per process (default 5000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent requesters per process")
    parser.add_argument("--guilds", type=int, default=100, help="guilds the requests spread over")
    parser.add_argument("--budget", type=int, help="a bot-wide daily budget of paid calls")
    parser.add_argument("--race-units", type=int, default=1000, help="units the processes race for")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.url:
        parser.error(f"give --url or set {URL_VARIABLE}")
    if args.measure:
        print(json.dumps(measure(args)))
        return

    trees = {"this": THIS_TREE}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    print(
        f"cores {os.cpu_count()}  load {os.getloadavg()[0]:.2f}  processes {args.processes}  "
        f"clients {args.clients} each  pairs {args.pairs} each  guilds {args.guilds}  "
        f"budget {args.budget}  " + "  ".join(f"{k}: {v}" for k, v in trees.items())
    )
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
    for round_ in range(args.rounds):
        order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
        for label in order:
            runs[label].append(_run_tree(trees[label], args.url, args))
            print(_line(f"#{round_ + 1} {label}", runs[label][-1], args.race_units), flush=True)
        if len(trees) == 2:
            ratio = runs["this"][-1]["pairs_s"] / runs["baseline"][-1]["pairs_s"]
            print(f"#{round_ + 1} pairs/s this / baseline: {ratio:.2f}", flush=True)
    for label, measured in runs.items():
        cpu_ms = _median(measured, "client_ms") + _median(measured, "server_ms")
        print(
            f"median {label:<9} {_median(measured, 'pairs_s'):>6.0f} pairs/s "
            f"(range {min(r['pairs_s'] for r in measured):.0f}-"
            f"{max(r['pairs_s'] for r in measured):.0f}) | pair p99 "
            f"{_median(measured, 'p99'):.1f} ms | CPU per pair "
            f"{cpu_ms:.2f} ms (client {_median(measured, 'client_ms'):.2f}, server "
            f"{_median(measured, 'server_ms'):.2f}): {os.cpu_count() or 1} idle cores would "
            f"take at most {(os.cpu_count() or 1) * 1000 / cpu_ms:.0f} pairs/s"
        )
    if len(trees) == 2:
        ratios = [t["pairs_s"] / b["pairs_s"] for t, b in zip(*runs.values(), strict=True)]
        print(f"median ratio this / baseline: {statistics.median(ratios):.2f}")


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


if __name__ == "__main__":
    main()
