"""Real audio for the audio tests: tones written with soundfile, and a spectrum reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

RATE = 44_100


def tone(freq: float, seconds: float, amplitude: float = 0.5, rate: int = RATE) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path: Path, mono: npt.NDArray[np.float32], channels: int = 2, rate: int = RATE) -> Path:
    """``mono`` on every channel, as 32-bit float WAV (no quantisation in the way of checks)."""
    sf.write(path, np.repeat(mono[:, None], channels, axis=1), rate, subtype="FLOAT")
    return path


def write_tone(
    path: Path, freq: float, seconds: float, amplitude: float = 0.5, rate: int = RATE
) -> Path:
    return write(path, tone(freq, seconds, amplitude, rate), rate=rate)


def write_long(path: Path, seconds: int, rate: int, channels: int = 2) -> Path:
    """A long 16-bit file written a second at a time (the test itself stays small)."""
    with sf.SoundFile(path, "w", rate, channels, subtype="PCM_16") as out:
        block = np.repeat(tone(440, 1, 0.3, rate)[:, None], channels, axis=1)
        for _ in range(seconds):
            out.write(block)
    return path


def level_at(path: Path, freq: float) -> float:
    """The magnitude at ``freq`` relative to the strongest frequency, in dB (first channel)."""
    data, rate = sf.read(path, dtype="float64", always_2d=True)
    spectrum = np.abs(np.fft.rfft(data[:, 0] * np.hanning(len(data))))
    freqs = np.fft.rfftfreq(len(data), 1 / rate)
    near = np.abs(freqs - freq) <= 3
    return float(20 * np.log10(spectrum[near].max() / spectrum.max() + 1e-300))
