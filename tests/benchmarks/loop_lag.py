"""stembot's own `run` command with a sampler on its event loop: how late the loop wakes.

    BENCH_LOOP_LAG_FILE=lag.json python -m tests.benchmarks.loop_lag --env-file FILE run

The event benchmark starts this module instead of `stembot` (as it starts the floor bot): the
bot is the real one, built and run by stembot's entry point with the same arguments; only its
`run_bot` coroutine is wrapped, so that a task on the bot's loop sleeps 10 ms again and again
and records how late each wake-up came. A wake-up is late by as long as the loop was busy with
something else: what an interaction waiting to be acknowledged would have waited. When the bot
stops (SIGTERM stops it cleanly) the samples go to the file BENCH_LOOP_LAG_FILE names, as JSON
pairs [time.time() of the wake-up, lateness in ms]. Production code is not changed for this.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stembot import cli
from stembot.cli import run as run_command
from stembot.config import Settings

LAG_FILE_VARIABLE = "BENCH_LOOP_LAG_FILE"  # not STEMBOT_*: stembot warns of unknown settings
PERIOD_S = 0.010


async def sample_lag(into: list[tuple[float, float]]) -> None:
    """Sleep PERIOD_S forever; append (wall time, how late the wake-up was in ms)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + PERIOD_S
        await asyncio.sleep(PERIOD_S)
        into.append((time.time(), max(0.0, loop.time() - due) * 1000))


def sampled(original: Any, into: list[tuple[float, float]]) -> Any:
    """``original`` (stembot's run_bot), with the sampler beside it on its loop."""

    async def run_bot(settings: Settings, **options: Any) -> None:
        sampler = asyncio.create_task(sample_lag(into))
        try:
            await original(settings, **options)
        finally:
            sampler.cancel()

    return run_bot


@dataclass(frozen=True)
class LoopLag:
    """How late the bot's loop woke over a window of its run."""

    samples: int
    window_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def read_lag(path: Path, start: float, end: float) -> LoopLag | None:
    """The wake-ups between ``start`` and ``end`` (time.time()); None without any."""
    if not path.exists():
        return None
    late = sorted(ms for at, ms in json.loads(path.read_text()) if start <= at <= end)
    if not late:
        return None
    return LoopLag(
        samples=len(late),
        window_s=round(end - start, 2),
        p50_ms=round(_nearest_rank(late, 50), 2),
        p99_ms=round(_nearest_rank(late, 99), 2),
        max_ms=round(late[-1], 2),
    )


def _nearest_rank(ordered: Sequence[float], p: float) -> float:
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def main(argv: Sequence[str] | None = None) -> int:
    out = Path(os.environ[LAG_FILE_VARIABLE])
    samples: list[tuple[float, float]] = []
    run_command.run_bot = sampled(run_command.run_bot, samples)
    try:
        return cli.main(sys.argv[1:] if argv is None else argv)
    finally:
        out.write_text(json.dumps([[round(t, 4), round(ms, 3)] for t, ms in samples]))


if __name__ == "__main__":
    raise SystemExit(main())
