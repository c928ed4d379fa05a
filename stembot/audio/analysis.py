"""One pass over a stem: its waveform envelope and whether it is silent.

Both come from the same blocks, so a stem is decoded once for the picture and the flag.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from stembot.audio.blocks import Block, open_audio, read_blocks
from stembot.audio.stem_analysis import StemAnalysis

Envelope = npt.NDArray[np.float32]


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
