"""The API calls: queued with servers taking turns, at most a few at once (the Turns decide:
turns.py), each call's outcome written to the ledger (settled or refunded) and then told to
every request that shares it. On a ledger shared by several processes a flight may also hold
requests riding on another process's call (``remote``): it is landed when that call ends."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol

from stembot.errors import (
    IncidentError,
    RequestInterruptedError,
    SoundverseAuthError,
    StembotError,
    StoreBusyError,
)
from stembot.flights import Flight, FlightBoard, HeldRequest, Replies, tell
from stembot.ledger_writes import LedgerWrites
from stembot.models import Mode, QuotaStatus, Request, RequestStatus, Separation
from stembot.request_observer import Outcome, RequestObserver, Unobserved
from stembot.sharing import Alone, Sharing
from stembot.store.interface import LedgerStore
from stembot.turns import Turns

log = logging.getLogger(__name__)


class Separator(Protocol):
    """What the queue needs of the Soundverse client."""

    async def separate(self, mode: Mode, audio_url: str) -> Separation: ...


class CallQueue:
    """Flights waiting for the API, in turns by server, and the ones running."""

    def __init__(
        self,
        store: LedgerStore,
        separator: Separator,
        board: FlightBoard,
        writes: LedgerWrites,
        replies: Replies,
        *,
        max_running: int,
        clock: Callable[[], datetime],
        observer: RequestObserver | None = None,
        sharing: Sharing | None = None,
    ) -> None:
        self._store = store
        self._sharing = sharing or Alone(store)
        self._separator = separator
        self._board = board
        self._writes = writes
        self._replies = replies
        self._clock = clock
        self._observer = observer or Unobserved()
        self._turns: Turns = self._sharing.turns(board, max_running)
        self._turns.bind(self._start)
        self._running: set[Flight] = set()

    def push(self, flight: Flight, guild_id: int) -> None:
        """Queue a new flight in its server's lane and start what the cap allows."""
        self._turns.push(flight, guild_id)

    def remove(self, flight: Flight) -> None:
        """A waiting flight whose every request was cancelled."""
        self._turns.remove(flight)

    async def abandon(self, flight: Flight, error: StembotError) -> None:
        """A waiting flight whose payer left and whose riders none may pay for (their servers
        spent): it is not made; they are refunded (at no cost) and told ``error``, and the
        other processes that it ended. One that started meanwhile runs (unpaid)."""
        if not flight.started:
            self._turns.remove(flight)
            await self._fail(flight, RequestStatus.INTERRUPTED, error)

    def position(self, flight: Flight) -> int | None:
        """1-based place in the queue, or None once the flight has started."""
        return None if flight.remote else self._turns.position(flight)

    @property
    def waiting(self) -> int:
        """Calls queued for the API."""
        return self._turns.waiting

    @property
    def running(self) -> int:
        """Calls at the API now."""
        return len(self._running)

    def take_waiting(self) -> list[Flight]:
        """Every flight still waiting for its turn, out of the queue (a shutdown)."""
        return self._turns.take_waiting()

    async def shutdown(self, grace_s: float, interrupted: list[Flight]) -> None:
        """Interrupt (and refund) ``interrupted`` (flights taken from the queue, and those
        riding on another process's call); give the running ones ``grace_s``."""
        for flight in interrupted:
            await self._fail(flight, RequestStatus.INTERRUPTED, RequestInterruptedError())
        tasks = [f.task for f in self._running if f.task is not None]
        if tasks:
            _, still_running = await asyncio.wait(tasks, timeout=grace_s)
            for task in still_running:
                task.cancel()
            await asyncio.gather(*still_running, return_exceptions=True)

    # --- running ------------------------------------------------------------------------

    def _start(self, flight: Flight) -> None:
        """The flight has its turn: call the API."""
        self._running.add(flight)
        flight.task = asyncio.create_task(self._run(flight), name=f"flight-{flight.id}")

    async def _run(self, flight: Flight) -> None:
        payer = flight.payer
        try:
            flight.started_at = self._clock()
            for held in list(flight.held):
                self._replies.soon(held.listener.on_started(held.request), held.request.id)
            marked = await self._mark_running(flight.request_ids, flight.started_at)
            if not marked and flight.sealed and not self._sharing.unsealed_by_grant:
                # Its row still holds the sealed source: a crash during the call would have
                # the next start make it again. Never twice: refunded instead.
                raise StoreBusyError()
            await self._sharing.call_started(flight.key)
            log.info(
                "request %s running (%d requests share it)", payer.request.id, len(flight.held)
            )
            separation = await self._separator.separate(payer.asked.mode, payer.asked.source_url)
        except asyncio.CancelledError:
            await self._fail(flight, RequestStatus.INTERRUPTED, RequestInterruptedError())
            raise
        except StembotError as error:
            await self._fail(flight, RequestStatus.FAILED, error)
        except Exception:
            incident = IncidentError()
            log.exception(
                "request %s failed unexpectedly (incident %s)",
                payer.request.id,
                incident.incident_id,
            )
            await self._fail(flight, RequestStatus.FAILED, incident)
        else:
            await self._succeed(flight, separation)
        finally:
            self._running.discard(flight)
            self._turns.done(flight)

    # --- riding on another process's call ----------------------------------------------

    def remote_started(self, flight: Flight) -> None:
        """The call a remote flight rides on went to the API."""
        started_at = flight.started_at = self._clock()
        for held in list(flight.held):
            self._replies.soon(held.listener.on_started(held.request), held.request.id)
        if flight.held:
            ids = flight.request_ids
            self._replies.soon(self._mark_running_quietly(ids, started_at), ids[0])

    async def land_remote(
        self, flight: Flight, outcome: Separation | StembotError, status: RequestStatus
    ) -> None:
        """The call a remote flight rides on ended: its stored result, or why not."""
        if isinstance(outcome, Separation):
            await self._succeed(flight, outcome)
        else:
            await self._fail(flight, status, outcome)

    def inherited(self, flight: Flight, heir_id: int, cost: int) -> bool:
        """The call a remote flight rides on was cancelled before it ran, and ``heir_id`` took
        it on (charged ``cost``): the flight is this process's call now, its heir the payer,
        queued in its server's lane. False when the heir left the flight meanwhile."""
        heir = next((h for h in flight.held if h.request.id == heir_id), None)
        if heir is None:
            return False
        heir.request = dataclasses.replace(heir.request, cost=cost)
        flight.held.remove(heir)
        flight.held.insert(0, heir)
        flight.remote = False
        self.push(flight, heir.asked.guild_id)
        return True

    def now(self) -> datetime:
        return self._clock()

    async def _mark_running_quietly(self, request_ids: list[int], now: datetime) -> None:
        await self._mark_running(request_ids, now)

    async def _mark_running(self, request_ids: list[int], now: datetime) -> bool:
        """A label in the ledger (queued and running are settled and refunded alike), and
        the end of a sealed source (see ``_run``); False when the database was busy."""
        try:
            await self._store.ledger.mark_all_running(request_ids, now)
        except StoreBusyError:
            log.warning(
                "request(s) %s: database busy; left marked queued while running", request_ids
            )
            return False
        return True

    async def _succeed(self, flight: Flight, separation: Separation) -> None:
        now = self._clock()
        payer = flight.payer
        if not flight.remote:  # a remote flight's payer is another process's
            await self._writes.persist(
                f"settling request {payer.request.id}",
                lambda: self._store.ledger.settle(
                    payer.request.id, separation, payer.asked.source_key, now
                ),
            )
        held = await self._close_out(
            flight,
            lambda ids: self._store.ledger.settle_joined(ids, now),
            after_payer=not flight.remote,
        )
        if not flight.remote:
            await self._sharing.call_ended(flight.key)
        held = await self._ours(held, RequestStatus.SUCCEEDED)
        for h in held:
            self._observer.request_ended(h.request, Outcome.SUCCEEDED)
        log.info(
            "request %s succeeded: %d stems for %d request(s)",
            payer.request.id,
            len(separation.stems),
            len(held),
        )
        quotas = await self._quotas(held)
        await asyncio.gather(
            *(
                tell(
                    h.listener.on_succeeded(h.request, separation, quotas[h.request.id]),
                    h.request.id,
                )
                for h in held
            )
        )

    async def _fail(self, flight: Flight, status: RequestStatus, error: StembotError) -> None:
        now = self._clock()
        held = await self._close_out(
            flight, lambda ids: self._store.ledger.refund_all(ids, status, error.user_message, now)
        )
        if not flight.remote:
            await self._sharing.call_ended(flight.key)
        held = await self._ours(held, status)
        request_id = flight.payer.request.id if flight.held else None
        outcome = Outcome.INTERRUPTED if status is RequestStatus.INTERRUPTED else Outcome.FAILED
        for h in held:
            self._observer.request_ended(h.request, outcome)
        if isinstance(error, SoundverseAuthError):
            log.error(
                "request %s: the Soundverse API refused the API key; check SOUNDVERSE_API_KEY",
                request_id,
            )
        log.info(
            "request %s %s and refunded (%d request(s)): %s",
            request_id,
            status,
            len(held),
            type(error).__name__,
        )
        quotas = await self._quotas(held)
        await asyncio.gather(
            *(
                tell(h.listener.on_failed(h.request, error, quotas[h.request.id]), h.request.id)
                for h in held
            )
        )

    async def _close_out(
        self,
        flight: Flight,
        write: Callable[[list[int]], Awaitable[object]],
        *,
        after_payer: bool = False,
    ) -> list[HeldRequest]:
        """Write every request's outcome, then land the flight.

        Requests can still join while a write waits (their own rows are being written); they
        are written in the next round, and the flight lands with no await after the last
        check, so none is left active in the ledger or untold.
        """
        done = 1 if after_payer else 0
        while True:
            if done < len(flight.held):
                request_ids = [h.request.id for h in flight.held[done:]]
                done = len(flight.held)
                await self._writes.persist(
                    f"closing request(s) {request_ids}", functools.partial(write, request_ids)
                )
            elif flight.joining:
                await flight.joined.wait()
            else:
                return self._board.land(flight)

    async def _ours(self, held: list[HeldRequest], status: RequestStatus) -> list[HeldRequest]:
        """Those whose outcome this process wrote and may tell: on a shared ledger, not the
        requests another process took over (this one lost its lease: that one tells them)."""
        kept = await self._sharing.kept([h.request.id for h in held], status)
        if len(kept) < len(held):
            log.warning(
                "request(s) %s: taken over by another process; not telling",
                [h.request.id for h in held if h.request.id not in kept],
            )
        return [h for h in held if h.request.id in kept]

    async def _quotas(self, held: Sequence[HeldRequest]) -> dict[int, QuotaStatus | None]:
        """Each requester's quota after an outcome (their roles' allowance included), by
        request id: read once per member, all at once."""
        members = {(h.request.guild_id, h.request.user_id): h for h in held}
        now = self._clock()
        read = await asyncio.gather(
            *(quota_after(self._store, h.request, h.asked.role_ids, now) for h in members.values())
        )
        by_member = dict(zip(members, read, strict=True))
        return {h.request.id: by_member[(h.request.guild_id, h.request.user_id)] for h in held}


async def quota_after(
    store: LedgerStore, request: Request, role_ids: Sequence[int], now: datetime
) -> QuotaStatus | None:
    """The requester's quota after an outcome. Only a nicety for the answer's footer: a
    failing database must not hold the answer back, so None when it cannot be read."""
    try:
        return await store.quotas.quota_status(request.guild_id, request.user_id, now, role_ids)
    except Exception as error:
        log.warning("request %s: quota left unknown (%s); answering without it", request.id, error)
        return None
