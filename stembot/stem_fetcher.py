"""The guarded download of one stem of a stored result into a file.

Stem links come from the API's answer, but they are fetched like a member's link, by the
guarded GET (stembot/guarded_get.py), so neither the first address nor any redirect reaches a
private or local network; only http(s) redirects are followed, by hand. The body is counted
as it streams (Content-Length can lie), stopped at ``max_bytes``, sniffed as audio as
soon as its first bytes are in (a web page is not downloaded to the end), and a download that
ends short of its declared length is an error. Every failure is a StemFetchError
(stembot/errors.py) whose facts say what happened; the link itself (signed, a credential)
reaches no log or error.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import aiohttp

from stembot.audio_formats import (
    describe_non_audio,
    extension_of,
    media_type,
    sniff_audio_format,
    sniff_non_audio,
)
from stembot.errors import (
    InvalidSourceError,
    StemAddressRefusedError,
    StemFetchError,
    StemGoneError,
    StemNotAudioError,
    StemTooLargeError,
    StemTruncatedError,
    StemUnavailableError,
    StemUnreachableError,
)
from stembot.guarded_connector import is_blocked
from stembot.guarded_get import (
    BodyTooLargeError,
    GuardedGet,
    RedirectRefusedError,
    TooManyRedirectsError,
)
from stembot.models import Stem
from stembot.source_urls import check_url_syntax, parse_url, redact_url

log = logging.getLogger(__name__)

_OK: Final = frozenset({200, 203})
# An expired signed link answers 403 on the common object stores, not 404.
_GONE: Final = frozenset({401, 403, 404, 410})
_SNIFF_BYTES: Final = 64
# Network chunks are gathered to this size before one write in a thread: a thread hop per
# chunk of a few KiB would cost more than the write.
_WRITE_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StemDownload:
    """What was written: ``size`` bytes of ``audio_format`` (the sniffed format, the file's
    extension)."""

    size: int
    audio_format: str


class StemFetcher:
    """Downloads a stem into a file: one GET through the guard, at most ``max_bytes``, all
    under one deadline of ``timeout_s`` (a trickling server cannot stretch it) and with no
    read waiting longer than ``stall_s``."""

    def __init__(
        self,
        connector: aiohttp.BaseConnector,
        *,
        max_bytes: int,
        timeout_s: float = 120.0,
        stall_s: float = 30.0,
        max_redirects: int = 5,
    ) -> None:
        self._get = GuardedGet(
            connector,
            user_agent="stembot (fetches stems to attach them)",
            max_bytes=max_bytes,
            timeout_s=timeout_s,
            stall_s=stall_s,
            max_redirects=max_redirects,
        )

    @property
    def max_bytes(self) -> int:
        return self._get.max_bytes

    async def fetch(self, stem: Stem, destination: Path) -> StemDownload:
        """Write ``stem``'s file to ``destination`` (created or overwritten), or raise a
        StemFetchError. On failure ``destination`` may hold a part: the caller removes it."""
        try:
            start = parse_url(check_url_syntax(stem.url))
        except InvalidSourceError:
            raise _failed(stem, "unusable link", StemAddressRefusedError(stem.name)) from None
        try:
            async with self._get.open(start) as response:
                _check_status(stem, response.status)
                return await self._read(stem, response, destination)
        except StemFetchError as error:
            raise _failed(stem, type(error).__name__, error) from None
        except BodyTooLargeError as error:
            too_large = StemTooLargeError(stem.name, self._get.max_bytes, error.declared)
            raise _failed(stem, "too large", too_large) from None
        except (RedirectRefusedError, TooManyRedirectsError) as error:
            refused = StemAddressRefusedError(stem.name)
            raise _failed(stem, type(error).__name__, refused) from None
        except TimeoutError:
            raise _failed(stem, "timed out", StemUnreachableError(stem.name, "timed out")) from None
        except aiohttp.ClientError as error:
            if is_blocked(error):
                refused = StemAddressRefusedError(stem.name)
                raise _failed(stem, "private address", refused) from None
            unreachable = StemUnreachableError(stem.name, type(error).__name__)
            raise _failed(stem, type(error).__name__, unreachable) from None

    async def _read(
        self, stem: Stem, response: aiohttp.ClientResponse, destination: Path
    ) -> StemDownload:
        body = self._get.body(response)
        head = bytearray()
        audio_format: str | None = None
        async with _FileSink(destination) as sink:
            try:
                async for chunk in body:
                    if audio_format is None:
                        head += chunk[: _SNIFF_BYTES - len(head)]
                        if len(head) >= _SNIFF_BYTES:
                            audio_format = _audio_format(stem, bytes(head), response)
                    await sink.write(chunk)
            except aiohttp.ClientPayloadError:
                # aiohttp's parser holds the body to Content-Length (or the chunked encoding's
                # last chunk) and raises this when the connection ends short of it; it may do
                # so before handing over what had arrived, so ``body.size`` is at most the truth.
                raise StemTruncatedError(stem.name, response.content_length, body.size) from None
        if body.size == 0:
            raise StemNotAudioError(stem.name, "an empty file")
        if audio_format is None:
            audio_format = _audio_format(stem, bytes(head), response)
        whole = _riff_length(bytes(head)) if audio_format == "wav" else None
        if whole is not None and body.size < whole:
            # A complete answer holding part of a file (cut short where it was stored): the
            # WAV header still says how long the file was.
            raise StemTruncatedError(stem.name, whole, body.size)
        return StemDownload(size=body.size, audio_format=audio_format)


def _check_status(stem: Stem, status: int) -> None:
    if status in _GONE:
        raise StemGoneError(stem.name, status)
    if status not in _OK:
        raise StemUnavailableError(stem.name, status)


def _audio_format(stem: Stem, head: bytes, response: aiohttp.ClientResponse) -> str:
    """The format the first bytes prove; the labels count only for saying what it is not (the
    file is decoded later, so the bytes must be audio whatever the server calls them)."""
    sniffed = sniff_audio_format(head)
    if sniffed is not None:
        return sniffed
    content_type = media_type(response.headers.get("Content-Type"))
    extension = extension_of(response.url.path)
    what = sniff_non_audio(head) or describe_non_audio(content_type, extension)
    raise StemNotAudioError(stem.name, what)


def _riff_length(head: bytes) -> int | None:
    """The file length a WAV header declares, or None where writers that stream leave it
    unknown (0 or all ones)."""
    declared = int.from_bytes(head[4:8], "little")
    return None if declared in (0, 0xFFFFFFFF) else declared + 8


def _failed(stem: Stem, reason: str, error: StemFetchError) -> StemFetchError:
    log.info("stem %r not fetched from %s: %s", stem.name, redact_url(stem.url), reason)
    return error


class _FileSink:
    """A file written from the event loop without blocking it: opening, writes of gathered
    chunks and closing run in a thread. Measured here, a 40 MiB stem from another process:
    written inline it stalled the loop up to 14-42 ms; gathered and written in a thread,
    5-17 ms (what remains is aiohttp reading the socket)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: BinaryIO | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    async def __aenter__(self) -> _FileSink:
        self._file = await asyncio.to_thread(self._path.open, "wb")
        return self

    async def write(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= _WRITE_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        assert self._file is not None
        chunks, self._pending, self._pending_bytes = self._pending, [], 0
        await asyncio.to_thread(self._file.writelines, chunks)

    async def __aexit__(self, kind: object, error: object, trace: object) -> None:
        assert self._file is not None
        try:
            if kind is None and self._pending:
                await self._flush()
        finally:
            await asyncio.to_thread(self._file.close)
