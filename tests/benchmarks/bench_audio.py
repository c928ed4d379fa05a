"""The audio work of one result: a 4-minute, 6-stem result at 44.1 kHz stereo.

Run: ``.venv/bin/python -m tests.benchmarks.bench_audio [--workers N] [--format mp3|wav]``.
Prints numbers; asserts nothing. The machine may be shared: the load average is printed too.
``--card [--runs 3] [--boost-levels 0,3]`` measures the whole bot instead: from the API's answer
to the card with the stems and the picture (tests/benchmarks/audio_card.py).

Everything runs through the AudioPool as the bot would run it (worker processes, the guild-fair
queue), while a ticker on the event loop measures how late it wakes (the loop lag the bot's
acknowledgements would see). Phases, each on a fresh pool so its workers' CPU is its own:
analyse + draw (the picture and the silent flags), a compressed copy of each stem, and two
mixes (Instrumental, Without Drums). The stems are made once per ``--workdir`` (an MP3 encode
of six 4-minute stems takes a minute or two) and reused.

Targets (issue 12): the card within 10 s of the API's answer, a mix within 8 s, loop lag p99
under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from stembot.audio.pool import AudioPool
from stembot.audio.tasks import (
    StemFile,
    analyse_and_draw,
    analyse_stem,
    compress_to_fit,
    draw_picture,
    mix_to_fit,
)
from stembot.result_media import mix_by_key
from tests.benchmarks.audio_card import measure_card

RATE = 44_100
# Name, tone, how loud (0 = the silent stem a song without piano gives).
STEMS = (
    ("vocals", 440.0, 0.4),
    ("Guitar", 330.0, 0.3),
    ("Other", 660.0, 0.2),
    ("Drums", 110.0, 0.5),
    ("Bass", 55.0, 0.5),
    ("Piano", 880.0, 0.0),
)
BUDGET = 10 * 1024 * 1024


def make_stem(path: Path, seconds: int, freq: float, amplitude: float, seed: int) -> Path:
    """A tone swelling every 4 s under noise, different on each channel; written 1 s at a time.
    A silent stem still carries a separator's faint residue (-70 dBFS)."""
    rng = np.random.default_rng(seed)
    subtype = "MPEG_LAYER_III" if path.suffix == ".mp3" else "PCM_16"
    with sf.SoundFile(path, "w", RATE, 2, subtype=subtype) as out:
        t = np.arange(RATE) / RATE
        for second in range(seconds):
            swell = 0.6 + 0.4 * np.sin(2 * np.pi * (second + t) / 4)
            signal = amplitude * swell * np.sin(2 * np.pi * freq * (second + t))
            noise = rng.standard_normal((RATE, 2)) * (0.05 * amplitude or 10 ** (-70 / 20))
            out.write((signal[:, None] + noise).astype(np.float32))
    return path


