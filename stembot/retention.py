"""How long stembot keeps its ledger and stored results (``STEMBOT_RETENTION_DAYS``).

Pruning runs at start-up and then once a day, in a thread with its own database connection and
in small batches, so neither the event loop nor the bot's writes wait on it. Nothing inside the
current UTC month goes (the monthly quota is summed from the ledger), nor a request still
queued or running. The first pruning waits until the bot is ready, after the start-up recovery
has read what a crash left owing (results to deliver), however old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Protocol

from stembot.store.interface import LedgerStore
from stembot.store.pruning import Pruned
from stembot.windows import month_window

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

DAY_S = 86_400.0


def prune_before(now: datetime, days: int) -> datetime:
    """The moment before which rows go: ``days`` ago, but never inside the current month."""
    return min(now - timedelta(days=days), month_window(now)[0])


class CachedResults(Protocol):
    """The files kept for stored results (stembot/stem_cache.py): they go with the results."""

    async def prune_issued_before(self, before: datetime) -> int: ...


class Retention:
    """Prunes what is older than ``days`` (0 keeps everything) now, then every ``every_s``:
    ledger rows, stored results and the cached files of those results."""

    def __init__(
        self,
        store: LedgerStore,
        days: int,
        clock: Clock,
        *,
        every_s: float = DAY_S,
        cache: CachedResults | None = None,
    ) -> None:
        self._store = store
        self._days = days
        self._clock = clock
        self._every_s = every_s
        self._cache = cache
        self._stopping = threading.Event()

    async def prune_now(self) -> Pruned:
        before = prune_before(self._clock(), self._days)
        pruned = await self._store.prune(before, stop=self._stopping.is_set)
        files = 0 if self._cache is None else await self._cache.prune_issued_before(before)
        if pruned.requests or pruned.results or files:
            log.info(
                "retention: removed %d ledger rows, %d stored results and %d cached files "
                "from before %s",
                pruned.requests,
                pruned.results,
                files,
                f"{before:%Y-%m-%d %H:%M} UTC",
            )
        return pruned

    async def run(self, after: Callable[[], Awaitable[object]] | None = None) -> None:
        """Prune (once ``after`` returns) and then every ``every_s`` until cancelled; a
        failure is only logged."""
        if self._days == 0:
            return
        if after is not None:
            await after()
        while True:
            try:
                await self.prune_now()
            except Exception:
                log.exception("retention: pruning old ledger rows failed; trying again later")
            await asyncio.sleep(self._every_s)

    @contextlib.asynccontextmanager
    async def running(
        self, after: Callable[[], Awaitable[object]] | None = None
    ) -> AsyncIterator[None]:
        """``run`` in the background for the duration of the block; stopped at its end."""
        self._stopping.clear()
        task = asyncio.create_task(self.run(after), name="retention")
        try:
            yield
        finally:
            self._stopping.set()  # a batch under way finishes; no new one starts
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
