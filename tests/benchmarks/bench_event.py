"""A remix event: N members run `/stems vocals` at once while every API call takes L seconds.

The real bot runs as its own OS process (`python -m stembot run`), so the memory and CPU
figures are the bot's alone; the loopback Discord (OpenAPI check off: it is not what is
measured) and the Soundverse stand-in (fixed latency L) run in this process.

    .venv/bin/python -m tests.benchmarks.bench_event [--n 500] [--latency 2] [--concurrency 8]
                                                     [--quota] [--floor] [--repeats 1]
                                                     [--json PATH]
    .venv/bin/python -m tests.benchmarks.bench_event --audio [--n 1000] [--stem-seconds 30]
                                                     [--stem-format mp3] [--repeats 1]
    .venv/bin/python -m tests.benchmarks.bench_event --standard [--json PATH]
    .venv/bin/python -m tests.benchmarks.bench_event --card [--n 1000] [--repeats 3]

The crowd: N distinct members; 80% pick one of five shared tracks (uploaded once, the same
attachment reused), 20% send a track of their own. `--quota` adds a run where the guild's
daily limit binds (300 members, 300 distinct tracks, 100 units allowed). `--standard` runs
N = 500, 1000 and 2000 and the quota run. Prints a table, writes JSON; asserts nothing.
`--floor` also runs the same burst, through the same harness, against a minimal discord.py bot
that only defers and then edits with a link button (tests/benchmarks/floor_bot.py), alternating
stembot and floor runs (the order flips every repeat, so machine noise hits both), and reports
stembot's acknowledgement p99 over the floor's: medians over `--repeats` rounds.
`--audio` runs the same burst (N=1000 unless `--n` says) twice a round, results with links only
(STEMBOT_ATTACH_STEMS=false) and with their files (true, `--audio-workers` workers), alternating
which goes first, the stand-in serving `--stem-seconds` long stems in `--stem-format`; both runs
start the bot through tests/benchmarks/loop_lag.py, which records its event loop's lag. Each
reports acknowledgements, makespan, the loop lag p99 from the burst to the last result's files
(links only: to the last result), and with files: the results that got them, stem fetches
against stems attached (cache hits) and the audio workers' CPU and peak memory.
`--card` runs a remix event instead (tests/benchmarks/event_card.py): N members (1000 unless
`--n` says) click one event card's buttons at once, 60% Vocals, 30% All stems, 10%
Instruments, each API call taking L; each round also runs the `/stems vocals` burst of the
same N, alternating which goes first, and reports the card's acknowledgement p99 over the
burst's (the median of the rounds' ratios), the event's paid calls against the modes used, the
public messages (the card, its edits) and the private answers. Files off, as in every run but
--audio's. "KiB per held request" is then per pending click: acknowledged, stems not yet sent.
An acknowledgement that arrives after Discord's 3 s (refused) counts at the time it arrived,
so an overloaded run shows its real latency; "CPU ms/request to the last ack" is the CPU the
bot (and the harness) spent from the burst to the last acknowledgement, divided by N.
Developer aids: `--timings PATH` writes raw per-request and per-call times, `--profile PATH`
runs py-spy on the bot during the burst (py-spy is not a dependency: pip install it to use).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import dataclasses
import json
import math
import os
import platform
import random
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stembot.config import QuotaPolicy
from stembot.models import Mode
from stembot.store import Store
from tests.benchmarks import floor_bot, loop_lag
from tests.benchmarks.bot_workers import cpu_between, peak_kib, workers_of
from tests.benchmarks.columns import print_columns
from tests.benchmarks.event_audio import (
    OFF,
    ON,
    AudioComparison,
    AudioRound,
    FilesReport,
    FilesSetup,
    FilesState,
    RunFigures,
    compare,
    files_report,
    files_state,
    print_comparison,
)
from tests.benchmarks.event_card import (
    BURST,
    CARD,
    CARD_N,
    CardComparison,
    CardReport,
    CardRound,
    CardSetup,
    card_crowd,
    card_report,
    card_rows,
    card_settled,
    click_all,
    modes_used,
    open_event,
    warm_up_card,
)
from tests.benchmarks.event_card import compare as compare_card
from tests.benchmarks.event_card import print_comparison as print_card_comparison
from tests.benchmarks.loop_lag import LAG_FILE_VARIABLE, LoopLag, read_lag
from tests.e2e.remix_event_cards import Event
from tests.e2e.stack import API_KEY, WAV, BotProcess, stack_env
from tests.standins.discord import (
    EPHEMERAL,
    LOADING,
    Channel,
    DiscordEmulator,
    Guild,
    InteractionRecord,
    Member,
)
from tests.standins.soundverse import SoundverseStandin

UNLIMITED = 10**8
SHARED_TRACKS = 5
SHARED_SHARE = 0.8
ACK_WINDOW_S = 3.0
SAMPLE_EVERY_S = 0.05
LINK_BUTTON = 5
STANDARD_SIZES = (500, 1000, 2000)
QUOTA_RUN = {"n": 300, "daily_limit": 100}
TARGETS = {
    "acked_within_3s_share": "= 1.0 (at N=1000)",
    "ack_p99_ms": "< 250 (at N=1000)",
    "makespan_ratio": "<= 1.05",
    "api_calls_per_unique_pair": "= 1",
    "kib_per_held_request": "< 32",
    "over_grant_units": "= 0",
    "ack_p99_over_floor": "<= 1.15 (at N=1000, median over repeats)",
    "loop_lag_p99_ms": "< 50",
    "ack_p99_files_on_over_off": "<= 1.0 (no worse than links only, same invocation)",
    "card_acked_within_3s_share": "= 1.0",
    "card_ack_p99_over_burst": "<= 1.0 (same N, median over repeats)",
    "card_paid_calls": "= modes used",
    "card_public_messages": "= 1 (the card, edited at most once per 10 s)",
}
STEMBOT, FLOOR = "stembot", "floor"
BOT_MODULES = {STEMBOT: "stembot", FLOOR: floor_bot.__name__}
AUDIO_N = 1000
# What --audio serves by default: MP3 at 320 kb/s, as separation services serve stems; 30 s
# keeps a round within minutes on two cores (a 4-minute result is bench_audio --card's).
AUDIO_STEM_SECONDS = 30.0
AUDIO_STEM_FORMAT = "mp3"
AUDIO_WORKERS = 2


# --- the bot process, seen from /proc ---------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    at: float  # time.time()
    rss_kib: int
    hwm_kib: int
    cpu_s: float
    harness_cpu_s: float  # this process (emulator + stand-in), for comparison


def harness_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proc_sample(pid: int) -> ProcSample:
    """VmRSS, VmHWM and utime+stime of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text()
    after_name = stat[stat.rindex(")") + 2 :].split()
    ticks = int(after_name[11]) + int(after_name[12])  # utime, stime (fields 14, 15)
    return ProcSample(
        time.time(),
        int(fields["VmRSS"].split()[0]),
        int(fields["VmHWM"].split()[0]),
        ticks / os.sysconf("SC_CLK_TCK"),
        harness_cpu(),
    )


