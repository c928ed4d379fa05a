"""The usage ledger, quotas and stored results in SQLite; the only user of sqlite-utils.

The store is split along its tables, which is also the interface a second implementation
(asynchronous, or on PostgreSQL) provides:

- ``connection.py``  the one writer connection per process and its transactions
                     (``BEGIN IMMEDIATE``, busy handling, the file identity check);
- ``ledger.py``      the request ledger: reserve, settle, refund, hand-over, free repeats,
                     deliveries, stored results; ``recovery.py`` what a stopped bot left owing,
                     ``rows.py`` one place a row becomes a value;
- ``quotas.py``      what was used against the limits (the snapshot a reservation checks);
- ``guilds.py``      a server's settings: limits, role allowances, log channel, alerts,
                     command digests, the budget notice;
- ``reporting.py``   read-only reports on read-only connections of their own;
- ``migrations.py``  the schema; ``pruning.py`` retention's batched deletions.

What each part promises, whatever runs it (another process may write the same file):

- A transaction is one method call: every write method is one ``write()`` transaction, all
  or nothing, durable (``synchronous=FULL``) before it returns. A method that checks before
  it writes (reserve, reserve_joined, hand_over_charge, record_free) holds the write lock
  from its first read, so two processes never both pass a check only one may pass: reserve
  never over-grants.
- Moving a request on is idempotent: mark_all_running, settle, settle_joined, refund_all,
  refund_by_moderator and record_deliveries change only requests still in the state they
  expect and return how many (or whether) they changed, so a refund happens once whoever
  asks twice.
- Reads see one committed snapshot; the reports read on connections of their own and never
  wait for (or block) the writer.
- Failures are the errors of ``stembot.errors``: StoreBusyError (the lock stayed taken past
  the busy timeout: nothing was written, the caller may try again), StoreFailedError and
  DatabaseReplacedError (nothing was written), DuplicateRequestError, QuotaLimitReached.

``Store`` opens the connection, builds the parts on it (``store.ledger``, ``store.quotas``,
``store.guilds``, ``store.reports``) and, so that callers stay as they were, answers each
part's methods by their old names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TextIO

from stembot.config import QuotaPolicy
from stembot.ledger_csv import LedgerCount
from stembot.models import (
    DailySpend,
    GuildLimits,
    Job,
    JobRequest,
    JobStatus,
    Mode,
    QuotaStatus,
    Recovery,
    Separation,
    UsageReport,
)
from stembot.store import pruning
from stembot.store.connection import DEFAULT_BUSY_TIMEOUT_S, Connection
from stembot.store.guilds import ALERT_PERIODS, GuildSettings
from stembot.store.ledger import Ledger
from stembot.store.pruning import PRUNE_BATCH_ROWS, PRUNE_PAUSE_S, Pruned
from stembot.store.quotas import Quotas
from stembot.store.reporting import Reports

__all__ = ["ALERT_PERIODS", "DEFAULT_BUSY_TIMEOUT_S", "Store"]


class Store:
    """The ledger's file. One instance (one writer connection) per process; calls are short
    and synchronous."""

    def __init__(self, connection: Connection, policy: QuotaPolicy) -> None:
        self.connection = connection
        self.quotas = Quotas(connection, policy)
        self.ledger = Ledger(connection, self.quotas)
        self.guilds = GuildSettings(connection, policy)
        self.reports = Reports(connection)

    @classmethod
    def open(
        cls, path: Path, policy: QuotaPolicy, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
    ) -> Store:
        """Open (creating if needed) the database: WAL, synchronous=FULL, migrations applied."""
        return cls(Connection.open(path, busy_timeout_s), policy)

    def close(self) -> None:
        self.connection.close()

    def file_problem(self) -> str | None:
        """What happened to the database file since it was opened, if anything; one stat."""
        return self.connection.file_problem()

    @property
    def policy(self) -> QuotaPolicy:
        """The default limits and the cost of each mode."""
        return self.quotas.policy

    def prune(
        self,
        before: datetime,
        *,
        stop: Callable[[], bool] = lambda: False,
        batch: int = PRUNE_BATCH_ROWS,
        pause_s: float = PRUNE_PAUSE_S,
    ) -> Pruned:
        """Delete ledger rows and stored results older than ``before``, in small batches on a
        connection of its own: call it from a thread.

        Never a request still queued or running. (Results owed since a crash are read by the
        start-up recovery before the first pruning: see Retention.) Each batch is its own
        short write transaction with a pause after it, so the bot's writer never waits long;
        ``stop`` is asked between batches.
        """
        if self.file_problem() is not None:
            return Pruned(0, 0)  # never prune a file that is not the bot's ledger
        return pruning.prune(
            self.connection.file,
            before,
            stop=stop,
            batch=batch,
            pause_s=pause_s,
            busy_timeout_s=self.connection.busy_timeout_s,
        )

    # --- the ledger (see ledger.py) ------------------------------------------------------

    def reserve(self, request: JobRequest, now: datetime) -> Job:
        return self.ledger.reserve(request, now)

    def reserve_joined(self, request: JobRequest, now: datetime, *, running: bool) -> Job:
        return self.ledger.reserve_joined(request, now, running=running)

    def hand_over_charge(
        self, payer_id: int, heirs: Sequence[tuple[int, Sequence[int]]], now: datetime
    ) -> tuple[int, bool] | None:
        return self.ledger.hand_over_charge(payer_id, heirs, now)

    def record_free(self, request: JobRequest, separation: Separation, now: datetime) -> Job:
        return self.ledger.record_free(request, separation, now)

    def mark_all_running(self, job_ids: Sequence[int], now: datetime) -> int:
        return self.ledger.mark_all_running(job_ids, now)

    def settle_joined(self, job_ids: Sequence[int], now: datetime) -> int:
        return self.ledger.settle_joined(job_ids, now)

    def refund_all(
        self, job_ids: Sequence[int], status: JobStatus, error: str, now: datetime
    ) -> int:
        return self.ledger.refund_all(job_ids, status, error, now)

    def settle(self, job_id: int, separation: Separation, source_key: str, now: datetime) -> bool:
        return self.ledger.settle(job_id, separation, source_key, now)

    def refund_by_moderator(self, job_id: int, guild_id: int, now: datetime) -> bool:
        return self.ledger.refund_by_moderator(job_id, guild_id, now)

    def record_deliveries(self, deliveries: Sequence[tuple[int, str]], now: datetime) -> int:
        return self.ledger.record_deliveries(deliveries, now)

    def recover(self, now: datetime) -> Recovery:
        return self.ledger.recover(now)

    def get_job(self, job_id: int) -> Job | None:
        return self.ledger.get_job(job_id)

    def find_result(self, source_key: str, mode: Mode, issued_after: datetime) -> Separation | None:
        return self.ledger.find_result(source_key, mode, issued_after)

    # --- quotas (see quotas.py) ----------------------------------------------------------

    def quota_status(
        self, guild_id: int, user_id: int | None, now: datetime, role_ids: Sequence[int] = ()
    ) -> QuotaStatus:
        return self.quotas.quota_status(guild_id, user_id, now, role_ids)

    def check_limits(
        self, guild_id: int, user_id: int, role_ids: Sequence[int], cost: int | None, now: datetime
    ) -> None:
        self.quotas.check_limits(guild_id, user_id, role_ids, cost, now)

    def api_calls_today(self, now: datetime) -> int:
        return self.quotas.api_calls_today(now)

    # --- a server's settings (see guilds.py) ---------------------------------------------

    def guild_limits(self, guild_id: int) -> GuildLimits:
        return self.guilds.guild_limits(guild_id)

    def reset_limits(self, guild_id: int, names: Sequence[str]) -> GuildLimits:
        return self.guilds.reset_limits(guild_id, names)

    def set_role_allowance(self, guild_id: int, role_id: int, per_user: int | None) -> GuildLimits:
        return self.guilds.set_role_allowance(guild_id, role_id, per_user)

    def set_limits(
        self,
        guild_id: int,
        *,
        daily: int | None = None,
        monthly: int | None = None,
        per_user: int | None = None,
        active_jobs: int | None = None,
    ) -> GuildLimits:
        return self.guilds.set_limits(
            guild_id, daily=daily, monthly=monthly, per_user=per_user, active_jobs=active_jobs
        )

    def set_log_channel(self, guild_id: int, channel_id: int | None) -> None:
        self.guilds.set_log_channel(guild_id, channel_id)

    def log_channel(self, guild_id: int) -> int | None:
        return self.guilds.log_channel(guild_id)

    def claim_alert(
        self, guild_id: int, period: str, period_start: datetime, threshold: int, now: datetime
    ) -> bool:
        return self.guilds.claim_alert(guild_id, period, period_start, threshold, now)

    def claim_budget_notice(self, now: datetime) -> bool:
        return self.guilds.claim_budget_notice(now)

    def command_digest(self, scope: str) -> str | None:
        return self.guilds.command_digest(scope)

    def remember_command_digest(self, scope: str, digest: str) -> None:
        self.guilds.remember_command_digest(scope, digest)

    # --- reports (see reporting.py) ------------------------------------------------------

    def usage_report(
        self, guild_id: int, since: datetime, until: datetime, *, top: int = 10
    ) -> UsageReport:
        return self.reports.usage_report(guild_id, since, until, top=top)

    def spend_by_day(self, since: datetime, until: datetime) -> list[DailySpend]:
        return self.reports.spend_by_day(since, until)

    def stream_ledger(
        self, guild_id: int, since: datetime, until: datetime, out: TextIO
    ) -> LedgerCount:
        return self.reports.stream_ledger(guild_id, since, until, out)

    def ledger_days(
        self, guild_id: int, since: datetime, until: datetime
    ) -> list[tuple[date, int]]:
        return self.reports.ledger_days(guild_id, since, until)
