"""The Soundverse Stem Separation API client: the only code that talks to the API.

Every call may cost money and the API offers no idempotency, so a call is repeated only when
the API cannot have done the work: the connection never opened, it answered 429, or a gateway
(502/503/504) answered for it. A 500, a connection lost after sending, or a timeout becomes
SoundverseOutcomeUnknown at once. ``timeout_s`` bounds the whole call, retries included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import aiohttp

from stembot.config import Secret
from stembot.errors import (
    SoundverseAuthError,
    SoundverseError,
    SoundverseGenerationFailed,
    SoundverseOutcomeUnknown,
    SoundverseProtocolError,
    SoundverseRateLimited,
    SoundverseRejected,
    SoundverseUnavailable,
)
from stembot.models import Mode, Separation, Stem

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

# A stem list is a few hundred bytes; anything this big is not the contract.
MAX_BODY_BYTES = 1024 * 1024
# Reaching the API at all; the whole call has the client's timeout_s.
CONNECT_TIMEOUT_S = 10.0
MAX_DETAIL_CHARS = 300
MAX_REJECTION_CHARS = 500
_GATEWAY_STATUSES = frozenset({502, 503, 504})
_REDACTED = "[redacted]"


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before repeating a call the API cannot have billed."""

    # Retries after a refused connection or a 502/503/504.
    max_retries: int = 2
    base_delay: float = 1.0
    max_delay: float = 8.0
    # Each backoff delay is shortened by up to this fraction, at random.
    jitter: float = 0.25
    # Retries after a 429, and the most time spent waiting on 429s in one call.
    max_rate_limit_retries: int = 3
    rate_limit_budget_s: float = 60.0

    def backoff(self, retry_number: int) -> float:
        """Capped exponential delay before retry ``retry_number`` (1-based), with jitter."""
        delay = min(self.max_delay, self.base_delay * 2.0 ** (retry_number - 1))
        return delay * (1 - self.jitter * random.random())


@dataclass
class _Attempts:
    """What one call has spent so far on retries."""

    number: int = 0
    unavailable_retries: int = 0
    rate_limit_retries: int = 0
    rate_limit_waited: float = 0.0


class SoundverseClient:
    """Calls the stem separation endpoints. The aiohttp session belongs to the caller."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: Secret,
        *,
        timeout_s: float,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._retry = retry
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"SoundverseClient(base_url={self._base_url!r})"

    async def separate(self, mode: Mode, audio_url: str) -> Separation:
        """Separate the audio at ``audio_url``; raise a SoundverseError on any failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        attempts = _Attempts()
        while True:
            attempts.number += 1
            started = loop.time()
            try:
                stems = await self._attempt(mode, audio_url, deadline - started)
            except (SoundverseUnavailable, SoundverseRateLimited) as error:
                delay = self._retry_delay(error, attempts)
                if delay is None or loop.time() + delay >= deadline:
                    _log_failure(mode, attempts.number, error, retrying_in=None)
                    raise
                _log_failure(mode, attempts.number, error, retrying_in=delay)
                await self._sleep(delay)
                continue
            except SoundverseError as error:
                _log_failure(mode, attempts.number, error, retrying_in=None)
                raise
            log.info(
                "soundverse %s attempt %d: %d stem(s) in %.1fs",
                mode.value,
                attempts.number,
                len(stems),
                loop.time() - started,
            )
            return Separation(mode=mode, stems=stems, issued_at=datetime.now(UTC))

    def _retry_delay(self, error: SoundverseError, attempts: _Attempts) -> float | None:
        """How long to wait before retrying after ``error``, or None to give up."""
        policy = self._retry
        if isinstance(error, SoundverseRateLimited):
            if attempts.rate_limit_retries >= policy.max_rate_limit_retries:
                return None
            attempts.rate_limit_retries += 1
            delay = error.retry_after
            if delay is None:
                delay = policy.backoff(attempts.rate_limit_retries)
            if attempts.rate_limit_waited + delay > policy.rate_limit_budget_s:
                return None
            attempts.rate_limit_waited += delay
            return delay
        if attempts.unavailable_retries >= policy.max_retries:
            return None
        attempts.unavailable_retries += 1
        return policy.backoff(attempts.unavailable_retries)

    async def _attempt(self, mode: Mode, audio_url: str, remaining_s: float) -> tuple[Stem, ...]:
        """One HTTP request; raises the SoundverseError its outcome maps to."""
        if remaining_s <= 0:
            raise SoundverseOutcomeUnknown()
        timeout = aiohttp.ClientTimeout(
            total=remaining_s, connect=min(CONNECT_TIMEOUT_S, remaining_s)
        )
        headers = {"Authorization": f"Bearer {self._api_key.reveal()}"}
        try:
            async with self._session.post(
                self._base_url + mode.api_path,
                json={"audioUrl": audio_url},
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                body = await _read_capped(response)
                status, response_headers = response.status, response.headers
        except SoundverseError:
            raise
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            # The request never left: nothing can have been billed, so a retry is safe.
            unreachable = SoundverseUnavailable(unreachable_because=type(error).__name__)
            raise unreachable from _describe(error)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise SoundverseOutcomeUnknown() from _describe(error)
        try:
            return interpret_response(status, response_headers, body, redact=self._redact)
        except SoundverseError as error:
            content_type = response_headers.get("Content-Type", "no content type")
            note = f"HTTP {status}, {len(body)} bytes, {content_type}"
            raise error from _FailureNote(note)

    def _redact(self, text: str) -> str:
        """Text from the server with our key removed, in case the API echoes it."""
        key = self._api_key.reveal()
        return text.replace(key, _REDACTED) if key else text


class _FailureNote(Exception):
    """A one-line, key-free account of why an attempt failed, kept as the error's cause."""


def _describe(error: BaseException) -> _FailureNote:
    # aiohttp errors can hold the request info, Authorization header included; keep only this.
    return _FailureNote(f"{type(error).__name__}: {error}")


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise SoundverseProtocolError()
        chunks.append(chunk)
    return b"".join(chunks)


def interpret_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    redact: Callable[[str], str] = lambda text: text,
) -> tuple[Stem, ...]:
    """Map one HTTP answer to its stems, or raise the SoundverseError it stands for.

    The documented body shapes win whatever the status; then the transport statuses; then
    ``{"Detail": ...}``, which a 500 may carry to say that generation failed.
    """
    payload = _json_or_none(body)
    if isinstance(payload, dict) and payload.get("success") is False:
        raise SoundverseRejected(_rejection_message(payload.get("message"), redact))
    if status in (401, 403):
        raise SoundverseAuthError()
    if status == 429:
        raise SoundverseRateLimited(retry_after=parse_retry_after(headers.get("Retry-After")))
    if status in _GATEWAY_STATUSES:
        raise SoundverseUnavailable(status=status)
    if isinstance(payload, dict) and "Detail" in payload:
        raise SoundverseGenerationFailed(_detail_message(payload["Detail"], redact))
    if status == 500:
        raise SoundverseOutcomeUnknown()
    if not 200 <= status < 300:
        raise SoundverseProtocolError()
    return parse_stems(payload)