async def sample_until(pid: int, stop: asyncio.Event, into: list[ProcSample]) -> None:
    while not stop.is_set():
        into.append(proc_sample(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)


# --- what each user saw -----------------------------------------------------------------------


@dataclass
class Outcome:
    """One interaction's fate as the emulator recorded it."""

    created_at: float
    acked_at: float | None
    answered_at: float | None  # result with link buttons, a refusal, or another final answer
    kind: str  # "result", "refused", "other", "no_ack", "pending"
    ack_sent_at: float | None = None  # acked_at, or when a late ack arrived (refused)


def _has_link_button(data: dict[str, Any]) -> bool:
    return any(
        child.get("style") == LINK_BUTTON
        for row in data.get("components") or []
        for child in row.get("components") or []
    )


def _is_status(data: dict[str, Any]) -> bool:
    embeds = data.get("embeds") or []
    return bool(embeds) and "I'll update this message" in str(embeds[0].get("description", ""))


def outcome_of(record: InteractionRecord) -> Outcome:
    acked = record.acked_at
    sent = acked if acked is not None else record.late_ack_at
    for message in record.followups:
        if message.data.get("flags", 0) & EPHEMERAL:
            return Outcome(record.created_at, acked, message.created_at, "refused", sent)
    original = record.original
    if original is not None and original.deleted_at is None:
        for at, data in original.history:
            if _has_link_button(data):
                return Outcome(record.created_at, acked, at, "result", sent)
        last_at, last = original.history[-1]
        if not (last.get("flags", 0) & LOADING) and not _is_status(last):
            return Outcome(record.created_at, acked, last_at, "other", sent)
    if acked is None and record.failed:
        return Outcome(record.created_at, None, None, "no_ack", sent)
    return Outcome(record.created_at, acked, None, "pending", sent)


async def all_answered(records: Sequence[InteractionRecord], timeout_s: float) -> None:
    """Wait until every interaction got its final answer (or failed); bounded."""
    pending = list(records)
    give_up = time.monotonic() + timeout_s
    while pending and time.monotonic() < give_up:
        pending = [r for r in pending if outcome_of(r).kind == "pending"]
        await asyncio.sleep(0.1)


# --- numbers ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def held_at(outcomes: Sequence[Outcome], moments: Sequence[float]) -> list[int]:
    """Requests the bot held (acknowledged, not yet answered) at each moment."""
    acks = sorted(o.acked_at for o in outcomes if o.acked_at is not None)
    ends = sorted(o.answered_at for o in outcomes if o.acked_at and o.answered_at is not None)
    return [bisect.bisect_right(acks, t) - bisect.bisect_right(ends, t) for t in moments]


@dataclass
class Config:
    n: int
    latency_s: float
    concurrency: int
    daily_limit: int | None = None  # None: limits high enough never to bind
    shared_share: float = SHARED_SHARE
    seed: int = 1
    bot: str = STEMBOT  # or FLOOR: the minimal discord.py bot
    repeat: int = 1
    files: FilesSetup | None = None  # --audio: links only or with files, loop lag recorded
    card: CardSetup | None = None  # --card: clicks on one event's card, not `/stems`


@dataclass
class Result:
    config: Config
    unique_pairs: int
    dispatch_s: float
    ack_ms: dict[str, float]
    acked_within_3s_share: float
    outcomes: dict[str, int]
    makespan_s: float | None
    ideal_makespan_s: float
    makespan_ratio: float | None
    api_calls: int
    api_first_call_s: float | None  # after the first dispatch
    api_last_call_done_s: float | None  # the last call's start + L
    api_max_in_flight: int
    api_calls_per_unique_pair: float
    baseline_rss_kib: int
    peak_rss_kib: int
    peak_held: int
    rss_at_peak_held_kib: int
    kib_per_held_request: float | None
    bot_cpu_s: float
    bot_cpu_ms_per_request: float
    harness_cpu_s: float
    # From the burst to the last acknowledgement: the CPU the acknowledgements waited behind.
    bot_cpu_ms_per_request_to_last_ack: float | None
    harness_cpu_ms_per_request_to_last_ack: float | None
    units_granted: int
    units_allowed: int | None
    over_grant_units: int
    ledger_statuses: dict[str, int]
    wall_s: float
    notes: list[str] = field(default_factory=list)
    files: FilesReport | None = None  # with files on (--audio)
    loop_lag: LoopLag | None = None  # --audio: from the burst to the end of its work
    card: CardReport | None = None  # --card: what the event's card and channel showed


def ideal_makespan(cfg: Config, unique_pairs: int) -> float:
    """ceil(calls / C) * L, where calls are the unique pairs the quota lets through."""
    calls = unique_pairs if cfg.daily_limit is None else min(unique_pairs, cfg.daily_limit)
    return math.ceil(calls / cfg.concurrency) * cfg.latency_s


# --- one run ----------------------------------------------------------------------------------


def bot_env(
    discord: DiscordEmulator, api: SoundverseStandin, db: Path, cfg: Config
) -> dict[str, str]:
    daily = cfg.daily_limit if cfg.daily_limit is not None else UNLIMITED
    env = {
        **stack_env(discord, api, db),
        "STEMBOT_MAX_CONCURRENT_JOBS": str(cfg.concurrency),
        "STEMBOT_API_TIMEOUT_S": str(max(60.0, 10 * cfg.latency_s)),
        "STEMBOT_GUILD_DAILY_LIMIT": str(daily),
        "STEMBOT_GUILD_MONTHLY_LIMIT": str(UNLIMITED),
        "STEMBOT_SHUTDOWN_GRACE_S": "2",
    }
    if cfg.files is not None:
        env |= {
            "STEMBOT_ATTACH_STEMS": "true" if cfg.files.attach else "false",
            "STEMBOT_AUDIO_WORKERS": str(cfg.files.workers),
            LAG_FILE_VARIABLE: str(lag_file(db)),
        }
    return env


def lag_file(db: Path) -> Path:
    return db.with_suffix(".lag.json")


def bot_module(cfg: Config) -> str:
    """--audio runs start stembot through the loop-lag launcher (stembot's own `run`)."""
    return loop_lag.__name__ if cfg.files is not None else BOT_MODULES[cfg.bot]


def crowd(
    discord: DiscordEmulator, guild: Guild, channel: Channel, cfg: Config
) -> tuple[list[tuple[Member, dict[str, Any]]], int]:
    """(member, attachment) per request, in random order, and the number of distinct tracks."""
    rng = random.Random(cfg.seed)
    shared = [
        discord.upload_attachment(WAV, f"event-track-{k}.wav", "audio/wav", channel=channel)
        for k in range(SHARED_TRACKS)
    ]
    plan = []
    for i in range(cfg.n):
        member = discord.add_member(guild, f"raver{i}")
        if rng.random() < cfg.shared_share:
            attachment = rng.choice(shared)
        else:
            attachment = discord.upload_attachment(
                WAV, f"own-track-{i}.wav", "audio/wav", channel=channel
            )
        plan.append((member, attachment))
    return plan, len({a["id"] for _, a in plan})


@dataclass
class Burst:
    """What a run fires at once: each member's `/stems vocals`, or with --card each member's
    click on the ``event``'s card (``clicks``: who clicks which mode)."""

    fire: Callable[[], Awaitable[list[InteractionRecord]]]
    unique_pairs: int  # (source, mode) pairs; on the card, the modes used
    event: Event | None = None
    clicks: list[tuple[Member, Mode]] = field(default_factory=list)


async def prepare_burst(discord: DiscordEmulator, guild: Guild, cfg: Config) -> Burst:
    """The crowd of ``cfg``, ready to fire; with --card, the event warmed up and started."""
    channel = guild.default_channel
    if cfg.card is None:
        plan, unique_pairs = crowd(discord, guild, channel, cfg)  # one mode: pairs = tracks
        return Burst(lambda: stems_burst(discord, channel, plan), unique_pairs)
    await warm_up_card(discord, cfg.latency_s)
    event = await open_event(discord, guild, "Remix event")
    clicks = card_crowd(discord, guild, cfg.n, cfg.card, cfg.seed)
    return Burst(lambda: click_all(discord, event, clicks), modes_used(clicks), event, clicks)


async def stems_burst(
    discord: DiscordEmulator, channel: Channel, plan: Sequence[tuple[Member, dict[str, Any]]]
) -> list[InteractionRecord]:
    return list(
        await asyncio.gather(
            *(
                discord.slash("stems vocals", member=m, channel=channel, options={"file": a})
                for m, a in plan
            )
        )
    )


async def warm_up(discord: DiscordEmulator, latency_s: float, *, files: bool = False) -> None:
    """One request in a guild of its own: imports, pools and caches warm, no quota touched;
    with ``files``, its files too (the audio workers started, the stand-in's stem made)."""
    guild = await discord.add_guild("Warm-up")
    member = discord.add_member(guild, "early-bird")
    attachment = discord.upload_attachment(WAV, "warm-up.wav", "audio/wav")
    record = await discord.slash(
        "stems vocals", member=member, channel=guild.default_channel, options={"file": attachment}
    )
    await all_answered([record], latency_s + 30)
    if outcome_of(record).kind != "result":
        raise RuntimeError(f"the warm-up request did not succeed: {outcome_of(record)}")
    if files:
        await all_settled([record], 120)
        (state,) = delivered_files([record])
        if state[1].files_at is None:
            raise RuntimeError("the warm-up request's result did not get its files")


def delivered_files(records: Sequence[InteractionRecord]) -> list[tuple[float, FilesState]]:
    """(when its links went out, what its files step did) of every result delivered."""
    states = []
    for record in records:
        outcome = outcome_of(record)
        if outcome.kind == "result" and outcome.answered_at is not None:
            states.append((outcome.answered_at, files_state(record, outcome.answered_at)))
    return states


async def all_settled(records: Sequence[InteractionRecord], timeout_s: float) -> None:
    """Wait until every delivered result's message was edited with its files (or a line
    saying they could not be attached); bounded."""
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        if all(state.settled_at is not None for _, state in delivered_files(records)):
            return
        await asyncio.sleep(0.2)


async def start_profiler(pid: int, output: Path) -> asyncio.subprocess.Process:
    """py-spy (if installed: a developer's aid, not a dependency) on the bot for 10 s."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("py-spy")),
        *("record", "--pid", str(pid), "--rate", "1000", "--duration", "4"),
        *("--format", "raw", "--output", str(output), "--nonblocking"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)  # attaching takes a moment
    return process


def write_timings(
    path: Path,
    first: float,
    outcomes: Sequence[Outcome],
    discord: DiscordEmulator,
    samples: Sequence[ProcSample],
    call_starts: Sequence[float],
) -> None:
    """Raw seconds after the first dispatch: each request, and each REST call the bot made."""

    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - first, 4)

    data = {
        "requests": [
            [rel(o.created_at), rel(o.acked_at), rel(o.answered_at), o.kind] for o in outcomes
        ],
        "calls": [[rel(c.at), c.method, c.route, c.status] for c in discord.calls if c.at >= first],
        "samples": [[rel(s.at), s.rss_kib, s.cpu_s, s.harness_cpu_s] for s in samples],
        "api_call_starts": [round(t, 4) for t in sorted(call_starts)],
    }
    path.write_text(json.dumps(data))


async def run_event(
    cfg: Config, workdir: Path, profile: Path | None = None, timings: Path | None = None
) -> Result:
    db = workdir / f"event-{cfg.n}-{cfg.daily_limit}-{cfg.bot}.db"
    log_path = workdir / f"{cfg.bot}-{cfg.n}-{cfg.daily_limit}.log"
    wall_start = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        discord = await stack.enter_async_context(DiscordEmulator(validate_spec=False))
        api = await stack.enter_async_context(
            SoundverseStandin(api_key=API_KEY, latency=cfg.latency_s)
        )
        guild = await discord.add_guild("Remix event")
        attach = cfg.files is not None and cfg.files.attach
        if cfg.files is not None:
            api.serve_stems(cfg.files.stem_format, seconds=cfg.files.stem_seconds)
        bot = BotProcess(bot_env(discord, api, db, cfg), log_path, module=bot_module(cfg))
        await bot.start()
        assert bot.process is not None
        pid = bot.process.pid
        try:
            await discord.wait_ready(timeout_s=30)
            await warm_up(discord, cfg.latency_s, files=attach)
            burst = await prepare_burst(discord, guild, cfg)
            unique_pairs = burst.unique_pairs
            await asyncio.sleep(1.0)  # let the warm-up's status task and GC settle
            calls_before = len(api.requests)
            downloads_before = api.downloads
            api.max_in_flight = api.in_flight
            baseline = proc_sample(pid)
            workers_before = workers_of(pid)
            profiler = await start_profiler(pid, profile) if profile else None
            samples: list[ProcSample] = []
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_until(pid, stop, samples))
            first, first_mono = time.time(), time.monotonic()
            records = await burst.fire()
            dispatched = time.time()
            ideal = ideal_makespan(cfg, unique_pairs)
            await all_answered(records, timeout_s=3 * ideal + 120)
            if attach:
                await all_settled(records, timeout_s=3 * ideal + 300)
            stop.set()
            await sampler
            after = proc_sample(pid)
            workers_after = workers_of(pid)
            if profiler is not None:
                await profiler.wait()
            settled = burst.event is not None and await card_settled(
                burst.event, cfg.n, unique_pairs
            )
        finally:
            await stop_bot(bot)
        api_calls = len(api.requests) - calls_before
        stem_fetches = api.downloads - downloads_before
        call_starts = [r.received_at - first_mono for r in api.requests[calls_before:]]
        max_in_flight = api.max_in_flight
    outcomes = [outcome_of(r) for r in records]
    if timings is not None:
        write_timings(timings, first, outcomes, discord, samples, call_starts)
    granted, statuses = read_ledger(db, guild.id) if cfg.bot == STEMBOT else (0, {})
    harness_cpu = after.harness_cpu_s - baseline.harness_cpu_s
    result = summarise(
        cfg,
        outcomes,
        unique_pairs=unique_pairs,
        first=first,
        dispatched=dispatched,
        api_calls=api_calls,
        call_starts=call_starts,
        max_in_flight=max_in_flight,
        baseline=baseline,
        samples=[*samples, after],
        granted=granted,
        statuses=statuses,
        harness_cpu_s=harness_cpu,
        wall_s=time.monotonic() - wall_start,
    )
    if burst.event is not None:
        result.card = card_report(
            discord,
            burst.event,
            burst.clicks,
            records,
            [o.kind for o in outcomes],
            first=first,
            paid_calls=api_calls,
            settled=settled,
        )
    if cfg.files is None:
        return result
    delivered = delivered_files(records)
    # The window of the loop lag: the burst, to the last result (and its files, with files).
    ends = [o.answered_at for o in outcomes if o.answered_at is not None]
    if attach:
        ends += [s.files_at or s.settled_at or first for _, s in delivered]
    result.loop_lag = read_lag(lag_file(db), first, max(ends, default=after.at))
    if attach:
        result.files = files_report(
            delivered,
            first=first,
            stem_fetches=stem_fetches,
            worker_cpu_s=cpu_between(workers_before, workers_after),
            worker_peak_rss_kib=peak_kib(workers_after),
        )
    return result


async def stop_bot(bot: BotProcess) -> None:
    """SIGTERM, then wait; SIGKILL only if it does not stop within 30 s."""
    if bot.process is None or bot.process.returncode is not None:
        return
    bot.signal(signal.SIGTERM)
    try:
        await bot.wait(timeout_s=30)
    except TimeoutError:
        bot.signal(signal.SIGKILL)
        await bot.wait()


def read_ledger(db: Path, guild_id: int) -> tuple[int, dict[str, int]]:
    """Units charged to the guild today, and how many requests ended in each status."""
    store = Store.open(db, QuotaPolicy())
    try:
        used = store.quotas.quota_status(guild_id, None, datetime.now(UTC)).guild_daily.used
        statuses: dict[str, int] = {}
        request_id = 1
        while (request := store.ledger.get_request(request_id)) is not None:
            if request.guild_id == guild_id:
                statuses[request.status.value] = statuses.get(request.status.value, 0) + 1
            request_id += 1
        return used, statuses
    finally:
        store.close()


def summarise(
    cfg: Config,
    outcomes: Sequence[Outcome],
    *,
    unique_pairs: int,
    first: float,
    dispatched: float,
    api_calls: int,
    call_starts: Sequence[float],
    max_in_flight: int,
    baseline: ProcSample,
    samples: Sequence[ProcSample],
    granted: int,
    statuses: dict[str, int],
    harness_cpu_s: float,
    wall_s: float,
) -> Result:
    # A late ack (Discord refused it) counts at the time it arrived: what the bot took.
    acks_ms = [(o.ack_sent_at - o.created_at) * 1000 for o in outcomes if o.ack_sent_at is not None]
    within = sum(1 for ms in acks_ms if ms <= ACK_WINDOW_S * 1000)
    kinds: dict[str, int] = {}
    for o in outcomes:
        kinds[o.kind] = kinds.get(o.kind, 0) + 1
    results = [o.answered_at for o in outcomes if o.kind == "result" and o.answered_at]
    ideal = ideal_makespan(cfg, unique_pairs)
    makespan = max(results) - first if results and kinds.get("pending", 0) == 0 else None
    held = held_at(outcomes, [s.at for s in samples])
    peak_index = max(range(len(samples)), key=lambda i: (held[i], samples[i].rss_kib))
    peak_held = held[peak_index]
    rss_at_peak = samples[peak_index].rss_kib
    last = samples[-1]
    allowed = cfg.daily_limit
    last_ack = max((o.ack_sent_at for o in outcomes if o.ack_sent_at is not None), default=None)
    at_last_ack = next((s for s in samples if last_ack is not None and s.at >= last_ack), None)
    notes = []
    if kinds.get("pending"):
        notes.append(f"{kinds['pending']} requests had no final answer when the run gave up")
    return Result(
        config=cfg,
        unique_pairs=unique_pairs,
        dispatch_s=round(dispatched - first, 3),
        ack_ms={
            "p50": round(percentile(acks_ms, 50), 1),
            "p99": round(percentile(acks_ms, 99), 1),
            "max": round(max(acks_ms), 1),
        }
        if acks_ms
        else {},
        acked_within_3s_share=round(within / len(outcomes), 4),
        outcomes=kinds,
        makespan_s=None if makespan is None else round(makespan, 2),
        ideal_makespan_s=ideal,
        makespan_ratio=None if makespan is None else round(makespan / ideal, 3),
        api_calls=api_calls,
        api_first_call_s=round(min(call_starts), 3) if call_starts else None,
        api_last_call_done_s=round(max(call_starts) + cfg.latency_s, 3) if call_starts else None,
        api_max_in_flight=max_in_flight,
        api_calls_per_unique_pair=round(api_calls / unique_pairs, 3),
        baseline_rss_kib=baseline.rss_kib,
        peak_rss_kib=max(s.hwm_kib for s in samples),
        peak_held=peak_held,
        rss_at_peak_held_kib=rss_at_peak,
        kib_per_held_request=round((rss_at_peak - baseline.rss_kib) / peak_held, 2)
        if peak_held
        else None,
        bot_cpu_s=round(last.cpu_s - baseline.cpu_s, 2),
        bot_cpu_ms_per_request=round((last.cpu_s - baseline.cpu_s) / cfg.n * 1000, 2),
        harness_cpu_s=round(harness_cpu_s, 2),
        bot_cpu_ms_per_request_to_last_ack=None
        if at_last_ack is None
        else round((at_last_ack.cpu_s - baseline.cpu_s) / cfg.n * 1000, 2),
        harness_cpu_ms_per_request_to_last_ack=None
        if at_last_ack is None
        else round((at_last_ack.harness_cpu_s - baseline.harness_cpu_s) / cfg.n * 1000, 2),
        units_granted=granted,
        units_allowed=allowed,
        over_grant_units=max(0, granted - allowed) if allowed is not None else 0,
        ledger_statuses=statuses,
        wall_s=round(wall_s, 1),
        notes=notes,
    )


# --- printing ---------------------------------------------------------------------------------


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def rows(result: Result, *, with_card: bool = False) -> Iterator[tuple[str, object]]:
    """``with_card``: the card's rows too (a `/stems` burst beside a card run shows "-")."""
    cfg = result.config
    yield "requests (N) / unique (source, mode)", f"{cfg.n} / {result.unique_pairs}"
    yield "dispatch of the burst (s)", result.dispatch_s
    yield "ack p50 / p99 / max (ms)", " / ".join(_fmt(v) for v in result.ack_ms.values())
    yield "acknowledged within 3 s", f"{result.acked_within_3s_share:.2%}"
    yield "outcomes", ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
    yield "makespan / ideal (s)", f"{_fmt(result.makespan_s)} / {_fmt(result.ideal_makespan_s)}"
    yield "makespan ratio", result.makespan_ratio
    yield "API calls / unique pairs", f"{result.api_calls} / {result.unique_pairs}"
    yield "API calls at once (max)", result.api_max_in_flight
    yield (
        "first API call / last call done (s)",
        (f"{_fmt(result.api_first_call_s)} / {_fmt(result.api_last_call_done_s)}"),
    )
    yield (
        "bot RSS baseline / peak (MiB)",
        (f"{result.baseline_rss_kib / 1024:.1f} / {result.peak_rss_kib / 1024:.1f}"),
    )
    yield (
        "held requests at peak / RSS then (MiB)",
        (f"{result.peak_held} / {result.rss_at_peak_held_kib / 1024:.1f}"),
    )
    yield "KiB per held request", result.kib_per_held_request
    yield (
        "bot CPU s / ms per request",
        (f"{_fmt(result.bot_cpu_s)} / {_fmt(result.bot_cpu_ms_per_request)}"),
    )
    yield "harness CPU s (emulator + stand-in)", result.harness_cpu_s
    yield (
        "CPU ms/request to the last ack: bot / harness",
        f"{_fmt(result.bot_cpu_ms_per_request_to_last_ack)}"
        f" / {_fmt(result.harness_cpu_ms_per_request_to_last_ack)}",
    )
    yield "units granted / allowed", f"{result.units_granted} / {_fmt(result.units_allowed)}"
    yield "ledger", ", ".join(f"{k} {v}" for k, v in sorted(result.ledger_statuses.items()))
    if cfg.files is not None:
        yield from audio_rows(result.loop_lag, result.files)
    if with_card:
        yield from card_rows(result.card)
    yield "wall time of the run (s)", result.wall_s


def audio_rows(lag: LoopLag | None, files: FilesReport | None) -> Iterator[tuple[str, object]]:
    """--audio: the loop's lag, and with files on what the files step did."""
    yield (
        "loop lag p50 / p99 / max (ms), window (s)",
        "-"
        if lag is None
        else f"{lag.p50_ms:.1f} / {lag.p99_ms:.1f} / {lag.max_ms:.0f}, {lag.window_s:g}",
    )
    if files is None:
        for label in AUDIO_ROW_LABELS:
            yield label, "-"
        return
    yield (
        AUDIO_ROW_LABELS[0],
        f"{files.with_files} / {files.results} ({files.not_attached} not attached, "
        f"{files.unsettled} unsettled)",
    )
    yield AUDIO_ROW_LABELS[1], " / ".join(_fmt(v) for v in files.links_to_files_ms.values())
    yield AUDIO_ROW_LABELS[2], files.files_makespan_s
    yield (
        AUDIO_ROW_LABELS[3],
        f"{files.stem_fetches} / {files.stems_attached} ({files.cache_hits} hits)",
    )
    yield (
        AUDIO_ROW_LABELS[4],
        f"{_fmt(files.worker_cpu_s)} / {files.worker_peak_rss_kib / 1024:.1f}",
    )


AUDIO_ROW_LABELS = (
    "results with files / delivered",
    "links -> files p50 / p99 / max (ms)",
    "last result's files (s after the burst)",
    "stem fetches / stems attached (cache)",
    "audio workers CPU s / largest peak RSS MiB",
)


def print_table(results: Sequence[Result]) -> None:
    repeated = any(r.config.repeat > 1 for r in results)
    with_card = any(r.config.card is not None for r in results)
    headers = [
        f"N={r.config.n} L={r.config.latency_s:g}s C={r.config.concurrency}"
        + (f" daily={r.config.daily_limit}" if r.config.daily_limit is not None else "")
        + (f" {r.config.files.label}" if r.config.files is not None else "")
        + (f" {CARD if r.config.card is not None else BURST}" if with_card else "")
        + (f" #{r.config.repeat}" if repeated else "")
        for r in results
    ]
    table = [list(zip(*rows(r, with_card=with_card), strict=True)) for r in results]
    labels = table[0][0]
    width = max(len(str(label)) for label in labels)
    cols = [[_fmt(v) for v in t[1]] for t in table]
    col_w = [max(len(h), *(len(v) for v in c)) for h, c in zip(headers, cols, strict=True)]
    print(" " * width + " | " + " | ".join(h.rjust(w) for h, w in zip(headers, col_w, strict=True)))
    print("-" * (width + sum(w + 3 for w in col_w)))
    for i, label in enumerate(labels):
        cells = " | ".join(c[i].rjust(w) for c, w in zip(cols, col_w, strict=True))
        print(f"{label:<{width}} | {cells}")
    for r in results:
        for note in r.notes:
            print(f"note (N={r.config.n}): {note}")


# --- against the floor ------------------------------------------------------------------------


@dataclass
class FloorRound:
    """One repeat: a stembot run and a floor run next to each other, in ``first``'s order."""

    first: str
    stembot_ack_ms: dict[str, float]
    floor_ack_ms: dict[str, float]
    p99_ratio: float


@dataclass
class FloorComparison:
    """Medians over the rounds; ``p99_ratio`` is median stembot p99 / median floor p99."""

    n: int
    latency_s: float
    rounds: list[FloorRound]
    stembot_p50_ms: float
    stembot_p99_ms: float
    floor_p50_ms: float
    floor_p99_ms: float
    p99_ratio: float
    p99_ratio_median_of_rounds: float
    stembot_cpu_ms_to_last_ack: float | None  # per request, from the burst to the last ack
    floor_cpu_ms_to_last_ack: float | None


def compare_with_floor(stembot: Sequence[Result], floor: Sequence[Result]) -> FloorComparison:
    """``stembot[k]`` and ``floor[k]`` ran in the same round (same N, L, seed)."""
    rounds = [
        FloorRound(
            first=first_in(s.config.repeat),
            stembot_ack_ms=s.ack_ms,
            floor_ack_ms=f.ack_ms,
            p99_ratio=round(s.ack_ms["p99"] / f.ack_ms["p99"], 3),
        )
        for s, f in zip(stembot, floor, strict=True)
    ]
    cfg = stembot[0].config

    def median_of(values: Sequence[float]) -> float:
        return round(statistics.median(values), 1)

    stembot_p99 = median_of([s.ack_ms["p99"] for s in stembot])
    floor_p99 = median_of([f.ack_ms["p99"] for f in floor])
    return FloorComparison(
        n=cfg.n,
        latency_s=cfg.latency_s,
        rounds=rounds,
        stembot_p50_ms=median_of([s.ack_ms["p50"] for s in stembot]),
        stembot_p99_ms=stembot_p99,
        floor_p50_ms=median_of([f.ack_ms["p50"] for f in floor]),
        floor_p99_ms=floor_p99,
        p99_ratio=round(stembot_p99 / floor_p99, 3),
        p99_ratio_median_of_rounds=round(statistics.median(r.p99_ratio for r in rounds), 3),
        stembot_cpu_ms_to_last_ack=_median_cpu(stembot),
        floor_cpu_ms_to_last_ack=_median_cpu(floor),
    )


def _median_cpu(runs: Sequence[Result]) -> float | None:
    known = [
        r.bot_cpu_ms_per_request_to_last_ack
        for r in runs
        if r.bot_cpu_ms_per_request_to_last_ack is not None
    ]
    return round(statistics.median(known), 2) if known else None


def print_floor(comparisons: Sequence[FloorComparison]) -> None:
    print()
    print(
        "stembot against the floor (a minimal discord.py bot that defers, then edits with a "
        "link button), same burst, runs alternated:"
    )
    header = ("", "stembot ack p50 / p99 (ms)", "floor ack p50 / p99 (ms)", "p99 ratio")
    lines = []
    for c in comparisons:
        lines.append((f"N={c.n} L={c.latency_s:g}s", "", "", ""))
        for k, r in enumerate(c.rounds, 1):
            lines.append(
                (
                    f"  repeat {k} ({r.first} first)",
                    f"{_fmt(r.stembot_ack_ms['p50'])} / {_fmt(r.stembot_ack_ms['p99'])}",
                    f"{_fmt(r.floor_ack_ms['p50'])} / {_fmt(r.floor_ack_ms['p99'])}",
                    f"{r.p99_ratio:.2f}",
                )
            )
        lines.append(
            (
                f"  median of {len(c.rounds)}",
                f"{_fmt(c.stembot_p50_ms)} / {_fmt(c.stembot_p99_ms)}",
                f"{_fmt(c.floor_p50_ms)} / {_fmt(c.floor_p99_ms)}",
                f"{c.p99_ratio:.2f} (rounds' median {c.p99_ratio_median_of_rounds:.2f})",
            )
        )
        lines.append(
            (
                "  bot CPU ms/request to the last ack",
                _fmt(c.stembot_cpu_ms_to_last_ack),
                _fmt(c.floor_cpu_ms_to_last_ack),
                "",
            )
        )
    print_columns([header, *lines])
    print(f"target: p99 ratio {TARGETS['ack_p99_over_floor']}")


def machine() -> dict[str, object]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }


