"""How this bot process shares its ledger: alone (the SQLite file, one bot), or with other
processes on PostgreSQL, each holding a lease (stembot/process_lease.py).

The service and its call queue ask it:
- what a start-up recovers, and what the periodic sweep recovers (the requests of processes
  that are gone), and which of its requests it may still tell the outcome of once it wrote
  it (only those it still holds: a process that lost its lease tells nothing; the process
  that took its requests over does);
- when each call may go to the API (``turns``: the cap and the servers' turns, in this
  process or across all of them);
- whether another process is calling the API for a source and mode right now, to ride on
  that call rather than refuse (``elsewhere``), and to tell the others when this process's
  calls start and end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol

from stembot.flights import Flight, FlightBoard, FlightKey
from stembot.models import Recovery, RequestStatus
from stembot.process_lease import ProcessLease
from stembot.shared_calls import CallsLedger, FindResult, RemoteCalls, RemoteLanding, SharedTurns
from stembot.store.interface import LedgerStore
from stembot.store.postgres.dispatch import Word
from stembot.turns import LocalTurns, Turns

log = logging.getLogger(__name__)


class Elsewhere(Protocol):
    """Calls made by other processes, that this process's requests may ride on."""

    def bind(self, landing: RemoteLanding) -> None: ...

    async def running(self, key: FlightKey) -> bool | None:
        """Whether another process's call for ``key`` is running (False: queued), or None."""
        ...

    def watch(self, flight: Flight) -> None:
        """Land ``flight`` (joiners only) when the call for its key ends."""
        ...

    def unwatch(self, flight: Flight) -> None: ...

    def take_all(self) -> list[Flight]:
        """Every flight still waiting on another process (a shutdown refunds them)."""
        ...


