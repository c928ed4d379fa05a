"""Jobs for the pool tests; module-level so that a spawned worker can import them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def pid() -> int:
    return os.getpid()


def label_after(label: str, gate: Path | None = None) -> str:
    """``label``, once ``gate`` exists (a job that holds its worker until the test says)."""
    while gate is not None and not gate.exists():
        time.sleep(0.01)
    return label


def spin(seconds: float) -> int:
    """Burn CPU (holding this worker's GIL) for ``seconds``."""
    end = time.process_time() + seconds
    count = 0
    while time.process_time() < end:
        count += 1
    return count


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def touch(path: Path) -> None:
    path.touch()


def niceness() -> int:
    return os.nice(0)
