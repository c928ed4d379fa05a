"""Who spent the CPU during a burst, read from /proc (Linux): each bot process, this process
(the loopback Discord and the stand-in) and the PostgreSQL backends of one database.

Sampled every ``EVERY_S`` from the burst on, so the CPU up to a moment (the last
acknowledgement) is read from the sample just after it. A PostgreSQL backend's command line
names its database (``postgres: 15/main: user db 127.0.0.1(port) idle``), which is how the run's own
backends are told from other sessions' on a shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

EVERY_S = 0.05
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    at: float  # time.time()
    bots: tuple[float, ...]  # utime + stime of each process, seconds
    harness: float
    postgres: float  # the database's backends, summed
    # How long each one's main thread (its event loop) was ready to run but waited for a
    # core (the scheduler's run delay): the bots', then this process's.
    waited: tuple[float, ...]


def cpu_of(pid: int) -> float:
    """utime + stime of ``pid`` in seconds; 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    after_name = stat[stat.rindex(")") + 2 :].split()
    return (int(after_name[11]) + int(after_name[12])) / TICKS  # fields 14, 15


def run_delay(pid: int) -> float:
    """Seconds the main thread of ``pid`` spent runnable, waiting for a core; 0 once gone."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def harness_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Backends:
    """The PostgreSQL backends serving ``database``; a backend that ends keeps its last
    reading (its CPU was spent)."""

    database: str
    _last: dict[int, float] = field(default_factory=dict)
    _others: set[int] = field(default_factory=set)

    def cpu(self) -> float:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            if pid in self._others:
                continue
            if pid not in self._last:
                try:
                    words = (entry / "cmdline").read_bytes().replace(b"\0", b" ").split()
                except OSError:
                    continue
                if words[:1] != [b"postgres:"] or self.database.encode() not in words[1:4]:
                    self._others.add(pid)
                    continue
            used = cpu_of(pid)
            if used:
                self._last[pid] = used
        return sum(self._last.values())


async def sample_cpu(
    pids: Sequence[int], backends: Backends | None, stop: asyncio.Event, into: list[CpuSample]
) -> None:
    while True:
        into.append(
            CpuSample(
                time.time(),
                tuple(cpu_of(pid) for pid in pids),
                harness_cpu(),
                backends.cpu() if backends is not None else 0.0,
                tuple(run_delay(pid) for pid in (*pids, os.getpid())),
            )
        )
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), EVERY_S)


def spent_until(samples: Sequence[CpuSample], moment: float) -> CpuSample:
    """The CPU spent from the first sample to the first one at or after ``moment``."""
    first = samples[0]
    last = next((s for s in samples if s.at >= moment), samples[-1])
    return CpuSample(
        last.at - first.at,
        tuple(b - a for a, b in zip(first.bots, last.bots, strict=True)),
        last.harness - first.harness,
        last.postgres - first.postgres,
        tuple(b - a for a, b in zip(first.waited, last.waited, strict=True)),
    )
