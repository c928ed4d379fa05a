"""Remix events: one track's stems for a whole server, for one paid call per mode.

The organiser starts an event (``start``); members take the stems of a mode (``take``); the
event's one call of that mode goes through StemService like any request (single-flight,
stored results, servers taking turns, refunds, recovery), charged to the server alone and
never to a member's allowance. Every take of a mode while its call is being decided or runs
waits for that one call; a failed call is refunded and the next take tries again.
Submissions, the vote's poll, the end and its summary are recorded here too.

Plain values in and out, no discord: the Discord layer hands in a ``SourceResolver`` that
reads a fresh signed URL for the event's track when a paid call is about to run (the URL is
never stored), and a ``TakeListener`` per take that is told when pending stems are ready.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from stembot.errors import (
    IncidentError,
    RemixEventBudgetSpentError,
    RemixEventEndedError,
    RemixEventError,
    RemixEventModeError,
    RemixEventNotFoundError,
    RequestInterruptedError,
    StembotError,
    SubmissionRefusedError,
)
from stembot.models import Mode, QuotaStatus, Request, Separation
from stembot.quota_rules import MAX_LIMIT
from stembot.remix_event_models import (
    EventCounts,
    EventSpec,
    EventSummary,
    Participation,
    RemixEvent,
    SourceRef,
    Submission,
    Take,
    TakeOutcome,
    TakeState,
    TakeStatus,
)
from stembot.request_inputs import CheckedSource, Requester
from stembot.stem_service import Clock, StemService, utc_now
from stembot.store.interface import LedgerStore

log = logging.getLogger(__name__)

# Open events per server at once: a few tracks side by side, never a card per member.
MAX_OPEN_EVENTS = 3
MAX_TITLE_CHARS = 100

# A fresh source for the event's track, read just before a paid call (raise a StembotError
# saying why when it cannot be read any more: the takes waiting for it are told).
SourceResolver = Callable[[RemixEvent], Awaitable[CheckedSource]]
# Run with the event's id and mode when the mode's stems became ready (None) or its call
# failed (the refusal): the card shows the stems, or says why there are none.
ChangeHook = Callable[[int, Mode, StembotError | None], Awaitable[None]]


class TakeListener(Protocol):
    """How a member's pending take is answered; called at most once, after ``take`` returned."""

    async def on_ready(self, separation: Separation) -> None: ...

    async def on_failed(self, error: StembotError) -> None: ...


@dataclass(eq=False)
class _Taker:
    """A member waiting on a mode's call."""

    user_id: int
    listener: TakeListener
    # Set once ``take`` returned for it: it is told nothing before.
    returned: asyncio.Event = field(default_factory=asyncio.Event)
    # ``take`` answered it itself (the stems, or a refusal): the call tells it nothing.
    answered: bool = False


@dataclass(eq=False)
class _ModeCall:
    """The one call of an event's mode in this process while it is decided and runs."""

    event: RemixEvent
    mode: Mode
    takers: list[_Taker] = field(default_factory=list)
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    # Once decided: the stored stems, a refusal (nothing charged), or None (the call is
    # queued or running; its outcome comes through the listener).
    outcome: Separation | StembotError | None = None

    @property
    def key(self) -> tuple[int, Mode]:
        return self.event.id, self.mode


