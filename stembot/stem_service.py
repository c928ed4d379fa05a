"""The service: check -> reserve quota -> queue -> call the API -> settle or refund -> tell.

It takes plain values (ids, URLs, names), never discord objects, so the Discord layer, the
CLI and the tests drive it alike. The Discord layer hears about each request through the
RequestListener it hands in with the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta

from stembot.call_queue import CallQueue, Separator, quota_after
from stembot.errors import (
    AlreadyStartedError,
    CallInFlightError,
    DatabaseReplacedError,
    NotYourRequestError,
    QuotaLimitReached,
    RemixEventCallNotCancellableError,
    RequestEndedError,
    SharedCallEndedError,
    ShuttingDownError,
    StembotError,
    StoreBusyError,
)
from stembot.flights import Flight, FlightBoard, HeldRequest, Replies, RequestListener
from stembot.handed_over import AnswerFor, HandOver
from stembot.keyed_locks import KeyedLocks
from stembot.ledger_writes import LedgerWrites
from stembot.models import (
    Mode,
    NewRequest,
    QuotaLimit,
    QuotaStatus,
    Recovery,
    Request,
    RequestStatus,
    Separation,
)
from stembot.probe_slots import ProbeSlots
from stembot.remix_event_calls import RemixEventCalls
from stembot.request_inputs import AttachmentInput, CheckedSource, Requester
from stembot.request_observer import Outcome, RequestObserver, Unobserved
from stembot.riding import Riding
from stembot.sealed_sources import SourceSeal
from stembot.shared_probes import UrlProber
from stembot.sharing import Alone, Sharing
from stembot.source_urls import source_key_for_attachment, source_key_for_url
from stembot.sources import check_attachment
from stembot.store.interface import LedgerStore

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Run with the server's id after each request that charged it units (quota alerts: run.py).
ChargeHook = Callable[[int], Awaitable[None]]
# How long a cancel waits for its refund to be written before answering (the write goes on).
_CANCEL_WAIT_S = 1.5
_CANCELLED = "cancelled by the requester"
# A call in flight in another process may end while a request decides to ride on it: the
# decision is taken again (the stored result, or a call of its own), at most this often.
_DECISIONS = 3


def utc_now() -> datetime:
    return datetime.now(UTC)


class StemService:
    """A member's request from the checks to the queue: answered from a stored result, joined
    to an identical call, or reserved and queued; cancelled; recovered after a restart. The
    call queue runs the calls; the store owns the money."""

    def __init__(
        self,
        store: LedgerStore,
        separator: Separator,
        prober: UrlProber,
        *,
        max_concurrent_calls: int,
        max_input_bytes: int,
        result_ttl_s: float,
        probes_per_member: int = 2,
        clock: Clock = utc_now,
        observer: RequestObserver | None = None,
        sharing: Sharing | None = None,
        seal: SourceSeal | None = None,
    ) -> None:
        self._store = store
        self._sharing = sharing or Alone(store)
        self._observer = observer or Unobserved()
        self._prober = prober
        self._probe_slots = ProbeSlots(probes_per_member)
        self._max_input_bytes = max_input_bytes
        self._result_ttl = timedelta(seconds=result_ttl_s)
        self._clock = clock
        self._board = FlightBoard()
        self._flight_ids = itertools.count(1)
        self._deciding = KeyedLocks()
        self._replies = Replies()
        self._writes = LedgerWrites(store, clock)
        self._calls = CallQueue(
            store,
            separator,
            self._board,
            self._writes,
            self._replies,
            max_running=max_concurrent_calls,
            clock=clock,
            observer=self._observer,
            sharing=self._sharing,
        )
        # Calls other processes make (on a shared ledger), that requests here may ride on.
        self._elsewhere = self._sharing.elsewhere(
            lambda key: self._find_result(key[0], key[1], self._clock())
        )
        self._elsewhere.bind(self._calls)
        self._riding = Riding(
            self._board, self._elsewhere, self._replies, self._flight_ids, self._clock
        )
        self._events = RemixEventCalls(
            store,
            self._board,
            self._deciding,
            self._riding,
            find_result=self._find_result,
            note_refusal=self._note_refusal,
            fly=self._fly,
        )
        # Queued calls' sources sealed in the ledger, and calls handed over to this process.
        self._handed_over = HandOver(
            store,
            seal,
            self._sharing,
            self._board,
            self._calls,
            self._writes,
            self._replies,
            self._flight_ids,
            clock,
        )
        self._charge_hooks: list[ChargeHook] = []
        self._accepting = True

    def after_charge(self, hook: ChargeHook) -> None:
        """Also run ``hook(guild_id)``, without making the requester wait, after each charge."""
        self._charge_hooks.append(hook)

    # --- asking -------------------------------------------------------------------------

    async def quota_status(
        self, guild_id: int, user_id: int | None, role_ids: tuple[int, ...] = ()
    ) -> QuotaStatus:
        return await self._store.quotas.quota_status(guild_id, user_id, self._clock(), role_ids)

    @property
    def costs(self) -> Mapping[Mode, int]:
        return self._store.policy.costs

    def position(self, request_id: int) -> int | None:
        """1-based place in the queue, or None once the request has started or ended."""
        flight = self._board.of_request(request_id)
        return None if flight is None else self._calls.position(flight)

    @property
    def calls_waiting(self) -> int:
        """API calls queued in this process."""
        return self._calls.waiting

    @property
    def calls_running(self) -> int:
        """API calls this process has at the API now."""
        return self._calls.running

    @property
    def accepting(self) -> bool:
        """Taking new requests: false once shutting down."""
        return self._accepting

    # --- checking the input (spends nothing) ---------------------------------------------

    def check_attachment(self, attachment: AttachmentInput) -> CheckedSource:
        """Instant checks of type and size; raises InvalidSourceError."""
        check_attachment(
            attachment.filename, attachment.content_type, attachment.size, self._max_input_bytes
        )
        return CheckedSource(
            attachment.url, attachment.filename, source_key_for_attachment(attachment.id)
        )

    async def precheck(self, requester: Requester, mode: Mode, url: str) -> None:
        """The cheap checks, before ``url`` is fetched: reads the ledger, writes nothing.

        Raises QuotaExceededError (a switched-off or spent server or member, the bot-wide
        budget, too many requests in progress), ShuttingDownError or DatabaseReplacedError.
        A repeat answered from a stored result is never refused here, and one that would join
        a running call only for the limits that do not depend on units, as ``submit`` does;
        the key is the URL's as given (a link that redirects elsewhere is checked in full by
        ``submit``).
        """
        with self._refusals_counted(requester.guild_id):
            await self._precheck(requester, mode, url)

    async def _precheck(self, requester: Requester, mode: Mode, url: str) -> None:
        self._refuse_if_closed()
        now = self._clock()
        key = source_key_for_url(url)
        if await self._find_result(key, mode, now) is not None:
            return
        joins = await self._riding.could_ride((key, mode))
        cost = None if joins else self._store.policy.cost_of(mode)
        try:
            await self._store.quotas.check_limits(
                requester.guild_id, requester.user_id, requester.role_ids, cost, now
            )
        except QuotaLimitReached as refusal:
            await self._note_refusal(refusal, now)
            raise

    async def check_url(self, url: str, requester: Requester) -> CheckedSource:
        """Guarded, bounded probe that the URL leads to audio within the size limit.

        Each probe takes one of the requester's own slots (see ProbeSlots): TooManyLinksError
        when they already have ``probes_per_member`` links being checked.
        """
        with self._refusals_counted(requester.guild_id), self._probe_slots.take(requester.user_id):
            probed = await self._prober.probe(url)
        return CheckedSource(probed.url, probed.filename, source_key_for_url(probed.url))

    # --- submitting and cancelling ------------------------------------------------------

    async def submit(
        self, requester: Requester, mode: Mode, source: CheckedSource, listener: RequestListener
    ) -> Request:
        """Answer from a stored result, join an identical call, or reserve and queue a new one.

        Raises QuotaExceededError, DuplicateRequestError, ShuttingDownError, StoreBusyError.
        A request that comes back already succeeded was answered from the store at no cost.
        """
        with self._refusals_counted(requester.guild_id):
            return await self._submit(requester, mode, source, listener)

    async def _submit(
        self, requester: Requester, mode: Mode, source: CheckedSource, listener: RequestListener
    ) -> Request:
        self._refuse_if_closed()
        await self._writes.retry()
        asked = _asked(requester, mode, source)
        key = (source.key, mode)
        now = self._clock()

        async def join(running: bool) -> HeldRequest:
            return await self._reserve_joined(asked, listener, now, running)

        for decision in range(_DECISIONS):
            stored = await self._find_result(source.key, mode, now)
            if stored is not None:
                break
            # The first request for a source and mode decides alone: a stored result or a call.
            async with self._deciding.alone(key):
                flight = self._board.get(key)
                if flight is None:
                    # A call may have landed (and stored its result) while this one waited.
                    stored = await self._find_result(source.key, mode, now)
                    if stored is not None:
                        break
                    # Another process is calling the API for it: ride on that call.
                    ridden = await self._riding.ride_elsewhere(key, join)
                    if ridden is not None:
                        return ridden
                    try:
                        return await self._call(asked, listener, now)
                    except CallInFlightError:
                        # One started elsewhere a moment ago: ride on it, or decide again.
                        ridden = await self._riding.ride_elsewhere(key, join)
                        if ridden is not None:
                            return ridden
                        if decision + 1 == _DECISIONS:
                            raise
                        continue
            return await self._riding.join(flight, join)
        assert stored is not None
        return await self._answer_from_store(asked, stored, listener, now)

    async def submit_for_event(
        self, event_id: int, mode: Mode, source: CheckedSource, listener: RequestListener
    ) -> Separation | None:
        """A remix event's call of ``mode``, on the same path as a member's request: a stored
        result is returned (nothing recorded, nothing charged); else the event joins an
        identical call at no cost, or reserves a new one charged to the server alone
        (``Ledger.reserve_for_event``: the server's limits, the bot-wide budget and the
        event's own budget, never a member's allowance) and queues it, servers taking turns.
        None: ``listener`` is told the outcome, as for any request (a failed call is refunded).

        Raises QuotaLimitReached, RemixEventBudgetSpentError, RemixEventAlreadyPaidError,
        RemixEventNotFoundError, ShuttingDownError, DatabaseReplacedError, StoreBusyError.
        """
        self._refuse_if_closed()
        await self._writes.retry()
        return await self._events.submit(event_id, mode, source, listener, self._clock())

    async def _call(self, asked: NewRequest, listener: RequestListener, now: datetime) -> Request:
        """Reserve the cost and queue a new call: the first request of its flight pays."""
        asked = self._handed_over.sealed(asked)
        try:
            request = await self._store.ledger.reserve(asked, now)
        except QuotaLimitReached as refusal:
            await self._note_refusal(refusal, now)
            raise
        self._fly(HeldRequest(request, asked, listener))
        return request

    def _fly(self, payer: HeldRequest) -> None:
        """Queue a new call for its reserved payer."""
        request, asked = payer.request, payer.asked
        key = (asked.source_key, asked.mode)
        flight = Flight(next(self._flight_ids), key, [], sealed=asked.sealed_source is not None)
        self._board.hold(flight, payer)
        log.info("request %s queued: guild %s mode %s", request.id, asked.guild_id, asked.mode)
        self._calls.push(flight, asked.guild_id)
        if request.cost:  # a free request cannot push the server past an alert threshold
            for hook in self._charge_hooks:
                self._replies.soon(hook(request.guild_id), request.id)

    async def _answer_from_store(
        self, asked: NewRequest, stored: Separation, listener: RequestListener, now: datetime
    ) -> Request:
        request = await self._store.ledger.record_free(asked, stored, now)
        log.info("request %s answered from a stored result at no cost", request.id)
        self._observer.request_ended(request, Outcome.REUSED)
        quota = await quota_after(self._store, request, asked.role_ids, now)
        self._replies.soon(listener.on_succeeded(request, stored, quota), request.id)
        return request

    async def _reserve_joined(
        self, asked: NewRequest, listener: RequestListener, now: datetime, running: bool
    ) -> HeldRequest:
        request = await self._store.ledger.reserve_joined(asked, now, running=running)
        return HeldRequest(request, asked, listener)

    async def cancel(self, request_id: int, user_id: int) -> Request:
        """Take a waiting request out and refund it; only its requester may, and never a remix
        event's call (the server's, recorded under its organiser's id: a Cancel button's id
        carries any request id a member cares to write).

        When the payer of a shared call leaves, the charge passes on (the store's rule: the
        first requester with room in their own allowance, else the server alone), so the call
        is still paid for exactly once. The request leaves the queue at once; its refund is
        written within a moment, or kept and retried like any write the outcome depends on.
        """
        flight = self._board.of_request(request_id)
        if flight is None:
            raise RequestEndedError()
        if flight.started:
            raise AlreadyStartedError()
        held = next(h for h in flight.held if h.request.id == request_id)
        if held.asked.remix_event_id is not None:
            raise RemixEventCallNotCancellableError()
        if held.asked.user_id != user_id:
            raise NotYourRequestError()
        pays = held is flight.payer and not flight.remote
        heirs = [h for h in flight.held if h is not held] if pays else []
        self._board.let_go(flight, held)
        if not flight.held:
            self._calls.remove(flight)
            if flight.remote:
                self._elsewhere.unwatch(flight)
        refund = self._writes.persist_soon(
            f"refunding cancelled request {request_id}",
            lambda: self._refund_cancelled(flight, held, heirs, pays, self._clock()),
        )
        await asyncio.wait([refund], timeout=_CANCEL_WAIT_S)
        log.info("request %s cancelled by its requester and refunded", request_id)
        self._observer.request_ended(held.request, Outcome.CANCELLED)
        self._replies.soon(held.listener.on_cancelled(held.request), request_id)
        return held.request

    async def _refund_cancelled(
        self,
        flight: Flight,
        held: HeldRequest,
        heirs: list[HeldRequest],
        pays: bool,
        now: datetime,
    ) -> None:
        if heirs:
            handed = await self._store.ledger.hand_over_charge(
                held.request.id, [(h.request.id, h.asked.role_ids) for h in heirs], now
            )
            if handed is not None:
                self._hand_over(flight, held, handed)
                return
        # No heir still active in the ledger, or none may pay: a plain refund.
        await self._store.ledger.refund_all(
            [held.request.id], RequestStatus.CANCELLED, _CANCELLED, now
        )
        if not pays:
            return
        if flight.held:
            # Requests of other servers ride on it, and none may pay: it is not made.
            await self._calls.abandon(flight, SharedCallEndedError())
        else:
            # The call will never be made: requests riding on it elsewhere hear so.
            await self._sharing.call_ended(flight.key)

    def _hand_over(self, flight: Flight, payer: HeldRequest, handed: tuple[int, bool]) -> None:
        """The heir the ledger chose takes the payer's charge and its place in the flight."""
        heir_id, member_pays = handed
        heir = next((h for h in flight.held if h.request.id == heir_id), None)
        if heir is not None:
            heir.request = dataclasses.replace(heir.request, cost=payer.request.cost)
            # The heir becomes the payer: the one settled first, whose result is stored.
            flight.held.remove(heir)
            flight.held.insert(0, heir)
        log.info(
            "request %s: the charge of cancelled request %s passed on%s",
            heir_id,
            payer.request.id,
            "" if member_pays else " to the server alone (no requester had room)",
        )

    # --- the ledger underneath ----------------------------------------------------------

    def refused(self, guild_id: int, refusal: StembotError) -> None:
        """A member's request that the Discord layer refused before it reached the service
        (an input that fails the instant checks): counted with the service's own refusals."""
        self._observer.request_refused(guild_id, refusal)

    @contextlib.contextmanager
    def _refusals_counted(self, guild_id: int) -> Iterator[None]:
        try:
            yield
        except StembotError as refusal:
            self._observer.request_refused(guild_id, refusal)
            raise

    def _refuse_if_closed(self) -> None:
        if not self._accepting:
            raise ShuttingDownError()
        if self._writes.lost():
            raise DatabaseReplacedError()

    async def _find_result(self, key: str, mode: Mode, now: datetime) -> Separation | None:
        return await self._store.ledger.find_result(key, mode, now - self._result_ttl)

    async def _note_refusal(self, refusal: QuotaLimitReached, now: datetime) -> None:
        """Tell the operator's log, once a UTC day, that the bot-wide budget is spent."""
        if refusal.limit is not QuotaLimit.API_BUDGET:
            return
        try:
            first = await self._store.guilds.claim_budget_notice(now)
        except StoreBusyError:
            return  # the next refusal tries again
        if first:
            log.warning(
                "the API daily budget is spent: %s paid calls on %s (STEMBOT_API_DAILY_BUDGET); "
                "new paid requests are refused until 00:00 UTC, repeats and joins still work",
                self._store.policy.api_daily_budget,
                now.date().isoformat(),
            )

    def record_delivery(self, request_id: int, via: str) -> None:
        """The answer of a succeeded request reached Discord ``via`` a route (or "nowhere")."""
        self._writes.record_delivery(request_id, via)
        self._observer.result_delivered(via)

    async def check_ledger(self) -> None:
        """Run now and then: notice a lost database file; retry writes that failed."""
        await self._writes.check()

    async def stored_result(self, request_id: int) -> tuple[Request, Separation] | None:
        """A request that succeeded and the result stored for its source and mode, to make
        free mixes from; None once either is no longer kept (retention, a moderator's refund).
        Reads only: nothing is charged or recorded."""
        found = await self._store.ledger.stored_result(request_id)
        if found is None or found[0].status is not RequestStatus.SUCCEEDED:
            return None
        return found

    # --- restart and shutdown -----------------------------------------------------------

    async def recover(self, answer: AnswerFor | None = None) -> Recovery:
        """What a stopped bot left owing: requests refunded, results still to deliver, and
        queued calls it left, made now (``answer`` gives who tells each requester; without
        it they are refunded). On a ledger shared by several processes, only what
        processes that are gone left."""
        return await self._recovered(await self._sharing.recover(self._clock()), answer)

    @property
    def sweep_every_s(self) -> float | None:
        """How often ``sweep`` should run (None: never: no other process shares the ledger)."""
        return self._sharing.sweep_every_s

    async def sweep(self, answer: AnswerFor | None = None) -> Recovery:
        """What processes found gone since the start-up left owing (as ``recover``): this
        process tells their requesters now. None once shutting down."""
        if not self._accepting:
            return Recovery([], [])
        return await self._recovered(await self._sharing.sweep(self._clock()), answer)

    async def sweep_due(self) -> None:
        """Wait until the next ``sweep`` is due."""
        await self._sharing.sweep_due()

    async def _recovered(self, recovery: Recovery, answer: AnswerFor | None) -> Recovery:
        recovery = await self._handed_over.take_over(recovery, answer, accepting=self._accepting)
        for request in recovery.interrupted:
            log.info("request %s was interrupted by a restart and refunded", request.id)
            self._observer.request_ended(request, Outcome.INTERRUPTED)
        for request, _ in recovery.undelivered:
            log.info("request %s succeeded before a restart; delivering its result now", request.id)
        return recovery

    async def shutdown(self, grace_s: float) -> None:
        """Stop taking requests; leave the waiting calls whose source is sealed queued for
        another process or the next start, interrupt the other waiting ones, give running
        ones ``grace_s``."""
        self._accepting = False
        interrupted = await self._handed_over.leave(self._calls.take_waiting())
        await self._calls.shutdown(grace_s, [*interrupted, *self._elsewhere.take_all()])
        await self._replies.wait(grace_s)
        await self._writes.close(grace_s)


def _asked(requester: Requester, mode: Mode, source: CheckedSource) -> NewRequest:
    return NewRequest(
        guild_id=requester.guild_id,
        channel_id=requester.channel_id,
        user_id=requester.user_id,
        interaction_id=requester.interaction_id,
        mode=mode,
        source_url=source.url,
        source_name=source.name,
        source_key=source.key,
        role_ids=requester.role_ids,
    )