# --- entry point ------------------------------------------------------------------------------


def configs(args: argparse.Namespace) -> list[Config]:
    if args.card:
        n = CARD_N if args.n is None else args.n
        return [Config(n, args.latency, args.concurrency, seed=args.seed, card=CardSetup())]
    if args.audio:
        setup = FilesSetup(False, args.stem_seconds, args.stem_format, args.audio_workers)
        n = AUDIO_N if args.n is None else args.n
        return [Config(n, args.latency, args.concurrency, seed=args.seed, files=setup)]
    sizes = STANDARD_SIZES if args.standard else (args.n or STANDARD_SIZES[0],)
    chosen = [Config(n, args.latency, args.concurrency, seed=args.seed) for n in sizes]
    if args.standard or args.quota:
        chosen.append(
            Config(
                QUOTA_RUN["n"],
                args.quota_latency,
                args.concurrency,
                daily_limit=QUOTA_RUN["daily_limit"],
                shared_share=0.0,
                seed=args.seed,
            )
        )
    return chosen


def first_in(repeat: int) -> str:
    """Which bot runs first in a round: the order flips every repeat, so drift hits both."""
    return STEMBOT if repeat % 2 == 1 else FLOOR


def files_first_in(repeat: int) -> bool:
    """--audio: whether the run with files goes first in a round (every other round)."""
    return repeat % 2 == 0


