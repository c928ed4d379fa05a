"""Riding on an identical call at no cost: one this process makes (its flight on the board),
or, on a ledger shared with other processes, one another process makes (the flight here holds
only riders, landed when that call ends: stembot/shared_calls.py RemoteCalls)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime

from stembot.flights import Flight, FlightBoard, FlightKey, HeldRequest, Replies
from stembot.models import Request
from stembot.sharing import Elsewhere

log = logging.getLogger(__name__)

# Writes a rider's free row; told whether the call is running already.
Reserve = Callable[[bool], Awaitable[HeldRequest]]


class Riding:
    """Requests joining a call that is queued or running, here or in another process."""

    def __init__(
        self,
        board: FlightBoard,
        elsewhere: Elsewhere,
        replies: Replies,
        flight_ids: Iterator[int],
        clock: Callable[[], datetime],
    ) -> None:
        self._board = board
        self._elsewhere = elsewhere
        self._replies = replies
        self._flight_ids = flight_ids
        self._clock = clock

    async def could_ride(self, key: FlightKey) -> bool:
        """A call for ``key`` is queued or running, here or in another process."""
        return key in self._board or await self._elsewhere.running(key) is not None

    async def join(self, flight: Flight, reserve: Reserve) -> Request:
        """Ride on an identical call at no cost: ``reserve(running)`` writes the free row. The
        flight waits for this row before it lands, so a call that ends meanwhile still
        settles and tells this request."""
        if not flight.joining:
            flight.joined.clear()
        flight.joining += 1
        try:
            held = await reserve(flight.started_at is not None)
            self._board.hold(flight, held)
        finally:
            flight.joining -= 1
            if not flight.joining:
                flight.joined.set()
        request = held.request
        if flight.remote:
            log.info("request %s joined another process's call at no cost", request.id)
        else:
            log.info(
                "request %s joined request %s's call at no cost",
                request.id,
                flight.payer.request.id,
            )
        if flight.started_at is not None:
            self._replies.soon(held.listener.on_started(request), request.id)
        return request

    async def ride_elsewhere(self, key: FlightKey, reserve: Reserve) -> Request | None:
        """Join the call another process is making for ``key`` (its flight here holds only
        joiners, landed when that call ends); None when no call for it is in flight any more.
        Taken while deciding alone: later requests here find this flight and join it."""
        running = await self._elsewhere.running(key)
        if running is None:
            return None
        flight = Flight(next(self._flight_ids), key, [], remote=True)
        if running:
            flight.started_at = self._clock()
        self._board.open(flight)
        try:
            request = await self.join(flight, reserve)
        finally:
            self._board.drop(flight)  # if its first joiner was refused
        self._elsewhere.watch(flight)
        return request
