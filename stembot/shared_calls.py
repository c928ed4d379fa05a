"""API calls shared by the bot processes on one PostgreSQL ledger (issue 14, item 3).

- ``SharedTurns``: the turns of this process's calls come from the database's dispatch
  (stembot/store/postgres/dispatch.py): one cap for all processes together, servers taking
  turns across them. A dispatch runs whenever a call is queued or ends, here or anywhere; a
  grant for this process's call is told on the channel, and the call starts then.
- ``RemoteCalls``: a request for a source and mode that another process is calling the API
  for right now rides on that call (one call per source and mode across processes, which the
  ledger enforces): its flight here holds only joiners, and is landed when that call ends,
  with the stored result, or with the failure. When that call's payer cancelled before it
  ran, a request riding here takes the call on (it has the source's URL in memory), charged
  as a cancelled payer's heir is; the riders of other processes ride on it in turn.

Both are woken by the words on the channel (LISTEN/NOTIFY), never by polling. ``catch_up``
reads the state again after the listening connection came back (words said meanwhile are
lost) and at each heartbeat while something waits on another process (that process may have
died between writing an outcome and saying it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, Protocol

from stembot.errors import (
    CallInFlightError,
    SharedCallEndedError,
    SharedCallFailedError,
    StembotError,
    StoreBusyError,
)
from stembot.flights import Flight, FlightBoard, FlightKey
from stembot.models import Mode, RequestStatus, Separation
from stembot.process_lease import ProcessLease
from stembot.store.postgres.dispatch import Word
from stembot.turns import Start

log = logging.getLogger(__name__)

# A queued request's place is read again at most this often (it changes at every dispatch).
_PLACES_EVERY_S = 1.0
# Between dispatches that failed (the database unreachable a moment).
_DISPATCH_PAUSES_S = (0.1, 0.5, 1.0, 2.0)


class Inherited(Protocol):
    @property
    def request_id(self) -> int: ...

    @property
    def cost(self) -> int: ...

    @property
    def member_pays(self) -> bool: ...


class Grant(Protocol):
    @property
    def request_id(self) -> int: ...

    @property
    def lease_id(self) -> int: ...


class CallsLedger(Protocol):
    """The shared queue on the ledger (stembot/store/postgres/dispatch.py)."""

    async def dispatch(self, cap: int) -> Sequence[Grant]: ...

    async def positions(self, request_ids: Sequence[int]) -> dict[int, int]: ...

    async def granted_to(self, lease_id: int) -> list[int]: ...

    async def in_flight(self, key: str, mode: Mode) -> bool | None: ...

    async def last_outcome(self, key: str, mode: Mode) -> tuple[str, str | None] | None: ...

    async def tell(self, word: Word) -> None: ...

    async def inherit(
        self, key: str, mode: Mode, heirs: Sequence[tuple[int, Sequence[int]]], now: datetime
    ) -> Inherited | None: ...


class RemoteLanding(Protocol):
    """What the call queue does with a flight whose call another process makes."""

    def remote_started(self, flight: Flight) -> None: ...

    async def land_remote(
        self, flight: Flight, outcome: Separation | StembotError, status: RequestStatus
    ) -> None: ...

    def inherited(self, flight: Flight, heir_id: int, cost: int) -> bool:
        """``heir_id`` of ``flight`` pays for the call now: this process makes it. False when
        that request left the flight meanwhile."""
        ...

    def now(self) -> datetime: ...


# The stored result of a source and mode, if fresh (the service's own reading of the store).
FindResult = Callable[[FlightKey], Awaitable[Separation | None]]


class Background:
    """Tasks run beside the caller; an error is logged, never lost."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def run(self, work: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.create_task(_logged(work, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _logged(work: Coroutine[Any, Any, None], what: str) -> None:
    try:
        await work
    except Exception:
        log.exception("%s failed", what)


