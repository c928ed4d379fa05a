"""What Discord records about an uploaded file: its content type and, for a PNG, its size.

discord.py sends every file as ``application/octet-stream``; Discord names the type from the
filename instead, so a member's client plays a ``.mp3`` inline and shows a ``.png``.
"""

from __future__ import annotations

import mimetypes
import struct
from typing import Any

from .records import Upload

# Python's own table (never the machine's /etc/mime.types, which differs between machines),
# with the audio types Discord plays that it lacks or names differently.
_TYPES = mimetypes.MimeTypes()
_AUDIO = {
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".opus": "audio/opus",
    ".m4a": "audio/mp4",
    ".mp3": "audio/mpeg",
    ".wav": "audio/x-wav",
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sniff_content_type(filename: str, declared: str) -> str:
    """The content type Discord gives a file named ``filename`` (``declared`` if unknown)."""
    extension = ("." + filename.rsplit(".", 1)[-1].lower()) if "." in filename else ""
    guessed = _AUDIO.get(extension) or _TYPES.guess_type("x" + extension, strict=False)[0]
    if guessed is None:
        return declared
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


def upload_details(upload: Upload) -> dict[str, Any]:
    """Width and height of a PNG (from its IHDR chunk), as Discord adds for images."""
    data = upload.data
    if data.startswith(_PNG_SIGNATURE) and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return {"width": width, "height": height}
    return {}
