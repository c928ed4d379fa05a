"""What one pass over a stem found (stembot/audio/analysis.py finds it in a worker): plain
values the bot process reads without importing the audio libraries."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