class Sharing(Protocol):
    @property
    def sweep_every_s(self) -> float | None:
        """How often to run ``sweep`` (None: never, nobody else shares the ledger)."""
        ...

    async def recover(self, now: datetime) -> Recovery:
        """At start-up: what stopped processes left owing, now this process's to tell."""
        ...

    async def sweep(self, now: datetime) -> Recovery:
        """Now and then: the same for processes found gone since."""
        ...

    @property
    def unsealed_by_grant(self) -> bool:
        """Whether a call's sealed source is cleared when the ledger gives it its turn (else
        only when it is marked running, which must then land before the call is made)."""
        ...

    async def sweep_due(self) -> None:
        """Wait until the next ``sweep`` is due: ``sweep_every_s``, or sooner when another
        process stopped and handed over its queued calls."""
        ...

    async def hand_over(self, request_ids: Sequence[int]) -> None:
        """A clean stop: these queued requests (their calls' sources sealed) are left for
        another process, or the next start, to make (never refunded here)."""
        ...

    async def taken_over(self) -> None:
        """Calls handed over to this process were queued: start those already given a turn."""
        ...

    async def kept(self, request_ids: Sequence[int], status: RequestStatus) -> set[int]:
        """Which of these requests, just moved to ``status``, this process may tell."""
        ...

    def turns(self, board: FlightBoard, cap: int) -> Turns:
        """When each of this process's calls may go, at most ``cap`` at once."""
        ...

    def elsewhere(self, find_result: FindResult) -> Elsewhere: ...

    async def call_started(self, key: FlightKey) -> None:
        """This process's call for ``key`` went to the API (requests elsewhere ride on it)."""
        ...

    async def call_ended(self, key: FlightKey) -> None:
        """This process's call for ``key`` ended (settled, refunded, or never to be made)."""
        ...

    def running(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while the bot runs: hearing the other processes."""
        ...


class _NowhereElse:
    """No other process: no call to ride on."""

    def bind(self, landing: RemoteLanding) -> None:
        pass

    async def running(self, key: FlightKey) -> bool | None:
        return None

    def watch(self, flight: Flight) -> None:
        raise AssertionError("no other process makes calls")

    def unwatch(self, flight: Flight) -> None:
        pass

    def take_all(self) -> list[Flight]:
        return []


class Alone:
    """The only bot on its ledger (the SQLite file, held by its lock): everything is its own."""

    def __init__(self, store: LedgerStore) -> None:
        self._store = store

    @property
    def sweep_every_s(self) -> float | None:
        return None

    async def recover(self, now: datetime) -> Recovery:
        return await self._store.ledger.recover(now)

    async def sweep(self, now: datetime) -> Recovery:
        return Recovery([], [])

    @property
    def unsealed_by_grant(self) -> bool:
        return False  # the turns are given in memory

    async def sweep_due(self) -> None:
        await asyncio.Event().wait()  # never: nobody else shares the ledger

    async def hand_over(self, request_ids: Sequence[int]) -> None:
        pass  # they stay queued in the file: the next start makes their calls

    async def taken_over(self) -> None:
        pass

    async def kept(self, request_ids: Sequence[int], status: RequestStatus) -> set[int]:
        return set(request_ids)

    def turns(self, board: FlightBoard, cap: int) -> Turns:
        return LocalTurns(cap)

    def elsewhere(self, find_result: FindResult) -> Elsewhere:
        return _NowhereElse()

    async def call_started(self, key: FlightKey) -> None:
        pass

    async def call_ended(self, key: FlightKey) -> None:
        pass

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        yield


class LeasedLedger(Protocol):
    """What a shared ledger offers the lease holders (stembot/store/postgres/leases.py)."""

    async def recover_dead(self, me: int, now: datetime, *, unowned: bool = False) -> Recovery: ...

    async def hand_over(self, lease_id: int, request_ids: Sequence[int]) -> int: ...

    async def held(
        self, lease_id: int, request_ids: Sequence[int], status: RequestStatus
    ) -> set[int]: ...


class Listener(Protocol):
    """The connection hearing the other processes (stembot/store/postgres/notifications.py)."""

    async def run(self) -> None: ...


# Starts hearing the others: every word to ``heard``, ``caught_up`` after each (re)connection.
Listen = Callable[[Callable[[Word], None], Callable[[], Awaitable[None]]], Listener]


class Leased:
    """One of several processes on a PostgreSQL ledger, holding ``lease``."""

    def __init__(
        self, leases: LeasedLedger, calls: CallsLedger, lease: ProcessLease, listen: Listen
    ) -> None:
        self._leases = leases
        self._calls = calls
        self._lease = lease
        self._listen = listen
        self._turns: SharedTurns | None = None
        self._remote: RemoteCalls | None = None
        # Set when another process handed over its queued calls: sweep now, not at the beat.
        self._handed_over = asyncio.Event()

    @property
    def sweep_every_s(self) -> float | None:
        return self._lease.heartbeat_s

    async def recover(self, now: datetime) -> Recovery:
        # Requests of no lease at all are a bot's from before leases: recovered at a start.
        return await self._leases.recover_dead(self._lease.id, now, unowned=True)

    async def sweep(self, now: datetime) -> Recovery:
        if not self._lease.held():
            return Recovery([], [])
        recovered = await self._leases.recover_dead(self._lease.id, now)
        if self._turns is not None and (self._turns.waiting or recovered.interrupted):
            self._turns.dispatch_soon()  # turns a gone process held are free again
        if self._remote is not None and self._remote.watching:
            await self._remote.catch_up()  # its maker may have died before saying it ended
        return recovered

    @property
    def unsealed_by_grant(self) -> bool:
        return True  # granted_at, by the trigger of the PostgreSQL 0008_sealed_sources

    async def sweep_due(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._handed_over.wait(), self._lease.heartbeat_s)
        self._handed_over.clear()

    async def hand_over(self, request_ids: Sequence[int]) -> None:
        if not request_ids or not self._lease.held():
            return
        try:
            moved = await self._leases.hand_over(self._lease.id, request_ids)
        except Exception as error:
            # Still queued under this lease: taken over once it ends (or runs out).
            log.warning("could not hand over queued request(s) now (%s)", error)
            return
        log.info("%d queued request(s) handed over to the other processes", moved)

    async def taken_over(self) -> None:
        # A dispatch elsewhere may have given them a turn before their flights were here.
        if self._turns is not None:
            await self._turns.catch_up()

    async def kept(self, request_ids: Sequence[int], status: RequestStatus) -> set[int]:
        if not self._lease.held():
            log.warning("request(s) %s: this process lost its lease; not telling", request_ids)
            return set()
        try:
            return await self._leases.held(self._lease.id, request_ids, status)
        except Exception as error:
            # As on one process: the answer goes out even when the database cannot say.
            log.warning("request(s) %s: holder unknown (%s); telling", request_ids, error)
            return set(request_ids)

    def turns(self, board: FlightBoard, cap: int) -> Turns:
        self._turns = SharedTurns(self._calls, self._lease, board, cap)
        return self._turns

    def elsewhere(self, find_result: FindResult) -> Elsewhere:
        self._remote = RemoteCalls(self._calls, find_result)
        return self._remote

    async def call_started(self, key: FlightKey) -> None:
        await self._tell("started", key)

    async def call_ended(self, key: FlightKey) -> None:
        await self._tell("ended", key)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        listening = asyncio.create_task(self._listen(self._heard, self._caught_up).run())
        try:
            yield
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
            for part in (self._turns, self._remote):
                if part is not None:
                    await part.close()

    async def _tell(self, event: str, key: FlightKey) -> None:
        source_key, mode = key
        try:
            await self._calls.tell(Word(event, key=source_key, mode=mode))
        except Exception as error:
            # The others read the ledger again at their next heartbeat.
            log.warning("could not tell the other processes a call %s (%s)", event, error)

    def _heard(self, word: Word) -> None:
        if word.kind == "gone":
            self._handed_over.set()
        elif word.kind == "grant" and self._turns is not None:
            if word.lease_id == self._lease.id:
                self._turns.granted(word.request_ids)
            self._turns.heard_dispatch()
        elif self._remote is not None:
            key = (word.key, word.mode)
            if word.kind == "started":
                self._remote.heard_started(key)
            elif word.kind == "ended":
                self._remote.heard_ended(key)
        if word.kind == "ended" and self._turns is not None:
            # Its turn is free (its outcome is written): the next call need not wait for its
            # process to finish telling its requesters.
            self._turns.heard_ended()

    async def _caught_up(self) -> None:
        if self._turns is not None:
            await self._turns.catch_up()
        if self._remote is not None:
            await self._remote.catch_up()
