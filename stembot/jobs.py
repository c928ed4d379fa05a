"""The service: check -> reserve quota -> queue -> call the API -> settle or refund -> tell.

It takes plain values (ids, URLs, names), never discord objects, so the Discord layer, the
CLI and the tests drive it alike. The Discord layer hears about each job through the
JobListener it hands in with the request.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from stembot.errors import (
    AlreadyStartedError,
    IncidentError,
    JobInterruptedError,
    NotYourRequestError,
    ShuttingDownError,
    SoundverseAuthError,
    StembotError,
)
from stembot.models import Job, JobRequest, JobStatus, Mode, QuotaStatus, Separation
from stembot.scheduling import FairQueue
from stembot.sources import (
    ProbedSource,
    check_attachment,
    check_url_syntax,
    require_one_source,
    source_key_for_attachment,
    source_key_for_url,
)
from stembot.store import Store

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_incident_id() -> str:
    return secrets.token_hex(4).upper()


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
    url: str
    filename: str
    content_type: str | None
    size: int


@dataclass(frozen=True, slots=True)
class CheckedSource:
    """An input that passed every check: the URL the API gets, a name to show, a reuse key."""

    url: str
    name: str
    key: str


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked, and where: the ids the ledger records and the result is delivered to."""

    guild_id: int
    channel_id: int
    user_id: int
    interaction_id: int


class JobListener(Protocol):
    """How the service tells the requester's side what happened. Called at most once each."""

    async def on_started(self, job: Job) -> None: ...

    async def on_succeeded(self, job: Job, separation: Separation) -> None: ...

    async def on_failed(self, job: Job, error: StembotError) -> None: ...


