"""Mixes: a sample-accurate sum of the chosen stems that never clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stembot.audio.mixing import MIX_CEILING, sum_stems
from stembot.audio.tasks import mix_to_fit
from stembot.errors import MixMismatchError
from stembot.result_media import mix_by_key
from tests.audio_signals import RATE, level_at, tone, write, write_tone

ALL = ("vocals", "Guitar", "Other", "Drums", "Bass", "Piano")
FREQS = {"vocals": 440, "Guitar": 330, "Other": 660, "Drums": 110, "Bass": 55, "Piano": 880}
MB = 1024 * 1024


def test_without_drums_holds_every_stem_but_the_drums(tmp_path: Path) -> None:
    """The mix's spectrum: the drums' frequency is gone, every other stem's is there."""
    stems = {n: write_tone(tmp_path / f"{n}.wav", f, 2.0, 0.3) for n, f in FREQS.items()}
    without_drums = mix_by_key(ALL, "without:Drums")
    assert without_drums is not None
    chosen = [stems[n] for n in without_drums.stems]
    outcome = mix_to_fit(chosen, tmp_path / "mix.ogg", 10 * MB)
    assert outcome.path is not None
    assert level_at(outcome.path, FREQS["Drums"]) < -40
    for name in ALL:
        if name != "Drums":
            assert level_at(outcome.path, FREQS[name]) > -10, name


def test_the_sum_is_sample_accurate_and_pads_the_shorter_stem(tmp_path: Path) -> None:
    """Two stems of 1 s and 2 s: the sum is a + b sample for sample, 2 s long."""
    a, b = tone(440, 1.0, 0.2), tone(550, 2.0, 0.3)
    mixed = sum_stems(
        [write(tmp_path / "a.wav", a), write(tmp_path / "b.wav", b)], tmp_path / "s.wav"
    )
    data, rate = sf.read(mixed.path, dtype="float32")
    expected = b.copy()
    expected[: len(a)] += a
    assert rate == RATE and mixed.frames == len(b) == len(data)
    np.testing.assert_array_equal(data[:, 0], expected)
    np.testing.assert_array_equal(data[:, 1], expected)


def test_loud_stems_never_clip_and_keep_their_balance(tmp_path: Path) -> None:
    """Four stems at 0.9 in phase (a sum of 3.6) decode below full scale, ratios kept."""
    loud = [write_tone(tmp_path / f"{n}.wav", 220, 2.0, 0.9) for n in range(3)]
    quiet = write_tone(tmp_path / "q.wav", 990, 2.0, 0.9)
    outcome = mix_to_fit([*loud, quiet], tmp_path / "mix.ogg", 10 * MB)
    assert outcome.path is not None
    decoded, _ = sf.read(outcome.path, dtype="float32")
    assert np.abs(decoded).max() < 1.0
    assert outcome.gain == pytest.approx(MIX_CEILING / 3.6, rel=0.03)
    # One constant gain: the 220 Hz part stays 3x (9.5 dB) above the 990 Hz one.
    assert level_at(outcome.path, 220) - level_at(outcome.path, 990) == pytest.approx(9.5, abs=1)


def test_stems_of_different_rates_are_refused(tmp_path: Path) -> None:
    """44.1 kHz and 48 kHz stems: a clear MixMismatchError naming both rates, no resampling."""
    a = write_tone(tmp_path / "a.wav", 440, 1.0)
    b = write_tone(tmp_path / "b.wav", 440, 1.0, rate=48_000)
    with pytest.raises(MixMismatchError, match="44100 Hz, 48000 Hz"):
        sum_stems([a, b], tmp_path / "s.wav")


def test_a_mono_stem_is_spread_over_both_channels(tmp_path: Path) -> None:
    """A mono stem mixed with a stereo one is heard on both channels."""
    mono = write(tmp_path / "m.wav", tone(440, 1.0, 0.25), channels=1)
    stereo = write(tmp_path / "s.wav", tone(440, 1.0, 0.25))
    mixed = sum_stems([mono, stereo], tmp_path / "sum.wav")
    data, _ = sf.read(mixed.path, dtype="float32")
    assert mixed.channels == 2
    np.testing.assert_allclose(np.abs(data).max(axis=0), [0.5, 0.5], atol=1e-4)
