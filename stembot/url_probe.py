"""The guarded probe of a user's URL: does it lead to audio within the size limit?

Which URL the API gets: the user's original URL, never a copy re-hosted by stembot. The probe
only looks; ``ProbedSource.url`` is what to hand on, ``final_url`` is where the redirects ended
and is only informative. Every connection goes through the GuardedConnector
(stembot/guarded_connector.py); every refusal is an InvalidSourceError whose message says what
was wrong and what to do.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final
from urllib.parse import unquote

import aiohttp

from stembot.audio_formats import (
    FORMATS_HINT,
    audio_format_of,
    describe_non_audio,
    extension_of,
    media_type,
    sniff_audio_format,
    sniff_non_audio,
)
from stembot.errors import InvalidSourceError, NotAudioSourceError
from stembot.guarded_connector import is_blocked
from stembot.guarded_get import (
    BodyTooLargeError,
    GuardedGet,
    RedirectRefusedError,
    TooManyRedirectsError,
)
from stembot.source_urls import (
    UNSAFE_CHARACTER,
    check_url_syntax,
    parse_url,
    redact_url,
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


_OK: Final = frozenset({200, 203})
_GONE: Final = frozenset({404, 410})
_LOCKED: Final = frozenset({401, 403})
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

    One bounded GET per probe (HEAD is often refused or wrong), by the guarded GET
    (stembot/guarded_get.py): redirects followed by hand up to ``max_redirects`` (each hop
    through the guarded connector), at most ``max_bytes`` body bytes accepted, counted after
    decoding, all under one overall deadline of ``timeout_s`` that a trickling server cannot
    stretch.
    """

    def __init__(
        self,
        connector: aiohttp.BaseConnector,
        *,
        max_bytes: int,
        timeout_s: float = 20.0,
        max_redirects: int = 5,
    ) -> None:
        self._get = GuardedGet(
            connector,
            user_agent="stembot (checks that a link is audio)",
            max_bytes=max_bytes,
            timeout_s=timeout_s,
            max_redirects=max_redirects,
        )

    async def probe(self, url: str) -> ProbedSource:
        """Refuse (InvalidSourceError) unless ``url`` leads to usable audio within the limit."""
        checked = check_url_syntax(url)
        try:
            async with self._get.open(parse_url(checked)) as response:
                self._check_status(checked, response.status)
                return await self._read(checked, response)
        except RedirectRefusedError:
            raise self._refuse(checked, "bad redirect", _BAD_REDIRECT_MESSAGE) from None
        except TooManyRedirectsError:
            raise self._refuse(
                checked,
                "too many redirects",
                f"That link redirects more than {self._get.max_redirects} times; paste the "
                f"final link to the audio file {_TRY_ELSE}.",
            ) from None
        except BodyTooLargeError as error:
            raise self._refuse(checked, "too large", self._too_large_message(error)) from None
        except TimeoutError:
            timeout_s = self._get.timeout_s
            raise self._refuse(
                checked,
                "timed out",
                f"That link took too long to answer (over {timeout_s:g} "
                f"{'second' if timeout_s == 1 else 'seconds'}). "
                f"Try another host {_TRY_ELSE}.",
            ) from None
        except aiohttp.ClientError as error:
            raise self._refuse_client_error(checked, error) from None

    def _too_large_message(self, error: BodyTooLargeError) -> str:
        limit = self._get.max_bytes
        if error.before_reading and error.declared is not None:
            return too_large_message(error.declared, limit)
        return (
            f"That file is larger than the {describe_size(limit)} limit. "
            "Send a shorter clip or a compressed format such as mp3."
        )

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
        body = self._get.body(response)
        head = bytearray()
        async for chunk in body:
            if len(head) < _SNIFF_BYTES:
                head += chunk[: _SNIFF_BYTES - len(head)]
        if body.size == 0:
            raise self._refuse(
                original, "empty", f"That link leads to an empty file; check the link {_TRY_ELSE}."
            )
        content_type = media_type(response.headers.get("Content-Type"))
        filename = _filename(response)
        audio_format = self._audio_format(original, bytes(head), content_type, filename)
        return ProbedSource(
            url=original,
            final_url=str(response.url),
            size=body.size,
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
        what = what or "a file that is not recognisable audio"
        log.info("refused source url %s: not audio", redact_url(original))
        raise NotAudioSourceError(
            f"That link leads to {what}; link straight to the audio file ({FORMATS_HINT}) "
            f"{_TRY_ELSE}.",
            what,
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