@dataclass(eq=False)
class _Ticket:
    """A job the service holds in memory while it is queued or running."""

    job: Job
    request: JobRequest
    listener: JobListener
    started_at: datetime | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


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
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._separator = separator
        self._prober = prober
        self._max_input_bytes = max_input_bytes
        self._max_running = max_concurrent_jobs
        self._clock = clock
        self._waiting: FairQueue[_Ticket] = FairQueue()
        self._running: dict[int, _Ticket] = {}
        self._accepting = True

    # --- asking -------------------------------------------------------------------------

    def quota_status(self, guild_id: int, user_id: int | None) -> QuotaStatus:
        return self._store.quota_status(guild_id, user_id, self._clock())

    @property
    def costs(self) -> Mapping[Mode, int]:
        return self._store.policy.costs

    def position(self, job_id: int) -> int | None:
        """1-based place in the queue, or None once the job has started or ended."""
        return self._waiting.position(job_id)

    def started_at(self, job_id: int) -> datetime | None:
        ticket = self._running.get(job_id)
        return ticket.started_at if ticket else None

    @property
    def waiting_count(self) -> int:
        return len(self._waiting)

    @property
    def running_count(self) -> int:
        return len(self._running)

    # --- checking the input (spends nothing) ---------------------------------------------

    def check_attachment(self, attachment: AttachmentInput) -> CheckedSource:
        """Instant checks of type and size; raises InvalidSourceError."""
        check_attachment(
            attachment.filename, attachment.content_type, attachment.size, self._max_input_bytes
        )
        return CheckedSource(
            attachment.url, attachment.filename, source_key_for_attachment(attachment.id)
        )

    @staticmethod
    def check_one_source(has_file: bool, has_url: bool) -> None:
        require_one_source(has_file, has_url)

    @staticmethod
    def check_url_syntax(url: str) -> str:
        """Instant checks of a URL's form; raises InvalidSourceError."""
        return check_url_syntax(url)

    async def check_url(self, url: str) -> CheckedSource:
        """Guarded, bounded probe that the URL leads to audio within the size limit."""
        probed = await self._prober.probe(url)
        return CheckedSource(probed.url, probed.filename, source_key_for_url(probed.url))

    # --- submitting and cancelling ------------------------------------------------------

    def submit(
        self, requester: Requester, mode: Mode, source: CheckedSource, listener: JobListener
    ) -> Job:
        """Reserve quota and queue the job; raises QuotaExceededError, DuplicateRequestError."""
        if not self._accepting:
            raise ShuttingDownError()
        request = JobRequest(
            guild_id=requester.guild_id,
            channel_id=requester.channel_id,
            user_id=requester.user_id,
            interaction_id=requester.interaction_id,
            mode=mode,
            source_url=source.url,
            source_name=source.name,
            source_key=source.key,
        )
        job = self._store.reserve(request, self._clock())
        log.info("job %s queued: guild %s mode %s", job.id, request.guild_id, request.mode)
        self._waiting.push(request.guild_id, job.id, _Ticket(job, request, listener))
        self._start_what_fits()
        return job

    def cancel(self, job_id: int, user_id: int) -> Job:
        """Take a waiting job out of the queue and refund it; only its requester may."""
        ticket = self._find_waiting(job_id)
        if ticket is None:
            raise AlreadyStartedError()
        if ticket.request.user_id != user_id:
            raise NotYourRequestError()
        self._waiting.remove(job_id)
        self._store.refund(job_id, JobStatus.CANCELLED, "cancelled by the requester", self._clock())
        log.info("job %s cancelled by its requester", job_id)
        return ticket.job

    def _find_waiting(self, job_id: int) -> _Ticket | None:
        if job_id not in self._waiting:
            return None
        return next(t for t in self._waiting if t.job.id == job_id)

    # --- running ------------------------------------------------------------------------

    def _start_what_fits(self) -> None:
        while len(self._running) < self._max_running:
            ticket = self._waiting.pop()
            if ticket is None:
                return
            self._running[ticket.job.id] = ticket
            ticket.task = asyncio.create_task(self._run(ticket), name=f"job-{ticket.job.id}")

    async def _run(self, ticket: _Ticket) -> None:
        job = ticket.job
        try:
            ticket.started_at = self._clock()
            self._store.mark_running(job.id, ticket.started_at)
            log.info("job %s running", job.id)
            await _tell(ticket.listener.on_started(job), job.id)
            separation = await self._separator.separate(
                ticket.request.mode, ticket.request.source_url
            )
        except asyncio.CancelledError:
            await self._fail(ticket, JobStatus.INTERRUPTED, JobInterruptedError())
            raise
        except StembotError as error:
            await self._fail(ticket, JobStatus.FAILED, error)
        except Exception:
            incident = new_incident_id()
            log.exception("job %s failed unexpectedly (incident %s)", job.id, incident)
            await self._fail(ticket, JobStatus.FAILED, IncidentError(incident))
        else:
            self._store.settle(job.id, separation, ticket.request.source_key, self._clock())
            log.info("job %s succeeded: %d stems", job.id, len(separation.stems))
            await _tell(ticket.listener.on_succeeded(job, separation), job.id)
        finally:
            del self._running[job.id]
            self._start_what_fits()

    async def _fail(self, ticket: _Ticket, status: JobStatus, error: StembotError) -> None:
        job_id = ticket.job.id
        self._store.refund(job_id, status, error.user_message, self._clock())
        if isinstance(error, SoundverseAuthError):
            log.error(
                "job %s: the Soundverse API refused the API key; check SOUNDVERSE_API_KEY", job_id
            )
        log.info("job %s %s and refunded: %s", job_id, status, type(error).__name__)
        await _tell(ticket.listener.on_failed(ticket.job, error), job_id)

    # --- restart and shutdown -----------------------------------------------------------

    def recover_interrupted(self) -> list[Job]:
        """Jobs a crash left behind: marked interrupted and refunded by the store, once."""
        jobs = self._store.recover_interrupted(self._clock())
        for job in jobs:
            log.info("job %s was interrupted by a restart and refunded", job.id)
        return jobs

    async def shutdown(self, grace_s: float) -> None:
        """Stop taking requests, interrupt the waiting ones, give running ones ``grace_s``."""
        self._accepting = False
        while (ticket := self._waiting.pop()) is not None:
            self._store.refund(
                ticket.job.id, JobStatus.INTERRUPTED, "stembot stopped", self._clock()
            )
            log.info("job %s interrupted by shutdown and refunded", ticket.job.id)
            await _tell(ticket.listener.on_failed(ticket.job, JobInterruptedError()), ticket.job.id)
        tasks = [t.task for t in self._running.values() if t.task is not None]
        if not tasks:
            return
        _, still_running = await asyncio.wait(tasks, timeout=grace_s)
        for task in still_running:
            task.cancel()
        await asyncio.gather(*still_running, return_exceptions=True)


async def _tell(notification: Awaitable[None], job_id: int) -> None:
    """Run a listener call; a failure to tell the user must not undo the accounting."""
    try:
        await notification
    except Exception:
        log.exception("job %s: telling the requester failed", job_id)
