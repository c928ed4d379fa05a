"""Queued calls handed over between processes and starts, rather than refunded (issue 14).

A paid call still queued keeps its source link sealed in its ledger row
(stembot/sealed_sources.py) until it is given its turn. So a process that stops leaves its
queued calls queued instead of refunding them: on SQLite the next start makes them, on
PostgreSQL a live process takes them over at once (the stopping process hands them to a lease
that is already ended, and says so on the channel). A process found dead leaves them the same
way. The process taking them over opens each source, queues the call in its server's turn,
and answers every requester through the channel when the call ends (their interaction tokens
died with the old process). A call that ever had its turn is never made again: its source was
cleared then (the API may have billed it), and it is refunded as before. So is a call whose
source this process cannot open (the API key changed since), said in one line.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

from stembot.call_queue import CallQueue
from stembot.flights import Flight, FlightBoard, HeldRequest, Replies, RequestListener
from stembot.ledger_writes import LedgerWrites
from stembot.models import HandedOverCall, NewRequest, Recovery, Request, RequestStatus
from stembot.sealed_sources import SourceSeal
from stembot.sharing import Sharing
from stembot.store.interface import LedgerStore
from stembot.store.recovery import INTERRUPTED_ERROR

log = logging.getLogger(__name__)

# Who answers a request taken over from another process or start (its interaction is gone).
AnswerFor = Callable[[Request], RequestListener]


class HandOver:
    """Seals the sources of new calls; makes the calls handed over to this process."""

    def __init__(
        self,
        store: LedgerStore,
        seal: SourceSeal | None,
        sharing: Sharing,
        board: FlightBoard,
        calls: CallQueue,
        writes: LedgerWrites,
        replies: Replies,
        flight_ids: Iterator[int],
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._seal = seal
        self._sharing = sharing
        self._board = board
        self._calls = calls
        self._writes = writes
        self._replies = replies
        self._flight_ids = flight_ids
        self._clock = clock

    def sealed(self, asked: NewRequest) -> NewRequest:
        """``asked`` with its source sealed for its ledger row (unchanged without a seal)."""
        if self._seal is None:
            return asked
        sealed = self._seal.seal(asked.source_url, asked.source_key, asked.mode.value)
        return dataclasses.replace(asked, sealed_source=sealed)

    async def take_over(
        self, recovery: Recovery, answer: AnswerFor | None, *, accepting: bool
    ) -> Recovery:
        """``recovery`` with the calls handed over queued here (``answer`` tells their
        requesters), and those whose source cannot be opened refunded (among the
        interrupted, to be told). Once this process stops taking requests, they go on to
        another process, or the next start, again."""
        calls = recovery.handed_over
        if not calls:
            return recovery
        if not accepting:
            await self._sharing.hand_over([r.id for call in calls for r in call.requests])
            return Recovery(recovery.interrupted, recovery.undelivered)
        queued, refunded = await self.take(calls, answer)
        if queued:
            await self._sharing.taken_over()
        return Recovery([*recovery.interrupted, *refunded], recovery.undelivered, queued)

    async def leave(self, waiting: list[Flight]) -> list[Flight]:
        """A stop: of the flights still waiting for their turn, those whose source is sealed
        stay queued in the ledger (handed over; their requesters told they keep their
        place); returns the others, to be interrupted."""
        left = [flight for flight in waiting if flight.sealed]
        ids = [request_id for flight in left for request_id in flight.request_ids]
        # Told only by a process still holding them (one that lost its lease tells nothing).
        kept = await self._sharing.kept(ids, RequestStatus.QUEUED) if ids else set()
        await self._sharing.hand_over(ids)
        for flight in left:
            for held in self._board.land(flight):
                if held.request.id in kept:
                    self._replies.soon(held.listener.on_handed_over(held.request), held.request.id)
        if left:
            log.info("%d queued call(s) left for another process or the next start", len(left))
        return [flight for flight in waiting if not flight.sealed]

    async def take(
        self, calls: Sequence[HandedOverCall], answer: AnswerFor | None
    ) -> tuple[list[HandedOverCall], list[Request]]:
        """Queue each call whose source opens, its requests answered by ``answer``; refund the
        others. Returns the calls queued and the requests refunded (to be told)."""
        queued: list[HandedOverCall] = []
        unopened: list[HandedOverCall] = []
        for call in calls:
            url = self._open(call) if answer is not None else None
            if url is None or answer is None:
                unopened.append(call)
                continue
            self._queue(call, url, answer)
            queued.append(call)
        if unopened and answer is not None:
            log.warning(
                "request(s) %s: the sealed source of their queued call(s) could not be opened "
                "(SOUNDVERSE_API_KEY changed since they were queued?); refunding them",
                [call.payer.id for call in unopened],
            )
        return queued, await self._refund(unopened)

    def _open(self, call: HandedOverCall) -> str | None:
        if self._seal is None:
            return None
        payer = call.payer
        return self._seal.open(call.sealed_source, payer.source_key, payer.mode.value)

    def _queue(self, call: HandedOverCall, url: str, answer: AnswerFor) -> None:
        payer = call.payer
        flight = Flight(next(self._flight_ids), (payer.source_key, payer.mode), [], sealed=True)
        for request in call.requests:
            held = HeldRequest(request, NewRequest.of_recorded(request, url), answer(request))
            self._board.hold(flight, held)
        log.info(
            "request %s: its queued call taken over (%d request(s) wait on it)",
            payer.id,
            len(flight.held),
        )
        self._calls.push(flight, payer.guild_id)

    async def _refund(self, calls: list[HandedOverCall]) -> list[Request]:
        requests = [request for call in calls for request in call.requests]
        if not requests:
            return []
        now = self._clock()
        ids = [request.id for request in requests]
        await self._writes.persist(
            f"refunding request(s) {ids} taken over",
            lambda: self._store.ledger.refund_all(
                ids, RequestStatus.INTERRUPTED, INTERRUPTED_ERROR, now
            ),
        )
        return [
            dataclasses.replace(
                r, status=RequestStatus.INTERRUPTED, finished_at=now, error=INTERRUPTED_ERROR
            )
            for r in requests
        ]
