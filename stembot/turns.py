"""When each queued API call may go: at most a cap at once, servers taking turns.

The call queue (call_queue.py) asks its Turns to start flights and tells it when one ended.
``LocalTurns`` decides within the process (the SQLite file, one bot): a FairQueue and a count.
On a PostgreSQL ledger shared by several processes the cap and the turns hold across all of
them: ``SharedTurns`` (shared_calls.py) asks the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from stembot.flights import Flight
from stembot.scheduling import FairQueue

# How the call queue starts a flight it was given a turn for.
Start = Callable[[Flight], None]


class Turns(Protocol):
    def bind(self, start: Start) -> None:
        """``start(flight)`` runs a flight once it has its turn (called once, by the queue)."""
        ...

    def push(self, flight: Flight, guild_id: int) -> None:
        """A new flight waits for its turn in its server's lane."""
        ...

    def remove(self, flight: Flight) -> None:
        """A waiting flight whose every request was cancelled."""
        ...

    def done(self, flight: Flight) -> None:
        """A started flight ended: its slot is free."""
        ...

    def position(self, flight: Flight) -> int | None:
        """1-based place in the queue, or None once the flight has started."""
        ...

    @property
    def waiting(self) -> int:
        """Flights of this process waiting for their turn."""
        ...

    def take_waiting(self) -> list[Flight]:
        """Every flight still waiting, out of the queue (a shutdown refunds them)."""
        ...


class LocalTurns:
    """One process alone: at most ``max_running`` calls at once, in FairQueue order."""

    def __init__(self, max_running: int) -> None:
        self._max_running = max_running
        self._waiting: FairQueue[Flight] = FairQueue()
        self._running = 0
        self._start: Start | None = None

    def bind(self, start: Start) -> None:
        self._start = start

    def push(self, flight: Flight, guild_id: int) -> None:
        self._waiting.push(guild_id, flight.id, flight)
        self._start_what_fits()

    def remove(self, flight: Flight) -> None:
        self._waiting.remove(flight.id)

    def done(self, flight: Flight) -> None:
        self._running -= 1
        self._start_what_fits()

    def position(self, flight: Flight) -> int | None:
        return self._waiting.position(flight.id)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def take_waiting(self) -> list[Flight]:
        flights = []
        while (flight := self._waiting.pop()) is not None:
            flights.append(flight)
        return flights

    def _start_what_fits(self) -> None:
        assert self._start is not None, "bind() first"
        while self._running < self._max_running:
            flight = self._waiting.pop()
            if flight is None:
                return
            self._running += 1
            self._start(flight)
