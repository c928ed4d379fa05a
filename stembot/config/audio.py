"""Settings of the audio worked on here: playable stems, mixes, the picture."""

from __future__ import annotations

from dataclasses import dataclass

from stembot.config import kinds
from stembot.config.declaring import setting
from stembot.config.kinds import Kind

_AUDIO = "Audio (playable stems, mixes, the picture)"

# fmt: off
# (One setting to a few lines: name, default, kind and section, then its help.)


@dataclass(frozen=True)
class AudioSettings:
    """Audio: stems attached, and the workers making them."""

    attach_stems: bool = setting(
        "STEMBOT_ATTACH_STEMS", True, Kind(kinds.parse_bool, "true or false"), _AUDIO,
        "Attach each result's stems as files Discord plays, with a picture of them and free "
        "mixes (each stem is downloaded once and worked on here); false: links only.",
    )
    audio_workers: int = setting(
        "STEMBOT_AUDIO_WORKERS", 2, kinds.AT_LEAST_1, _AUDIO,
        "Worker processes decoding, mixing, encoding and drawing at once (each ~1 core while "
        "busy, at low priority so the bot stays responsive); 2 suits a 2-core machine.",
    )

# fmt: on