def parse_stems(payload: Any) -> tuple[Stem, ...]:
    """A non-empty JSON list of {audioName: str, audioUrl: http(s) URL}, in the API's order."""
    if not isinstance(payload, list) or not payload:
        raise SoundverseProtocolError()
    stems = []
    for entry in payload:
        if not isinstance(entry, dict):
            raise SoundverseProtocolError()
        name, url = entry.get("audioName"), entry.get("audioUrl")
        if not isinstance(name, str) or not name.strip() or not _is_http_url(url):
            raise SoundverseProtocolError()
        stems.append(Stem(name=name, url=url))
    return tuple(stems)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP-date); None if unusable."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds or seconds == float("inf"):  # NaN or infinite
        return None
    return max(0.0, seconds)


def _is_http_url(value: object) -> TypeGuard[str]:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _clean_text(text: str, limit: int) -> str:
    one_line = re.sub(r"\s+", " ", "".join(c if c.isprintable() else " " for c in text)).strip()
    return one_line if len(one_line) <= limit else one_line[: limit - 1].rstrip() + "…"


def _rejection_message(message: object, redact: Callable[[str], str]) -> str | None:
    if not isinstance(message, str) or not message.strip():
        return "The stem separation service refused this audio."
    return _clean_text(redact(message), MAX_REJECTION_CHARS)


def _detail_message(detail: object, redact: Callable[[str], str]) -> str:
    text = detail if isinstance(detail, str) else json.dumps(detail)
    cleaned = _clean_text(redact(text), MAX_DETAIL_CHARS).rstrip(".")
    if not cleaned:
        return "The stem separation service could not separate this audio."
    return f"The stem separation service could not separate this audio: {cleaned}."


def _log_failure(
    mode: Mode, attempt: int, error: SoundverseError, *, retrying_in: float | None
) -> None:
    cause = error.__cause__
    why = f" ({cause})" if isinstance(cause, _FailureNote) else ""
    outcome = f"retrying in {retrying_in:.2f}s" if retrying_in is not None else "giving up"
    if isinstance(error, SoundverseAuthError):
        log.error(
            "soundverse %s attempt %d: the API refused the key; check SOUNDVERSE_API_KEY",
            mode.value,
            attempt,
        )
        return
    log.warning(
        "soundverse %s attempt %d: %s%s; %s",
        mode.value,
        attempt,
        type(error).__name__,
        why,
        outcome,
    )
