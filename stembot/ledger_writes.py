"""Ledger writes the API's outcome depends on: retried, kept when they fail, never lost.

The service delivers a result whatever happens to the database underneath (busy, disk full,
an I/O error, a corrupt, deleted or replaced file): the write is kept here and tried again
before later requests, every few seconds and at shutdown. Until it lands the request stays
active in the ledger, so the next start-up settles or refunds it (nobody is overcharged).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from stembot.errors import StoreBusyError
from stembot.store.interface import LedgerStore

log = logging.getLogger(__name__)

# A ledger write the service can make again: each call makes it afresh.
Write = Callable[[], Awaitable[object]]

# About 16 s in all: long enough to outlast an operator's CLI command holding the database.
_PERSIST_PAUSES_S = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
# Deliveries noted within this long share one ledger write (a shared call's crowd, say). A
# crash inside it re-delivers those results at start-up: the cost of not writing per message.
_DELIVERY_BATCH_S = 0.02


class LedgerWrites:
    """The writes that must land eventually, and whether the database file is still ours."""

    def __init__(self, store: LedgerStore, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock
        self._unwritten: list[tuple[str, Write]] = []
        self._deliveries: list[tuple[int, str]] = []
        self._delivery_flush: asyncio.Task[None] | None = None
        self._in_background: set[asyncio.Task[None]] = set()
        self._retrying = asyncio.Lock()
        # Set once the database file is found deleted or replaced: no more requests.
        self._problem: str | None = None

    async def persist(self, what: str, write: Write) -> None:
        """Write now, retrying a busy database; keep it if it fails."""
        for pause in (*_PERSIST_PAUSES_S, None):
            try:
                await write()
                return
            except StoreBusyError:
                if pause is None:
                    log.error("%s failed: the database stayed busy; carrying on", what)
                    self._unwritten.append((what, write))
                    return
                log.warning("%s: database busy, retrying in %.2f s", what, pause)
                await asyncio.sleep(pause)
            except Exception as error:
                cause = error.__cause__ or error
                log.error(
                    "%s failed: the database refused the write (%s: %s); the answer is "
                    "delivered anyway and the write is retried later",
                    what,
                    type(cause).__name__,
                    cause,
                    exc_info=True,
                )
                self._unwritten.append((what, write))
                self.lost()
                return

    def persist_soon(self, what: str, write: Write) -> asyncio.Task[None]:
        """``persist`` in a task of its own: for a caller that may stop waiting for it."""
        task = asyncio.create_task(self.persist(what, write))
        self._in_background.add(task)
        task.add_done_callback(self._in_background.discard)
        return task

    def lost(self) -> bool:
        """Whether the database file was deleted or replaced under the bot (one stat)."""
        if self._problem is None:
            self._problem = self._store.file_problem()
            if self._problem is not None:
                log.error(
                    "%s while stembot was running. It takes no new requests now (members are "
                    "told so) and will not start a fresh ledger on its own: put the file back "
                    "or decide to start afresh, then restart stembot",
                    self._problem,
                )
        return self._problem is not None

    async def check(self) -> None:
        """Run now and then: notice a lost database file; retry writes that failed."""
        if not self.lost():
            await self.retry()

    async def retry(self) -> None:
        """Try again, in order, the writes that failed after the API answered.

        Stops at the first that fails again (keeping it and the rest): a database that is
        still busy or broken costs one attempt here, not one per pending write. One retry
        at a time: a second caller finds the first at work and goes on.
        """
        if self._retrying.locked() or not self._unwritten:
            return
        async with self._retrying:
            await self._retry_in_order()

    async def _retry_in_order(self) -> None:
        while self._unwritten:
            what, write = self._unwritten[0]
            try:
                await write()
            except Exception:
                return
            self._unwritten.pop(0)
            log.info("%s: written on a later try", what)

    def record_delivery(self, request_id: int, via: str) -> None:
        """The answer of a succeeded request reached Discord ``via`` a route (or "nowhere").

        Noted in the ledger so that a start-up after a crash delivers exactly the results
        that never arrived; deliveries close together share one write.
        """
        self._deliveries.append((request_id, via))
        if self._delivery_flush is None:
            self._delivery_flush = asyncio.create_task(self._flush_deliveries_soon())

    async def _flush_deliveries_soon(self) -> None:
        await asyncio.sleep(_DELIVERY_BATCH_S)
        self._delivery_flush = None
        await self._flush_deliveries()

    async def _flush_deliveries(self) -> None:
        batch, self._deliveries = self._deliveries, []
        if not batch:
            return
        now = self._clock()
        await self.persist(
            f"recording the delivery of request(s) {[request_id for request_id, _ in batch]}",
            lambda: self._store.ledger.record_deliveries(batch, now),
        )

    async def close(self, grace_s: float) -> None:
        """At shutdown: the last deliveries noted, one more try, and what never landed logged."""
        pending = [*self._in_background, *filter(None, [self._delivery_flush])]
        if pending:
            await asyncio.wait(pending, timeout=grace_s)
        await self._flush_deliveries()
        await self.retry()
        for what, _ in self._unwritten:
            log.error("%s never succeeded; the next start-up settles it from the ledger", what)
