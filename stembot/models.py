"""Plain values shared by every layer. No I/O, no discord, no aiohttp."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple


class _ModeLine(NamedTuple):
    """One row of the mode table below."""

    # The slash subcommand (`/stems <name>`) and the value stored in the ledger.
    name: str
    # How the mode is named to users.
    label: str
    api_path: str
    # Units a request costs unless STEMBOT_COST_<MODE> says otherwise; None: no default, the
    # operator must set it (stembot.config says so at start-up).
    default_cost: int | None
    # The subcommand's description in Discord's command picker (at most 100 characters).
    description: str


class Mode(enum.StrEnum):
    """What to separate: the mode table. Adding a mode is adding its line here; its
    `/stems` subcommand, its place in the "Split stems" picker, its STEMBOT_COST_<MODE> setting,
    `stembot separate`'s choice and the usage figures all follow from it."""

    label: str
    api_path: str
    default_cost: int | None
    description: str

    # (Typed loosely: `Mode("vocals")` looks a member up by its name, through this same signature.)
    def __new__(cls, name: str, *facts: Any) -> Mode:
        line = _ModeLine(name, *facts)
        mode = str.__new__(cls, name)
        mode._value_ = name
        mode.label, mode.api_path = line.label, line.api_path
        mode.default_cost, mode.description = line.default_cost, line.description
        return mode

    VOCALS = _ModeLine(
        "vocals", "Vocals", "/v1/generate/stem-separation/vocals", 1,
        "Split the vocals out of a song",
    )  # fmt: skip
    INSTRUMENTS = _ModeLine(
        "instruments", "Instruments", "/v1/generate/stem-separation/instruments", 1,
        "Split a song into Guitar, Other, Drums, Bass and Piano",
    )  # fmt: skip
    ALL = _ModeLine(
        "all", "All stems", "/v1/generate/stem-separation/all-stems", 2,
        "Split a song into vocals and all five instruments",
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Stem:
    """One separated track: its name as the API gave it and where to download it.

    The URL stays out of the repr: the API's links may be signed (credentials until they expire).
    """

    name: str
    url: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Separation:
    """The API's answer for one source and mode, with when the URLs were issued."""

    mode: Mode
    stems: tuple[Stem, ...]
    issued_at: datetime


class RequestStatus(enum.StrEnum):
    """Where a request stands. Only the first two hold quota that may still be refunded."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def is_active(self) -> bool:
        return self in (RequestStatus.QUEUED, RequestStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class NewRequest:
    """A request as a member asked it, before the ledger records it: everything the service
    needs, in plain values (no discord objects).

    ``source_key`` identifies the input for reuse: ``attachment:<id>`` for a Discord
    attachment, or ``url:sha256:<hex>`` for a link (a hash: signed links are credentials).
    ``source_url`` goes to the API only; it is kept out of reprs, logs and the database.
    ``sealed_source`` is the link sealed for the ledger (stembot/sealed_sources.py): the
    paid call's row keeps it while queued, so that another start or process can make it.
    """

    guild_id: int
    channel_id: int
    user_id: int
    interaction_id: int
    mode: Mode
    source_url: str = field(repr=False)
    source_name: str
    source_key: str
    # The member's roles in the server: a role's allowance may replace the per-member limit.
    role_ids: tuple[int, ...] = ()
    # A remix event's call (or its ride on another call): the event's, asked by no member.
    remix_event_id: int | None = None
    sealed_source: str | None = field(default=None, repr=False)

    @classmethod
    def of_recorded(
        cls, request: Request, source_url: str, *, remix_event_id: int | None = None
    ) -> NewRequest:
        """A recorded request as the queue runs it (a remix event's call, a call taken over
        from another process), its ``source_url`` only in memory."""
        return cls(
            guild_id=request.guild_id,
            channel_id=request.channel_id,
            user_id=request.user_id,
            interaction_id=request.interaction_id,
            mode=request.mode,
            source_url=source_url,
            source_name=request.source_name,
            source_key=request.source_key,
            remix_event_id=remix_event_id,
        )


# --- The ledger's values (written by stembot.store) ---------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the ledger holds it: who asked for what, what it costs, where it stands."""

    id: int
    guild_id: int
    channel_id: int
    user_id: int
    interaction_id: int
    mode: Mode
    source_name: str
    source_key: str
    cost: int
    status: RequestStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    # A moderator gave its units back after it succeeded (it is cancelled now).
    refunded_by_moderator: bool = False


class QuotaLimit(enum.StrEnum):
    """Which limit refused a request."""

    GUILD_DAILY = "guild_daily"
    GUILD_MONTHLY = "guild_monthly"
    USER_DAILY = "user_daily"
    USER_ACTIVE = "user_active"
    API_BUDGET = "api_budget"


@dataclass(frozen=True, slots=True)
class WindowStatus:
    """Units used and left in one quota window, and when the window starts over."""

    used: int
    limit: int
    remaining: int
    resets_at: datetime


@dataclass(frozen=True, slots=True)
class QuotaStatus:
    """A guild's daily and monthly windows and, when a user is asked about, theirs."""

    guild_daily: WindowStatus
    guild_monthly: WindowStatus
    user_daily: WindowStatus | None
    user_active_requests: int | None
    user_active_limit: int
    # True when the member's daily limit is a role's allowance, not the server's per-member one.
    user_limit_from_role: bool = False
    # The operator's bot-wide budget of paid calls is spent for today (all servers).
    api_budget_spent: bool = False


@dataclass(frozen=True, slots=True)
class GuildLimits:
    """A guild's effective limits; ``overridden`` names those a moderator set."""

    daily: int
    monthly: int
    per_user: int
    active_requests: int
    overridden: frozenset[str] = frozenset()
    # Those set above the operator's ceiling: held to the ceiling.
    capped: frozenset[str] = frozenset()
    # (role id, units a day) for roles whose members get their own daily allowance.
    role_allowances: tuple[tuple[int, int], ...] = ()

    @property
    def switched_off(self) -> bool:
        """A daily or monthly limit of 0: the guild may start no paid request at all."""
        return self.daily == 0 or self.monthly == 0


@dataclass(frozen=True, slots=True)
class UsageLine:
    """Requests made, units charged and requests refunded for one group of a report."""

    requests: int
    units: int
    refunded: int


@dataclass(frozen=True, slots=True)
class EventUsage:
    """A remix event's calls in a report: charged to the server, apart from members' spend."""

    event_id: int
    # Empty once retention removed the event itself.
    title: str
    usage: UsageLine


@dataclass(frozen=True, slots=True)
class UsageReport:
    """A guild's usage over ``[since, until)``: totals, by user, by mode, by UTC day, and the
    remix events' calls apart (``total`` holds them; ``by_user`` never does)."""

    guild_id: int
    since: datetime
    until: datetime
    total: UsageLine
    by_user: tuple[tuple[int, UsageLine], ...]
    by_mode: tuple[tuple[Mode, UsageLine], ...]
    by_day: tuple[tuple[date, UsageLine], ...]
    top_users: tuple[tuple[int, UsageLine], ...]
    by_event: tuple[EventUsage, ...] = ()

    @property
    def events_total(self) -> UsageLine:
        """What the remix events spent, in all."""
        lines = [event.usage for event in self.by_event]
        return UsageLine(
            requests=sum(line.requests for line in lines),
            units=sum(line.units for line in lines),
            refunded=sum(line.refunded for line in lines),
        )


@dataclass(frozen=True, slots=True)
class HandedOverCall:
    """A paid call a stopped process left queued (never given its turn), with its source
    sealed (stembot/sealed_sources.py), and the requests of that process waiting on it: this
    process makes the call now, rather than refund them."""

    payer: Request
    sealed_source: str = field(repr=False)
    riders: tuple[Request, ...] = ()

    @property
    def requests(self) -> list[Request]:
        return [self.payer, *self.riders]


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a start-up found a stopped bot owing: requests refunded (their requesters are
    told), succeeded requests whose result never reached them (delivered now), and queued
    calls taken over (``handed_over``: made now, their requesters answered when they end)."""

    interrupted: list[Request]
    undelivered: list[tuple[Request, Separation]]
    handed_over: list[HandedOverCall] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DailySpend:
    """One server's paid API calls and units charged on one UTC day (the operator's view)."""

    day: date
    guild_id: int
    calls: int
    units: int
