"""The CPU time and peak memory of the bot's audio workers, read from /proc (Linux).

The workers are spawned children of the bot's process (``multiprocessing.spawn``), so they
are found by parent pid and command line. Read them while the bot runs: once it stops, they
are gone. The pool may replace a crashed worker, so usage is kept per pid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SPAWNED_WORKER = b"spawn_main"  # in a spawned worker's command line, not the resource tracker's


@dataclass(frozen=True)
class WorkerUsage:
    cpu_s: float  # utime + stime
    hwm_kib: int  # VmHWM: the most resident memory it ever had


def workers_of(pid: int) -> dict[int, WorkerUsage]:
    """Each spawned child of ``pid`` that is still running, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            after_name = stat[stat.rindex(")") + 2 :].split()
            if int(after_name[1]) != pid or SPAWNED_WORKER not in (entry / "cmdline").read_bytes():
                continue
            status = (entry / "status").read_text()
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        ticks = int(after_name[11]) + int(after_name[12])  # utime, stime (fields 14, 15)
        found[int(entry.name)] = WorkerUsage(
            ticks / os.sysconf("SC_CLK_TCK"), int(fields["VmHWM"].split()[0])
        )
    return found


def cpu_between(before: Mapping[int, WorkerUsage], after: Mapping[int, WorkerUsage]) -> float:
    """Worker CPU seconds spent from ``before`` to ``after`` (a worker started meanwhile
    counts from zero; one that ended meanwhile is not counted)."""
    return sum(u.cpu_s - (before[p].cpu_s if p in before else 0.0) for p, u in after.items())


def peak_kib(usage: Mapping[int, WorkerUsage]) -> int:
    """The largest worker's peak resident memory, 0 without workers."""
    return max((u.hwm_kib for u in usage.values()), default=0)
