"""Audio the Soundverse stand-in serves as stems: a steady tone per stem, told apart by pitch.

Each documented stem has its own frequency (``STEM_TONES_HZ``), chosen so that no harmonic up
to the 10th of one lies within 30 Hz of another's tone: a test can tell from a spectrum which
stems a file or a mix holds, even after a limiter adds harmonics. A stem name the API does
not document gets a steady frequency of its own too. A "silent" stem is what a separator
leaves when the song has no such instrument: residual noise about 80 dB below full scale,
not digital zero.

Files are generated once per process and kept (``stem_file`` is cached): an end-to-end test
that fetches six stems costs no encoding after the first.
"""

from __future__ import annotations

import functools
import io
import zlib
from typing import Literal

import numpy as np
import soundfile as sf  # type: ignore[import-untyped, unused-ignore]

AudioFormat = Literal["wav", "mp3"]
SAMPLE_RATE = 44_100
CHANNELS = 2
SECONDS = 3.0
TONE_PEAK = 0.25  # six tones at this level sum past full scale: a mix needs headroom
SILENT_PEAK = 1e-4  # about -80 dBFS
STEM_TONES_HZ: dict[str, float] = {
    "vocals": 440.0,
    "Guitar": 299.0,
    "Other": 669.0,
    "Drums": 195.0,
    "Bass": 119.0,
    "Piano": 1127.0,
}
# Where the tones of undocumented stem names go: above the documented ones.
_EXTRA_LOW_HZ, _EXTRA_SPAN_HZ = 1500.0, 2000.0
_FADE_S = 0.01
MIME_TYPES: dict[AudioFormat, str] = {"wav": "audio/wav", "mp3": "audio/mpeg"}


def tone_hz(name: str) -> float:
    """The frequency of stem ``name``: its documented tone, or a steady one from its name."""
    known = STEM_TONES_HZ.get(name)
    if known is not None:
        return known
    return _EXTRA_LOW_HZ + zlib.crc32(name.encode()) % int(_EXTRA_SPAN_HZ)


def render(name: str, *, silent: bool = False, seconds: float = SECONDS) -> np.ndarray:
    """Stem ``name`` as float32 samples, shape (frames, 2), at SAMPLE_RATE."""
    frames = round(seconds * SAMPLE_RATE)
    if silent:
        noise = np.random.default_rng(zlib.crc32(name.encode())).uniform(-1.0, 1.0, frames)
        mono = (SILENT_PEAK * noise).astype(np.float32)
    else:
        t = np.arange(frames, dtype=np.float64) / SAMPLE_RATE
        mono = (TONE_PEAK * np.sin(2 * np.pi * tone_hz(name) * t)).astype(np.float32)
        fade = min(frames // 2, round(_FADE_S * SAMPLE_RATE))
        if fade:
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            mono[:fade] *= ramp
            mono[-fade:] *= ramp[::-1]
    # a little to the left so the channels differ, as real stems do
    return np.stack([mono, np.float32(0.9) * mono], axis=1)


def encode(samples: np.ndarray, audio_format: AudioFormat) -> bytes:
    """``samples`` as a 16-bit PCM WAV file or a 320 kb/s MP3 file (libsndfile's encoder)."""
    buffer = io.BytesIO()
    if audio_format == "wav":
        sf.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    else:
        # 320 kb/s constant, as separation services serve MP3 stems (libsndfile's default
        # is about 40 kb/s, far smaller than any real stem)
        sf.write(
            buffer,
            samples,
            SAMPLE_RATE,
            format="MP3",
            subtype="MPEG_LAYER_III",
            bitrate_mode="CONSTANT",
            compression_level=0.0,
        )
    return buffer.getvalue()


@functools.cache
def stem_file(
    name: str, audio_format: AudioFormat = "wav", *, silent: bool = False, seconds: float = SECONDS
) -> bytes:
    """The bytes of stem ``name`` as served, generated on first use and kept."""
    return encode(render(name, silent=silent, seconds=seconds), audio_format)
