"""Plain values of remix events: the event, its source, takes, submissions, counts and the
summary. No I/O, no discord: the store makes them, the service and the Discord layer read them.

A *remix event* offers one track's stems to a whole server from one card. A member *takes*
the stems of a mode (recorded once per member and mode, never a ledger row of theirs); the
event pays at most one API call per mode, charged to the server alone. A *submission* is a
member's remix, one current one per member.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from stembot.models import Mode, Separation


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where the event's track lives in Discord, so a fresh signed URL can be read again before
    a paid call: a posted message's attachment (the organiser's post, or the card itself when
    the bot re-uploaded an uploaded file onto it). Never a URL: signed URLs stay out of the
    database."""

    channel_id: int
    message_id: int
    attachment_id: int


@dataclass(frozen=True, slots=True)
class EventSpec:
    """What the organiser asked for at start (checked by ``RemixEventService.start``).

    ``source_key`` is the key results are reused by (``attachment:<id>``, ``url:sha256:...``);
    ``source_ref`` None means the track cannot be read again later (a link, or a file too
    large to re-upload): every offered mode is then separated at start (see ``must_prefetch``).
    """

    title: str
    source_name: str
    source_key: str
    source_ref: SourceRef | None
    modes: tuple[Mode, ...] = (Mode.VOCALS, Mode.INSTRUMENTS, Mode.ALL)
    ends_at: datetime | None = None
    submissions: bool = True
    budget: int | None = None
    prefetch: bool = False


@dataclass(frozen=True, slots=True)
class RemixEvent:
    """One event as the store holds it."""

    id: int
    guild_id: int
    # Where /stems-event start ran (the ledger row of a paid call names it).
    channel_id: int
    organiser_id: int
    title: str
    source_name: str
    source_key: str
    source_ref: SourceRef | None
    modes: tuple[Mode, ...]
    submissions: bool
    budget: int | None
    prefetch: bool
    created_at: datetime
    ends_at: datetime | None
    ended_at: datetime | None = None
    # Who ended it (None: it closed itself at its end, or is still open).
    ended_by: int | None = None
    # The card: its channel (a thread's id when posted in a new thread) and message.
    card_channel_id: int | None = None
    card_message_id: int | None = None
    pinned: bool = False
    scheduled_event_id: int | None = None
    # The vote's poll message (in the card's channel) and the submissions of its answers, in
    # the poll's answer order.
    poll_message_id: int | None = None
    poll_submission_ids: tuple[int, ...] = ()

    def is_open(self, now: datetime) -> bool:
        """Not ended, and not past its end (one past its end waits for ``due`` to close it)."""
        return self.ended_at is None and (self.ends_at is None or now < self.ends_at)

    @property
    def must_prefetch(self) -> bool:
        """Separate every offered mode at start: asked for, or the track cannot be read again."""
        return self.prefetch or self.source_ref is None


class TakeStatus(enum.StrEnum):
    """Where a member's take of a mode stands."""

    # Waiting for the event's call of that mode (owed after a restart: see ``resume``).
    WAITING = "waiting"
    # The stems reached the member.
    ANSWERED = "answered"
    # The call failed and the member was told; a later take tries again.
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Take:
    """A member's take of a mode: one per event, mode and member, however often they click."""

    event_id: int
    mode: Mode
    user_id: int
    status: TakeStatus
    taken_at: datetime
    answered_at: datetime | None = None


class TakeState(enum.StrEnum):
    READY = "ready"
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class TakeOutcome:
    """What ``take`` answers: READY with the stems, or PENDING (the listener is told later)."""

    state: TakeState
    separation: Separation | None = None
    # The member's first take of this mode (their click was counted).
    first: bool = True


@dataclass(frozen=True, slots=True)
class Submission:
    """A member's remix, posted by the bot in the event's channel or thread (``message_id``)."""

    id: int
    event_id: int
    user_id: int
    title: str
    filename: str
    message_id: int
    submitted_at: datetime
    # A later submission of the same member took its place.
    replaced_at: datetime | None = None
    removed_at: datetime | None = None
    removed_by: int | None = None

    @property
    def current(self) -> bool:
        return self.replaced_at is None and self.removed_at is None


@dataclass(frozen=True, slots=True)
class EventSpend:
    """The event's paid calls and the units they cost (refunded ones left out)."""

    paid_calls: int
    units: int


@dataclass(frozen=True, slots=True)
class EventCounts:
    """The live card's figures: members who took stems, current submissions, and the spend
    against the event's budget (None: no budget of its own)."""

    members: int
    submissions: int
    spend: EventSpend
    budget: int | None

    def budget_left(self) -> int | None:
        return None if self.budget is None else max(0, self.budget - self.spend.units)


@dataclass(frozen=True, slots=True)
class EventSummary:
    """What an event came to: members who took stems (per mode and in all), submissions,
    paid calls and units."""

    event: RemixEvent
    takes_by_mode: tuple[tuple[Mode, int], ...]
    members: int
    submissions: int
    spend: EventSpend


@dataclass(frozen=True, slots=True)
class Participation:
    """One member's part in an event, for the moderators' CSV."""

    user_id: int
    modes: tuple[Mode, ...]
    first_taken_at: datetime | None
    submission: Submission | None