class RemixEventService:
    """Remix events from start to summary; the paid calls through ``stems``."""

    def __init__(
        self,
        store: LedgerStore,
        stems: StemService,
        resolve: SourceResolver,
        *,
        result_ttl_s: float,
        max_open: int = MAX_OPEN_EVENTS,
        on_change: ChangeHook | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._stems = stems
        self._resolve = resolve
        self._result_ttl = timedelta(seconds=result_ttl_s)
        self._max_open = max_open
        self._on_change = on_change
        self._clock = clock
        self._calls: dict[tuple[int, Mode], _ModeCall] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # --- the event ----------------------------------------------------------------------

    async def start(self, organiser: Requester, spec: EventSpec) -> RemixEvent:
        """Record a new event in the organiser's server and channel.

        Raises RemixEventError for a spec that cannot run (no title, no modes, an end in the
        past, a budget of 0), TooManyRemixEventsError past ``max_open`` open events.
        Nothing is separated yet: call ``prefetch`` once the card is posted when
        ``must_prefetch`` says so.
        """
        now = self._clock()
        spec = _checked_spec(spec, now)
        event = await self._store.events.start(
            organiser.guild_id,
            organiser.channel_id,
            organiser.user_id,
            spec,
            now,
            max_open=self._max_open,
        )
        log.info("remix event %s started in guild %s", event.id, event.guild_id)
        return event

    async def card_posted(
        self,
        event_id: int,
        card_channel_id: int,
        card_message_id: int,
        *,
        pinned: bool,
        scheduled_event_id: int | None,
        source_ref: SourceRef | None = None,
    ) -> RemixEvent:
        """Where the card went (a thread's id for a card in a new thread); ``source_ref``
        when the track was re-uploaded onto the card and is read from there from now on."""
        return await self._store.events.card_posted(
            event_id,
            card_channel_id,
            card_message_id,
            pinned=pinned,
            scheduled_event_id=scheduled_event_id,
            source_ref=source_ref,
        )

    async def poll_posted(
        self, event_id: int, poll_message_id: int, submission_ids: Sequence[int]
    ) -> RemixEvent:
        """The vote's poll and the submissions of its answers, in answer order."""
        return await self._store.events.poll_posted(event_id, poll_message_id, submission_ids)

    async def get(self, event_id: int, *, guild_id: int | None = None) -> RemixEvent:
        """The event (RemixEventNotFoundError when there is none, or it is another server's)."""
        event = await self._store.events.get(event_id)
        if event is None or (guild_id is not None and event.guild_id != guild_id):
            raise RemixEventNotFoundError()
        return event

    async def open_events(self, guild_id: int) -> list[RemixEvent]:
        return await self._store.events.open_events(guild_id, self._clock())

    async def end(
        self, event_id: int, *, by_user_id: int | None, guild_id: int | None = None
    ) -> EventSummary:
        """Close the event (``by_user_id`` None: it closed itself at its end) and sum it up.

        RemixEventEndedError when it was already closed (by whoever came first). Takes still
        waiting for a call are answered when it lands; no new takes or submissions.
        """
        await self.get(event_id, guild_id=guild_id)
        await self._store.events.end(event_id, self._clock(), by_user_id)
        log.info("remix event %s ended%s", event_id, "" if by_user_id else " at its end")
        return await self._store.events.summary(event_id)

    async def due(self) -> list[RemixEvent]:
        """Open events past their end, every server's (close each with ``end``): run it now
        and then, and at start-up, so an event closes itself also after a restart."""
        return await self._store.events.due(self._clock())

    async def counts(self, event_id: int) -> EventCounts:
        """The live card's figures: members who took stems, submissions, spend and budget."""
        return await self._store.events.counts(event_id)

    async def summary(self, event_id: int) -> EventSummary:
        return await self._store.events.summary(event_id)

    async def participation(self, event_id: int) -> list[Participation]:
        """Each member's takes and submission, for the moderators' CSV."""
        return await self._store.events.participation(event_id)

    async def stems(self, event_id: int, mode: Mode) -> Separation | None:
        """The stems the event has for ``mode`` (its own call's however old, or a fresh stored
        result), or None: the card's free mixes and mode labels. Reads only."""
        return await self._store.events.result(event_id, mode, self._clock() - self._result_ttl)

    def separating(self, event_id: int) -> frozenset[Mode]:
        """The event's modes whose call is being decided or runs in this process."""
        return frozenset(mode for (event, mode) in self._calls if event == event_id)

    # --- stems --------------------------------------------------------------------------

    async def take(
        self, event_id: int, mode: Mode, member_id: int, listener: TakeListener, *, guild_id: int
    ) -> TakeOutcome:
        """A member takes the stems of ``mode``, recorded once per member and mode.

        READY with the stems when the event has them; else PENDING, and ``listener`` is told
        (after this returns) when the mode's one call lands: every take of the mode waits for
        the same call, and the member's allowance is never touched. Raises
        RemixEventNotFoundError, RemixEventEndedError, RemixEventModeError, and what refuses
        the call before anything is charged (RemixEventBudgetSpentError, QuotaLimitReached,
        the resolver's error, ShuttingDownError, StoreBusyError): then no take is recorded.
        """
        now = self._clock()
        event = await self.get(event_id, guild_id=guild_id)
        if not event.is_open(now):
            raise RemixEventEndedError(
                "This remix event has ended, so its stems are no longer given out."
            )
        if mode not in event.modes:
            raise RemixEventModeError(f"This remix event doesn't offer {mode.label}.")
        call = self._calls.get((event_id, mode))
        if call is None:
            stored = await self.stems(event_id, mode)
            if stored is not None:
                await self._store.events.record_take(event_id, mode, member_id, now, answered=True)
                return TakeOutcome(TakeState.READY, stored)
            call = self._calls.get((event_id, mode)) or self._start_call(event, mode, None)
        taker = _Taker(member_id, listener)
        call.takers.append(taker)
        try:
            return await self._answer(call, taker, now)
        except BaseException:
            taker.answered = True
            raise
        finally:
            taker.returned.set()

    async def _answer(self, call: _ModeCall, taker: _Taker, now: datetime) -> TakeOutcome:
        await call.decided.wait()
        outcome = call.outcome
        if isinstance(outcome, StembotError):
            raise outcome.with_traceback(None)
        event_id, mode = call.key
        await self._store.events.record_take(
            event_id, mode, taker.user_id, now, answered=outcome is not None
        )
        if outcome is None:
            return TakeOutcome(TakeState.PENDING)
        taker.answered = True
        return TakeOutcome(TakeState.READY, outcome)

    async def prefetch(
        self, event_id: int, source: CheckedSource | None = None
    ) -> dict[Mode, TakeOutcome | StembotError]:
        """Run the call of every offered mode now, so the first takes are instant (and, for a
        track that cannot be read again, the only chance). ``source``: the track as checked at
        start, used instead of the resolver. Each mode: READY, PENDING (queued or running),
        or the refusal (nothing charged)."""
        event = await self.get(event_id)
        outcomes = await asyncio.gather(
            *(self._prefetch(event, mode, source) for mode in event.modes)
        )
        return dict(zip(event.modes, outcomes, strict=True))

    async def _prefetch(
        self, event: RemixEvent, mode: Mode, source: CheckedSource | None
    ) -> TakeOutcome | StembotError:
        call = self._calls.get((event.id, mode))
        if call is None:
            stored = await self.stems(event.id, mode)
            if stored is not None:
                return TakeOutcome(TakeState.READY, stored)
            call = self._calls.get((event.id, mode)) or self._start_call(event, mode, source)
        await call.decided.wait()
        outcome = call.outcome
        if isinstance(outcome, StembotError):
            return outcome
        return TakeOutcome(TakeState.PENDING if outcome is None else TakeState.READY, outcome)

    async def resume(self, listener_for: Callable[[Take], TakeListener]) -> int:
        """At start-up, after ``StemService.recover``: the takes a restart left waiting get
        their call again (one per event and mode, or the stored stems), each told through
        ``listener_for(take)``. Returns how many takes were resumed."""
        waiting = await self._store.events.waiting_takes()
        events: dict[int, RemixEvent | None] = {}
        for take in waiting:
            if take.event_id not in events:
                events[take.event_id] = await self._store.events.get(take.event_id)
            event = events[take.event_id]
            if event is None:
                continue
            call = self._calls.get((event.id, take.mode)) or self._start_call(
                event, take.mode, None
            )
            taker = _Taker(take.user_id, listener_for(take))
            taker.returned.set()
            call.takers.append(taker)
        if waiting:
            log.info("%d remix event take(s) left waiting by a restart resumed", len(waiting))
        return len(waiting)

    # --- the mode's one call ------------------------------------------------------------

    def _start_call(self, event: RemixEvent, mode: Mode, source: CheckedSource | None) -> _ModeCall:
        call = _ModeCall(event, mode)
        self._calls[call.key] = call
        self._spawn(self._run(call, source))
        return call

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, call: _ModeCall, source: CheckedSource | None) -> None:
        call.outcome = await self._decide(call, source)
        call.decided.set()
        if call.outcome is not None:
            await self._finish(call, call.outcome)

    async def _decide(
        self, call: _ModeCall, source: CheckedSource | None
    ) -> Separation | StembotError | None:
        """The stored stems, the refusal, or None once the call is queued or joined."""
        event, mode = call.event, call.mode
        try:
            stored = await self.stems(event.id, mode)
            if stored is not None:
                return stored
            await self._check_budget(event, mode)
            checked = source or await self._resolve(event)
            track = CheckedSource(checked.url, event.source_name, event.source_key)
            listener = _CallListener(lambda request, outcome: self._landed(call, request, outcome))
            return await self._stems.submit_for_event(event.id, mode, track, listener)
        except StembotError as error:
            log.info(
                "remix event %s: the %s call was refused: %s", event.id, mode, type(error).__name__
            )
            return error
        except Exception:
            incident = IncidentError()
            log.exception(
                "remix event %s: the %s call failed unexpectedly (incident %s)",
                event.id,
                mode,
                incident.incident_id,
            )
            return incident

    async def _check_budget(self, event: RemixEvent, mode: Mode) -> None:
        """The event's budget cannot pay for the call: refuse before the track is read (the
        reservation checks again, in its transaction)."""
        if event.budget is None:
            return
        spent = (await self._store.events.spend(event.id)).units
        cost = self._store.policy.cost_of(mode)
        if spent + cost > event.budget:
            raise RemixEventBudgetSpentError(event.budget, spent, cost, mode.label)

    def _landed(
        self, call: _ModeCall, request: Request, outcome: Separation | StembotError
    ) -> None:
        """The call's outcome, from the queue: answered without holding the queue up."""
        if isinstance(outcome, Separation):
            self._stems.record_delivery(request.id, "event")
        elif isinstance(outcome, RequestInterruptedError):
            # Stopping: the takes stay waiting, owed by ``resume`` after the restart.
            self._forget(call)
            log.info("remix event %s: the %s call was interrupted", call.event.id, call.mode)
            return
        self._spawn(self._finish(call, outcome))

    async def _finish(self, call: _ModeCall, outcome: Separation | StembotError) -> None:
        """Tell every taker still owed an answer, and note it on their takes (answered: after
        telling them, so a crash in between tells them again after the restart)."""
        self._forget(call)
        await asyncio.gather(*(taker.returned.wait() for taker in call.takers))
        owed = [taker for taker in call.takers if not taker.answered]
        event_id, mode = call.key
        users = [taker.user_id for taker in owed]
        if isinstance(outcome, Separation):
            await asyncio.gather(*(_tell(t.listener.on_ready(outcome), call) for t in owed))
            await self._settle(call, users, TakeStatus.ANSWERED)
        else:
            await self._settle(call, users, TakeStatus.FAILED)
            await asyncio.gather(*(_tell(t.listener.on_failed(outcome), call) for t in owed))
        log.info(
            "remix event %s: %s %s for %d waiting take(s)",
            event_id,
            mode,
            "ready" if isinstance(outcome, Separation) else "failed",
            len(owed),
        )
        if self._on_change is not None:
            failure = None if isinstance(outcome, Separation) else outcome
            await _tell(self._on_change(event_id, mode, failure), call)

    async def _settle(self, call: _ModeCall, users: list[int], status: TakeStatus) -> None:
        if not users:
            return
        try:
            await self._store.events.settle_takes(
                call.event.id, call.mode, users, status, self._clock()
            )
        except StembotError as error:
            # Only bookkeeping: left waiting, they are answered again after a restart.
            log.warning(
                "remix event %s: %d take(s) of %s not marked %s (%s)",
                call.event.id,
                len(users),
                call.mode,
                status,
                type(error).__name__,
            )

    def _forget(self, call: _ModeCall) -> None:
        if self._calls.get(call.key) is call:
            del self._calls[call.key]

    # --- submissions --------------------------------------------------------------------

    async def submit(
        self,
        event_id: int,
        member_id: int,
        title: str,
        filename: str,
        message_id: int,
        *,
        guild_id: int,
    ) -> tuple[Submission, Submission | None]:
        """Record the member's remix (posted by the bot as ``message_id``): their one current
        submission, replacing the one returned beside it (edit its post to say so).
        RemixEventEndedError or SubmissionRefusedError (submissions off, a bad title):
        nothing recorded (delete the post)."""
        await self.get(event_id, guild_id=guild_id)
        return await self._store.events.submit(
            event_id, member_id, checked_title(title), filename, message_id, self._clock()
        )

    async def remove_submission(
        self,
        event_id: int,
        submission_id: int,
        by_user_id: int,
        *,
        guild_id: int,
        moderator: bool = False,
    ) -> Submission:
        """Take a submission out (its member, the organiser, or a ``moderator``: the Discord
        layer says whether the user may manage the server's events)."""
        await self.get(event_id, guild_id=guild_id)
        return await self._store.events.remove_submission(
            event_id, submission_id, by_user_id, self._clock(), moderator=moderator
        )

    async def submissions(self, event_id: int) -> list[Submission]:
        """The current submissions, in the order made (the vote's candidates)."""
        return await self._store.events.submissions(event_id)

    async def submission(self, submission_id: int, *, guild_id: int) -> Submission:
        """One submission of this server's events, current or not (SubmissionRefusedError
        when there is none, or it belongs to another server's event)."""
        found = await self._store.events.submission(submission_id)
        if found is None:
            raise SubmissionRefusedError("That submission no longer exists.")
        try:
            await self.get(found.event_id, guild_id=guild_id)
        except RemixEventNotFoundError:
            raise SubmissionRefusedError("That submission no longer exists.") from None
        return found

    # --- shutdown -----------------------------------------------------------------------

    async def close(self, grace_s: float) -> None:
        """After ``StemService.shutdown``: let the answers being told finish for ``grace_s``."""
        tasks = list(self._tasks)
        if not tasks:
            return
        _, still = await asyncio.wait(tasks, timeout=grace_s)
        for task in still:
            task.cancel()
        await asyncio.gather(*still, return_exceptions=True)


