"""A remix event's API call of a mode, on the same path as a member's request (StemService
hands its own parts in): a stored result, a ride on an identical call, or a new call charged
to the server alone and queued, servers taking turns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from stembot.errors import CallInFlightError, QuotaLimitReached
from stembot.flights import FlightBoard, HeldRequest, RequestListener
from stembot.keyed_locks import KeyedLocks
from stembot.models import Mode, NewRequest, Request, Separation
from stembot.request_inputs import CheckedSource
from stembot.riding import Riding
from stembot.store.interface import LedgerStore

FindResult = Callable[[str, Mode, datetime], Awaitable[Separation | None]]
NoteRefusal = Callable[[QuotaLimitReached, datetime], Awaitable[None]]
Fly = Callable[[HeldRequest], None]


class RemixEventCalls:
    """The calls remix events pay for."""

    def __init__(
        self,
        store: LedgerStore,
        board: FlightBoard,
        deciding: KeyedLocks,
        riding: Riding,
        *,
        find_result: FindResult,
        note_refusal: NoteRefusal,
        fly: Fly,
    ) -> None:
        self._store = store
        self._board = board
        self._deciding = deciding
        self._riding = riding
        self._find_result = find_result
        self._note_refusal = note_refusal
        self._fly = fly

    async def submit(
        self,
        event_id: int,
        mode: Mode,
        source: CheckedSource,
        listener: RequestListener,
        now: datetime,
    ) -> Separation | None:
        """As StemService.submit_for_event (which checks the service is open first)."""
        key = (source.key, mode)
        stored = await self._find_result(source.key, mode, now)
        if stored is not None:
            return stored

        async def join(running: bool) -> HeldRequest:
            request = await self._store.ledger.reserve_for_event(
                event_id, mode, source.name, source.key, now, joined=True, running=running
            )
            return HeldRequest(request, event_asked(event_id, request, source), listener)

        async with self._deciding.alone(key):
            flight = self._board.get(key)
            if flight is None:
                stored = await self._find_result(source.key, mode, now)
                if stored is not None:
                    return stored
                if await self._riding.ride_elsewhere(key, join) is not None:
                    return None
                try:
                    request = await self._store.ledger.reserve_for_event(
                        event_id, mode, source.name, source.key, now
                    )
                except QuotaLimitReached as refusal:
                    await self._note_refusal(refusal, now)
                    raise
                except CallInFlightError:
                    # Another process is calling the API for it: ride on that call.
                    if await self._riding.ride_elsewhere(key, join) is None:
                        raise
                    return None
                asked = event_asked(event_id, request, source)
                self._fly(HeldRequest(request, asked, listener))
                return None

        await self._riding.join(flight, join)
        return None


def event_asked(event_id: int, request: Request, source: CheckedSource) -> NewRequest:
    """A remix event's reserved call as the queue runs it (the URL only in memory)."""
    return NewRequest.of_recorded(request, source.url, remix_event_id=event_id)
