"""A flight: one API call and the requests held in memory while it is queued or running.

Identical requests share a flight, so the service calls the API once for all of them; each
held request keeps the listener the Discord layer handed in, to be told its outcome. The
board finds a flight by its (source, mode) or by a request's id; replies tell listeners
without making anyone wait for Discord.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from stembot.errors import StembotError
from stembot.models import Mode, NewRequest, QuotaStatus, Request, Separation

log = logging.getLogger(__name__)

FlightKey = tuple[str, Mode]  # (source key, mode)


class RequestListener(Protocol):
    """How the service tells the requester's side what happened. Called at most once each.

    An outcome comes with the requester's quota as it stands after it (None when the database
    could not say: that line is a nicety that must not hold the answer back).
    """

    async def on_started(self, request: Request) -> None: ...

    async def on_succeeded(
        self, request: Request, separation: Separation, quota: QuotaStatus | None
    ) -> None: ...

    async def on_failed(
        self, request: Request, error: StembotError, quota: QuotaStatus | None
    ) -> None: ...

    async def on_cancelled(self, request: Request) -> None: ...

    async def on_handed_over(self, request: Request) -> None:
        """The bot is stopping with this request still queued: its call is left for another
        process or the next start, which answers it through the channel."""
        ...


@dataclass(eq=False)
class HeldRequest:
    """One request the service holds in memory while its call is queued or running."""

    request: Request
    asked: NewRequest
    listener: RequestListener


@dataclass(eq=False)
class Flight:
    """One API call and every request waiting for it; the first request pays for it.

    Identical requests (same source, same mode) join the flight instead of calling the API
    again, so a remix event's crowd costs one call per track and mode.
    """

    id: int
    key: FlightKey
    held: list[HeldRequest]
    started_at: datetime | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    # Requests whose ledger row is being written: the flight lands only once they are held.
    joining: int = 0
    joined: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    # Another bot process makes (and pays for) this call: every request held here joined it.
    remote: bool = False
    # Its paid row keeps the source sealed while queued (stembot/handed_over.py): a stop
    # leaves it queued, for another process or the next start to make.
    sealed: bool = False

    @property
    def started(self) -> bool:
        """Taken from the queue (here, or by the process making the call): too late to cancel."""
        return self.task is not None or (self.remote and self.started_at is not None)

    @property
    def payer(self) -> HeldRequest:
        """The request that pays for the call (the first held; of a ``remote`` flight, the
        first that joined it: the payer is another process's)."""
        return self.held[0]

    @property
    def request_ids(self) -> list[int]:
        return [t.request.id for t in self.held]


class FlightBoard:
    """The flights not yet landed, by (source, mode) and by the ids of their requests."""

    def __init__(self) -> None:
        self._by_key: dict[FlightKey, Flight] = {}
        self._by_request: dict[int, Flight] = {}

    def get(self, key: FlightKey) -> Flight | None:
        return self._by_key.get(key)

    def of_request(self, request_id: int) -> Flight | None:
        return self._by_request.get(request_id)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def hold(self, flight: Flight, held: HeldRequest) -> None:
        """``held`` rides on ``flight`` (a new flight goes on the board with its first)."""
        self._by_key.setdefault(flight.key, flight)
        flight.held.append(held)
        self._by_request[held.request.id] = flight

    def open(self, flight: Flight) -> None:
        """Put a flight on the board before its first request is held (a flight riding on
        another process's call, while its first joiner's row is written)."""
        self._by_key.setdefault(flight.key, flight)

    def drop(self, flight: Flight) -> None:
        """Take an opened flight that came to hold nothing off the board."""
        if not flight.held and self._by_key.get(flight.key) is flight:
            del self._by_key[flight.key]

    def let_go(self, flight: Flight, held: HeldRequest) -> None:
        """``held`` leaves ``flight``; a flight left empty leaves the board."""
        flight.held.remove(held)
        self._by_request.pop(held.request.id, None)
        if not flight.held and self._by_key.get(flight.key) is flight:
            del self._by_key[flight.key]

    def land(self, flight: Flight) -> list[HeldRequest]:
        """The flight is over: later identical requests start afresh or use the stored result."""
        if self._by_key.get(flight.key) is flight:
            del self._by_key[flight.key]
        for request_id in flight.request_ids:
            self._by_request.pop(request_id, None)
        return list(flight.held)


class Replies:
    """Tell listeners without making the caller wait for Discord; a failure to tell is logged
    and never undoes the accounting."""

    def __init__(self) -> None:
        self._pending: set[asyncio.Task[None]] = set()

    def soon(self, notification: Awaitable[None], request_id: int) -> None:
        task = asyncio.create_task(tell(notification, request_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def wait(self, timeout_s: float) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout_s)


async def tell(notification: Awaitable[None], request_id: int) -> None:
    """Run a listener call now; a failure to tell the user must not undo the accounting."""
    try:
        await notification
    except Exception:
        log.exception("request %s: telling the requester failed", request_id)
