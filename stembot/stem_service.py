"""The service: check -> reserve quota -> queue -> call the API -> settle or refund -> tell.

It takes plain values (ids, URLs, names), never discord objects, so the Discord layer, the
CLI and the tests drive it alike. The Discord layer hears about each request through the
RequestListener it hands in with the request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from stembot.errors import (
    AlreadyStartedError,
    DatabaseReplacedError,
    IncidentError,
    NotYourRequestError,
    QuotaLimitReached,
    RequestEndedError,
    RequestInterruptedError,
    ShuttingDownError,
    SoundverseAuthError,
    StembotError,
    StoreBusyError,
)
from stembot.flights import Flight, HeldRequest, RequestListener
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
from stembot.scheduling import FairQueue
from stembot.source_urls import source_key_for_attachment, source_key_for_url
from stembot.sources import check_attachment
from stembot.store import Store
from stembot.url_probe import ProbedSource

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Run with the server's id after each request that charged it units (quota alerts: run.py).
ChargeHook = Callable[[int], Awaitable[None]]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Separator(Protocol):
    """What the service needs of the Soundverse client."""

    async def separate(self, mode: Mode, audio_url: str) -> Separation: ...


class UrlProber(Protocol):
    """What the service needs of the guarded URL probe."""

    async def probe(self, url: str) -> ProbedSource: ...


@dataclass(frozen=True, slots=True)
class AttachmentInput:
    """A Discord attachment as plain values; ``url`` is the signed URL exactly as given."""

    id: int
    url: str = field(repr=False)
    filename: str
    content_type: str | None
    size: int


@dataclass(frozen=True, slots=True)
class CheckedSource:
    """An input that passed every check: the URL the API gets, a name to show, a reuse key."""

    url: str = field(repr=False)
    name: str
    key: str


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked, and where: the ids the ledger records and the result is delivered to."""

    guild_id: int
    channel_id: int
    user_id: int
    interaction_id: int
    # The member's role ids in the server (a role may carry its own daily allowance).
    role_ids: tuple[int, ...] = ()


