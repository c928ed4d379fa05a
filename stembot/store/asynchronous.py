"""The store the bot and its services use: every method awaitable, no SQLite on the event loop.

The same parts as the synchronous ``Store`` (whose methods hold every query, once), run on
the store's threads (threads.py): writes on the one writer thread, committed in groups;
reads on reader threads with read-only connections of their own. The command line uses the
synchronous ``Store`` directly.

This is the interface a second implementation (PostgreSQL) provides. Its promises:

- Each write method is one transaction, all or nothing, durable before its await returns.
  Writes apply in the order they were awaited from one task; a check and its write are one
  transaction (reserve never over-grants, whoever else writes the file); moving a request
  on is idempotent (a refund happens once).
- A read sees every write whose await has returned, and one consistent snapshot per call.
- Failures are the errors of ``stembot.errors`` (see ``stembot.store``); a write that fails
  wrote nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TextIO

from stembot.config import QuotaPolicy
from stembot.errors import StoreUnavailableError
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
from stembot.store import Store
from stembot.store.connection import DEFAULT_BUSY_TIMEOUT_S
from stembot.store.pruning import Pruned
from stembot.store.threads import ReaderThreads, WriterThread


class AsyncStore:
    """One per process: the writer thread, the reader threads, and the parts on them."""

    def __init__(self, store: Store) -> None:
        self._store = store
        connection = store.connection
        self._writer = WriterThread(connection)
        self._readers = ReaderThreads(
            connection.file,
            connection.busy_timeout_s,
            lambda conn: Store(conn, store.policy),
        )
        self.ledger = AsyncLedger(store, self._writer, self._readers)
        self.quotas = AsyncQuotas(self._readers)
        self.guilds = AsyncGuildSettings(store, self._writer, self._readers)
        self.events = AsyncRemixEvents(store, self._writer, self._readers)
        self.reports = AsyncReports(store)

    @classmethod
    async def open(
        cls, path: Path, policy: QuotaPolicy, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
    ) -> AsyncStore:
        """Open (creating and migrating if needed) the database, off the event loop."""
        store = await asyncio.to_thread(Store.open, path, policy, busy_timeout_s=busy_timeout_s)
        return cls(store)

    async def close(self) -> None:
        """Finish the queued writes, then close every connection."""
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self._writer.close()
        self._readers.close()
        self._store.close()

    @property
    def writer(self) -> WriterThread:
        """The writer thread (its counters say how well writes share commits)."""
        return self._writer

    @property
    def policy(self) -> QuotaPolicy:
        """The default limits and the cost of each mode."""
        return self._store.policy

    def file_problem(self) -> str | None:
        """What happened to the database file since it was opened, if anything; one stat."""
        return self._store.file_problem()

    async def prune(self, before: datetime, *, stop: Callable[[], bool]) -> Pruned:
        """Retention's batched deletions, on a connection of their own (``Store.prune``)."""
        return await asyncio.to_thread(self._store.prune, before, stop=stop)

    async def ping(self) -> None:
        """The file is still the one opened and answers a read (the health check)."""
        problem = self.file_problem()
        if problem is not None:
            raise StoreUnavailableError(problem)
        await self._readers.run(lambda store: store.connection.one("SELECT 1", ()))


class AsyncLedger:
    """``stembot.store.ledger.Ledger``, awaitable."""

    def __init__(self, store: Store, writer: WriterThread, readers: ReaderThreads[Store]) -> None:
        self._ledger = store.ledger
        self._write = writer.run
        self._read = readers.run

    async def reserve(self, request: NewRequest, now: datetime) -> Request:
        return await self._write(lambda: self._ledger.reserve(request, now))

    async def reserve_joined(self, request: NewRequest, now: datetime, *, running: bool) -> Request:
        return await self._write(lambda: self._ledger.reserve_joined(request, now, running=running))

    async def hand_over_charge(
        self, payer_id: int, heirs: Sequence[tuple[int, Sequence[int]]], now: datetime
    ) -> tuple[int, bool] | None:
        return await self._write(lambda: self._ledger.hand_over_charge(payer_id, heirs, now))

    async def record_free(
        self, request: NewRequest, separation: Separation, now: datetime
    ) -> Request:
        return await self._write(lambda: self._ledger.record_free(request, separation, now))

    async def mark_all_running(self, request_ids: Sequence[int], now: datetime) -> int:
        return await self._write(lambda: self._ledger.mark_all_running(request_ids, now))

    async def settle_joined(self, request_ids: Sequence[int], now: datetime) -> int:
        return await self._write(lambda: self._ledger.settle_joined(request_ids, now))

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
    ) -> Request:
        return await self._write(
            lambda: self._ledger.reserve_for_event(
                event_id, mode, source_name, source_key, now, joined=joined, running=running
            )
        )

    async def refund_all(
        self, request_ids: Sequence[int], status: RequestStatus, error: str, now: datetime
    ) -> int:
        return await self._write(lambda: self._ledger.refund_all(request_ids, status, error, now))

    async def settle(
        self, request_id: int, separation: Separation, source_key: str, now: datetime
    ) -> bool:
        return await self._write(
            lambda: self._ledger.settle(request_id, separation, source_key, now)
        )

    async def refund_by_moderator(self, request_id: int, guild_id: int, now: datetime) -> bool:
        return await self._write(
            lambda: self._ledger.refund_by_moderator(request_id, guild_id, now)
        )

    async def record_deliveries(self, deliveries: Sequence[tuple[int, str]], now: datetime) -> int:
        return await self._write(lambda: self._ledger.record_deliveries(deliveries, now))

    async def recover(self, now: datetime) -> Recovery:
        return await self._write(lambda: self._ledger.recover(now))

    async def get_request(self, request_id: int) -> Request | None:
        return await self._read(lambda parts: parts.ledger.get_request(request_id))

    async def stored_result(self, request_id: int) -> tuple[Request, Separation] | None:
        return await self._read(lambda parts: parts.ledger.stored_result(request_id))

    async def find_result(
        self, source_key: str, mode: Mode, issued_after: datetime
    ) -> Separation | None:
        return await self._read(
            lambda parts: parts.ledger.find_result(source_key, mode, issued_after)
        )


