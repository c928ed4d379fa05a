"""The guarded probe of a user's URL: does it lead to audio within the size limit?

Which URL the API gets: the user's original URL, never a copy re-hosted by stembot. The probe
only looks; ``ProbedSource.url`` is what to hand on, ``final_url`` is where the redirects ended
and is only informative. Every connection goes through the GuardedConnector
(stembot/guarded_connector.py); every refusal is an InvalidSourceError whose message says what
was wrong and what to do.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final
from urllib.parse import unquote

import aiohttp
from yarl import URL

from stembot.audio_formats import (
    FORMATS_HINT,
    audio_format_of,
    describe_non_audio,
    extension_of,
    media_type,
    sniff_audio_format,
    sniff_non_audio,
)
from stembot.errors import InvalidSourceError
from stembot.guarded_connector import GuardedConnector, is_blocked
from stembot.source_urls import (
    UNSAFE_CHARACTER,
    check_url_syntax,
    parse_url,
    redact_url,
    redirect_target,
)
from stembot.sources import describe_size, too_large_message

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProbedSource:
    """A URL that passed the probe. Hand ``url`` (what the user gave) to the API."""

    url: str = field(repr=False)
    final_url: str = field(repr=False)
    size: int
    filename: str
    audio_format: str


_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_OK: Final = frozenset({200, 203})
_GONE: Final = frozenset({404, 410})
_LOCKED: Final = frozenset({401, 403})
_CHUNK: Final = 64 * 1024
_SNIFF_BYTES: Final = 64
_MAX_FILENAME = 100

_TRY_ELSE = "or attach the file"
_PRIVATE_MESSAGE = (
    "That link points to a private or local network address, which stembot won't fetch. "
    f"Use a public link {_TRY_ELSE}."
)
_BAD_REDIRECT_MESSAGE = (
    "That link redirects to an address stembot can't follow; paste the final link to the "
    f"audio file {_TRY_ELSE}."
)


class UrlProbe:
    """Checks that a user's URL leads to audio within the size limit, before anything is spent.

    One bounded GET per probe (HEAD is often refused or wrong): redirects followed by hand up to
    ``max_redirects`` (each hop through the guarded connector), at most ``max_bytes + 1`` body
    bytes read and counted after decoding, all under one overall deadline of ``timeout_s`` that
    a trickling server cannot stretch.
    """

    def __init__(
        self,
        connector: aiohttp.BaseConnector,
        *,
        max_bytes: int,
        timeout_s: float = 20.0,
        max_redirects: int = 5,
    ) -> None:
        if not isinstance(connector, GuardedConnector):
            raise TypeError("UrlProbe needs a GuardedConnector: user URLs go through the guard")
        if max_bytes < 1 or timeout_s <= 0 or max_redirects < 0:
            raise ValueError("max_bytes >= 1, timeout_s > 0 and max_redirects >= 0 required")
        self._connector = connector
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._max_redirects = max_redirects
        self._headers = {
            "User-Agent": "stembot (checks that a link is audio)",
            # Count what the file is, not what a compressor made of it.
            "Accept-Encoding": "identity",
            "Accept": "audio/*, */*;q=0.5",
        }

    async def probe(self, url: str) -> ProbedSource:
        """Refuse (InvalidSourceError) unless ``url`` leads to usable audio within the limit."""
        checked = check_url_syntax(url)
        try:
            async with asyncio.timeout(self._timeout_s), self._session() as session:
                return await self._follow(session, checked)
        except TimeoutError:
            raise self._refuse(
                checked,
                "timed out",
                f"That link took too long to answer (over {self._timeout_s:g} "
                f"{'second' if self._timeout_s == 1 else 'seconds'}). "
                f"Try another host {_TRY_ELSE}.",
            ) from None
        except aiohttp.ClientError as error:
            raise self._refuse_client_error(checked, error) from None

    def _session(self) -> aiohttp.ClientSession:
        # A fresh session per probe over the shared connector: no cookies carried from one
        # user's link to another's, no proxy from the environment resolving past the guard.
        return aiohttp.ClientSession(
            connector=self._connector,
            connector_owner=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=None),
        )

    async def _follow(self, session: aiohttp.ClientSession, original: str) -> ProbedSource:
        target = parse_url(original)
        for _hop in range(self._max_redirects + 1):
            async with session.get(target, allow_redirects=False) as response:
                if response.status in _REDIRECTS:
                    target = self._next_hop(original, response)
                    continue
                self._check_status(original, response.status)
                return await self._read(original, response)
        raise self._refuse(
            original,
            "too many redirects",
            f"That link redirects more than {self._max_redirects} times; paste the final link "
            f"to the audio file {_TRY_ELSE}.",
        )

    def _next_hop(self, original: str, response: aiohttp.ClientResponse) -> URL:
        try:
            return redirect_target(response.url, response.headers.get("Location", ""))
        except InvalidSourceError:
            raise self._refuse(original, "bad redirect", _BAD_REDIRECT_MESSAGE) from None

    def _check_status(self, original: str, status: int) -> None:
        if status in _OK:
            return
        phrase = _status_text(status)
        if status in _GONE:
            message = (
                f"That link no longer works (the server answered {phrase}). Links can "
                f"expire: paste a fresh link {_TRY_ELSE}."
            )
        elif status in _LOCKED:
            message = (
                f"That link needs a login or has expired (the server answered {phrase}). "
                f"Use a public link {_TRY_ELSE}."
            )
        elif status == 429 or status >= 500:
            message = f"The server for that link answered {phrase}; try again later {_TRY_ELSE}."
        else:
            message = (
                f"The server for that link answered {phrase} instead of the file; check the "
                f"link {_TRY_ELSE}."
            )
        raise self._refuse(original, f"status {status}", message)

    async def _read(self, original: str, response: aiohttp.ClientResponse) -> ProbedSource:
        declared = response.content_length
        if declared is not None and declared > self._max_bytes:
            raise self._refuse(original, "too large", too_large_message(declared, self._max_bytes))
        head = bytearray()
        size = 0
        async for chunk in response.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > self._max_bytes:
                raise self._refuse(
                    original,
                    "too large",
                    f"That file is larger than the {describe_size(self._max_bytes)} limit. "
                    "Send a shorter clip or a compressed format such as mp3.",
                )
            if len(head) < _SNIFF_BYTES:
                head += chunk[: _SNIFF_BYTES - len(head)]
        if size == 0:
            raise self._refuse(
                original, "empty", f"That link leads to an empty file; check the link {_TRY_ELSE}."
            )
        content_type = media_type(response.headers.get("Content-Type"))
        filename = _filename(response)
        audio_format = self._audio_format(original, bytes(head), content_type, filename)
        return ProbedSource(
            url=original,
            final_url=str(response.url),
            size=size,
            filename=filename,
            audio_format=audio_format,
        )

    def _audio_format(
        self, original: str, head: bytes, content_type: str | None, filename: str
    ) -> str:
        # The bytes outrank the labels: servers mislabel audio, and share pages are HTML
        # behind a URL ending in .mp3.
        sniffed = sniff_audio_format(head)
        if sniffed is not None:
            return sniffed
        extension = extension_of(filename)
        what = sniff_non_audio(head)
        declared = None if what else audio_format_of(content_type, extension)
        if declared is not None:
            return declared
        what = what or describe_non_audio(content_type, extension)
        raise self._refuse(
            original,
            "not audio",
            f"That link leads to {what or 'a file that is not recognisable audio'}; link "
            f"straight to the audio file ({FORMATS_HINT}) {_TRY_ELSE}.",
        )

    def _refuse_client_error(self, original: str, error: aiohttp.ClientError) -> InvalidSourceError:
        if is_blocked(error):
            return self._refuse(original, "private address", _PRIVATE_MESSAGE)
        if isinstance(error, aiohttp.ClientConnectorDNSError):
            message = (
                f"stembot couldn't find the server for that link; check the address {_TRY_ELSE}."
            )
        elif isinstance(error, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
            message = (
                f"That link's server has an invalid HTTPS certificate; use another link "
                f"{_TRY_ELSE}."
            )
        elif isinstance(error, aiohttp.ClientConnectorError):
            message = (
                "stembot couldn't connect to the server for that link; check the link, try "
                f"again later, {_TRY_ELSE}."
            )
        elif isinstance(error, aiohttp.ClientResponseError):
            # Raised for answers that break HTTP, e.g. bytes past the declared Content-Length.
            message = (
                f"The server for that link sent a malformed answer; use another link {_TRY_ELSE}."
            )
        elif isinstance(error, aiohttp.InvalidURL):
            message = (
                "That link, or one it redirects to, isn't a valid web address; check it and "
                "paste it again."
            )
        else:
            message = (
                f"The server for that link broke off the download; try again later {_TRY_ELSE}."
            )
        return self._refuse(original, type(error).__name__, message)

    @staticmethod
    def _refuse(original: str, reason: str, message: str) -> InvalidSourceError:
        log.info("refused source url %s: %s", redact_url(original), reason)
        return InvalidSourceError(message)


def _status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _filename(response: aiohttp.ClientResponse) -> str:
    """A display name: Content-Disposition's file name, else the last path segment."""
    disposition = response.content_disposition
    candidates: Iterable[str | None] = (
        disposition.filename if disposition is not None else None,
        unquote(response.url.raw_path.rsplit("/", 1)[-1]),
    )
    for candidate in candidates:
        cleaned = _clean_filename(candidate or "")
        if cleaned:
            return cleaned
    return "audio"


def _clean_filename(name: str) -> str:
    base = re.split(r"[/\\]", name)[-1]
    base = UNSAFE_CHARACTER.sub(" ", base).strip(" .")
    return base[:_MAX_FILENAME]
