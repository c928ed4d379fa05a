"""The result's picture: a lane per stem in its colour, a flat grey lane for a silent one."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from stembot.audio.picture import (
    BACKGROUND,
    LANE_BACKGROUND,
    LANE_HEIGHT,
    WAVE_LEFT,
    WAVE_RIGHT,
    WIDTH,
    height_for,
    lane_top,
)
from stembot.audio.tasks import StemFile, analyse_and_draw
from tests.audio_signals import RATE, write, write_tone

NAMES = ("vocals", "Drums", "Piano")


def lane_rows_drawn(picture: Image.Image, lane: int) -> set[int]:
    """Rows of a lane's waveform area holding anything but the lane's background."""
    pixels = np.asarray(picture.convert("RGB"))
    top = lane_top(lane)
    area = pixels[top : top + LANE_HEIGHT, WAVE_LEFT:WAVE_RIGHT]
    drawn = np.any(area != LANE_BACKGROUND, axis=2)
    return {int(row) for row in np.flatnonzero(drawn.any(axis=1))}


def draw(tmp_path: Path) -> tuple[Image.Image, int]:
    residue = np.random.default_rng(3).standard_normal(RATE * 6).astype(np.float32) * 3e-4
    stems = [
        StemFile("vocals", write_tone(tmp_path / "v.wav", 440, 6, 0.8)),
        StemFile("Drums", write_tone(tmp_path / "d.wav", 110, 6, 0.4)),
        StemFile("Piano", write(tmp_path / "p.wav", residue)),
    ]
    png = tmp_path / "result.png"
    analyses = analyse_and_draw(stems, png)
    assert [a.silent for a in analyses] == [False, False, True]
    return Image.open(io.BytesIO(png.read_bytes())), png.stat().st_size


def test_the_picture_has_a_lane_per_stem_and_an_axis(tmp_path: Path) -> None:
    """1200 px wide, three lanes and the axis tall, a small PNG on Discord's dark background."""
    picture, size = draw(tmp_path)
    assert picture.format == "PNG"
    assert picture.size == (WIDTH, height_for(len(NAMES)))
    assert size < 60_000
    assert picture.convert("RGB").getpixel((2, 2)) == BACKGROUND


def test_loud_stems_fill_their_lane_and_a_silent_stem_is_flat(tmp_path: Path) -> None:
    """The 0.8 tone reaches most of its lane, the 0.4 one about half, the silent one a line."""
    picture, _ = draw(tmp_path)
    vocals, drums, piano = (lane_rows_drawn(picture, n) for n in range(3))
    assert len(vocals) > LANE_HEIGHT * 0.7
    assert LANE_HEIGHT * 0.3 < len(drums) < LANE_HEIGHT * 0.6
    assert piano == {LANE_HEIGHT // 2}


def test_each_stem_is_drawn_in_its_own_colour(tmp_path: Path) -> None:
    """The middle of each sounding lane has a different colour; the silent one is grey."""
    picture = draw(tmp_path)[0].convert("RGB")
    middles = [picture.getpixel((WIDTH // 2, lane_top(n) + LANE_HEIGHT // 2)) for n in range(3)]
    assert len(set(middles)) == 3
    red, green, blue = middles[2]  # type: ignore[misc]
    assert max(red, green, blue) - min(red, green, blue) < 16
