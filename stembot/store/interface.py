"""What the bot and its services need of a ledger store, whichever engine holds it: the
awaitable parts of ``AsyncStore`` (SQLite, one process) and ``PostgresStore`` (several).

The promises behind these calls are written in ``stembot.store`` and
``stembot.store.asynchronous``; tests/test_store_contract.py holds both stores to them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import date, datetime
from pathlib import Path
from typing import Protocol, TextIO

from stembot.config import QuotaPolicy
from stembot.ledger_csv import LedgerCount
from stembot.models import (
    DailySpend,
    GuildLimits,
    Mode,
    NewRequest,
    QuotaStatus,
    Recovery,
    Request,
    RequestStatus,
    Separation,
    UsageReport,
)
from stembot.remix_event_models import (
    EventCounts,
    EventSpec,
    EventSpend,
    EventSummary,
    Participation,
    RemixEvent,
    SourceRef,
    Submission,
    Take,
    TakeStatus,
)
from stembot.store.pruning import Pruned


class LedgerPart(Protocol):
    async def reserve(self, request: NewRequest, now: datetime) -> Request: ...

    async def reserve_joined(
        self, request: NewRequest, now: datetime, *, running: bool
    ) -> Request: ...

    async def hand_over_charge(
        self, payer_id: int, heirs: Sequence[tuple[int, Sequence[int]]], now: datetime
    ) -> tuple[int, bool] | None: ...

    async def record_free(
        self, request: NewRequest, separation: Separation, now: datetime
    ) -> Request: ...

    async def reserve_for_event(
        self,
        event_id: int,
        mode: Mode,
        source_name: str,
        source_key: str,
        now: datetime,
        *,
        joined: bool = False,
        running: bool = False,
    ) -> Request: ...

    async def mark_all_running(self, request_ids: Sequence[int], now: datetime) -> int: ...

    async def settle_joined(self, request_ids: Sequence[int], now: datetime) -> int: ...

    async def refund_all(
        self, request_ids: Sequence[int], status: RequestStatus, error: str, now: datetime
    ) -> int: ...

    async def settle(
        self, request_id: int, separation: Separation, source_key: str, now: datetime
    ) -> bool: ...

    async def refund_by_moderator(self, request_id: int, guild_id: int, now: datetime) -> bool: ...

    async def record_deliveries(
        self, deliveries: Sequence[tuple[int, str]], now: datetime
    ) -> int: ...

    async def recover(self, now: datetime) -> Recovery: ...

    async def get_request(self, request_id: int) -> Request | None: ...

    async def stored_result(self, request_id: int) -> tuple[Request, Separation] | None: ...

    async def find_result(
        self, source_key: str, mode: Mode, issued_after: datetime
    ) -> Separation | None: ...


class QuotasPart(Protocol):
    async def quota_status(
        self, guild_id: int, user_id: int | None, now: datetime, role_ids: Sequence[int] = ()
    ) -> QuotaStatus: ...

    async def check_limits(
        self, guild_id: int, user_id: int, role_ids: Sequence[int], cost: int | None, now: datetime
    ) -> None: ...

    async def api_calls_today(self, now: datetime) -> int: ...


class GuildsPart(Protocol):
    async def guild_limits(self, guild_id: int) -> GuildLimits: ...

    async def reset_limits(self, guild_id: int, names: Sequence[str]) -> GuildLimits: ...

    async def set_role_allowance(
        self, guild_id: int, role_id: int, per_user: int | None
    ) -> GuildLimits: ...

    async def set_limits(
        self,
        guild_id: int,
        *,
        daily: int | None = None,
        monthly: int | None = None,
        per_user: int | None = None,
        active_requests: int | None = None,
    ) -> GuildLimits: ...

    async def set_log_channel(self, guild_id: int, channel_id: int | None) -> None: ...

    async def log_channel(self, guild_id: int) -> int | None: ...

    async def claim_alert(
        self, guild_id: int, period: str, period_start: datetime, threshold: int, now: datetime
    ) -> bool: ...

    async def claim_budget_notice(self, now: datetime) -> bool: ...

    async def command_digest(self, scope: str) -> str | None: ...

    async def remember_command_digest(self, scope: str, digest: str) -> None: ...

    def syncing(self) -> AbstractAsyncContextManager[None]:
        """Held while one process checks and syncs the slash commands (the others wait,
        then find them synced)."""
        ...


class EventsPart(Protocol):
    async def start(
        self,
        guild_id: int,
        channel_id: int,
        organiser_id: int,
        spec: EventSpec,
        now: datetime,
        *,
        max_open: int,
    ) -> RemixEvent: ...

    async def card_posted(
        self,
        event_id: int,
        card_channel_id: int,
        card_message_id: int,
        *,
        pinned: bool,
        scheduled_event_id: int | None,
        source_ref: SourceRef | None = None,
    ) -> RemixEvent: ...

    async def poll_posted(
        self, event_id: int, poll_message_id: int, submission_ids: Sequence[int]
    ) -> RemixEvent: ...

    async def end(self, event_id: int, now: datetime, by_user_id: int | None) -> RemixEvent: ...

    async def get(self, event_id: int) -> RemixEvent | None: ...

    async def open_events(self, guild_id: int, now: datetime) -> list[RemixEvent]: ...

    async def due(self, now: datetime) -> list[RemixEvent]: ...

    async def record_take(
        self, event_id: int, mode: Mode, user_id: int, now: datetime, *, answered: bool
    ) -> None: ...

    async def settle_takes(
        self,
        event_id: int,
        mode: Mode,
        user_ids: Sequence[int],
        status: TakeStatus,
        now: datetime,
    ) -> int: ...

    async def waiting_takes(self) -> list[Take]: ...

    async def takes(self, event_id: int) -> list[Take]: ...

    async def result(
        self, event_id: int, mode: Mode, fresh_after: datetime
    ) -> Separation | None: ...

    async def submit(
        self,
        event_id: int,
        user_id: int,
        title: str,
        filename: str,
        message_id: int,
        now: datetime,
    ) -> tuple[Submission, Submission | None]: ...

    async def remove_submission(
        self,
        event_id: int,
        submission_id: int,
        by_user_id: int,
        now: datetime,
        *,
        moderator: bool,
    ) -> Submission: ...

    async def submission(self, submission_id: int) -> Submission | None: ...

    async def submissions(self, event_id: int) -> list[Submission]: ...

    async def spend(self, event_id: int) -> EventSpend: ...

    async def counts(self, event_id: int) -> EventCounts: ...

    async def summary(self, event_id: int) -> EventSummary: ...

    async def participation(self, event_id: int) -> list[Participation]: ...


class ReportsPart(Protocol):
    async def usage_report(
        self, guild_id: int, since: datetime, until: datetime, *, top: int = 10
    ) -> UsageReport: ...

    async def spend_by_day(self, since: datetime, until: datetime) -> list[DailySpend]: ...

    async def stream_ledger(
        self, guild_id: int, since: datetime, until: datetime, out: TextIO
    ) -> LedgerCount: ...

    async def write_ledger_csv(
        self, guild_id: int, since: datetime, until: datetime, path: Path
    ) -> LedgerCount: ...

    async def ledger_days(
        self, guild_id: int, since: datetime, until: datetime
    ) -> list[tuple[date, int]]: ...


class LedgerStore(Protocol):
    """One per process: the parts, the policy, retention's pruning, and closing."""

    @property
    def ledger(self) -> LedgerPart: ...

    @property
    def quotas(self) -> QuotasPart: ...

    @property
    def guilds(self) -> GuildsPart: ...

    @property
    def events(self) -> EventsPart: ...

    @property
    def reports(self) -> ReportsPart: ...

    @property
    def policy(self) -> QuotaPolicy: ...

    def file_problem(self) -> str | None:
        """What happened to the database under the bot (a SQLite file deleted or replaced),
        if anything; a server database has no such problem and says None."""
        ...

    async def prune(self, before: datetime, *, stop: Callable[[], bool]) -> Pruned: ...

    async def ping(self) -> None:
        """Return once the database answers a trivial read; raise a StembotError otherwise."""
        ...

    async def close(self) -> None: ...