def card_first_in(repeat: int) -> bool:
    """--card: whether the card run goes first in a round (every other round)."""
    return repeat % 2 == 1


def rounds(chosen: Sequence[Config], floor: bool, repeats: int) -> Iterator[Config]:
    """Every run in order: each config ``repeats`` times, with a floor run beside each
    stembot run (not for the quota run: the floor has no quota); an --audio config runs
    links only and with files each round, a --card config the card and the `/stems` burst
    of the same N, in alternating order."""
    for cfg in chosen:
        for repeat in range(1, repeats + 1):
            if cfg.card is not None:
                pair = [cfg, dataclasses.replace(cfg, card=None)]
                for run in pair if card_first_in(repeat) else reversed(pair):
                    yield dataclasses.replace(run, repeat=repeat)
                continue
            if cfg.files is not None:
                order = (True, False) if files_first_in(repeat) else (False, True)
                for attach in order:
                    files = dataclasses.replace(cfg.files, attach=attach)
                    yield dataclasses.replace(cfg, files=files, repeat=repeat)
                continue
            bots = [STEMBOT]
            if floor and cfg.daily_limit is None:
                bots = [STEMBOT, FLOOR] if first_in(repeat) == STEMBOT else [FLOOR, STEMBOT]
            for bot in bots:
                yield dataclasses.replace(cfg, bot=bot, repeat=repeat)


