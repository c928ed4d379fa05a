"""Stems are decoded in blocks: memory stays small whatever the song's length."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stembot.audio.analysis import analyse
from stembot.audio.blocks import probe
from stembot.audio.mixing import sum_stems
from stembot.errors import AudioFileError
from tests.audio_signals import write_long

MB = 1024 * 1024


def peak_traced(work: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_ten_minute_48k_stereo_stem_is_analysed_in_a_few_mb(tmp_path: Path) -> None:
    """Analysing 10 minutes at 48 kHz stereo (230 MB as float32) peaks under 16 MB."""
    path = write_long(tmp_path / "long.wav", 600, 48_000)
    assert probe(path).frames == 600 * 48_000
    peak = peak_traced(lambda: analyse(path, "long", 1080))
    path.unlink()  # 230 MB: pytest keeps the last runs' temporary folders
    assert peak < 16 * MB, f"analysis peaked at {peak / MB:.0f} MB"


def test_mixing_two_long_stems_stays_in_a_few_mb(tmp_path: Path) -> None:
    """Summing two 3-minute 48 kHz stereo stems (2 x 69 MB as float32) peaks under 16 MB."""
    stems = [write_long(tmp_path / f"{n}.wav", 180, 48_000) for n in range(2)]
    peak = peak_traced(lambda: sum_stems(stems, tmp_path / "sum.wav"))
    for path in [*stems, tmp_path / "sum.wav"]:
        path.unlink()  # 280 MB in all: pytest keeps the last runs' temporary folders
    assert peak < 16 * MB, f"mixing peaked at {peak / MB:.0f} MB"


@pytest.mark.parametrize(
    "content", [b"", b"<html>not found</html>", b"RIFF\x24\x00\x00\x00WAVEfmt "]
)
def test_a_file_that_is_not_audio_is_an_audio_file_error(tmp_path: Path, content: bytes) -> None:
    """Empty, HTML and a truncated WAV header raise AudioFileError, not libsndfile's error."""
    path = tmp_path / "stem.wav"
    path.write_bytes(content)
    with pytest.raises(AudioFileError):
        analyse(path, "stem", 100)