class AsyncQuotas:
    """``stembot.store.quotas.Quotas``, awaitable (reads only)."""

    def __init__(self, readers: ReaderThreads[Store]) -> None:
        self._read = readers.run

    async def quota_status(
        self, guild_id: int, user_id: int | None, now: datetime, role_ids: Sequence[int] = ()
    ) -> QuotaStatus:
        return await self._read(
            lambda parts: parts.quotas.quota_status(guild_id, user_id, now, role_ids)
        )

    async def check_limits(
        self, guild_id: int, user_id: int, role_ids: Sequence[int], cost: int | None, now: datetime
    ) -> None:
        await self._read(
            lambda parts: parts.quotas.check_limits(guild_id, user_id, role_ids, cost, now)
        )

    async def api_calls_today(self, now: datetime) -> int:
        return await self._read(lambda parts: parts.quotas.api_calls_today(now))


class AsyncGuildSettings:
    """``stembot.store.guilds.GuildSettings``, awaitable."""

    def __init__(self, store: Store, writer: WriterThread, readers: ReaderThreads[Store]) -> None:
        self._guilds = store.guilds
        self._write = writer.run
        self._read = readers.run

    async def guild_limits(self, guild_id: int) -> GuildLimits:
        return await self._read(lambda parts: parts.guilds.guild_limits(guild_id))

    async def reset_limits(self, guild_id: int, names: Sequence[str]) -> GuildLimits:
        return await self._write(lambda: self._guilds.reset_limits(guild_id, names))

    async def set_role_allowance(
        self, guild_id: int, role_id: int, per_user: int | None
    ) -> GuildLimits:
        return await self._write(
            lambda: self._guilds.set_role_allowance(guild_id, role_id, per_user)
        )

    async def set_limits(
        self,
        guild_id: int,
        *,
        daily: int | None = None,
        monthly: int | None = None,
        per_user: int | None = None,
        active_requests: int | None = None,
    ) -> GuildLimits:
        return await self._write(
            lambda: self._guilds.set_limits(
                guild_id,
                daily=daily,
                monthly=monthly,
                per_user=per_user,
                active_requests=active_requests,
            )
        )

    async def set_log_channel(self, guild_id: int, channel_id: int | None) -> None:
        await self._write(lambda: self._guilds.set_log_channel(guild_id, channel_id))

    async def log_channel(self, guild_id: int) -> int | None:
        return await self._read(lambda parts: parts.guilds.log_channel(guild_id))

    async def claim_alert(
        self, guild_id: int, period: str, period_start: datetime, threshold: int, now: datetime
    ) -> bool:
        return await self._write(
            lambda: self._guilds.claim_alert(guild_id, period, period_start, threshold, now)
        )

    async def claim_budget_notice(self, now: datetime) -> bool:
        return await self._write(lambda: self._guilds.claim_budget_notice(now))

    async def command_digest(self, scope: str) -> str | None:
        return await self._read(lambda parts: parts.guilds.command_digest(scope))

    async def remember_command_digest(self, scope: str, digest: str) -> None:
        await self._write(lambda: self._guilds.remember_command_digest(scope, digest))

    @asynccontextmanager
    async def syncing(self) -> AsyncIterator[None]:
        """One bot holds the SQLite file (stembot/database_lock.py): nothing to wait for."""
        yield