@dataclass
class Runs:
    """An invocation's runs and what it compared."""

    results: list[Result]  # stembot's runs
    floor: list[FloorComparison]  # --floor: stembot against the floor
    floors: list[Result]  # --floor: the floor's runs
    audio: list[AudioComparison]  # --audio: links only against with files
    card: list[CardComparison]  # --card: the card against the `/stems` burst


async def run_all(
    chosen: Sequence[Config],
    profile: Path | None,
    timings: Path | None,
    *,
    floor: bool = False,
    repeats: int = 1,
) -> Runs:
    results: list[Result] = []
    floors: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-event-") as tmp:
        for k, cfg in enumerate(rounds(chosen, floor, repeats)):
            label = f", {cfg.files.label}" if cfg.files is not None else ""
            label += f", {cfg.card.label}" if cfg.card is not None else ""
            print(
                f"running {cfg.bot} N={cfg.n} L={cfg.latency_s:g}s C={cfg.concurrency}{label}"
                f" (repeat {cfg.repeat} of {repeats}) ...",
                flush=True,
            )
            tag = "" if (cfg.bot, cfg.repeat) == (STEMBOT, 1) else f".{cfg.bot}.{cfg.repeat}"
            if cfg.files is not None:
                tag += ".files-on" if cfg.files.attach else ".files-off"
            if cfg.card is not None:
                tag += ".card"
            where = profile.with_suffix(f".{cfg.n}{tag}.txt") if profile else None
            raw = timings.with_suffix(f".{cfg.n}{tag}.json") if timings else None
            workdir = Path(tmp) / f"run-{k}"  # a fresh database each run: no stored results
            workdir.mkdir()
            result = await run_event(cfg, workdir, where, raw)
            (floors if cfg.bot == FLOOR else results).append(result)
    comparisons = [
        compare_with_floor(
            [r for r in results if _same_burst(r.config, cfg)],
            [f for f in floors if _same_burst(f.config, cfg)],
        )
        for cfg in chosen
        if any(_same_burst(f.config, cfg) for f in floors)
    ]
    audio = [audio_comparison(cfg, results) for cfg in chosen if cfg.files is not None]
    cards = [card_comparison(cfg, results) for cfg in chosen if cfg.card is not None]
    return Runs(results, comparisons, floors, audio, cards)


