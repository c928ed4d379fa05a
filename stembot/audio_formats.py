"""Audio formats: which files are usable audio, what the rest are called, what bytes prove.

Plain values in, plain values out. The labels (content type, extension) are what a sender
claims; the sniffers read the first bytes, which outrank the labels wherever both are known.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

FORMATS_HINT: Final = "mp3, wav, flac, ogg/opus, m4a/aac"

_AUDIO_EXTENSIONS: Final[Mapping[str, str]] = {
    "mp3": "mp3",
    "wav": "wav",
    "wave": "wav",
    "flac": "flac",
    "ogg": "ogg",
    "oga": "ogg",
    "opus": "opus",
    "m4a": "m4a",
    "aac": "aac",
}

_AUDIO_TYPES: Final[Mapping[str, str]] = {
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mpeg3": "mp3",
    "audio/x-mpeg": "mp3",
    "audio/x-mpeg-3": "mp3",
    "audio/x-mp3": "mp3",
    "audio/wav": "wav",
    "audio/wave": "wav",
    "audio/x-wav": "wav",
    "audio/vnd.wave": "wav",
    "audio/x-pn-wav": "wav",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/ogg": "ogg",
    "audio/x-ogg": "ogg",
    "audio/vorbis": "ogg",
    "audio/opus": "opus",
    "audio/mp4": "m4a",
    "audio/m4a": "m4a",
    "audio/x-m4a": "m4a",
    "audio/aac": "aac",
    "audio/x-aac": "aac",
    "audio/aacp": "aac",
    "audio/x-hx-aac-adts": "aac",
}

# Generic or container types that say nothing either way: the extension decides.
_UNINFORMATIVE_TYPES: Final = frozenset(
    {
        "application/octet-stream",
        "binary/octet-stream",
        "application/binary",
        "application/x-download",
        "application/force-download",
        "application/download",
        "application/ogg",
        "video/ogg",
        "video/mp4",
    }
)

_TYPE_NAMES: Final[Mapping[str, str]] = {
    "image/png": "a PNG image",
    "image/jpeg": "a JPEG image",
    "image/gif": "a GIF image",
    "image/webp": "a WebP image",
    "image/svg+xml": "an SVG image",
    "video/mp4": "an MP4 video",
    "video/quicktime": "a QuickTime video",
    "video/webm": "a WebM video",
    "text/html": "a web page",
    "application/xhtml+xml": "a web page",
    "text/plain": "a text file",
    "application/json": "a JSON file",
    "application/pdf": "a PDF document",
    "application/zip": "a ZIP archive",
}

_EXTENSION_NAMES: Final[Mapping[str, str]] = {
    "png": "a PNG image",
    "jpg": "a JPEG image",
    "jpeg": "a JPEG image",
    "gif": "a GIF image",
    "webp": "a WebP image",
    "mp4": "an MP4 video",
    "mov": "a QuickTime video",
    "webm": "a WebM video",
    "mkv": "a video",
    "avi": "a video",
    "html": "a web page",
    "htm": "a web page",
    "txt": "a text file",
    "json": "a JSON file",
    "pdf": "a PDF document",
    "zip": "a ZIP archive",
    "mid": "a MIDI file",
    "midi": "a MIDI file",
}

_FAMILY_NAMES: Final[Mapping[str, str]] = {
    "image": "an image",
    "video": "a video",
    "text": "a text file",
}

# A content type is echoed to the user only when it looks like one (it may come from a server).
_SAFE_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,40}/[a-z0-9][a-z0-9.+-]{0,60}")
_SAFE_EXTENSION = re.compile(r"[a-z0-9]{1,8}")


def media_type(content_type: str | None) -> str | None:
    """``'Audio/MPEG; charset=x'`` -> ``'audio/mpeg'``; empty -> None."""
    if not content_type:
        return None
    bare = content_type.split(";", 1)[0].strip().lower()
    return bare or None


def extension_of(name: str | None) -> str | None:
    """The lower-cased extension of a file name or URL path, without the dot."""
    if not name:
        return None
    base = name.rsplit("/", 1)[-1]
    if "." not in base.strip("."):
        return None
    return base.rsplit(".", 1)[-1].lower() or None


def audio_format_of(content_type: str | None, extension: str | None) -> str | None:
    """The audio format named by the content type or the extension, else None."""
    return _AUDIO_TYPES.get(content_type or "") or _AUDIO_EXTENSIONS.get(extension or "")


def describe_non_audio(content_type: str | None, extension: str | None) -> str | None:
    """What a file that is not usable audio is ("a PNG image"), or None when unknown.

    Phrased to follow both "That file is" and "That link leads to".
    """
    informative = content_type if content_type not in _UNINFORMATIVE_TYPES else None
    if informative:
        if informative in _TYPE_NAMES:
            return _TYPE_NAMES[informative]
        family = informative.split("/", 1)[0]
        shown = informative if _SAFE_MEDIA_TYPE.fullmatch(informative) else None
        if family == "audio":
            return (
                f"an unsupported audio format ({shown})" if shown else "an unsupported audio format"
            )
        if family in _FAMILY_NAMES:
            return _FAMILY_NAMES[family]
        if shown:
            return f"{_article(shown)} {shown} file"
    named = _EXTENSION_NAMES.get(extension or "") or _TYPE_NAMES.get(content_type or "")
    if named:
        return named
    if extension and _SAFE_EXTENSION.fullmatch(extension):
        return f"a .{extension} file"
    return None


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


_MPEG_AUDIO_BRANDS: Final = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "})


def sniff_audio_format(head: bytes) -> str | None:
    """The audio format the first bytes of a file prove, else None."""
    if head.startswith(b"ID3"):
        return "mp3"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"OggS"):
        return "opus" if b"OpusHead" in head[:64] else "ogg"
    if head[4:8] == b"ftyp" and head[8:12] in _MPEG_AUDIO_BRANDS:
        return "m4a"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG frame sync; layer bits 00 there mean an ADTS (AAC) header instead.
        return "aac" if head[1] & 0x06 == 0 else "mp3"
    return None


def sniff_non_audio(head: bytes) -> str | None:
    """What the first bytes of a file prove it is when that is not audio, else None."""
    signatures = (
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"%PDF-", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive"),
    )
    for magic, name in signatures:
        if head.startswith(magic):
            return name
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a WebP image"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "a video"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "a web page"
    return None
