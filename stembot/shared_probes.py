"""A crowd pasting one link fetches it once.

At a remix event hundreds of members paste the same link within seconds, and every probe is a
GET to the host that serves it (in a 1,500-request burst over five links: 1,200 GETs). Probes
of one link at the same time share one fetch, and a link found to be audio is believed for a
short while; a refusal is not remembered, so a link fixed a moment later is probed afresh. The
links live in this process's memory only (they may be signed), and only the most recent are
kept.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from stembot.url_probe import ProbedSource

# How long a link found to be audio is believed without fetching it again.
REMEMBER_S = 30.0
# The most links remembered (least recently used forgotten first).
MAX_LINKS = 1024


class UrlProber(Protocol):
    """What the service needs of the guarded URL probe."""

    async def probe(self, url: str) -> ProbedSource: ...


class SharedProbes:
    """``prober``'s answers shared by everyone asking about the same link."""

    def __init__(
        self,
        prober: UrlProber,
        *,
        remember_s: float = REMEMBER_S,
        max_links: int = MAX_LINKS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._prober = prober
        self._remember_s = remember_s
        self._max_links = max_links
        self._clock = clock
        self._good: OrderedDict[str, tuple[float, ProbedSource]] = OrderedDict()
        self._running: dict[str, asyncio.Future[ProbedSource]] = {}

    def __repr__(self) -> str:
        return f"SharedProbes({len(self._good)} links remembered)"  # never the links

    async def probe(self, url: str) -> ProbedSource:
        known = self._known(url)
        if known is not None:
            return known
        running = self._running.get(url)
        if running is None:
            running = asyncio.ensure_future(self._probe(url))
            self._running[url] = running
            running.add_done_callback(lambda done: self._finished(url, done))
        # One member giving up (their interaction cancelled) leaves the fetch to the others.
        return await asyncio.shield(running)

    def _known(self, url: str) -> ProbedSource | None:
        known = self._good.get(url)
        if known is None:
            return None
        until, probed = known
        if until <= self._clock():
            del self._good[url]
            return None
        self._good.move_to_end(url)
        return probed

    async def _probe(self, url: str) -> ProbedSource:
        probed = await self._prober.probe(url)
        self._good[url] = (self._clock() + self._remember_s, probed)
        self._good.move_to_end(url)
        while len(self._good) > self._max_links:
            self._good.popitem(last=False)
        return probed

    def _finished(self, url: str, done: asyncio.Future[ProbedSource]) -> None:
        del self._running[url]
        if not done.cancelled():
            done.exception()  # retrieved here: every member asking may have gone
