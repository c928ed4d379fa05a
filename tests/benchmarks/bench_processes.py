"""Several bot processes on one PostgreSQL ledger (issue 14's benchmark): P processes with a
shard each, S servers spread over the shards, a burst of N `/stems vocals` spread over the
servers, every API call taking L seconds, one cap C for all processes together.

    STEMBOT_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
    .venv/bin/python -m tests.benchmarks.bench_processes [--n 1500] [--servers 30]
        [--processes 3] [--latency 2] [--concurrency 8] [--daily-limit 10] [--repeats 1]
        [--fleet-nice 5] [--no-floor] [--json PATH]

The crowd: each request by a member of its own; 80% one of five shared tracks, given as a
link (the same five links in every server: one source, whichever process its server is on),
20% a file of its own. Each server's daily limit (``--daily-limit`` units) binds, so the
ledger's quotas are raced by the processes. Every round runs stembot's processes and then
(unless ``--no-floor``) as many minimal discord.py bots (tests/benchmarks/floor_bot.py, one
per shard, on the same burst), and reports per process: acknowledgement p99, and its ratio to
the floor process on the same shard. Over the run: makespan against ``ceil(calls / C) * L``
(calls: the paid API calls the quotas let through), API calls per (source, mode) (= 1: no
source is called twice, across processes), the most calls at the API at once (<= C), and
over-grant (units charged to a server past its limit, = 0). Prints a table; asserts nothing.

The loopback Discord that stamps the acknowledgements runs in this process, on the same cores
as the bots and PostgreSQL: left at the bots' priority, it waited for a core while stembot's
processes and the database worked on the requests they had acknowledged (work a floor bot
never does), so stembot's acknowledgements were stamped late for the harness's sake. The bots
run ``--fleet-nice`` steps nicer than this process (both fleets alike), as the real Discord
never waits for a bot's CPU. From the burst to the last acknowledgement the table gives each
fleet's CPU per request (each bot, this harness, the run's PostgreSQL backends) against what
the machine's cores had, and how long each event loop waited for a core: when those waits
are a large part of the span, other work on the machine decided the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from tests.benchmarks import floor_bot
from tests.benchmarks.bench_event import all_answered, outcome_of, percentile, stop_bot
from tests.benchmarks.burst_cpu import Backends, CpuSample, sample_cpu, spent_until
from tests.benchmarks.columns import print_columns
from tests.e2e.stack import API_KEY, WAV, BotProcess, stack_env
from tests.postgres import admin_url, fresh_database
from tests.standins.discord import DiscordEmulator, Guild, InteractionRecord
from tests.standins.discord.sharding import SessionStartLimit
from tests.standins.soundverse import SoundverseStandin

SHARED_TRACKS = 5
SHARED_SHARE = 0.8
UNLIMITED = 10**8
STEMBOT, FLOOR = "stembot", "floor"
TARGETS = {
    "ack_p99_over_floor": "<= 1.15 per process",
    "makespan_ratio": "<= 1.05",
    "api_calls_per_source": "= 1",
    "api_max_in_flight": "<= C",
    "over_grant_units": "= 0",
}


@dataclass(frozen=True)
class Setup:
    n: int = 1500
    servers: int = 30
    processes: int = 3
    latency_s: float = 2.0
    concurrency: int = 8
    daily_limit: int = 10
    seed: int = 1
    # The bots' niceness, this process's plus it: Discord (here, this process) must not wait
    # for the bots' CPU, as the real one never does (see the module's doc).
    fleet_nice: int = 5


@dataclass
class Run:
    bot: str
    ack_p99_ms_by_process: list[float]
    ack_p50_ms: float
    outcomes: dict[str, int]
    refusals: dict[str, int] = field(default_factory=dict)
    makespan_s: float | None = None
    ideal_makespan_s: float | None = None
    makespan_ratio: float | None = None
    api_calls: int = 0
    sources_called: int = 0
    most_calls_of_one_source: int = 0
    api_max_in_flight: int = 0
    # After the burst: the first call's start, the last call's end (its start + L), and how
    # full the C turns were in between (calls x L over C x that span).
    first_call_s: float | None = None
    last_call_done_s: float | None = None
    turns_used: float | None = None
    units_charged: int = 0
    over_grant_units: int = 0
    # From the burst to the last acknowledgement: its span, and the CPU ms per request each
    # process spent in it (the bots', this harness's: the loopback Discord and the stand-in,
    # the database's backends), against the span's ms per request on the machine's cores.
    last_ack_s: float | None = None
    cpu_ms_per_request_by_process: list[float] = field(default_factory=list)
    harness_cpu_ms_per_request: float | None = None
    postgres_cpu_ms_per_request: float | None = None
    cores_ms_per_request: float | None = None
    # Of that span, the seconds each bot's event loop, then this harness's, waited for a core.
    waited_for_cpu_s: list[float] = field(default_factory=list)
    load_average: float | None = None  # the machine's, 1 minute, at the burst
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)


# --- the fleet ---------------------------------------------------------------------------------


def env_of(
    discord: DiscordEmulator, api: SoundverseStandin, setup: Setup, shard: int, url: str
) -> dict[str, str]:
    return {
        **stack_env(discord, api, Path(tempfile.gettempdir()) / "unused.db"),
        "STEMBOT_DATABASE_URL": url,
        "STEMBOT_SHARD_COUNT": str(setup.processes),
        "STEMBOT_SHARD_IDS": str(shard),
        "STEMBOT_MAX_CONCURRENT_JOBS": str(setup.concurrency),
        "STEMBOT_API_TIMEOUT_S": str(max(60.0, 10 * setup.latency_s)),
        "STEMBOT_GUILD_DAILY_LIMIT": str(setup.daily_limit),
        "STEMBOT_GUILD_MONTHLY_LIMIT": str(UNLIMITED),
        "STEMBOT_USER_DAILY_LIMIT": str(UNLIMITED),
        "STEMBOT_SHUTDOWN_GRACE_S": "2",
    }


@contextlib.asynccontextmanager
async def fleet(
    bot: str, discord: DiscordEmulator, api: SoundverseStandin, setup: Setup, workdir: Path
) -> AsyncIterator[tuple[str, list[int]]]:
    """The P processes of ``bot`` (stembot on a fresh database, or floor bots), ready on
    their shards; yields the database's URL (empty for the floor) and their pids."""
    module = "stembot" if bot == STEMBOT else floor_bot.__name__
    with fresh_database(admin_url()) if bot == STEMBOT else contextlib.nullcontext("") as url:
        bots = [
            BotProcess(
                env_of(discord, api, setup, shard, url or "postgresql://unused"),
                workdir / f"{bot}-{shard}.log",
                module=module,
            )
            for shard in range(setup.processes)
        ]
        for process in bots:
            await process.start()
            niceness = os.getpriority(os.PRIO_PROCESS, 0) + setup.fleet_nice
            os.setpriority(os.PRIO_PROCESS, process.pid, niceness)
        try:
            await discord.wait_shards(setup.processes, timeout_s=60)
            yield url, [process.pid for process in bots]
        finally:
            await asyncio.gather(*(stop_bot(process) for process in bots))


