"""The picture of a result: one lane per stem (name, waveform envelope, own colour), a time
axis with the duration; a silent stem drawn flat and labelled so.

1200 px wide, a few dozen colours: a PNG of a few tens of KB that Discord shows inline.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from stembot.audio.stem_analysis import StemAnalysis

_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

WIDTH = 1200
LABEL_WIDTH = 120
MARGIN = 10
WAVE_LEFT = LABEL_WIDTH
WAVE_RIGHT = WIDTH - MARGIN
# The envelope has one bucket per pixel column of the waveform area.
WAVE_COLUMNS = WAVE_RIGHT - WAVE_LEFT
LANE_HEIGHT = 70
LANE_GAP = 6
AXIS_HEIGHT = 34

BACKGROUND = (30, 31, 34)  # Discord's dark theme, so the card does not flash white
LANE_BACKGROUND = (43, 45, 49)
TEXT = (219, 222, 225)
MUTED = (128, 132, 142)
SILENT = (96, 99, 106)
# By stem name as the API spells it (case-insensitive); other names take the spare colours.
STEM_COLOURS = {
    "vocals": (237, 66, 69),
    "guitar": (254, 165, 48),
    "other": (87, 242, 135),
    "drums": (88, 101, 242),
    "bass": (235, 69, 158),
    "piano": (52, 200, 230),
}
SPARE_COLOURS = ((254, 231, 92), (155, 89, 182), (26, 188, 156), (230, 126, 34))


def colour_of(name: str, index: int) -> tuple[int, int, int]:
    return STEM_COLOURS.get(name.casefold(), SPARE_COLOURS[index % len(SPARE_COLOURS)])


def lane_top(index: int) -> int:
    return MARGIN + index * (LANE_HEIGHT + LANE_GAP)


def height_for(lanes: int) -> int:
    return lane_top(lanes) + AXIS_HEIGHT


def draw_png(stems: Sequence[StemAnalysis]) -> bytes:
    """The PNG for these analyses (envelopes of WAVE_COLUMNS buckets), top to bottom."""
    image = Image.new("RGB", (WIDTH, height_for(len(stems))), BACKGROUND)
    canvas = ImageDraw.Draw(image)
    label_font = ImageFont.load_default(size=15)
    small_font = ImageFont.load_default(size=12)
    duration = max((stem.duration_s for stem in stems), default=0.0)
    for index, stem in enumerate(stems):
        _draw_lane(canvas, index, stem, duration, label_font, small_font)
    _draw_axis(canvas, lane_top(len(stems)), duration, small_font)
    buffer = io.BytesIO()
    image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _draw_lane(
    canvas: ImageDraw.ImageDraw,
    index: int,
    stem: StemAnalysis,
    duration: float,
    label_font: _Font,
    small_font: _Font,
) -> None:
    top = lane_top(index)
    middle = top + LANE_HEIGHT // 2
    canvas.rectangle((WAVE_LEFT, top, WAVE_RIGHT - 1, top + LANE_HEIGHT - 1), fill=LANE_BACKGROUND)
    colour = SILENT if stem.silent else colour_of(stem.name, index)
    canvas.text((MARGIN, middle - 10), stem.name[:14], fill=colour, font=label_font, anchor="lm")
    if stem.silent:
        canvas.text((MARGIN, middle + 10), "silent", fill=MUTED, font=small_font, anchor="lm")
        canvas.line((WAVE_LEFT, middle, WAVE_RIGHT - 1, middle), fill=SILENT)
        return
    # A stem shorter than the longest covers only its share of the width.
    share = stem.duration_s / duration if duration else 1.0
    half = LANE_HEIGHT // 2 - 2
    columns = len(stem.envelope)
    for x in range(round(WAVE_COLUMNS * share)):
        level = stem.envelope[min(int(x / share), columns - 1)] if columns else 0.0
        reach = max(0, round(min(level, 1.0) * half))
        canvas.line((WAVE_LEFT + x, middle - reach, WAVE_LEFT + x, middle + reach), fill=colour)


def _draw_axis(canvas: ImageDraw.ImageDraw, top: int, duration: float, font: _Font) -> None:
    canvas.line((WAVE_LEFT, top, WAVE_RIGHT - 1, top), fill=MUTED)
    step = _tick_step(duration)
    tick = 0.0
    while step and tick < duration - step / 2:
        x = WAVE_LEFT + round(WAVE_COLUMNS * tick / duration)
        canvas.line((x, top, x, top + 5), fill=MUTED)
        canvas.text((x, top + 8), _clock(tick), fill=MUTED, font=font, anchor="mt")
        tick += step
    canvas.line((WAVE_RIGHT - 1, top, WAVE_RIGHT - 1, top + 5), fill=TEXT)
    canvas.text((WAVE_RIGHT - 1, top + 8), _clock(duration), fill=TEXT, font=font, anchor="rt")


def _tick_step(duration: float) -> float:
    """A round step giving at most about ten ticks."""
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600):
        if duration / step <= 10:
            return float(step)
    return duration / 10


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"