def _same_burst(run: Config, cfg: Config) -> bool:
    return dataclasses.replace(run, bot=STEMBOT, repeat=1) == cfg


def audio_comparison(cfg: Config, results: Sequence[Result]) -> AudioComparison:
    """Links only against with files, round by round, for the --audio config ``cfg``."""
    assert cfg.files is not None
    by_round: dict[int, dict[bool, Result]] = {}
    for r in results:
        files = r.config.files
        if files is not None and _same_burst(dataclasses.replace(r.config, files=cfg.files), cfg):
            by_round.setdefault(r.config.repeat, {})[files.attach] = r
    paired = []
    for repeat, pair in sorted(by_round.items()):
        off, on = figures(pair[False]), figures(pair[True])
        paired.append(
            AudioRound(
                first=ON if files_first_in(repeat) else OFF,
                off=off,
                on=on,
                ack_p99_ratio=round(on.ack_ms["p99"] / off.ack_ms["p99"], 3),
            )
        )
    return compare(cfg.n, cfg.latency_s, dataclasses.replace(cfg.files, attach=True), paired)


def card_comparison(cfg: Config, results: Sequence[Result]) -> CardComparison:
    """The card against the `/stems` burst of the same N, round by round, for the --card
    config ``cfg``."""
    burst_cfg = dataclasses.replace(cfg, card=None)
    by_round: dict[int, dict[bool, Result]] = {}
    for r in results:
        if _same_burst(r.config, cfg) or _same_burst(r.config, burst_cfg):
            by_round.setdefault(r.config.repeat, {})[r.config.card is not None] = r
    paired = []
    for repeat, pair in sorted(by_round.items()):
        card, burst = pair[True], pair[False]
        paired.append(
            CardRound(
                first=CARD if card_first_in(repeat) else BURST,
                card_ack_ms=card.ack_ms,
                burst_ack_ms=burst.ack_ms,
                p99_ratio=round(card.ack_ms.get("p99", math.nan) / burst.ack_ms["p99"], 3)
                if burst.ack_ms
                else math.nan,
            )
        )
    cards = [pair[True] for _, pair in sorted(by_round.items())]
    return compare_card(
        cfg.n,
        cfg.latency_s,
        paired,
        [c.acked_within_3s_share for c in cards],
        [c.kib_per_held_request for c in cards],
    )