class AsyncRemixEvents:
    """``stembot.store.remix_events.RemixEvents``, awaitable."""

    def __init__(self, store: Store, writer: WriterThread, readers: ReaderThreads[Store]) -> None:
        self._events = store.events
        self._write = writer.run
        self._read = readers.run

    async def start(
        self,
        guild_id: int,
        channel_id: int,
        organiser_id: int,
        spec: EventSpec,
        now: datetime,
        *,
        max_open: int,
    ) -> RemixEvent:
        return await self._write(
            lambda: self._events.start(
                guild_id, channel_id, organiser_id, spec, now, max_open=max_open
            )
        )

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
        return await self._write(
            lambda: self._events.card_posted(
                event_id,
                card_channel_id,
                card_message_id,
                pinned=pinned,
                scheduled_event_id=scheduled_event_id,
                source_ref=source_ref,
            )
        )

    async def poll_posted(
        self, event_id: int, poll_message_id: int, submission_ids: Sequence[int]
    ) -> RemixEvent:
        return await self._write(
            lambda: self._events.poll_posted(event_id, poll_message_id, submission_ids)
        )

    async def end(self, event_id: int, now: datetime, by_user_id: int | None) -> RemixEvent:
        return await self._write(lambda: self._events.end(event_id, now, by_user_id))

    async def get(self, event_id: int) -> RemixEvent | None:
        return await self._read(lambda parts: parts.events.get(event_id))

    async def open_events(self, guild_id: int, now: datetime) -> list[RemixEvent]:
        return await self._read(lambda parts: parts.events.open_events(guild_id, now))

    async def due(self, now: datetime) -> list[RemixEvent]:
        return await self._read(lambda parts: parts.events.due(now))

    async def record_take(
        self, event_id: int, mode: Mode, user_id: int, now: datetime, *, answered: bool
    ) -> None:
        await self._write(
            lambda: self._events.record_take(event_id, mode, user_id, now, answered=answered)
        )

    async def settle_takes(
        self,
        event_id: int,
        mode: Mode,
        user_ids: Sequence[int],
        status: TakeStatus,
        now: datetime,
    ) -> int:
        return await self._write(
            lambda: self._events.settle_takes(event_id, mode, user_ids, status, now)
        )

    async def waiting_takes(self) -> list[Take]:
        return await self._read(lambda parts: parts.events.waiting_takes())

    async def takes(self, event_id: int) -> list[Take]:
        return await self._read(lambda parts: parts.events.takes(event_id))

    async def result(self, event_id: int, mode: Mode, fresh_after: datetime) -> Separation | None:
        return await self._read(lambda parts: parts.events.result(event_id, mode, fresh_after))

    async def submit(
        self,
        event_id: int,
        user_id: int,
        title: str,
        filename: str,
        message_id: int,
        now: datetime,
    ) -> tuple[Submission, Submission | None]:
        return await self._write(
            lambda: self._events.submit(event_id, user_id, title, filename, message_id, now)
        )

    async def remove_submission(
        self,
        event_id: int,
        submission_id: int,
        by_user_id: int,
        now: datetime,
        *,
        moderator: bool,
    ) -> Submission:
        return await self._write(
            lambda: self._events.remove_submission(
                event_id, submission_id, by_user_id, now, moderator=moderator
            )
        )

    async def submission(self, submission_id: int) -> Submission | None:
        return await self._read(lambda parts: parts.events.submission(submission_id))

    async def submissions(self, event_id: int) -> list[Submission]:
        return await self._read(lambda parts: parts.events.submissions(event_id))

    async def spend(self, event_id: int) -> EventSpend:
        return await self._read(lambda parts: parts.events.spend(event_id))

    async def counts(self, event_id: int) -> EventCounts:
        return await self._read(lambda parts: parts.events.counts(event_id))

    async def summary(self, event_id: int) -> EventSummary:
        return await self._read(lambda parts: parts.events.summary(event_id))

    async def participation(self, event_id: int) -> list[Participation]:
        return await self._read(lambda parts: parts.events.participation(event_id))


class AsyncReports:
    """``stembot.store.reporting.Reports``, awaitable. Each report opens a read-only connection
    of its own, so it runs in a thread of its own: a long export never holds up the quick
    reads on the reader thread."""

    def __init__(self, store: Store) -> None:
        self._reports = store.reports

    async def usage_report(
        self, guild_id: int, since: datetime, until: datetime, *, top: int = 10
    ) -> UsageReport:
        return await asyncio.to_thread(
            lambda: self._reports.usage_report(guild_id, since, until, top=top)
        )

    async def spend_by_day(self, since: datetime, until: datetime) -> list[DailySpend]:
        return await asyncio.to_thread(lambda: self._reports.spend_by_day(since, until))

    async def stream_ledger(
        self, guild_id: int, since: datetime, until: datetime, out: TextIO
    ) -> LedgerCount:
        return await asyncio.to_thread(
            lambda: self._reports.stream_ledger(guild_id, since, until, out)
        )

    async def write_ledger_csv(
        self, guild_id: int, since: datetime, until: datetime, path: Path
    ) -> LedgerCount:
        """``stream_ledger`` into a new file at ``path``, opened and written on the thread."""

        def write() -> LedgerCount:
            with path.open("w", newline="", encoding="utf-8") as out:
                return self._reports.stream_ledger(guild_id, since, until, out)

        return await asyncio.to_thread(write)

    async def ledger_days(
        self, guild_id: int, since: datetime, until: datetime
    ) -> list[tuple[date, int]]:
        return await asyncio.to_thread(lambda: self._reports.ledger_days(guild_id, since, until))