async def warm_up(discord: DiscordEmulator, setup: Setup, latency_s: float) -> None:
    """One request on every shard, in servers of their own: imports, pools, caches warm."""
    records = []
    for shard in range(setup.processes):
        guild = await discord.add_guild(f"warm-up {shard}", shard=(shard, setup.processes))
        member = discord.add_member(guild, "early-bird")
        track = discord.upload_attachment(
            WAV, "warm.wav", "audio/wav", channel=guild.default_channel
        )
        records.append(
            await discord.slash(
                "stems vocals",
                member=member,
                channel=guild.default_channel,
                options={"file": track},
            )
        )
    await all_answered(records, latency_s + 60)


def crowd(
    discord: DiscordEmulator, guilds: Sequence[Guild], setup: Setup
) -> list[tuple[Guild, Any, dict[str, Any]]]:
    """(server, member, options) per request: round robin over the servers."""
    rng = random.Random(setup.seed)
    links = [
        discord.upload_attachment(
            WAV, f"shared-{k}.wav", "audio/wav", channel=guilds[0].default_channel
        )["url"]
        for k in range(SHARED_TRACKS)
    ]
    plan = []
    for i in range(setup.n):
        guild = guilds[i % len(guilds)]
        member = discord.add_member(guild, f"member {i}")
        if rng.random() < SHARED_SHARE:
            options: dict[str, Any] = {"url": rng.choice(links)}
        else:
            track = discord.upload_attachment(
                WAV, f"own-{i}.wav", "audio/wav", channel=guild.default_channel
            )
            options = {"file": track}
        plan.append((guild, member, options))
    return plan


