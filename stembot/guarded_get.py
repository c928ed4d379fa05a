"""One GET of a link stembot did not choose, through the guard, redirects followed by hand.

What the URL probe (a member's link) and the stem fetcher (a link in the API's answer) share:
every hop goes through a GuardedConnector (stembot/guarded_connector.py), so the address about
to be connected is checked against the policy on each one; only http(s) redirects without
credentials are followed, at most ``max_redirects`` of them; the whole exchange, body included,
runs under one deadline that a trickling server cannot stretch; and the body is counted as it
arrives, after decoding (Content-Length can lie, gzip can explode), up to ``max_bytes``.

What an answer means is the caller's: the errors here (GuardedGetError) and those that pass
through (TimeoutError at the deadline, aiohttp.ClientError, with ``is_blocked`` telling the
guard's refusals) carry no URL, and each caller turns them into its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
from yarl import URL

from stembot.errors import InvalidSourceError
from stembot.guarded_connector import GuardedConnector
from stembot.source_urls import redirect_target

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


class GuardedGetError(Exception):
    """The GET was given up for a reason of its own; the caller says what that means."""


class RedirectRefusedError(GuardedGetError):
    """A redirect pointed somewhere stembot does not follow (another scheme, credentials, not
    a valid address)."""


class TooManyRedirectsError(GuardedGetError):
    """More than ``max_redirects`` redirects in a row."""


class BodyTooLargeError(GuardedGetError):
    """The body is over ``max_bytes``: by its Content-Length (``declared``, checked before
    reading) when ``before_reading``, else by the bytes counted as they arrived."""

    def __init__(self, declared: int | None, *, before_reading: bool) -> None:
        super().__init__("body over the size cap")
        self.declared = declared
        self.before_reading = before_reading


class GuardedGet:
    """GETs through ``connector`` (a GuardedConnector), each under a deadline of ``timeout_s``
    with no read waiting longer than ``stall_s`` (None: only the deadline), reading at most
    ``max_bytes`` of body."""

    def __init__(
        self,
        connector: aiohttp.BaseConnector,
        *,
        user_agent: str,
        max_bytes: int,
        timeout_s: float,
        stall_s: float | None = None,
        max_redirects: int = 5,
    ) -> None:
        if not isinstance(connector, GuardedConnector):
            raise TypeError("a guarded GET needs a GuardedConnector: links go through the guard")
        if max_bytes < 1 or timeout_s <= 0 or (stall_s is not None and stall_s <= 0):
            raise ValueError("max_bytes >= 1 and timeouts > 0 required")
        if max_redirects < 0:
            raise ValueError("max_redirects >= 0 required")
        self._connector = connector
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects
        self._stall_s = stall_s
        self._headers = {
            "User-Agent": user_agent,
            # The bytes on the wire are the file: counted and capped as such, not what a
            # compressor made of it.
            "Accept-Encoding": "identity",
            "Accept": "audio/*, */*;q=0.5",
        }

    @contextlib.asynccontextmanager
    async def open(self, url: URL) -> AsyncIterator[aiohttp.ClientResponse]:
        """``async with get.open(url) as response:`` the first answer that is not a redirect,
        its body unread; the deadline covers the block, so read the body inside it."""
        async with asyncio.timeout(self.timeout_s), self._session() as session:
            for _hop in range(self.max_redirects + 1):
                async with session.get(url, allow_redirects=False) as response:
                    if response.status not in _REDIRECTS:
                        yield response
                        return
                    url = _next_hop(response)
            raise TooManyRedirectsError

    def body(self, response: aiohttp.ClientResponse) -> CappedBody:
        """The chunks of ``response``'s body; BodyTooLargeError at once if its Content-Length
        is over the cap, or while reading as soon as the count passes it."""
        declared = response.content_length
        if declared is not None and declared > self.max_bytes:
            raise BodyTooLargeError(declared, before_reading=True)
        return CappedBody(response, self.max_bytes)

    def _session(self) -> aiohttp.ClientSession:
        # A fresh session per GET over the shared connector: no cookies carried from one link
        # to another, no proxy from the environment resolving past the guard.
        return aiohttp.ClientSession(
            connector=self._connector,
            connector_owner=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=self._stall_s),
        )


def _next_hop(response: aiohttp.ClientResponse) -> URL:
    try:
        return redirect_target(response.url, response.headers.get("Location", ""))
    except InvalidSourceError:
        raise RedirectRefusedError from None


class CappedBody:
    """``async for chunk in body:`` the chunks as they arrive; ``size`` is the count so far.
    An iterator object rather than a generator, so a reader that stops early leaves nothing
    to finalise."""

    def __init__(self, response: aiohttp.ClientResponse, max_bytes: int) -> None:
        self._chunks = response.content.iter_any()
        self._declared = response.content_length
        self._max_bytes = max_bytes
        self.size = 0

    def __aiter__(self) -> CappedBody:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._chunks.__anext__()
        self.size += len(chunk)
        if self.size > self._max_bytes:
            raise BodyTooLargeError(self._declared, before_reading=False)
        return chunk
