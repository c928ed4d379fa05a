"""The jobs the worker pool runs: file paths in, file paths and small values out.

Each is a module-level function (a worker process imports it by name) whose arguments and
result pickle in a few KB: the audio itself stays in files, never crosses the process pipe.
The bot process imports this module only to name the jobs, so the audio libraries (numpy,
soundfile, Pillow: about 0.6 s and 18 MiB) are imported inside the jobs, in the workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stembot.audio.stem_analysis import StemAnalysis


@dataclass(frozen=True)
class StemFile:
    name: str
    path: Path


def analyse_stem(stem: StemFile) -> StemAnalysis:
    """Decode one stem once: its envelope (one bucket per column of the picture) and flag.

    One job per stem lets several workers share a result's stems.
    """
    from stembot.audio.analysis import analyse
    from stembot.audio.picture import WAVE_COLUMNS

    return analyse(stem.path, stem.name, WAVE_COLUMNS)


def draw_picture(analyses: Sequence[StemAnalysis], png: Path) -> Path:
    from stembot.audio.picture import draw_png

    png.write_bytes(draw_png(analyses))
    return png


def analyse_and_draw(stems: Sequence[StemFile], png: Path) -> tuple[StemAnalysis, ...]:
    """Every stem analysed and the picture written to ``png``, in one job."""
    analyses = tuple(analyse_stem(stem) for stem in stems)
    draw_picture(analyses, png)
    return analyses


def compress_to_fit(source: Path, dest: Path, budget_bytes: int) -> Path | None:
    """An .ogg copy of a stem within ``budget_bytes`` at ``dest``, or None if none fits."""
    from stembot.audio.encoding import encode_to_fit

    return encode_to_fit(source, dest, budget_bytes)


@dataclass(frozen=True)
class MixOutcome:
    """The encoded mix (None when it cannot fit the budget) and the gain that kept it clean."""

    path: Path | None
    gain: float
    duration_s: float


def mix_to_fit(stems: Sequence[Path], dest: Path, budget_bytes: int) -> MixOutcome:
    """Sum ``stems`` and encode the sum, scaled below clipping, as an .ogg within budget."""
    from stembot.audio.encoding import encode_to_fit
    from stembot.audio.mixing import sum_stems

    scratch = dest.with_name(dest.name + ".sum.wav")
    try:
        mixed = sum_stems(stems, scratch)
        path = encode_to_fit(scratch, dest, budget_bytes, mixed.gain)
    finally:
        scratch.unlink(missing_ok=True)
    return MixOutcome(path, mixed.gain, mixed.frames / mixed.samplerate)