async def run(bot: str, setup: Setup, workdir: Path) -> Run:
    started = time.monotonic()
    limit = SessionStartLimit(max_concurrency=setup.processes)
    async with (
        DiscordEmulator(validate_spec=False, session_start_limit=limit) as discord,
        SoundverseStandin(api_key=API_KEY, latency=setup.latency_s) as api,
    ):
        guilds = [
            await discord.add_guild(f"server {n}", shard=(n % setup.processes, setup.processes))
            for n in range(setup.servers)
        ]
        async with fleet(bot, discord, api, setup, workdir) as (url, pids):
            await warm_up(discord, setup, setup.latency_s)
            plan = crowd(discord, guilds, setup)
            await asyncio.sleep(1.0)
            calls_before = len(api.requests)
            api.max_in_flight = api.in_flight
            backends = Backends(str(conninfo_to_dict(url)["dbname"])) if url else None
            stop, samples = asyncio.Event(), list[CpuSample]()
            sampler = asyncio.create_task(sample_cpu(pids, backends, stop, samples))
            first, first_mono = time.time(), time.monotonic()
            load = os.getloadavg()[0]
            records = list(
                await asyncio.gather(
                    *(
                        discord.slash(
                            "stems vocals", member=m, channel=g.default_channel, options=o
                        )
                        for g, m, o in plan
                    )
                )
            )
            await all_answered(
                records, timeout_s=3 * setup.n / setup.concurrency * setup.latency_s + 120
            )
            stop.set()
            await sampler
            result = summarise(bot, setup, discord, records, [g for g, _, _ in plan], first)
            cpu_figures(result, setup.n, samples, records, first)
            result.load_average = round(load, 2)
            if bot == STEMBOT:
                stembot_figures(result, setup, api, calls_before, url, guilds, first_mono)
    result.wall_s = round(time.monotonic() - started, 1)
    return result


def summarise(
    bot: str,
    setup: Setup,
    discord: DiscordEmulator,
    records: Sequence[InteractionRecord],
    guilds: Sequence[Guild],
    first: float,
) -> Run:
    outcomes = [outcome_of(r) for r in records]
    acks: dict[int, list[float]] = {shard: [] for shard in range(setup.processes)}
    for outcome, guild in zip(outcomes, guilds, strict=True):
        if outcome.ack_sent_at is not None:
            shard = discord.shard_of(guild, setup.processes)
            acks[shard].append((outcome.ack_sent_at - outcome.created_at) * 1000)
    every = [ms for values in acks.values() for ms in values]
    results = [o.answered_at for o in outcomes if o.kind == "result" and o.answered_at]
    kinds = Counter(o.kind for o in outcomes)
    run = Run(
        bot,
        [round(percentile(acks[s], 99), 1) if acks[s] else math.nan for s in sorted(acks)],
        round(percentile(every, 50), 1) if every else math.nan,
        dict(kinds),
    )
    run.refusals = dict(Counter(refusal_of(r) for r in records if outcome_of(r).kind == "refused"))
    if results and not kinds.get("pending"):
        run.makespan_s = round(max(results) - first, 2)
    if kinds.get("pending"):
        run.notes.append(f"{kinds['pending']} requests had no final answer")
    return run


