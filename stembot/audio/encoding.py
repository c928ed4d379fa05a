"""A compressed copy of a stem or mix that fits a byte budget, as Ogg Vorbis.

Whether the API's own file fits is the caller's check; this is for the files that do not.

Why Ogg Vorbis (measured here, a 4-minute 44.1 kHz stereo stem through libsndfile 1.2.2,
block by block on one core of this shared 2-core machine): Vorbis at ~128 kbit/s took 3.6 s
of CPU; MP3 (LAME) took 12-19 s at comparable sizes; Opus refuses 44.1 kHz (libsndfile's Opus
takes 8/12/16/24/48 kHz only, so it would need a resampler) and took 11.6 s on a 48 kHz copy.
Discord plays .ogg inline like .mp3. Vorbis is variable bitrate, so the size is known only
after encoding: the ladder goes from ~128 to ~64 kbit/s, skipping a rung whose size the last
attempt already predicts to be well over the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from stembot.audio.blocks import open_audio, read_blocks

SUFFIX = ".ogg"


@dataclass(frozen=True)
class VorbisRung:
    # libsndfile's compression level (0 best .. 1 smallest): Vorbis quality = 1 - level.
    compression_level: float
    nominal_kbps: int
    # Vorbis goes no lower than quality 0 (~64 kbit/s stereo); the last rung folds to mono.
    mono: bool = False


# Quality 0.4 (~128 kbit/s, transparent for most listeners on a stem), 0.2 (~96), 0.0 (~64),
# then quality 0.0 in mono (~48 kbit/s, the lowest copy stembot.attachment_plan counts on).
LADDER = (
    VorbisRung(0.6, 128),
    VorbisRung(0.8, 96),
    VorbisRung(1.0, 64),
    VorbisRung(1.0, 48, mono=True),
)
# A rung predicted over the budget is skipped, not tried: a try costs a whole encode (2-3 s of
# CPU for four stereo minutes here) and Vorbis' sizes on music land near its nominal rate, so
# trying mostly just delays the card (six stems tried twice each took it past 10 s).
_SKIP_WHEN_PREDICTED_OVER = 1.0


def encode(source: Path, dest: Path, rung: VorbisRung, gain: float = 1.0) -> int:
    """Encode ``source`` to ``dest`` block by block, scaled by ``gain``; its size in bytes."""
    with (
        open_audio(source) as audio,
        sf.SoundFile(
            dest,
            "w",
            audio.samplerate,
            1 if rung.mono else audio.channels,
            format="OGG",
            subtype="VORBIS",
            compression_level=rung.compression_level,
        ) as out,
    ):
        for block in read_blocks(audio):
            scaled = block * gain if gain != 1.0 else block
            out.write(scaled.mean(axis=1, keepdims=True) if rung.mono else scaled)
    return dest.stat().st_size


def encode_to_fit(source: Path, dest: Path, budget_bytes: int, gain: float = 1.0) -> Path | None:
    """``dest`` (an .ogg) encoded to at most ``budget_bytes``, or None when even the smallest
    rung is larger (``dest`` is then removed)."""
    with open_audio(source) as audio:
        duration_s = audio.frames / audio.samplerate
    predicted = {rung: duration_s * rung.nominal_kbps * 125 for rung in LADDER}
    for index, rung in enumerate(LADDER):
        last = index == len(LADDER) - 1
        if not last and predicted[rung] > budget_bytes * _SKIP_WHEN_PREDICTED_OVER:
            continue
        size = encode(source, dest, rung, gain)
        if size <= budget_bytes:
            return dest
        # What this rung really gave tells the next rungs' sizes better than their nominal rate.
        for later in LADDER[index + 1 :]:
            predicted[later] = size * later.nominal_kbps / rung.nominal_kbps
    dest.unlink(missing_ok=True)
    return None
