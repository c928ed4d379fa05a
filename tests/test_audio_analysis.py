"""Silence detection and the waveform envelope, from one pass over a stem."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stembot.audio.analysis import analyse
from stembot.audio.stem_analysis import SILENT_PEAK_DBFS, SILENT_RMS_DBFS, dbfs
from tests.audio_signals import RATE, tone, write


def level(db: float) -> float:
    return float(10 ** (db / 20))


def analysed(tmp_path: Path, mono: np.ndarray) -> tuple[bool, float, float]:
    result = analyse(write(tmp_path / "stem.wav", mono.astype(np.float32)), "stem", 200)
    return result.silent, dbfs(result.rms), dbfs(result.peak)


def test_digital_silence_is_silent(tmp_path: Path) -> None:
    """All zeros is flagged silent."""
    assert analysed(tmp_path, np.zeros(RATE * 3))[0] is True


def test_low_bleed_under_both_bounds_is_silent(tmp_path: Path) -> None:
    """Noise at -66 dBFS RMS peaking near -55 dBFS (a separator's residue) is silent."""
    noise = np.random.default_rng(1).standard_normal(RATE * 5) * level(-66)
    silent, rms, peak = analysed(tmp_path, noise)
    assert rms < SILENT_RMS_DBFS and peak < SILENT_PEAK_DBFS
    assert silent is True


def test_a_quiet_but_steady_part_just_above_the_rms_bound_is_not_silent(tmp_path: Path) -> None:
    """A tone at -57 dBFS RMS (peak -54) throughout is content, not silence."""
    silent, rms, _ = analysed(tmp_path, tone(440, 5, level(-54)))
    assert SILENT_RMS_DBFS < rms < SILENT_RMS_DBFS + 4
    assert silent is False


def test_a_short_part_in_a_long_quiet_stem_is_not_silent(tmp_path: Path) -> None:
    """0.2 s of piano at -35 dBFS in 60 s of nothing keeps the stem (RMS alone would drop it)."""
    mono = np.zeros(RATE * 60, dtype=np.float32)
    mono[RATE * 30 : RATE * 30 + RATE // 5] = tone(440, 0.2, level(-35))
    silent, rms, peak = analysed(tmp_path, mono)
    assert rms < SILENT_RMS_DBFS and peak > SILENT_PEAK_DBFS
    assert silent is False


def test_the_envelope_follows_the_sound_in_time(tmp_path: Path) -> None:
    """A tone in the first half only: loud buckets first, empty buckets after."""
    mono = np.concatenate([tone(440, 4, 0.8), np.zeros(RATE * 4, dtype=np.float32)])
    result = analyse(write(tmp_path / "half.wav", mono), "half", 100)
    assert len(result.envelope) == 100
    assert min(result.envelope[:49]) > 0.75
    assert max(result.envelope[51:]) == 0.0
    assert result.duration_s == 8.0
    assert result.peak == max(result.envelope)