def cpu_figures(
    run: Run,
    n: int,
    samples: Sequence[CpuSample],
    records: Sequence[InteractionRecord],
    first: float,
) -> None:
    acks = [o.ack_sent_at for o in map(outcome_of, records) if o.ack_sent_at is not None]
    if not acks or not samples:
        return
    spent = spent_until(samples, max(acks))
    run.last_ack_s = round(max(acks) - first, 2)
    run.cpu_ms_per_request_by_process = [round(s / n * 1000, 2) for s in spent.bots]
    run.harness_cpu_ms_per_request = round(spent.harness / n * 1000, 2)
    run.postgres_cpu_ms_per_request = round(spent.postgres / n * 1000, 2)
    run.cores_ms_per_request = round(spent.at * (os.cpu_count() or 1) / n * 1000, 2)
    run.waited_for_cpu_s = [round(w, 2) for w in spent.waited]


def refusal_of(record: InteractionRecord) -> str:
    """The start of the private line a refused member read."""
    view = record.view()
    texts = [str(m.get("content", "")) for m in [view.original, *view.followups] if m]
    return next((t[:50] for t in texts if t), "?")


def stembot_figures(
    run: Run,
    setup: Setup,
    api: SoundverseStandin,
    calls_before: int,
    url: str,
    guilds: Sequence[Guild],
    first_mono: float,
) -> None:
    calls = api.requests[calls_before:]
    if calls:
        starts = [call.received_at - first_mono for call in calls]
        run.first_call_s = round(min(starts), 2)
        run.last_call_done_s = round(max(starts) + setup.latency_s, 2)
        span = run.last_call_done_s - run.first_call_s
        run.turns_used = round(len(calls) * setup.latency_s / (setup.concurrency * span), 3)
    per_source = Counter(call.json()["audioUrl"] for call in calls)
    run.api_calls = len(calls)
    run.sources_called = len(per_source)
    run.most_calls_of_one_source = max(per_source.values(), default=0)
    run.api_max_in_flight = api.max_in_flight
    run.ideal_makespan_s = math.ceil(len(calls) / setup.concurrency) * setup.latency_s
    if run.makespan_s is not None and run.ideal_makespan_s:
        run.makespan_ratio = round(run.makespan_s / run.ideal_makespan_s, 3)
    with psycopg.connect(url) as conn:
        charged: dict[int, int] = dict(
            conn.execute(
                "SELECT guild_id, sum(cost) FROM requests WHERE cost > 0 "
                "AND status IN ('queued', 'running', 'succeeded') AND guild_id = ANY(%s) "
                "GROUP BY guild_id",
                ([g.id for g in guilds],),
            ).fetchall()
        )
    run.units_charged = int(sum(charged.values()))
    run.over_grant_units = int(sum(max(0, used - setup.daily_limit) for used in charged.values()))


# --- rounds and printing -------------------------------------------------------------------------


@dataclass
class Report:
    setup: Setup
    stembot: list[Run]
    floor: list[Run]

    def ratios(self) -> list[float]:
        """Per process: the median over rounds of stembot's ack p99 over the floor's."""
        per_round = [
            [
                s / f
                for s, f in zip(run.ack_p99_ms_by_process, base.ack_p99_ms_by_process, strict=True)
            ]
            for run, base in zip(self.stembot, self.floor, strict=True)
        ]
        return [
            round(statistics.median(r[p] for r in per_round), 2)
            for p in range(self.setup.processes)
        ]


async def run_all(setup: Setup, repeats: int, floor: bool) -> Report:
    report = Report(setup, [], [])
    with tempfile.TemporaryDirectory(prefix="bench-processes-") as work:
        for repeat in range(repeats):
            order = [STEMBOT, FLOOR] if repeat % 2 == 0 else [FLOOR, STEMBOT]
            for bot in order if floor else [STEMBOT]:
                result = await run(bot, setup, Path(work))
                (report.stembot if bot == STEMBOT else report.floor).append(result)
                print(f"{bot}: {json.dumps(asdict(result))}", file=sys.stderr)
    return report


def median_of(values: Sequence[float | None]) -> object:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else "-"