class SharedTurns:
    """Turns (stembot/turns.py) given by the shared queue."""

    def __init__(
        self, calls: CallsLedger, lease: ProcessLease, board: FlightBoard, cap: int
    ) -> None:
        self._calls = calls
        self._lease = lease
        self._board = board
        self._cap = cap
        self._waiting: dict[int, Flight] = {}
        self._places: dict[int, int] = {}
        self._start: Start | None = None
        self._dispatching = False
        self._again = False
        self._placing = False
        self._background = Background()

    def bind(self, start: Start) -> None:
        self._start = start

    def push(self, flight: Flight, guild_id: int) -> None:
        self._waiting[flight.id] = flight
        self.dispatch_soon()

    def remove(self, flight: Flight) -> None:
        if self._waiting.pop(flight.id, None) is not None:
            self.dispatch_soon()  # a turn it was given may be free again

    def done(self, flight: Flight) -> None:
        self.dispatch_soon()

    def position(self, flight: Flight) -> int | None:
        if flight.id not in self._waiting:
            return None
        known = self._places.get(flight.id)
        if known is not None:
            return known
        # Until the database says: behind this process's own earlier calls, at least.
        return 1 + sum(1 for other in self._waiting if other < flight.id)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def take_waiting(self) -> list[Flight]:
        flights = list(self._waiting.values())
        self._waiting.clear()
        return flights

    def granted(self, request_ids: Sequence[int]) -> None:
        """These calls of this process were given their turn: start them."""
        assert self._start is not None, "bind() first"
        for request_id in request_ids:
            flight = self._board.of_request(request_id)
            if flight is None or flight.payer.request.id != request_id:
                continue  # cancelled meanwhile: its turn goes to the next dispatch
            if self._waiting.pop(flight.id, None) is not None:
                self._start(flight)

    def heard_ended(self) -> None:
        """A call ended somewhere: its turn may go to one of this process's calls."""
        if self._waiting:
            self.dispatch_soon()

    def heard_dispatch(self) -> None:
        """Some process was given a turn: the places in the queue moved."""
        self._places_soon()

    def dispatch_soon(self) -> None:
        """Run a dispatch now, or once more after the one running (never two at once)."""
        if self._dispatching:
            self._again = True
            return
        self._dispatching = True
        self._background.run(self._dispatch(), "dispatching API calls")

    async def catch_up(self) -> None:
        """Turns given while this process could not hear them; then a dispatch."""
        self.granted(await self._calls.granted_to(self._lease.id))
        if self._waiting:
            self.dispatch_soon()

    async def close(self) -> None:
        await self._background.close()

    async def _dispatch(self) -> None:
        failures = 0
        try:
            while True:
                self._again = False
                if self._lease.held():
                    try:
                        grants = await self._calls.dispatch(self._cap)
                    except StoreBusyError:
                        # Lost with its connection, say: again, while calls here wait.
                        pause = _DISPATCH_PAUSES_S[min(failures, len(_DISPATCH_PAUSES_S) - 1)]
                        failures += 1
                        log.warning("dispatching API calls failed; again in %.1f s", pause)
                        await asyncio.sleep(pause)
                        self._again = bool(self._waiting)
                    else:
                        mine = [g.request_id for g in grants if g.lease_id == self._lease.id]
                        self.granted(mine)
                if not self._again:
                    break
        finally:
            self._dispatching = False
        self._places_soon()

    def _places_soon(self) -> None:
        if self._waiting and not self._placing:
            self._placing = True
            self._background.run(self._read_places(), "reading places in the queue")

    async def _read_places(self) -> None:
        try:
            await asyncio.sleep(_PLACES_EVERY_S)
            flights = list(self._waiting.values())
            places = await self._calls.positions([f.payer.request.id for f in flights])
            self._places = {
                f.id: places[f.payer.request.id] for f in flights if f.payer.request.id in places
            }
        finally:
            self._placing = False


