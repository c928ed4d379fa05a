"""The audio worker pool: jobs run in other processes, guilds take turns, crashes recover."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stembot.audio.picture import WAVE_COLUMNS
from stembot.audio.pool import WORKER_NICENESS, AudioPool
from stembot.audio.tasks import StemFile, analyse_stem, draw_picture
from stembot.errors import AudioWorkerCrashed, ShuttingDownError
from tests import audio_jobs
from tests.audio_signals import write_tone

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def one_worker() -> AsyncIterator[AudioPool]:
    pool = AudioPool(1)
    yield pool
    await pool.close()


async def test_jobs_run_in_another_process_and_the_loop_keeps_ticking(
    one_worker: AudioPool,
) -> None:
    """A job runs in a worker process; 1.5 s of CPU there leaves the loop's ticks on time."""
    assert await one_worker.run(1, audio_jobs.pid) != os.getpid()
    # Below the bot's own priority: on a busy machine the event loop gets the core first.
    assert await one_worker.run(1, audio_jobs.niceness) == min(19, os.nice(0) + WORKER_NICENESS)
    gaps: list[float] = []

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        await one_worker.run(1, audio_jobs.spin, 1.5)
    finally:
        ticker.cancel()
    assert len(gaps) > 50
    assert max(gaps) < 0.5


async def test_guilds_take_turns(one_worker: AudioPool, tmp_path: Path) -> None:
    """Guild A queues three jobs before guild B's one: B's goes second, not last."""
    gate = tmp_path / "gate"
    order: list[str] = []

    async def job(guild: int, label: str, held: bool = False) -> None:
        order.append(
            await one_worker.run(guild, audio_jobs.label_after, label, gate if held else None)
        )

    first = asyncio.create_task(job(1, "a1", held=True))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(job(1, f"a{n}")) for n in (2, 3)]
    await asyncio.sleep(0)
    rest.append(asyncio.create_task(job(2, "b1")))
    await asyncio.sleep(0.05)
    gate.touch()
    await asyncio.gather(first, *rest)
    assert order == ["a1", "b1", "a2", "a3"]


async def test_a_killed_worker_fails_its_job_and_the_next_job_runs(one_worker: AudioPool) -> None:
    """SIGKILL in a worker: that job raises AudioWorkerCrashed, the pool serves the next one."""
    with pytest.raises(AudioWorkerCrashed):
        await one_worker.run(1, audio_jobs.die)
    assert await one_worker.run(1, audio_jobs.label_after, "after") == "after"


async def test_a_cancelled_waiting_job_never_runs(one_worker: AudioPool, tmp_path: Path) -> None:
    """A job cancelled while it waits leaves the queue; the one behind it runs."""
    gate = tmp_path / "gate"
    holding = asyncio.create_task(one_worker.run(1, audio_jobs.label_after, "held", gate))
    await asyncio.sleep(0.05)
    ran = tmp_path / "ran"
    cancelled = asyncio.create_task(one_worker.run(2, audio_jobs.touch, ran))
    after = asyncio.create_task(one_worker.run(3, audio_jobs.label_after, "after"))
    await asyncio.sleep(0.05)
    cancelled.cancel()
    gate.touch()
    assert await holding == "held"
    assert await after == "after"
    assert cancelled.cancelled()
    assert not ran.exists()


async def test_a_closed_pool_refuses_jobs() -> None:
    """After close, run raises ShuttingDownError."""
    pool = AudioPool(1)
    await pool.close()
    with pytest.raises(ShuttingDownError):
        await pool.run(1, audio_jobs.pid)


async def test_the_audio_jobs_cross_the_process_boundary(
    one_worker: AudioPool, tmp_path: Path
) -> None:
    """A stem's analysis and the picture go through a worker as paths and small values."""
    stem = StemFile("vocals", write_tone(tmp_path / "v.wav", 440, 1.0, 0.5))
    analysis = await one_worker.run(1, analyse_stem, stem)
    assert (analysis.name, analysis.silent, len(analysis.envelope)) == (
        "vocals",
        False,
        WAVE_COLUMNS,
    )
    png = await one_worker.run(1, draw_picture, [analysis], tmp_path / "p.png")
    assert png.read_bytes().startswith(b"\x89PNG")
