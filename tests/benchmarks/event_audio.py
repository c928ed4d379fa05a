"""`bench_event --audio`: what the files step did in a run, and files off against files on.

A result goes out with its links first; then the same message is edited to carry the stems as
files and the picture (or a line saying they could not be attached). This reads that second
step from the loopback Discord's message history, and sums it up per run: how many results got
their files, how long after their links, how many stems were fetched from the API's links
(the Soundverse stand-in's downloads) against how many were attached (the rest came from the
cache), and what the audio workers spent.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from tests.benchmarks.columns import print_columns
from tests.benchmarks.loop_lag import LoopLag
from tests.standins.discord import InteractionRecord
from tests.standins.stem_audio import AudioFormat

PICTURE_SUFFIX = ".png"
OFF, ON = "files off", "files on"


@dataclass(frozen=True)
class FilesSetup:
    """How the files step is set up in an --audio run."""

    attach: bool  # STEMBOT_ATTACH_STEMS
    stem_seconds: float  # the stand-in's stems: this long, in this format
    stem_format: AudioFormat
    workers: int  # STEMBOT_AUDIO_WORKERS

    @property
    def label(self) -> str:
        return ON if self.attach else OFF


@dataclass(frozen=True)
class FilesState:
    """The files step of one result, from its message's history."""

    settled_at: float | None  # the first edit after the links result
    files_at: float | None  # the first state that carried files
    stems: int  # audio files attached then (the picture not counted)
    picture: bool


def files_state(record: InteractionRecord, result_at: float) -> FilesState:
    """What became of the result that went out at ``result_at`` (its links)."""
    original = record.original
    later = [(at, data) for at, data in original.history if at > result_at] if original else []
    if not later:
        return FilesState(None, None, 0, False)
    for at, data in later:
        names = [str(a.get("filename", "")) for a in data.get("attachments") or []]
        if names:
            stems = sum(not n.endswith(PICTURE_SUFFIX) for n in names)
            picture = any(n.endswith(PICTURE_SUFFIX) for n in names)
            return FilesState(later[0][0], at, stems, picture)
    return FilesState(later[0][0], None, 0, False)


@dataclass
class FilesReport:
    results: int  # results delivered (their links went out)
    with_files: int  # results whose message then carried stems and the picture
    not_attached: int  # settled without files (the line that says they could not be)
    unsettled: int  # no edit after the links when the run gave up
    stems_attached: int
    stem_fetches: int  # downloads of the API's stem links (the stand-in counts them)
    cache_hits: int  # stems attached without a fetch of their own
    files_makespan_s: float | None  # first request -> the last result's files
    links_to_files_ms: dict[str, float]  # per result: its links -> its files (p50, p99, max)
    worker_cpu_s: float
    worker_peak_rss_kib: int


def files_report(
    states: Sequence[tuple[float, FilesState]],
    *,
    first: float,
    stem_fetches: int,
    worker_cpu_s: float,
    worker_peak_rss_kib: int,
) -> FilesReport:
    """``states``: (when the links went out, the files step) of every delivered result."""
    with_files = [(at, s) for at, s in states if s.files_at is not None and s.picture]
    stems = sum(s.stems for _, s in states)
    waits = sorted((s.files_at - at) * 1000 for at, s in with_files if s.files_at is not None)
    ends = [s.files_at for _, s in with_files if s.files_at is not None]
    unsettled = sum(1 for _, s in states if s.settled_at is None)
    return FilesReport(
        results=len(states),
        with_files=len(with_files),
        not_attached=sum(1 for _, s in states if s.settled_at is not None and s.files_at is None),
        unsettled=unsettled,
        stems_attached=stems,
        stem_fetches=stem_fetches,
        cache_hits=max(0, stems - stem_fetches),
        files_makespan_s=round(max(ends) - first, 2) if ends and not unsettled else None,
        links_to_files_ms={
            "p50": round(_rank(waits, 50), 1),
            "p99": round(_rank(waits, 99), 1),
            "max": round(waits[-1], 1),
        }
        if waits
        else {},
        worker_cpu_s=round(worker_cpu_s, 2),
        worker_peak_rss_kib=worker_peak_rss_kib,
    )


def _rank(ordered: Sequence[float], p: float) -> float:
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# --- files off against files on ---------------------------------------------------------------