class RemoteCalls:
    """This process's flights riding on another process's API call, by source and mode."""

    def __init__(self, calls: CallsLedger, find_result: FindResult) -> None:
        self._calls = calls
        self._find_result = find_result
        self._flights: dict[FlightKey, Flight] = {}
        self._landing: RemoteLanding | None = None
        self._checking: set[FlightKey] = set()
        self._recheck: set[FlightKey] = set()
        self._background = Background()

    def bind(self, landing: RemoteLanding) -> None:
        self._landing = landing

    async def running(self, key: FlightKey) -> bool | None:
        """Whether another process's call for ``key`` is running (False: queued), or None
        when no call for it is in flight."""
        return await self._calls.in_flight(*key)

    def watch(self, flight: Flight) -> None:
        """Land ``flight`` when the call for its key ends; look once now (it may have ended
        just before the watch began)."""
        self._flights[flight.key] = flight
        self._check_soon(flight.key)

    def unwatch(self, flight: Flight) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]

    def take_all(self) -> list[Flight]:
        flights = list(self._flights.values())
        self._flights.clear()
        return flights

    @property
    def watching(self) -> bool:
        return bool(self._flights)

    def heard_started(self, key: FlightKey) -> None:
        flight = self._flights.get(key)
        if flight is not None and flight.started_at is None:
            assert self._landing is not None, "bind() first"
            self._landing.remote_started(flight)

    def heard_ended(self, key: FlightKey) -> None:
        if key in self._flights:
            self._check_soon(key)

    async def catch_up(self) -> None:
        for key in list(self._flights):
            self._check_soon(key)

    async def close(self) -> None:
        await self._background.close()

    def _check_soon(self, key: FlightKey) -> None:
        if key in self._checking:
            self._recheck.add(key)
            return
        self._checking.add(key)
        self._background.run(self._checks(key), f"the call for {key[1]} of {key[0]}")

    async def _checks(self, key: FlightKey) -> None:
        try:
            while True:
                self._recheck.discard(key)
                await self._check(key)
                if key not in self._recheck:
                    return
        finally:
            self._checking.discard(key)

    async def _check(self, key: FlightKey) -> None:
        """The call ended with a stored result, or without one (its last outcome: a payer who
        cancelled leaves the call to a request here), or goes on (a charge handed over,
        another process's new call)."""
        flight = self._flights.get(key)
        if flight is None:
            return
        assert self._landing is not None, "bind() first"
        stored = await self._find_result(key)
        if stored is None:
            running = await self._calls.in_flight(*key)
            if running is not None:
                if running and flight.started_at is None:
                    self._landing.remote_started(flight)
                return
            # Read again: it may have landed between the two reads.
            stored = await self._find_result(key)
        if self._flights.get(key) is not flight:
            return
        del self._flights[key]
        if stored is not None:
            await self._landing.land_remote(flight, stored, RequestStatus.SUCCEEDED)
            return
        last = await self._calls.last_outcome(*key)
        cancelled = last is not None and last[0] == RequestStatus.CANCELLED.value
        if cancelled and await self._inherit(flight):
            return
        status, error = _why_ended(last)
        await self._landing.land_remote(flight, error, status)

    async def _inherit(self, flight: Flight) -> bool:
        """Its payer cancelled before the call ran: a request here takes it on, or the flight
        rides on the call another process's request took on (watched again). False: none of
        the requests here may pay for it."""
        assert self._landing is not None, "bind() first"
        if not flight.held:
            return True  # every request here left meanwhile: nothing to land
        heirs = [(h.request.id, h.asked.role_ids) for h in flight.held]
        try:
            inherited = await self._calls.inherit(*flight.key, heirs, self._landing.now())
        except CallInFlightError:
            self._flights[flight.key] = flight
            self._recheck.add(flight.key)  # started already, perhaps
            return True
        except StoreBusyError:
            log.warning("could not take on a cancelled call; trying again at the next heartbeat")
            self._flights[flight.key] = flight
            return True
        if inherited is None:
            return False
        if not self._landing.inherited(flight, inherited.request_id, inherited.cost):
            # The heir cancelled meanwhile (refunded): the others try again.
            self._flights[flight.key] = flight
            self._recheck.add(flight.key)
            return True
        log.info(
            "request %s took on the call a cancelled request elsewhere left%s",
            inherited.request_id,
            "" if inherited.member_pays else " (charged to the server alone: no rider had room)",
        )
        return True


def _why_ended(last: tuple[str, str | None] | None) -> tuple[RequestStatus, StembotError]:
    if last is not None and last[0] == RequestStatus.FAILED.value and last[1]:
        return RequestStatus.FAILED, SharedCallFailedError(last[1])
    return RequestStatus.INTERRUPTED, SharedCallEndedError()