def figures(result: Result) -> RunFigures:
    return RunFigures(result.ack_ms, result.makespan_s, result.loop_lag, result.files)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, help="simultaneous requests (500; 1000 with --audio or --card)"
    )
    parser.add_argument("--latency", type=float, default=2.0, help="seconds per API call (L)")
    parser.add_argument("--concurrency", type=int, default=8, help="STEMBOT_MAX_CONCURRENT_JOBS")
    parser.add_argument("--standard", action="store_true", help="N=500, 1000, 2000 + quota run")
    parser.add_argument("--quota", action="store_true", help="add the run where quota binds")
    parser.add_argument("--quota-latency", type=float, default=0.5, help="L of the quota run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run a minimal discord.py bot on the same burst; report the ack p99 ratio",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of each size (medians with --floor)"
    )
    parser.add_argument(
        "--audio",
        action="store_true",
        help="run the burst links only and with files each round; report the loop lag",
    )
    parser.add_argument(
        "--stem-seconds",
        type=float,
        default=AUDIO_STEM_SECONDS,
        help="--audio: length of the stems the stand-in serves",
    )
    parser.add_argument(
        "--stem-format",
        choices=("mp3", "wav"),
        default=AUDIO_STEM_FORMAT,
        help="--audio: format of the stems the stand-in serves",
    )
    parser.add_argument(
        "--audio-workers",
        type=int,
        default=AUDIO_WORKERS,
        help="--audio: STEMBOT_AUDIO_WORKERS of the run with files",
    )
    parser.add_argument(
        "--card",
        action="store_true",
        help="N clicks on one remix event's card, each round beside the /stems burst of that N",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--profile", type=Path, help="py-spy the bot's first 10 s of each burst (needs py-spy)"
    )
    parser.add_argument(
        "--timings", type=Path, help="also write raw per-request and per-call times (PATH.N.json)"
    )
    args = parser.parse_args(argv)
    if args.audio and (args.floor or args.standard or args.quota or args.card):
        parser.error("--audio runs alone (not with --floor, --standard, --quota or --card)")
    if args.card and (args.floor or args.standard or args.quota):
        parser.error("--card runs alone (not with --floor, --standard, --quota or --audio)")
    started = datetime.now(UTC)
    runs = asyncio.run(
        run_all(configs(args), args.profile, args.timings, floor=args.floor, repeats=args.repeats)
    )
    print_table(runs.results)
    if runs.floor:
        print_floor(runs.floor)
    if runs.audio:
        print_comparison(runs.audio, TARGETS)
    if runs.card:
        print_card_comparison(runs.card, TARGETS)
    report = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "targets": TARGETS,
        "runs": [asdict(r) for r in runs.results],
    }
    if runs.floor:
        report["floor"] = [asdict(c) for c in runs.floor]
        report["floor_runs"] = [asdict(f) for f in runs.floors]
    if runs.audio:
        report["audio"] = [asdict(c) for c in runs.audio]
    if runs.card:
        report["card"] = [asdict(c) for c in runs.card]
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
