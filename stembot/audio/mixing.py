"""Mixes of a result's stems: the sample-accurate sum (which mixes a result offers is
stembot.result_media's).

The sum never clips, by two passes over blocks rather than a limiter. Pass one sums the stems
block by block into a float32 scratch file (no clipping possible in float) and measures the
peak of the sum; pass two (the encoder, reading that file) applies one constant gain that
brings the peak to ``MIX_CEILING``. A constant gain is the mix exactly as summed, only
quieter; a look-ahead-free limiter would change the sound wherever it acts, and the places it
acts (the loud hits) are the ones a musician listens for. The price is a scratch file of
4 bytes per sample (about 85 MB for four stereo minutes), deleted by the caller, and a read of
it: far cheaper than decoding every stem twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from stembot.audio.blocks import BLOCK_FRAMES, Block, open_audio
from stembot.errors import AudioFileError, MixMismatchError

# -1 dBFS: lossy encoders overshoot the peak they are given by a fraction of a dB; 1 dB of
# headroom (EBU R 128's true-peak ceiling) keeps the decoded mix below full scale.
MIX_CEILING = 10 ** (-1 / 20)


@dataclass(frozen=True)
class MixedSum:
    """The scratch file of the summed stems and the gain that keeps it from clipping."""

    path: Path
    samplerate: int
    channels: int
    frames: int
    peak: float

    @property
    def gain(self) -> float:
        return min(1.0, MIX_CEILING / self.peak) if self.peak > 0 else 1.0


def sum_stems(paths: Sequence[Path], scratch: Path) -> MixedSum:
    """Sum the stems sample by sample into ``scratch`` (float32 WAV) and measure its peak.

    Shorter stems are padded with silence to the longest. Stems must share a sample rate
    (resampling would change them; the API returns one rate per result, so a mismatch is a
    broken result): MixMismatchError otherwise. Mono stems are spread to both channels of a
    stereo mix; other channel mismatches are refused the same way.
    """
    if not paths:
        raise ValueError("nothing to mix")
    with ExitStack() as opened:
        stems = [opened.enter_context(open_audio(path)) for path in paths]
        samplerate, channels = _common_format(stems)
        peak = 0.0
        frames = 0
        with sf.SoundFile(scratch, "w", samplerate, channels, format="WAV", subtype="FLOAT") as out:
            for block in _summed_blocks(stems, channels):
                peak = max(peak, float(np.max(np.abs(block), initial=0.0)))
                out.write(block)
                frames += len(block)
    return MixedSum(scratch, samplerate, channels, frames, peak)


def _common_format(stems: Sequence[sf.SoundFile]) -> tuple[int, int]:
    rates = sorted({stem.samplerate for stem in stems})
    if len(rates) > 1:
        raise MixMismatchError(
            "These stems have different sample rates ("
            + ", ".join(f"{rate} Hz" for rate in rates)
            + "), so they cannot be mixed."
        )
    layouts = {stem.channels for stem in stems}
    channels = max(layouts)
    if layouts - {1, channels}:
        raise MixMismatchError(
            "These stems have different channel layouts ("
            + ", ".join(str(n) for n in sorted(layouts))
            + " channels), so they cannot be mixed."
        )
    return rates[0], channels


def _summed_blocks(stems: Sequence[sf.SoundFile], channels: int) -> Iterator[Block]:
    while True:
        total = np.zeros((BLOCK_FRAMES, channels), dtype=np.float32)
        longest = 0
        for stem in stems:
            try:
                block = stem.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as error:
                raise AudioFileError() from error
            # Broadcasting spreads a mono block over every channel; a short one pads with zeros.
            total[: len(block)] += block
            longest = max(longest, len(block))
        if not longest:
            return
        yield total[:longest]