def cpu_rows(runs: Sequence[Run], processes: int) -> list[tuple[str, object]]:
    """The burst's CPU up to the last acknowledgement, medians of ``runs`` (one fleet's)."""
    if not runs:
        return []
    name = runs[0].bot
    per_process = [
        median_of([r.cpu_ms_per_request_by_process[p] for r in runs if r.last_ack_s])
        for p in range(processes)
    ]
    return [
        (
            f"{name}: load average at the bursts (1 min)",
            " / ".join(str(r.load_average) for r in runs),
        ),
        (f"{name}: last ack, s after the burst", median_of([r.last_ack_s for r in runs])),
        (f"{name}: CPU ms/request to it, per process", " / ".join(map(str, per_process))),
        (
            f"{name}: harness / PostgreSQL / all cores' ms/request",
            " / ".join(
                str(median_of([getattr(r, k) for r in runs]))
                for k in (
                    "harness_cpu_ms_per_request",
                    "postgres_cpu_ms_per_request",
                    "cores_ms_per_request",
                )
            ),
        ),
        (
            f"{name}: s waiting for a core, per process / harness",
            " / ".join(
                str(median_of([r.waited_for_cpu_s[p] for r in runs if r.waited_for_cpu_s]))
                for p in range(processes + 1)
            ),
        ),
    ]


def print_report(report: Report) -> None:
    setup = report.setup
    runs = report.stembot

    median = median_of
    rows: list[tuple[str, object]] = [
        ("processes / servers / N", f"{setup.processes} / {setup.servers} / {setup.n}"),
        ("L (s) / C (all processes)", f"{setup.latency_s:g} / {setup.concurrency}"),
        (
            "outcomes (last round)",
            ", ".join(f"{k} {v}" for k, v in sorted(runs[-1].outcomes.items())),
        ),
        (
            "ack p99 per process (ms)",
            " / ".join(
                str(median([r.ack_p99_ms_by_process[p] for r in runs]))
                for p in range(setup.processes)
            ),
        ),
    ]
    if report.floor:
        rows.append(
            (
                "floor ack p99 per process (ms)",
                " / ".join(
                    str(median([r.ack_p99_ms_by_process[p] for r in report.floor]))
                    for p in range(setup.processes)
                ),
            )
        )
        rows.append(("ack p99 over floor, per process", " / ".join(map(str, report.ratios()))))
    for fleet_runs in (runs, report.floor):
        rows += cpu_rows(fleet_runs, setup.processes)
    rows += [
        (
            "makespan / ideal (s)",
            f"{median([r.makespan_s for r in runs])} / "
            f"{median([r.ideal_makespan_s for r in runs])}",
        ),
        ("makespan ratio", median([r.makespan_ratio for r in runs])),
        ("API calls / sources called", f"{runs[-1].api_calls} / {runs[-1].sources_called}"),
        ("most calls of one source", max(r.most_calls_of_one_source for r in runs)),
        ("API calls at once (max)", max(r.api_max_in_flight for r in runs)),
        (
            "first call starts / last call ends (s)",
            f"{median([r.first_call_s for r in runs])} / "
            f"{median([r.last_call_done_s for r in runs])}",
        ),
        ("turns used between them", median([r.turns_used for r in runs])),
        (
            "units charged / over-grant",
            f"{runs[-1].units_charged} / {max(r.over_grant_units for r in runs)}",
        ),
    ]
    print_columns([("", f"median of {len(runs)} round(s)")] + [(k, str(v)) for k, v in rows])
    for name, target in TARGETS.items():
        print(f"target {name}: {target}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=Setup.n)
    parser.add_argument("--servers", type=int, default=Setup.servers)
    parser.add_argument("--processes", type=int, default=Setup.processes)
    parser.add_argument("--latency", type=float, default=Setup.latency_s, help="L, seconds")
    parser.add_argument("--concurrency", type=int, default=Setup.concurrency, help="C")
    parser.add_argument("--daily-limit", type=int, default=Setup.daily_limit)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=Setup.seed)
    parser.add_argument("--fleet-nice", type=int, default=Setup.fleet_nice)
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    setup = Setup(
        args.n,
        args.servers,
        args.processes,
        args.latency,
        args.concurrency,
        args.daily_limit,
        args.seed,
        args.fleet_nice,
    )
    report = asyncio.run(run_all(setup, args.repeats, floor=not args.no_floor))
    print_report(report)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "setup": asdict(setup),
                    "stembot": [asdict(r) for r in report.stembot],
                    "floor": [asdict(r) for r in report.floor],
                    "ack_p99_over_floor": report.ratios() if report.floor else None,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
