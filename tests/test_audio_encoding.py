"""A compressed copy fits the byte budget, or the answer says it cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stembot.audio.encoding import LADDER, encode, encode_to_fit
from tests.audio_signals import RATE, tone

KB = 1000


@pytest.fixture
def busy_stem(tmp_path: Path) -> Path:
    """20 s of a tone under noise, different on each channel (a real stereo image): dense
    enough that Vorbis needs its full bitrate."""
    noise = np.random.default_rng(7).standard_normal((RATE * 20, 2)).astype(np.float32) * 0.1
    path = tmp_path / "stem.wav"
    sf.write(path, tone(440, 20, 0.3)[:, None] + noise, RATE, subtype="FLOAT")
    return path


def test_the_copy_fits_a_budget_the_first_rung_does_not(tmp_path: Path, busy_stem: Path) -> None:
    """A budget below the ~128 kbit/s size gets a lower rung: an .ogg within it, same audio."""
    first = encode(busy_stem, tmp_path / "first.ogg", LADDER[0])
    budget = int(first * 0.8)
    copy = encode_to_fit(busy_stem, tmp_path / "copy.ogg", budget)
    assert copy is not None
    assert copy.stat().st_size <= budget
    info = sf.info(copy)
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("OGG", "VORBIS", RATE, 2)
    assert info.frames == RATE * 20


def test_a_budget_nothing_fits_gives_none_and_leaves_no_file(
    tmp_path: Path, busy_stem: Path
) -> None:
    """20 s cannot fit in 10 kB at any rung: None, and no half-made file stays behind."""
    dest = tmp_path / "copy.ogg"
    assert encode_to_fit(busy_stem, dest, 10 * KB) is None
    assert not dest.exists()


def test_below_the_lowest_stereo_rung_the_copy_is_mono(tmp_path: Path, busy_stem: Path) -> None:
    """A budget under Vorbis' lowest stereo size still gets a copy: mono, within it."""
    lowest_stereo = encode(busy_stem, tmp_path / "stereo.ogg", LADDER[-2])
    copy = encode_to_fit(busy_stem, tmp_path / "copy.ogg", lowest_stereo - 1)
    assert copy is not None
    assert copy.stat().st_size < lowest_stereo
    assert sf.info(copy).channels == 1
