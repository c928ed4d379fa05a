"""The service: check -> reserve quota -> queue -> call the API -> settle or refund -> tell.

It takes plain values (ids, URLs, names), never discord objects, so the Discord layer, the
CLI and the tests drive it alike. The Discord layer hears about each job through the
JobListener it hands in with the request.
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
    JobInterruptedError,
    NotYourRequestError,
    QuotaLimitReached,
    RequestEndedError,
    ShuttingDownError,
    SoundverseAuthError,
    StembotError,
    StoreBusyError,
)
from stembot.ledger_writes import LedgerWrites
from stembot.models import (
    Job,
    JobRequest,
    JobStatus,
    Mode,
    QuotaLimit,
    QuotaStatus,
    Recovery,
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


class JobListener(Protocol):
    """How the service tells the requester's side what happened. Called at most once each.

    An outcome comes with the requester's quota as it stands after it (None when the database
    could not say: that line is a nicety that must not hold the answer back).
    """

    async def on_started(self, job: Job) -> None: ...

    async def on_succeeded(
        self, job: Job, separation: Separation, quota: QuotaStatus | None
    ) -> None: ...

    async def on_failed(self, job: Job, error: StembotError, quota: QuotaStatus | None) -> None: ...

    async def on_cancelled(self, job: Job) -> None: ...


@dataclass(eq=False)
class _Ticket:
    """One request the service holds in memory while its call is queued or running."""

    job: Job
    request: JobRequest
    listener: JobListener


@dataclass(eq=False)
class _Flight:
    """One API call and every request waiting for it; the first ticket pays for it.

    Identical requests (same source, same mode) join the flight instead of calling the API
    again, so a remix event's crowd costs one call per track and mode.
    """

    id: int
    key: tuple[str, Mode]
    tickets: list[_Ticket]
    started_at: datetime | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def payer(self) -> _Ticket:
        return self.tickets[0]

    @property
    def job_ids(self) -> list[int]:
        return [t.job.id for t in self.tickets]


class StemService:
    """Owns the queue and the in-flight API calls; the store owns the money."""

    def __init__(
        self,
        store: Store,
        separator: Separator,
        prober: UrlProber,
        *,
        max_concurrent_jobs: int,
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
        self._max_running = max_concurrent_jobs
        self._result_ttl = timedelta(seconds=result_ttl_s)
        self._clock = clock
        self._waiting: FairQueue[_Flight] = FairQueue()
        self._running: set[_Flight] = set()
        self._flights: dict[tuple[str, Mode], _Flight] = {}
        self._flight_of_job: dict[int, _Flight] = {}
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

    def position(self, job_id: int) -> int | None:
        """1-based place in the queue, or None once the job has started or ended."""
        flight = self._flight_of_job.get(job_id)
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
        self, requester: Requester, mode: Mode, source: CheckedSource, listener: JobListener
    ) -> Job:
        """Answer from a stored result, join an identical call, or reserve and queue a new one.

        Raises QuotaExceededError, DuplicateRequestError, ShuttingDownError, StoreBusyError.
        A job that comes back already succeeded was answered from the store at no cost.
        """
        if not self._accepting:
            raise ShuttingDownError()
        if self._writes.lost():
            raise DatabaseReplacedError()
        self._writes.retry()
        request = JobRequest(
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
            return self._answer_from_store(request, stored, listener, now)
        flight = self._flights.get((source.key, mode))
        if flight is not None:
            return self._join(flight, request, listener, now)
        try:
            job = self._store.ledger.reserve(request, now)
        except QuotaLimitReached as refusal:
            self._note_refusal(refusal, now)
            raise
        flight = _Flight(
            next(self._flight_ids), (source.key, mode), [_Ticket(job, request, listener)]
        )
        self._flights[flight.key] = flight
        self._flight_of_job[job.id] = flight
        self._waiting.push(request.guild_id, flight.id, flight)
        log.info("job %s queued: guild %s mode %s", job.id, request.guild_id, mode)
        self._start_what_fits()
        if job.cost:  # a free request cannot push the server past an alert threshold
            for hook in self._charge_hooks:
                self._reply_soon(hook(job.guild_id), job.id)
        return job

    def _answer_from_store(
        self, request: JobRequest, stored: Separation, listener: JobListener, now: datetime
    ) -> Job:
        job = self._store.ledger.record_free(request, stored, now)
        log.info("job %s answered from a stored result at no cost", job.id)
        quota = self._quotas([(job, request.role_ids)])[job.id]
        self._reply_soon(listener.on_succeeded(job, stored, quota), job.id)
        return job

    def _join(
        self, flight: _Flight, request: JobRequest, listener: JobListener, now: datetime
    ) -> Job:
        running = flight.started_at is not None
        job = self._store.ledger.reserve_joined(request, now, running=running)
        flight.tickets.append(_Ticket(job, request, listener))
        self._flight_of_job[job.id] = flight
        log.info("job %s joined job %s's call at no cost", job.id, flight.payer.job.id)
        if running:
            self._reply_soon(listener.on_started(job), job.id)
        return job

    def cancel(self, job_id: int, user_id: int) -> Job:
        """Take a waiting request out and refund it; only its requester may.

        When the payer of a shared call leaves, the charge passes on (the store's rule: the
        first requester with room in their own allowance, else the server alone), so the call
        is still paid for exactly once.
        """
        flight = self._flight_of_job.get(job_id)
        if flight is None:
            raise RequestEndedError()
        if flight.started_at is not None:
            raise AlreadyStartedError()
        ticket = next(t for t in flight.tickets if t.job.id == job_id)
        if ticket.request.user_id != user_id:
            raise NotYourRequestError()
        now = self._clock()
        if ticket is flight.payer and len(flight.tickets) > 1:
            self._hand_over(flight, ticket, now)
        else:
            self._store.ledger.refund_all(
                [job_id], JobStatus.CANCELLED, "cancelled by the requester", now
            )
        flight.tickets.remove(ticket)
        del self._flight_of_job[job_id]
        if not flight.tickets:
            self._waiting.remove(flight.id)
            del self._flights[flight.key]
        log.info("job %s cancelled by its requester and refunded", job_id)
        self._reply_soon(ticket.listener.on_cancelled(ticket.job), job_id)
        return ticket.job

    def _hand_over(self, flight: _Flight, payer: _Ticket, now: datetime) -> None:
        heirs = [t for t in flight.tickets if t is not payer]
        handed = self._store.ledger.hand_over_charge(
            payer.job.id, [(t.job.id, t.request.role_ids) for t in heirs], now
        )
        if handed is None:  # no heir still active in the ledger: a plain refund
            self._store.ledger.refund_all(
                [payer.job.id], JobStatus.CANCELLED, "cancelled by the requester", now
            )
            return
        heir_id, member_pays = handed
        heir = next(t for t in heirs if t.job.id == heir_id)
        heir.job = dataclasses.replace(heir.job, cost=payer.job.cost)
        # The heir becomes the payer: the one settled first, whose result is stored.
        flight.tickets.remove(heir)
        flight.tickets.insert(0, heir)
        log.info(
            "job %s: the charge of cancelled job %s passed on%s",
            heir_id,
            payer.job.id,
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

    async def _run(self, flight: _Flight) -> None:
        payer = flight.payer
        try:
            flight.started_at = self._clock()
            self._mark_running(flight.job_ids, flight.started_at)
            log.info("job %s running (%d requests share it)", payer.job.id, len(flight.tickets))
            for ticket in list(flight.tickets):
                self._reply_soon(ticket.listener.on_started(ticket.job), ticket.job.id)
            separation = await self._separator.separate(
                payer.request.mode, payer.request.source_url
            )
        except asyncio.CancelledError:
            await self._fail(flight, JobStatus.INTERRUPTED, JobInterruptedError())
            raise
        except StembotError as error:
            await self._fail(flight, JobStatus.FAILED, error)
        except Exception:
            incident = IncidentError()
            log.exception(
                "job %s failed unexpectedly (incident %s)", payer.job.id, incident.incident_id
            )
            await self._fail(flight, JobStatus.FAILED, incident)
        else:
            await self._succeed(flight, separation)
        finally:
            self._running.discard(flight)
            self._start_what_fits()

    async def _close_out(
        self,
        flight: _Flight,
        write: Callable[[list[int]], object],
        *,
        after_payer: bool = False,
    ) -> list[_Ticket]:
        """Write every request's outcome, then land the flight.

        Requests can still join while a busy database makes a write wait; they are written in
        the next round, and the flight lands with no await after the last check, so none is
        left active in the ledger.
        """
        done = 1 if after_payer else 0
        while done < len(flight.tickets):
            job_ids = [t.job.id for t in flight.tickets[done:]]
            done = len(flight.tickets)
            await self._writes.persist(
                f"closing job(s) {job_ids}", functools.partial(write, job_ids)
            )
        return self._land(flight)

    def _land(self, flight: _Flight) -> list[_Ticket]:
        """The flight is over: later identical requests start afresh or use the stored result."""
        self._flights.pop(flight.key, None)
        for job_id in flight.job_ids:
            self._flight_of_job.pop(job_id, None)
        return list(flight.tickets)

    async def _succeed(self, flight: _Flight, separation: Separation) -> None:
        now = self._clock()
        payer = flight.payer
        await self._writes.persist(
            f"settling job {payer.job.id}",
            lambda: self._store.ledger.settle(
                payer.job.id, separation, payer.request.source_key, now
            ),
        )
        tickets = await self._close_out(
            flight, lambda ids: self._store.ledger.settle_joined(ids, now), after_payer=True
        )
        log.info(
            "job %s succeeded: %d stems for %d request(s)",
            payer.job.id,
            len(separation.stems),
            len(tickets),
        )
        quotas = self._quotas([(t.job, t.request.role_ids) for t in tickets])
        await asyncio.gather(
            *(
                _tell(t.listener.on_succeeded(t.job, separation, quotas[t.job.id]), t.job.id)
                for t in tickets
            )
        )

    async def _fail(self, flight: _Flight, status: JobStatus, error: StembotError) -> None:
        now = self._clock()
        tickets = await self._close_out(
            flight, lambda ids: self._store.ledger.refund_all(ids, status, error.user_message, now)
        )
        job_id = flight.payer.job.id
        if isinstance(error, SoundverseAuthError):
            log.error(
                "job %s: the Soundverse API refused the API key; check SOUNDVERSE_API_KEY", job_id
            )
        log.info(
            "job %s %s and refunded (%d request(s)): %s",
            job_id,
            status,
            len(tickets),
            type(error).__name__,
        )
        quotas = self._quotas([(t.job, t.request.role_ids) for t in tickets])
        await asyncio.gather(
            *(
                _tell(t.listener.on_failed(t.job, error, quotas[t.job.id]), t.job.id)
                for t in tickets
            )
        )

    def _quotas(self, requests: list[tuple[Job, tuple[int, ...]]]) -> dict[int, QuotaStatus | None]:
        """Each requester's quota after an outcome (their roles' allowance included), by job
        id: read once per member."""
        read: dict[tuple[int, int], QuotaStatus | None] = {}
        for job, role_ids in requests:
            member = (job.guild_id, job.user_id)
            if member not in read:
                read[member] = self._quota_if_readable(job, role_ids)
        return {job.id: read[(job.guild_id, job.user_id)] for job, _ in requests}

    def _quota_if_readable(self, job: Job, role_ids: tuple[int, ...]) -> QuotaStatus | None:
        """The quota line is a nicety: a failing database must not hold the answer."""
        try:
            return self.quota_status(job.guild_id, job.user_id, role_ids)
        except Exception as error:
            log.warning("job %s: quota left unknown (%s); answering without it", job.id, error)
            return None

    def _mark_running(self, job_ids: list[int], now: datetime) -> None:
        """Only a label in the ledger (queued and running are settled and refunded alike):
        a busy database must not stop the call."""
        try:
            self._store.ledger.mark_all_running(job_ids, now)
        except StoreBusyError:
            log.warning("job(s) %s: database busy; left marked queued while running", job_ids)

    def _reply_soon(self, notification: Awaitable[None], job_id: int) -> None:
        """Tell a listener without making the caller wait for Discord."""
        task = asyncio.create_task(_tell(notification, job_id))
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    # --- the ledger underneath ----------------------------------------------------------

    def record_delivery(self, job_id: int, via: str) -> None:
        """The answer of a succeeded request reached Discord ``via`` a route (or "nowhere")."""
        self._writes.record_delivery(job_id, via)

    def check_ledger(self) -> None:
        """Run now and then: notice a lost database file; retry writes that failed."""
        self._writes.check()

    # --- restart and shutdown -----------------------------------------------------------

    def recover(self) -> Recovery:
        """What a stopped bot left owing: requests refunded, results still to deliver."""
        recovery = self._store.ledger.recover(self._clock())
        for job in recovery.interrupted:
            log.info("job %s was interrupted by a restart and refunded", job.id)
        for job, _ in recovery.undelivered:
            log.info("job %s succeeded before a restart; delivering its result now", job.id)
        return recovery

    async def shutdown(self, grace_s: float) -> None:
        """Stop taking requests, interrupt the waiting ones, give running ones ``grace_s``."""
        self._accepting = False
        while (flight := self._waiting.pop()) is not None:
            await self._fail(flight, JobStatus.INTERRUPTED, JobInterruptedError())
        tasks = [f.task for f in self._running if f.task is not None]
        if tasks:
            _, still_running = await asyncio.wait(tasks, timeout=grace_s)
            for task in still_running:
                task.cancel()
            await asyncio.gather(*still_running, return_exceptions=True)
        if self._replies:
            await asyncio.wait(list(self._replies), timeout=grace_s)
        await self._writes.close(grace_s)


async def _tell(notification: Awaitable[None], job_id: int) -> None:
    """Run a listener call; a failure to tell the user must not undo the accounting."""
    try:
        await notification
    except Exception:
        log.exception("job %s: telling the requester failed", job_id)
