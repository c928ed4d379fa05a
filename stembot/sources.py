"""The instant checks of what a member gives, before anything is spent.

Exactly one of a file and a URL; an attachment's type (stembot/audio_formats.py) and size. A
URL's syntax and reuse key are stembot/source_urls.py, its guarded probe stembot/url_probe.py.
Plain values in, plain values out: nothing here knows about Discord. Every refusal is an
InvalidSourceError whose message says what was wrong and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from stembot.audio_formats import (
    FORMATS_HINT,
    audio_format_of,
    describe_non_audio,
    extension_of,
    media_type,
)
from stembot.errors import InvalidSourceError

# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------

_KB: Final = 1024
_MB: Final = 1024 * 1024


def _size_text(number: int, unit: int, label: str, scale: int, round_up: bool) -> str:
    scaled = -(-number * scale // unit) if round_up else number * scale // unit
    whole, part = divmod(scaled, scale)
    digits = str(part).rjust(len(str(scale)) - 1, "0").rstrip("0")
    return f"{whole}.{digits} {label}" if digits else f"{whole} {label}"


def describe_size(number: int, *, round_up: bool = False) -> str:
    """``24536678`` -> ``'23.4 MB'`` (1 MB = 1024 KiB, as STEMBOT_MAX_INPUT_MB counts).

    A file's size is rounded up and a limit down, so a file just over a limit never reads as
    equal to it.
    """
    if number >= _MB:
        return _size_text(number, _MB, "MB", 10 if round_up else 100, round_up)
    if number >= _KB:
        return _size_text(number, _KB, "KB", 10 if round_up else 100, round_up)
    return f"{number} bytes"


def too_large_message(size: int, max_bytes: int) -> str:
    return (
        f"That file is {describe_size(size, round_up=True)}; the limit is "
        f"{describe_size(max_bytes)}. Send a shorter clip or a compressed format such as mp3."
    )


# ---------------------------------------------------------------------------------------------
# Attachments
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioSource:
    """An attachment that passed the checks. The API gets its URL exactly as Discord gave it."""

    filename: str
    content_type: str | None
    size: int
    audio_format: str


def require_one_source(has_file: bool, has_url: bool) -> None:
    """Exactly one of ``file:`` and ``url:`` must be given."""
    if has_file and has_url:
        raise InvalidSourceError("Give either a file or a url, not both.")
    if not has_file and not has_url:
        raise InvalidSourceError(
            "Attach an audio file with `file:` or paste a link to one with `url:`."
        )


def check_attachment(
    filename: str, content_type: str | None, size: int, max_bytes: int
) -> AudioSource:
    """Refuse an attachment that is not audio we can use or is too large; spends nothing."""
    if size < 0 or max_bytes < 1:
        raise ValueError("size must be >= 0 and max_bytes >= 1")
    declared = media_type(content_type)
    extension = extension_of(filename)
    audio_format = audio_format_of(declared, extension)
    if audio_format is None:
        what = describe_non_audio(declared, extension)
        raise InvalidSourceError(
            f"That file is {what or 'of a type stembot does not know'}; "
            f"send an audio file ({FORMATS_HINT})."
        )
    if size == 0:
        raise InvalidSourceError(f"That file is empty; send an audio file ({FORMATS_HINT}).")
    if size > max_bytes:
        raise InvalidSourceError(too_large_message(size, max_bytes))
    return AudioSource(filename, declared, size, audio_format)