class StemService:
    """Owns the queue and the in-flight API calls; the store owns the money."""

    def __init__(
        self,
        store: Store,
        separator: Separator,
        prober: UrlProber,
        *,
        max_concurrent_calls: int,
        max_input_bytes: int,
        result_ttl_s: float,
        probes_per_member: int = 2,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._separator = separator
        self._prober = prober
        self._probe_slots = ProbeSlots(probes_per_member)
        self._max_input_bytes = max_input_bytes
        self._max_running = max_concurrent_calls
        self._result_ttl = timedelta(seconds=result_ttl_s)
        self._clock = clock
        self._waiting: FairQueue[Flight] = FairQueue()
        self._running: set[Flight] = set()
        self._flights: dict[tuple[str, Mode], Flight] = {}
        self._flight_of_request: dict[int, Flight] = {}
        self._flight_ids = itertools.count(1)
        self._replies: set[asyncio.Task[None]] = set()
        self._charge_hooks: list[ChargeHook] = []
        self._accepting = True
        self._writes = LedgerWrites(store, clock)

    def after_charge(self, hook: ChargeHook) -> None:
        """Also run ``hook(guild_id)``, without making the requester wait, after each charge."""
        self._charge_hooks.append(hook)

    # --- asking -------------------------------------------------------------------------

    def quota_status(
        self, guild_id: int, user_id: int | None, role_ids: tuple[int, ...] = ()
    ) -> QuotaStatus:
        return self._store.quotas.quota_status(guild_id, user_id, self._clock(), role_ids)

    @property
    def costs(self) -> Mapping[Mode, int]:
        return self._store.policy.costs

    def position(self, request_id: int) -> int | None:
        """1-based place in the queue, or None once the request has started or ended."""
        flight = self._flight_of_request.get(request_id)
        return None if flight is None else self._waiting.position(flight.id)

    # --- checking the input (spends nothing) ---------------------------------------------

    def check_attachment(self, attachment: AttachmentInput) -> CheckedSource:
        """Instant checks of type and size; raises InvalidSourceError."""
        check_attachment(
            attachment.filename, attachment.content_type, attachment.size, self._max_input_bytes
        )
        return CheckedSource(
            attachment.url, attachment.filename, source_key_for_attachment(attachment.id)
        )

    def precheck(self, requester: Requester, mode: Mode, url: str) -> None:
        """The cheap checks, before ``url`` is fetched: reads the ledger, writes nothing.

        Raises QuotaExceededError (a switched-off or spent server or member, the bot-wide
        budget, too many requests in progress), ShuttingDownError or DatabaseReplacedError.
        A repeat answered from a stored result is never refused here, and one that would join
        a running call only for the limits that do not depend on units, as ``submit`` does;
        the key is the URL's as given (a link that redirects elsewhere is checked in full by
        ``submit``).
        """
        if not self._accepting:
            raise ShuttingDownError()
        if self._writes.lost():
            raise DatabaseReplacedError()
        now = self._clock()
        key = source_key_for_url(url)
        if self._store.ledger.find_result(key, mode, now - self._result_ttl) is not None:
            return
        cost = None if (key, mode) in self._flights else self._store.policy.cost_of(mode)
        try:
            self._store.quotas.check_limits(
                requester.guild_id, requester.user_id, requester.role_ids, cost, now
            )
        except QuotaLimitReached as refusal:
            self._note_refusal(refusal, now)
            raise

    def _note_refusal(self, refusal: QuotaLimitReached, now: datetime) -> None:
        """Tell the operator's log, once a UTC day, that the bot-wide budget is spent."""
        if refusal.limit is not QuotaLimit.API_BUDGET:
            return
        try:
            first = self._store.guilds.claim_budget_notice(now)
        except StoreBusyError:
            return  # the next refusal tries again
        if first:
            log.warning(
                "the API daily budget is spent: %s paid calls on %s (STEMBOT_API_DAILY_BUDGET); "
                "new paid requests are refused until 00:00 UTC, repeats and joins still work",
                self._store.policy.api_daily_budget,
                now.date().isoformat(),
            )

    async def check_url(self, url: str, requester: Requester) -> CheckedSource:
        """Guarded, bounded probe that the URL leads to audio within the size limit.

        Each probe takes one of the requester's own slots (see ProbeSlots): TooManyLinksError
        when they already have ``probes_per_member`` links being checked.
        """
        with self._probe_slots.take(requester.user_id):
            probed = await self._prober.probe(url)
        return CheckedSource(probed.url, probed.filename, source_key_for_url(probed.url))

    # --- submitting and cancelling ------------------------------------------------------

    def submit(
        self, requester: Requester, mode: Mode, source: CheckedSource, listener: RequestListener
    ) -> Request:
        """Answer from a stored result, join an identical call, or reserve and queue a new one.

        Raises QuotaExceededError, DuplicateRequestError, ShuttingDownError, StoreBusyError.
        A request that comes back already succeeded was answered from the store at no cost.
        """
        if not self._accepting:
            raise ShuttingDownError()
        if self._writes.lost():
            raise DatabaseReplacedError()
        self._writes.retry()
        asked = NewRequest(
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
        now = self._clock()
        stored = self._store.ledger.find_result(source.key, mode, now - self._result_ttl)
        if stored is not None:
            return self._answer_from_store(asked, stored, listener, now)
        flight = self._flights.get((source.key, mode))
        if flight is not None:
            return self._join(flight, asked, listener, now)
        try:
            request = self._store.ledger.reserve(asked, now)
        except QuotaLimitReached as refusal:
            self._note_refusal(refusal, now)
            raise
        flight = Flight(
            next(self._flight_ids), (source.key, mode), [HeldRequest(request, asked, listener)]
        )
        self._flights[flight.key] = flight
        self._flight_of_request[request.id] = flight
        self._waiting.push(asked.guild_id, flight.id, flight)
        log.info("request %s queued: guild %s mode %s", request.id, asked.guild_id, mode)
        self._start_what_fits()
        if request.cost:  # a free request cannot push the server past an alert threshold
            for hook in self._charge_hooks:
                self._reply_soon(hook(request.guild_id), request.id)
        return request

    def _answer_from_store(
        self, asked: NewRequest, stored: Separation, listener: RequestListener, now: datetime
    ) -> Request:
        request = self._store.ledger.record_free(asked, stored, now)
        log.info("request %s answered from a stored result at no cost", request.id)
        quota = self._quotas([(request, asked.role_ids)])[request.id]
        self._reply_soon(listener.on_succeeded(request, stored, quota), request.id)
        return request

    def _join(
        self, flight: Flight, asked: NewRequest, listener: RequestListener, now: datetime
    ) -> Request:
        running = flight.started_at is not None
        request = self._store.ledger.reserve_joined(asked, now, running=running)
        flight.held.append(HeldRequest(request, asked, listener))
        self._flight_of_request[request.id] = flight
        log.info(
            "request %s joined request %s's call at no cost", request.id, flight.payer.request.id
        )
        if running:
            self._reply_soon(listener.on_started(request), request.id)
        return request

    def cancel(self, request_id: int, user_id: int) -> Request:
        """Take a waiting request out and refund it; only its requester may.

        When the payer of a shared call leaves, the charge passes on (the store's rule: the
        first requester with room in their own allowance, else the server alone), so the call
        is still paid for exactly once.
        """
        flight = self._flight_of_request.get(request_id)
        if flight is None:
            raise RequestEndedError()
        if flight.started_at is not None:
            raise AlreadyStartedError()
        held_request = next(t for t in flight.held if t.request.id == request_id)
        if held_request.asked.user_id != user_id:
            raise NotYourRequestError()
        now = self._clock()
        if held_request is flight.payer and len(flight.held) > 1:
            self._hand_over(flight, held_request, now)
        else:
            self._store.ledger.refund_all(
                [request_id], RequestStatus.CANCELLED, "cancelled by the requester", now
            )
        flight.held.remove(held_request)
        del self._flight_of_request[request_id]
        if not flight.held:
            self._waiting.remove(flight.id)
            del self._flights[flight.key]
        log.info("request %s cancelled by its requester and refunded", request_id)
        self._reply_soon(held_request.listener.on_cancelled(held_request.request), request_id)
        return held_request.request

    def _hand_over(self, flight: Flight, payer: HeldRequest, now: datetime) -> None:
        heirs = [t for t in flight.held if t is not payer]
        handed = self._store.ledger.hand_over_charge(
            payer.request.id, [(t.request.id, t.asked.role_ids) for t in heirs], now
        )
        if handed is None:  # no heir still active in the ledger: a plain refund
            self._store.ledger.refund_all(
                [payer.request.id], RequestStatus.CANCELLED, "cancelled by the requester", now
            )
            return
        heir_id, member_pays = handed
        heir = next(t for t in heirs if t.request.id == heir_id)
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

    # --- running ------------------------------------------------------------------------

    def _start_what_fits(self) -> None:
        while len(self._running) < self._max_running:
            flight = self._waiting.pop()
            if flight is None:
                return
            self._running.add(flight)
            flight.task = asyncio.create_task(self._run(flight), name=f"flight-{flight.id}")

    async def _run(self, flight: Flight) -> None:
        payer = flight.payer
        try:
            flight.started_at = self._clock()
            self._mark_running(flight.request_ids, flight.started_at)
            log.info(
                "request %s running (%d requests share it)", payer.request.id, len(flight.held)
            )
            for t in list(flight.held):
                self._reply_soon(t.listener.on_started(t.request), t.request.id)
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
            self._start_what_fits()

    async def _close_out(
        self,
        flight: Flight,
        write: Callable[[list[int]], object],
        *,
        after_payer: bool = False,
    ) -> list[HeldRequest]:
        """Write every request's outcome, then land the flight.

        Requests can still join while a busy database makes a write wait; they are written in
        the next round, and the flight lands with no await after the last check, so none is
        left active in the ledger.
        """
        done = 1 if after_payer else 0
        while done < len(flight.held):
            request_ids = [t.request.id for t in flight.held[done:]]
            done = len(flight.held)
            await self._writes.persist(
                f"closing request(s) {request_ids}", functools.partial(write, request_ids)
            )
        return self._land(flight)

    def _land(self, flight: Flight) -> list[HeldRequest]:
        """The flight is over: later identical requests start afresh or use the stored result."""
        self._flights.pop(flight.key, None)
        for request_id in flight.request_ids:
            self._flight_of_request.pop(request_id, None)
        return list(flight.held)

    async def _succeed(self, flight: Flight, separation: Separation) -> None:
        now = self._clock()
        payer = flight.payer
        await self._writes.persist(
            f"settling request {payer.request.id}",
            lambda: self._store.ledger.settle(
                payer.request.id, separation, payer.asked.source_key, now
            ),
        )
        held = await self._close_out(
            flight, lambda ids: self._store.ledger.settle_joined(ids, now), after_payer=True
        )
        log.info(
            "request %s succeeded: %d stems for %d request(s)",
            payer.request.id,
            len(separation.stems),
            len(held),
        )
        quotas = self._quotas([(t.request, t.asked.role_ids) for t in held])
        await asyncio.gather(
            *(
                _tell(
                    t.listener.on_succeeded(t.request, separation, quotas[t.request.id]),
                    t.request.id,
                )
                for t in held
            )
        )

    async def _fail(self, flight: Flight, status: RequestStatus, error: StembotError) -> None:
        now = self._clock()
        held = await self._close_out(
            flight, lambda ids: self._store.ledger.refund_all(ids, status, error.user_message, now)
        )
        request_id = flight.payer.request.id
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
        quotas = self._quotas([(t.request, t.asked.role_ids) for t in held])
        await asyncio.gather(
            *(
                _tell(t.listener.on_failed(t.request, error, quotas[t.request.id]), t.request.id)
                for t in held
            )
        )

    def _quotas(
        self, requests: list[tuple[Request, tuple[int, ...]]]
    ) -> dict[int, QuotaStatus | None]:
        """Each requester's quota after an outcome (their roles' allowance included), by request
        id: read once per member."""
        read: dict[tuple[int, int], QuotaStatus | None] = {}
        for request, role_ids in requests:
            member = (request.guild_id, request.user_id)
            if member not in read:
                read[member] = self._quota_if_readable(request, role_ids)
        return {request.id: read[(request.guild_id, request.user_id)] for request, _ in requests}

    def _quota_if_readable(self, request: Request, role_ids: tuple[int, ...]) -> QuotaStatus | None:
        """The quota line is a nicety: a failing database must not hold the answer."""
        try:
            return self.quota_status(request.guild_id, request.user_id, role_ids)
        except Exception as error:
            log.warning(
                "request %s: quota left unknown (%s); answering without it", request.id, error
            )
            return None

    def _mark_running(self, request_ids: list[int], now: datetime) -> None:
        """Only a label in the ledger (queued and running are settled and refunded alike):
        a busy database must not stop the call."""
        try:
            self._store.ledger.mark_all_running(request_ids, now)
        except StoreBusyError:
            log.warning(
                "request(s) %s: database busy; left marked queued while running", request_ids
            )

    def _reply_soon(self, notification: Awaitable[None], request_id: int) -> None:
        """Tell a listener without making the caller wait for Discord."""
        task = asyncio.create_task(_tell(notification, request_id))
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    # --- the ledger underneath ----------------------------------------------------------

    def record_delivery(self, request_id: int, via: str) -> None:
        """The answer of a succeeded request reached Discord ``via`` a route (or "nowhere")."""
        self._writes.record_delivery(request_id, via)

    def check_ledger(self) -> None:
        """Run now and then: notice a lost database file; retry writes that failed."""
        self._writes.check()

    # --- restart and shutdown -----------------------------------------------------------

    def recover(self) -> Recovery:
        """What a stopped bot left owing: requests refunded, results still to deliver."""
        recovery = self._store.ledger.recover(self._clock())
        for request in recovery.interrupted:
            log.info("request %s was interrupted by a restart and refunded", request.id)
        for request, _ in recovery.undelivered:
            log.info("request %s succeeded before a restart; delivering its result now", request.id)
        return recovery

    async def shutdown(self, grace_s: float) -> None:
        """Stop taking requests, interrupt the waiting ones, give running ones ``grace_s``."""
        self._accepting = False
        while (flight := self._waiting.pop()) is not None:
            await self._fail(flight, RequestStatus.INTERRUPTED, RequestInterruptedError())
        tasks = [f.task for f in self._running if f.task is not None]
        if tasks:
            _, still_running = await asyncio.wait(tasks, timeout=grace_s)
            for task in still_running:
                task.cancel()
            await asyncio.gather(*still_running, return_exceptions=True)
        if self._replies:
            await asyncio.wait(list(self._replies), timeout=grace_s)
        await self._writes.close(grace_s)


async def _tell(notification: Awaitable[None], request_id: int) -> None:
    """Run a listener call; a failure to tell the user must not undo the accounting."""
    try:
        await notification
    except Exception:
        log.exception("request %s: telling the requester failed", request_id)