class _CallListener:
    """The StemService's RequestListener for an event's call: its outcome, once."""

    def __init__(self, landed: Callable[[Request, Separation | StembotError], None]) -> None:
        self._landed = landed

    async def on_started(self, request: Request) -> None:
        return None

    async def on_succeeded(
        self, request: Request, separation: Separation, quota: QuotaStatus | None
    ) -> None:
        self._landed(request, separation)

    async def on_failed(
        self, request: Request, error: StembotError, quota: QuotaStatus | None
    ) -> None:
        self._landed(request, error)

    async def on_cancelled(self, request: Request) -> None:
        self._landed(request, RemixEventError("This separation was cancelled. Please try again."))

    async def on_handed_over(self, request: Request) -> None:
        return None  # an event's call is never sealed: a stop interrupts it


async def _tell(notification: Awaitable[None], call: _ModeCall) -> None:
    """A failure to tell one member must not stop the others being told."""
    try:
        await notification
    except Exception:
        log.exception("remix event %s: telling a take of %s failed", call.event.id, call.mode)


def checked_title(title: str) -> str:
    """A submission's title, trimmed; SubmissionRefusedError when empty or too long (the
    Discord layer checks it before posting the remix, ``submit`` again)."""
    title = title.strip()
    if not title or len(title) > MAX_TITLE_CHARS:
        raise SubmissionRefusedError(
            f"Give your remix a title of 1 to {MAX_TITLE_CHARS} characters."
        )
    return title


def _checked_spec(spec: EventSpec, now: datetime) -> EventSpec:
    """The spec with its title trimmed; RemixEventError for one that cannot run."""
    title = spec.title.strip()
    if not title or len(title) > MAX_TITLE_CHARS:
        raise RemixEventError(f"Give the event a title of 1 to {MAX_TITLE_CHARS} characters.")
    if not spec.modes or len(set(spec.modes)) != len(spec.modes):
        raise RemixEventError("Offer at least one mode, each once.")
    if spec.ends_at is not None and spec.ends_at <= now:
        raise RemixEventError("The event's end must be in the future.")
    if spec.budget is not None and not 1 <= spec.budget <= MAX_LIMIT:
        raise RemixEventError(f"An event's budget is 1 to {MAX_LIMIT:,} units (or none).")
    return dataclasses.replace(spec, title=title)
