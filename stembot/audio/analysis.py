"""One pass over a stem: its waveform envelope and whether it is silent.

Both come from the same blocks, so a stem is decoded once for the picture and the flag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from stembot.audio.blocks import Block, open_audio, read_blocks

# A stem is "silent" when its RMS over the whole file is below -60 dBFS AND no sample reaches
# -40 dBFS. Why both:
# - A separator leaves bleed and hiss in the stem of an instrument the song lacks: low, but
#   continuous. -60 dBFS RMS is about 40 dB SPL when full scale plays at 100 dB SPL, a quiet
#   room's noise: inaudible under any other stem, not worth a download. The RMS bound is the
#   one that catches such residue.
# - An RMS over four minutes hides a short real part (a piano only in the bridge). The peak
#   bound keeps any stem in which something rises above -40 dBFS anywhere: calling a stem
#   silent that has content is the worse mistake (nobody downloads it), so the rule errs
#   towards "has sound".
SILENT_RMS_DBFS = -60.0
SILENT_PEAK_DBFS = -40.0

Envelope = npt.NDArray[np.float32]


def dbfs(level: float) -> float:
    """A linear level (1.0 = full scale) in dBFS; -inf for digital silence."""
    return 20 * math.log10(level) if level > 0 else -math.inf


@dataclass(frozen=True)
class StemAnalysis:
    """What the picture and the message need to know about one stem."""

    name: str
    samplerate: int
    channels: int
    frames: int
    peak: float
    rms: float
    # Peak of |sample| over all channels per time bucket (column), 0..1, buckets equal in time.
    envelope: tuple[float, ...]

    @property
    def duration_s(self) -> float:
        return self.frames / self.samplerate

    @property
    def silent(self) -> bool:
        return dbfs(self.rms) < SILENT_RMS_DBFS and dbfs(self.peak) < SILENT_PEAK_DBFS


def analyse(path: Path, name: str, columns: int) -> StemAnalysis:
    """Decode ``path`` once, block by block: envelope of ``columns`` buckets, peak and RMS."""
    with open_audio(path) as audio:
        samplerate, channels, declared = audio.samplerate, audio.channels, audio.frames
        envelope = np.zeros(columns, dtype=np.float32)
        squares = 0.0
        offset = 0
        for block in read_blocks(audio):
            loudest = np.max(np.abs(block), axis=1)
            squares += _sum_squares(block)
            _fold_into(envelope, loudest, offset, max(declared, 1), columns)
            offset += len(block)
    frames = offset
    rms = math.sqrt(squares / (frames * channels)) if frames else 0.0
    return StemAnalysis(
        name=name,
        samplerate=samplerate,
        channels=channels,
        frames=frames,
        peak=float(envelope.max(initial=0.0)),
        rms=rms,
        envelope=tuple(float(v) for v in envelope),
    )


def _sum_squares(block: Block) -> float:
    flat = block.reshape(-1)
    return float(np.dot(flat, flat))


def _fold_into(
    envelope: Envelope, loudest: Envelope, offset: int, total: int, columns: int
) -> None:
    """Max the block's per-frame levels into the columns their frames fall in.

    ``total`` is the frame count the file declares; frames past it (a declared count that
    was short, as MP3 headers can be) land in the last column.
    """
    positions = np.arange(offset, offset + len(loudest), dtype=np.int64)
    column_of = np.minimum(positions * columns // total, columns - 1)
    starts = np.concatenate(([0], np.flatnonzero(np.diff(column_of)) + 1))
    np.maximum.at(envelope, column_of[starts], np.maximum.reduceat(loudest, starts))
