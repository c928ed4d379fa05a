"""Remix events close themselves at their end: a task that ends every event past its end
(``RemixEventService.due``), at start-up (so an event that ended while the bot was stopped
closes too) and then at the next end it knows of, or every CHECK_EVERY_S at the latest (an
event started before a restart, whose end this process never heard of).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Final

from stembot.bot.remix_event_end import EventEnder
from stembot.errors import RemixEventEndedError, StembotError
from stembot.remix_events import RemixEventService
from stembot.stem_service import utc_now

log = logging.getLogger(__name__)

CHECK_EVERY_S: Final = 60.0
# A moment after the end, so the event is past it when the store is asked.
_AFTER_END_S: Final = 0.05


class EventCloser:
    def __init__(
        self, events: RemixEventService, ender: EventEnder, *, check_every_s: float = CHECK_EVERY_S
    ) -> None:
        self._events = events
        self._ender = ender
        self._check_every = check_every_s
        self._ends: set[datetime] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def expect(self, ends_at: datetime | None) -> None:
        """An event that ends at ``ends_at`` was started: be there when it ends."""
        if ends_at is not None:
            self._ends.add(ends_at)
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="remix-event-closer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            await self.close_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._next_wait())

    async def close_due(self) -> int:
        """End every event past its end; how many this call ended."""
        now = utc_now()
        self._ends = {end for end in self._ends if end > now}
        try:
            due = await self._events.due()
        except StembotError as error:
            log.warning("could not list the remix events to close (%s)", type(error).__name__)
            return 0
        closed = 0
        for event in due:
            try:
                await self._ender.end(event.id, by_user_id=None)
                closed += 1
                log.info("remix event %s closed itself at its end", event.id)
            except RemixEventEndedError:
                continue
            except Exception:
                log.exception("remix event %s could not be closed", event.id)
        return closed

    def _next_wait(self) -> float:
        if not self._ends:
            return self._check_every
        until = (min(self._ends) - utc_now()).total_seconds() + _AFTER_END_S
        return max(0.0, min(self._check_every, until))