def children_usage() -> tuple[float, float]:
    """CPU seconds of the reaped worker processes so far, and the largest one's peak RSS (MiB)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


class Ticker:
    """Wakes every 10 ms on the loop and records how late each wake-up was."""

    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            due = time.perf_counter() + 0.01
            await asyncio.sleep(0.01)
            self.lags_ms.append(max(0.0, time.perf_counter() - due) * 1000)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()


async def phase(
    name: str, workers: int, work: Callable[[AudioPool], Awaitable[Any]]
) -> tuple[float, Any]:
    cpu_before, _ = children_usage()
    pool = AudioPool(workers)
    await pool.run(0, os.getpid)  # the workers' start-up is not the phase's
    started = time.perf_counter()
    result = await work(pool)
    wall = time.perf_counter() - started
    await pool.close()
    cpu_after, peak_rss = children_usage()
    print(
        f"{name:<44} {wall:6.2f} s wall  {cpu_after - cpu_before:6.2f} s worker CPU  "
        f"(largest worker so far {peak_rss:.0f} MiB)"
    )
    return wall, result


def file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


async def run(workers: int, workdir: Path, fmt: str, seconds: int) -> None:
    stems = [StemFile(name, workdir / f"{name}.{fmt}") for name, _, _ in STEMS]
    missing = [
        (s, f, a, n)
        for n, (s, (_, f, a)) in enumerate(zip(stems, STEMS, strict=True))
        if not s.path.exists()
    ]
    if missing:
        print(f"making {len(missing)} stems in {workdir} ...")
        pool = AudioPool(workers)
        await asyncio.gather(
            *(pool.run(0, make_stem, s.path, seconds, f, a, n) for s, f, a, n in missing)
        )
        await pool.close()
    sizes = [file_mb(s.path) for s in stems]
    print(
        f"{len(stems)} stems, {seconds} s, {RATE} Hz stereo {fmt}, "
        f"{min(sizes):.1f}-{max(sizes):.1f} MB each; {workers} worker(s); "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    ticker = Ticker()
    ticker.start()
    out = workdir / "out"

    async def analyse(pool: AudioPool) -> Any:
        return await pool.run(1, analyse_and_draw, stems, out / "result.png")

    await phase("analyse + draw (one job, 6 stems)", workers, analyse)

    async def analyse_apart(pool: AudioPool) -> Any:
        analyses = await asyncio.gather(*(pool.run(1, analyse_stem, s) for s in stems))
        await pool.run(1, draw_picture, analyses, out / "result.png")
        return analyses

    _, analyses = await phase("analyse (a job per stem) + draw", workers, analyse_apart)
    silent = [a.name for a in analyses if a.silent]
    print(f"    picture {file_mb(out / 'result.png') * 1000:.1f} kB; silent: {silent}")

    encode_times: list[float] = []

    async def encode_each(pool: AudioPool) -> None:
        for stem in stems:
            started = time.perf_counter()
            await pool.run(1, compress_to_fit, stem.path, out / f"{stem.name}.ogg", BUDGET)
            encode_times.append(time.perf_counter() - started)

    await phase("encode each stem, one after another", workers, encode_each)
    print(
        "    per stem: "
        + ", ".join(f"{s.name} {t:.2f} s" for s, t in zip(stems, encode_times, strict=True))
    )

    async def encode_all(pool: AudioPool) -> None:
        await asyncio.gather(
            *(pool.run(1, compress_to_fit, s.path, out / f"{s.name}.ogg", BUDGET) for s in stems)
        )

    await phase(f"encode all 6 at once ({workers} worker(s))", workers, encode_all)
    names = [s.name for s in stems]
    by_name = {s.name: s.path for s in stems}
    for key in ("instrumental", "without:Drums"):
        mix = mix_by_key(names, key)
        assert mix is not None

        async def one_mix(
            pool: AudioPool, mix_stems: tuple[str, ...] = mix.stems, label: str = mix.label
        ) -> Any:
            return await pool.run(
                2, mix_to_fit, [by_name[n] for n in mix_stems], out / f"{label}.ogg", BUDGET
            )

        _, outcome = await phase(f"mix {mix.label} ({len(mix.stems)} stems)", workers, one_mix)
        size = file_mb(outcome.path) if outcome.path else float("nan")
        print(f"    gain {outcome.gain:.3f}, {size:.2f} MB")
    ticker.stop()
    lags = sorted(ticker.lags_ms)
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    print(
        f"event-loop lag over {len(lags)} ticks: p50 {statistics.median(lags):.1f} ms, "
        f"p99 {p99:.1f} ms, max {lags[-1]:.1f} ms"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--format", choices=("mp3", "wav"), default="mp3")
    parser.add_argument("--seconds", type=int, default=240, help="length of each stem")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "stembot-bench-audio"
    )
    parser.add_argument(
        "--card",
        action="store_true",
        help="time the whole bot from the API's answer to the card with its files instead",
    )
    parser.add_argument("--runs", type=int, default=3, help="--card: runs per boost level")
    parser.add_argument(
        "--boost-levels",
        default="0,3",
        help="--card: the servers' boost levels (0: 10 MiB uploads, 2: 50, 3: 100)",
    )
    arguments = parser.parse_args(argv)
    if arguments.card:
        asyncio.run(
            measure_card(
                workers=arguments.workers,
                audio_format=arguments.format,
                seconds=arguments.seconds,
                runs=arguments.runs,
                tiers=[int(level) for level in arguments.boost_levels.split(",")],
            )
        )
        return
    workdir = arguments.workdir / f"{arguments.format}-{arguments.seconds}s"
    (workdir / "out").mkdir(parents=True, exist_ok=True)
    asyncio.run(run(arguments.workers, workdir, arguments.format, arguments.seconds))


if __name__ == "__main__":
    main()