@dataclass(frozen=True)
class RunFigures:
    """What the comparison reads of one run."""

    ack_ms: dict[str, float]
    makespan_s: float | None
    loop_lag: LoopLag | None
    files: FilesReport | None


@dataclass
class AudioRound:
    first: str  # OFF or ON: which ran first in this round
    off: RunFigures
    on: RunFigures
    ack_p99_ratio: float  # on / off


@dataclass
class AudioComparison:
    """Medians over the rounds."""

    n: int
    latency_s: float
    setup: FilesSetup
    rounds: list[AudioRound]
    off_ack_p50_ms: float
    off_ack_p99_ms: float
    on_ack_p50_ms: float
    on_ack_p99_ms: float
    ack_p99_ratio: float  # median on p99 / median off p99
    off_lag_p99_ms: float | None
    on_lag_p99_ms: float | None
    off_makespan_s: float | None
    on_makespan_s: float | None
    on_files_makespan_s: float | None


def compare(
    n: int, latency_s: float, setup: FilesSetup, rounds: Sequence[AudioRound]
) -> AudioComparison:
    def median(values: Sequence[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return round(statistics.median(known), 2) if known else None

    def ack(side: str, p: str) -> float:
        value = median([getattr(r, side).ack_ms.get(p) for r in rounds])
        return value if value is not None else math.nan

    def lag(side: str) -> float | None:
        runs = [getattr(r, side).loop_lag for r in rounds]
        return median([run.p99_ms if run else None for run in runs])

    on_p99, off_p99 = ack("on", "p99"), ack("off", "p99")
    return AudioComparison(
        n=n,
        latency_s=latency_s,
        setup=setup,
        rounds=list(rounds),
        off_ack_p50_ms=ack("off", "p50"),
        off_ack_p99_ms=off_p99,
        on_ack_p50_ms=ack("on", "p50"),
        on_ack_p99_ms=on_p99,
        ack_p99_ratio=round(on_p99 / off_p99, 3),
        off_lag_p99_ms=lag("off"),
        on_lag_p99_ms=lag("on"),
        off_makespan_s=median([r.off.makespan_s for r in rounds]),
        on_makespan_s=median([r.on.makespan_s for r in rounds]),
        on_files_makespan_s=median(
            [r.on.files.files_makespan_s if r.on.files else None for r in rounds]
        ),
    )


def print_comparison(comparisons: Sequence[AudioComparison], targets: dict[str, str]) -> None:
    for c in comparisons:
        s = c.setup
        print()
        print(
            f"files off against files on, N={c.n} L={c.latency_s:g}s, {s.stem_seconds:g} s "
            f"{s.stem_format} stems, {s.workers} audio worker(s), runs alternated:"
        )
        lines = [
            (
                "",
                "links only: ack p50 / p99 (ms)",
                "with files",
                "p99 ratio",
                "loop lag p99 (ms): links only",
                "with files",
            )
        ]
        for k, r in enumerate(c.rounds, 1):
            lines.append(
                (
                    f"  repeat {k} ({r.first} first)",
                    _ack(r.off.ack_ms),
                    _ack(r.on.ack_ms),
                    f"{r.ack_p99_ratio:.2f}",
                    _lag(r.off.loop_lag),
                    _lag(r.on.loop_lag),
                )
            )
        lines.append(
            (
                f"  median of {len(c.rounds)}",
                f"{c.off_ack_p50_ms:,.0f} / {c.off_ack_p99_ms:,.0f}",
                f"{c.on_ack_p50_ms:,.0f} / {c.on_ack_p99_ms:,.0f}",
                f"{c.ack_p99_ratio:.2f}",
                _num(c.off_lag_p99_ms),
                _num(c.on_lag_p99_ms),
            )
        )
        print_columns(lines)
        print(
            f"makespan (links) off {_num(c.off_makespan_s)} s, on {_num(c.on_makespan_s)} s; "
            f"the last result's files at {_num(c.on_files_makespan_s)} s"
        )
        print(
            f"targets: loop lag p99 {targets['loop_lag_p99_ms']} ms with files on; "
            f"ack p99 with files on {targets['ack_p99_files_on_over_off']}"
        )


def _ack(ack_ms: dict[str, float]) -> str:
    return f"{ack_ms['p50']:,.0f} / {ack_ms['p99']:,.0f}" if ack_ms else "-"


def _lag(lag: LoopLag | None) -> str:
    return "-" if lag is None else f"{lag.p99_ms:.1f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"
