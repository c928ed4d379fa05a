"""The usage ledger, quotas and stored results in SQLite; the only user of sqlite-utils.

One row of ``requests`` per request is both the ledger entry and the job's state. Quota used
in a window is derived from that ledger (the cost of requests that were not refunded), never
kept as a separate counter, so the money and the jobs cannot drift apart.

Every check-then-write runs in ``BEGIN IMMEDIATE``: in WAL mode a deferred transaction that
reads and then writes fails at once with "database is locked" when another connection
committed in between, whatever the busy timeout (see ../shared/design.md).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from sqlite_utils import Database

from stembot import pruning, quota_rules, reports
from stembot.config import QuotaPolicy, Settings
from stembot.errors import (
    DatabaseReplacedError,
    DuplicateRequestError,
    StoreBusyError,
    StoreFailedError,
    StoreUnavailableError,
)
from stembot.ledger_csv import LedgerCount, write_ledger
from stembot.migrations import MIGRATIONS
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
    Stem,
    UsageReport,
)
from stembot.pruning import PRUNE_BATCH_ROWS, PRUNE_PAUSE_S, Pruned
from stembot.quota_rules import Snapshot, check_limit, enforce
from stembot.windows import (
    iso_seconds,
    parse_stamp,
    stamp,
    utc,
    window_stamps,
)

log = logging.getLogger(__name__)

# The setting's default, for callers that pass none (tests, benchmarks).
DEFAULT_BUSY_TIMEOUT_S = Settings.db_busy_timeout_s
_MAX_ERROR_CHARS = 1000
_FIRST_PAUSE_S = 0.0002
_LONGEST_PAUSE_S = 0.002
_REFUND_STATUSES = (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED)
_INTERRUPTED_ERROR = "stembot stopped while this request was in progress"
# Where the 80% / 100% quota alerts of the moderators' work will be remembered.
ALERT_PERIODS = ("day", "month")

# --- rows -----------------------------------------------------------------------------------

_JOB_COLUMNS = (
    "id, guild_id, channel_id, user_id, interaction_id, mode, source_name, source_key, "
    "cost, status, created_at, started_at, finished_at, error, refunded_by_moderator"
)
_SELECT_JOB = f"SELECT {_JOB_COLUMNS} FROM requests WHERE id = ?"  # noqa: S608 (constant)
_SELECT_ACTIVE = (
    f"SELECT {_JOB_COLUMNS} FROM requests INDEXED BY requests_active "  # noqa: S608 (constant)
    "WHERE status IN ('queued', 'running') ORDER BY id"
)
# Succeeded requests whose answer never reached Discord, with their stored result if any.
_SELECT_UNDELIVERED = (
    f"SELECT {', '.join('q.' + c for c in _JOB_COLUMNS.split(', '))}, r.stems, r.issued_at "  # noqa: S608
    "FROM requests AS q INDEXED BY requests_undelivered LEFT JOIN results AS r "
    "ON r.source_key = q.source_key AND r.mode = q.mode "
    "WHERE q.status = 'succeeded' AND q.delivered_at IS NULL ORDER BY q.id"
)
_CHARGED = "CASE WHEN status IN ('queued', 'running', 'succeeded') THEN cost ELSE 0 END"
# A member's own share: not what the server alone carries for a handed-over call.
_MEMBER_CHARGED = (
    "CASE WHEN status IN ('queued', 'running', 'succeeded') AND member_pays = 1 "
    "THEN cost ELSE 0 END"
)
_REFUNDED = "CASE WHEN status IN ('failed', 'cancelled', 'interrupted') THEN 1 ELSE 0 END"

# Everything a reservation checks, read in one statement: whether the interaction is already
# in the ledger, the guild's overrides, the units used in each window (one scan of the month
# gives the day too), and the highest allowance among the member's roles.
_SNAPSHOT = """
SELECT
  (SELECT count(*) FROM requests WHERE interaction_id = :interaction),
  g.daily_limit, g.monthly_limit, g.user_daily_limit, g.user_active_jobs,
  m.today, m.month,
  (SELECT coalesce(sum(cost), 0) FROM requests INDEXED BY requests_user_charged
    WHERE guild_id = :guild AND user_id = :user AND created_at >= :day AND created_at < :day_end
      AND cost > 0 AND status IN ('queued', 'running', 'succeeded') AND member_pays = 1),
  (SELECT count(*) FROM requests INDEXED BY requests_active
    WHERE guild_id = :guild AND user_id = :user AND status IN ('queued', 'running')),
  (SELECT max(per_user) FROM role_allowances
    WHERE guild_id = :guild AND role_id IN (SELECT value FROM json_each(:roles)))
FROM (
  SELECT
    coalesce(sum(CASE WHEN created_at >= :day AND created_at < :day_end THEN cost END), 0)
      AS today,
    coalesce(sum(cost), 0) AS month
  FROM requests INDEXED BY requests_charged
  WHERE guild_id = :guild AND created_at >= :month AND created_at < :month_end
    AND cost > 0 AND status IN ('queued', 'running', 'succeeded')
) AS m
LEFT JOIN guild_settings AS g ON g.guild_id = :guild
"""

_INSERT_REQUEST = """
INSERT INTO requests (interaction_id, guild_id, channel_id, user_id, mode, source_name,
                      source_key, cost, status, created_at, finished_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def _job(row: Sequence[Any]) -> Job:
    created_at = parse_stamp(row[10])
    assert created_at is not None  # NOT NULL in the schema
    return Job(
        id=row[0],
        guild_id=row[1],
        channel_id=row[2],
        user_id=row[3],
        interaction_id=row[4],
        mode=Mode(row[5]),
        source_name=row[6],
        source_key=row[7],
        cost=row[8],
        status=JobStatus(row[9]),
        created_at=created_at,
        started_at=parse_stamp(row[11]),
        finished_at=parse_stamp(row[12]),
        error=row[13],
        refunded_by_moderator=bool(row[14]),
    )


def _interrupted(row: Sequence[Any], finished: str) -> Job:
    """The job of ``row`` as the start-up left it: interrupted, refunded."""
    interrupted = (JobStatus.INTERRUPTED.value, *row[10:12], finished, _INTERRUPTED_ERROR)
    return _job((*row[:9], *interrupted, row[14]))


def _separation(mode: Mode, stems: str, issued: str) -> Separation:
    issued_at = parse_stamp(issued)
    assert issued_at is not None
    stored = tuple(Stem(name=s["name"], url=s["url"]) for s in json.loads(stems))
    return Separation(mode=mode, stems=stored, issued_at=issued_at)


_LIMIT_COLUMNS = {
    "daily": "daily_limit",
    "monthly": "monthly_limit",
    "per_user": "user_daily_limit",
    "active_jobs": "user_active_jobs",
}


def _is_busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(error).lower()
    return "locked" in text or "busy" in text


@contextmanager
def _busy_is_retryable() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as error:
        if _is_busy(error):
            raise StoreBusyError() from error
        raise


@contextmanager
def _write_failures_explained() -> Iterator[None]:
    """A write the database refuses for a reason other than busy becomes StoreFailedError.

    Constraint violations are not among them: they are bugs, and stay as they are.
    """
    try:
        yield
    except sqlite3.IntegrityError:
        raise
    except sqlite3.DatabaseError as error:
        if isinstance(error, sqlite3.OperationalError) and _is_busy(error):
            raise
        log.error("the database refused a write: %s: %s", type(error).__name__, error)
        raise StoreFailedError() from error


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file ``path`` names now (device, inode); None when there is none."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


class Store:
    """The ledger. One instance (one connection) per process; calls are short and synchronous."""

    def __init__(
        self,
        db: Database,
        policy: QuotaPolicy,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        *,
        path: Path | None = None,
    ) -> None:
        self._db = db
        self._policy = policy
        self._busy_timeout_ms = max(0, round(busy_timeout_s * 1000))
        self._repeats = _RecentInteractions()
        # The file this connection opened: a write goes nowhere else (see file_problem).
        self._path = path
        self._opened = None if path is None else _identity(path)
        # Where exports read from, on connections of their own.
        self._file = Path(db.execute("PRAGMA database_list").fetchone()[2])

    @classmethod
    def open(
        cls, path: Path, policy: QuotaPolicy, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
    ) -> Store:
        """Open (creating if needed) the database: WAL, synchronous=FULL, migrations applied."""
        try:
            conn = sqlite3.connect(str(path), timeout=busy_timeout_s)
        except sqlite3.Error as error:
            raise StoreUnavailableError(f"cannot use the database at {path}: {error}") from error
        try:
            db = Database(conn, execute_plugins=False)
            with _busy_is_retryable():
                _prepare(db)
        except sqlite3.DatabaseError as error:
            conn.close()
            raise StoreUnavailableError(f"cannot use the database at {path}: {error}") from error
        except BaseException:
            conn.close()
            raise
        return cls(db, policy, busy_timeout_s, path=path)

    def close(self) -> None:
        self._db.close()

    def file_problem(self) -> str | None:
        """What happened to the database file since it was opened, if anything; one stat.

        SQLite keeps writing to a deleted or replaced file through the open handle, so without
        this check the ledger would silently go on in a file nobody can see or reopen.
        """
        if self._path is None or self._opened is None:
            return None
        try:
            now = _identity(self._path)
        except OSError as error:
            return f"the database file {self._path} can no longer be reached ({error.strerror})"
        if now == self._opened:
            return None
        if now is None:
            return f"the database file {self._path} was deleted"
        return f"the database file {self._path} was replaced by another file"

    @property
    def policy(self) -> QuotaPolicy:
        """The default limits and the cost of each mode."""
        return self._policy

    # --- transactions -------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[None]:
        """A write transaction that holds the write lock from its first statement."""
        problem = self.file_problem()
        if problem is not None:
            raise DatabaseReplacedError() from StoreFailedError(problem)
        with _busy_is_retryable(), _write_failures_explained():
            self._begin_immediate()
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                self._db.rollback()
                raise

    def _begin_immediate(self) -> None:
        """Take the write lock, polling every millisecond or so until the busy timeout.

        SQLite's own busy handler backs off to 100 ms sleeps, so a process waiting on a busy
        writer can miss every short gap between its transactions for seconds (measured here
        with two processes: waits of 0.8-2.9 s). Polling often shares the lock fairly.
        """
        self._db.execute("PRAGMA busy_timeout = 0")
        try:
            deadline = time.monotonic() + self._busy_timeout_ms / 1000
            pause = _FIRST_PAUSE_S
            while True:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as error:
                    if not _is_busy(error) or time.monotonic() >= deadline:
                        raise
                time.sleep(random.uniform(0, pause))
                pause = min(pause * 2, _LONGEST_PAUSE_S)
        finally:
            self._db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")

    @contextmanager
    def _read(self) -> Iterator[None]:
        """One consistent snapshot for several reads."""
        with _busy_is_retryable():
            self._db.execute("BEGIN")
            try:
                yield
            finally:
                self._db.rollback()

    def _one(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> Any:
        return self._db.execute(sql, params).fetchone()

    # --- requests -----------------------------------------------------------------------

    def reserve(self, request: JobRequest, now: datetime) -> Job:
        """Check every limit and record the queued job, in one write transaction.

        Raises DuplicateRequestError for an interaction id already in the ledger,
        QuotaLimitReached (a QuotaExceededError) naming the binding limit, StoreBusyError.
        """
        return self._reserve(request, now, paid=True, status=JobStatus.QUEUED)

    def reserve_joined(self, request: JobRequest, now: datetime, *, running: bool) -> Job:
        """Record a request that joins an identical one already queued or ``running``: cost 0.

        The limits that do not depend on cost still hold (a switched-off server, the member's
        cap on active requests); the first requester pays for the shared call.
        """
        status = JobStatus.RUNNING if running else JobStatus.QUEUED
        return self._reserve(request, now, paid=False, status=status)

    def _reserve(self, request: JobRequest, now: datetime, *, paid: bool, status: JobStatus) -> Job:
        """``reserve`` (``paid``: its cost, the daily budget, an API call) or ``reserve_joined``."""
        cost = self._policy.cost_of(request.mode) if paid else 0
        with self._write():
            seen = self._snapshot(
                request.guild_id, request.user_id, request.interaction_id, now, request.role_ids
            )
            if seen.duplicate or request.interaction_id in self._repeats:
                raise DuplicateRequestError()
            enforce(seen, cost, now)
            if paid:
                self._enforce_budget(now)
            job = self._insert(request, cost, status, now)
            if paid:
                self._db.execute(
                    "INSERT INTO api_calls (job_id, guild_id, day, reserved_at) "
                    "VALUES (?, ?, ?, ?)",
                    (job.id, job.guild_id, utc(now).date().isoformat(), stamp(now)),
                )
            return job

    def check_limits(
        self,
        guild_id: int,
        user_id: int,
        role_ids: Sequence[int],
        cost: int | None,
        now: datetime,
    ) -> None:
        """Raise QuotaLimitReached if a request would be refused; reads only, writes nothing.

        ``cost`` None: the request would join a call or reuse a result (no units, no API call),
        so only the limits that do not depend on cost apply. A precheck: ``reserve`` decides.
        """
        with self._read():
            seen = self._snapshot(guild_id, user_id, None, now, role_ids)
            enforce(seen, cost or 0, now)
            if cost is not None:
                self._enforce_budget(now)

    def _enforce_budget(self, now: datetime) -> None:
        budget = self._policy.api_daily_budget
        if budget is not None:
            quota_rules.enforce_budget(budget, self._calls_on(utc(now).date()), now)

    def _calls_on(self, day: date) -> int:
        return int(
            self._one(
                "SELECT coalesce(sum(calls), 0) FROM api_call_days WHERE day = ?",
                (day.isoformat(),),
            )[0]
        )

    def api_calls_today(self, now: datetime) -> int:
        """Paid API calls made or reserved on the UTC day of ``now``, across all servers."""
        with _busy_is_retryable():
            return self._calls_on(utc(now).date())

    def claim_budget_notice(self, now: datetime) -> bool:
        """Remember that the operator was told the day's budget is spent; True the first time."""
        with self._write():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO budget_notices (day, sent_at) VALUES (?, ?)",
                (utc(now).date().isoformat(), stamp(now)),
            )
        return cursor.rowcount == 1

    def hand_over_charge(
        self, payer_id: int, heirs: Sequence[tuple[int, Sequence[int]]], now: datetime
    ) -> tuple[int, bool] | None:
        """The payer of a shared call cancels: refund it and pass its charge on, in one
        transaction, so the shared call is paid for exactly once whatever happens.

        ``heirs`` are the other requests of the call, in the order they asked, each with its
        member's role ids. The first whose member has room for the cost in their own daily
        allowance takes the charge. If none has, the first takes it on the server's account
        alone (``member_pays`` = 0): it counts against the server's limits but no member's.
        Returns (the heir's job id, whether its member pays), or None (nothing changed) unless
        the payer and an heir are still active.
        """
        active = (
            "SELECT cost, guild_id, user_id FROM requests "
            "WHERE id = ? AND status IN ('queued', 'running')"
        )
        with self._write():
            payer = self._one(active, (payer_id,))
            if payer is None:
                return None
            cost, guild_id = payer[0], payer[1]
            candidates = [
                (heir_id, row[2], roles)
                for heir_id, roles in heirs
                if (row := self._one(active, (heir_id,))) is not None and row[1] == guild_id
            ]
            if not candidates:
                return None
            chosen, member_pays = candidates[0][0], False
            for heir_id, user_id, roles in candidates:
                seen = self._snapshot(guild_id, user_id, None, now, roles)
                if quota_rules.member_has_room(seen, cost):
                    chosen, member_pays = heir_id, True
                    break
            self._db.execute(
                "UPDATE requests SET cost = ?, member_pays = ? WHERE id = ?",
                (cost, int(member_pays), chosen),
            )
            # The call moves first: cancelling a queued payer drops its row (the trigger).
            self._db.execute("UPDATE api_calls SET job_id = ? WHERE job_id = ?", (chosen, payer_id))
            self._db.execute(
                "UPDATE requests SET status = 'cancelled', finished_at = ?, error = ? WHERE id = ?",
                (stamp(now), "cancelled by the requester", payer_id),
            )
        return chosen, member_pays

    def record_free(self, request: JobRequest, separation: Separation, now: datetime) -> Job:
        """Record a request answered from a stored or shared result: cost 0, succeeded.

        A member's free repeats of one source and mode in one channel share one row per UTC
        day (its ``request_count`` goes up, its finish time is the latest), so repeating a
        stored result cannot grow the ledger without bound. Their interaction ids are
        remembered for as long as Discord can deliver one again, so a duplicate is still
        refused.
        """
        if separation.mode is not request.mode:
            raise ValueError("the separation's mode does not match the request's")
        with self._write():
            self._refuse_duplicate(request.interaction_id)
            earlier = self._todays_free_row(request, now)
            if earlier is None:
                return self._insert(request, 0, JobStatus.SUCCEEDED, now)
            self._db.execute(
                "UPDATE requests SET request_count = request_count + 1, finished_at = ? "
                "WHERE id = ?",
                (stamp(now), earlier),
            )
            self._repeats.remember(request.interaction_id, now)
            return _job(self._one(_SELECT_JOB, (earlier,)))

    def _todays_free_row(self, request: JobRequest, now: datetime) -> int | None:
        day, day_end, _, _ = window_stamps(utc(now).date())
        row = self._one(
            "SELECT id FROM requests INDEXED BY requests_free_repeats "
            "WHERE guild_id = ? AND user_id = ? AND channel_id = ? AND source_key = ? "
            "AND mode = ? AND created_at >= ? AND created_at < ? "
            "AND cost = 0 AND status = 'succeeded' ORDER BY created_at LIMIT 1",
            (
                request.guild_id,
                request.user_id,
                request.channel_id,
                request.source_key,
                request.mode.value,
                day,
                day_end,
            ),
        )
        return None if row is None else int(row[0])

    def mark_all_running(self, job_ids: Sequence[int], now: datetime) -> int:
        """queued -> running for every job sharing one call; how many changed.

        The call counts against the budget of the day it is made.
        """
        ids = json.dumps(list(job_ids))
        with self._write():
            cursor = self._db.execute(
                "UPDATE requests SET status = 'running', started_at = ? "
                "WHERE status = 'queued' AND id IN (SELECT value FROM json_each(?))",
                (stamp(now), ids),
            )
            changed = cursor.rowcount
            self._db.execute(
                "UPDATE api_calls SET made_at = ?, day = ? "
                "WHERE made_at IS NULL AND job_id IN (SELECT value FROM json_each(?))",
                (stamp(now), utc(now).date().isoformat(), ids),
            )
        return changed

    def settle_joined(self, job_ids: Sequence[int], now: datetime) -> int:
        """Mark requests that shared a settled call succeeded (they cost nothing)."""
        if not job_ids:
            return 0
        with self._write():
            cursor = self._db.execute(
                "UPDATE requests SET status = 'succeeded', finished_at = ? "
                "WHERE status IN ('queued', 'running') AND id IN (SELECT value FROM json_each(?))",
                (stamp(now), json.dumps(list(job_ids))),
            )
        return cursor.rowcount

    def refund_all(
        self, job_ids: Sequence[int], status: JobStatus, error: str, now: datetime
    ) -> int:
        """End active jobs as failed/cancelled/interrupted, freeing their units, in one
        transaction; how many it ended. A job already ended (or unknown) changes nothing, so
        each is refunded once."""
        if status not in _REFUND_STATUSES:
            raise ValueError(
                f"a refund ends a job as failed, cancelled or interrupted, not {status}"
            )
        if not job_ids:
            return 0
        with self._write():
            cursor = self._db.execute(
                "UPDATE requests SET status = ?, finished_at = ?, error = ? "
                "WHERE status IN ('queued', 'running') AND id IN (SELECT value FROM json_each(?))",
                (status.value, stamp(now), error[:_MAX_ERROR_CHARS], json.dumps(list(job_ids))),
            )
        return cursor.rowcount

    def refund(self, job_id: int, status: JobStatus, error: str, now: datetime) -> bool:
        """``refund_all`` of one job: True only for the call that refunded it."""
        return self.refund_all([job_id], status, error, now) == 1

    def settle(self, job_id: int, separation: Separation, source_key: str, now: datetime) -> bool:
        """Mark the job succeeded (its charge stands) and store the result for reuse.

        Returns False, storing the result all the same, when the job was no longer active
        (already refunded: it stays refunded) or is unknown.
        """
        stems = json.dumps([{"name": s.name, "url": s.url} for s in separation.stems])
        with self._write():
            cursor = self._db.execute(
                "UPDATE requests SET status = 'succeeded', finished_at = ? "
                "WHERE id = ? AND status IN ('queued', 'running')",
                (stamp(now), job_id),
            )
            self._db.execute(
                "INSERT INTO results (source_key, mode, stems, issued_at, job_id) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (source_key, mode) DO UPDATE SET "
                "stems = excluded.stems, issued_at = excluded.issued_at, job_id = excluded.job_id",
                (source_key, separation.mode.value, stems, stamp(separation.issued_at), job_id),
            )
        if cursor.rowcount != 1:
            log.warning("job %s settled but was not active; its ledger row is unchanged", job_id)
        return cursor.rowcount == 1

    def refund_by_moderator(self, job_id: int, guild_id: int, now: datetime) -> bool:
        """Give back the units of a finished, charged request of this guild (bad stems, say).

        The row becomes 'cancelled' with the refund noted in its error column; its finish time
        stays. True only for the call that refunded it: a second call, a request of another
        guild, an active, free or already refunded one change nothing. The stored result of
        that request is forgotten too, so the next request for the source calls the API again
        instead of handing out the same refunded stems for free.
        """
        note = f"refunded by a moderator at {iso_seconds(stamp(now))}"
        with self._write():
            cursor = self._db.execute(
                "UPDATE requests SET status = 'cancelled', error = ?, refunded_by_moderator = 1 "
                "WHERE id = ? AND guild_id = ? AND status = 'succeeded' AND cost > 0",
                (note, job_id, guild_id),
            )
            if cursor.rowcount == 1:
                self._db.execute("DELETE FROM results WHERE job_id = ?", (job_id,))
        return cursor.rowcount == 1

    def record_deliveries(self, deliveries: Sequence[tuple[int, str]], now: datetime) -> int:
        """Note where each request's answer went (see 0003_deliveries); the first note stands."""
        if not deliveries:
            return 0
        delivered = stamp(now)
        with self._write():
            cursor = self._db.conn.executemany(
                "UPDATE requests SET delivered_at = ?, delivered_via = ? "
                "WHERE id = ? AND delivered_at IS NULL",
                [(delivered, via, job_id) for job_id, via in deliveries],
            )
        return cursor.rowcount

    def recover(self, now: datetime) -> Recovery:
        """What a stopped bot left owing, settled in one transaction at start-up.

        A request still queued or running whose call finished (a result for its source and
        mode issued after it was made: it shared a call that was settled) succeeded. Every
        other queued or running one is interrupted and refunded. Every succeeded request
        whose answer never reached Discord is returned with its stored result, to be delivered
        (it stays charged); one whose result is no longer stored is refunded as interrupted.
        """
        finished = stamp(now)
        with self._write():
            self._db.execute(
                "UPDATE requests SET status = 'succeeded', finished_at = ? "
                "WHERE status IN ('queued', 'running') AND EXISTS (SELECT 1 FROM results AS r "
                "WHERE r.source_key = requests.source_key AND r.mode = requests.mode "
                "AND r.issued_at >= requests.created_at)",
                (finished,),
            )
            interrupted = self._interrupt_active(finished)
            owed = self._db.execute(_SELECT_UNDELIVERED).fetchall()
            undelivered: list[tuple[Job, Separation]] = []
            lost: list[int] = []
            for row in owed:
                job = _job(row)
                if row[-2] is None:
                    lost.append(job.id)
                    interrupted.append(_interrupted(row, finished))
                else:
                    undelivered.append((job, _separation(job.mode, row[-2], row[-1])))
            self._db.conn.executemany(
                "UPDATE requests SET status = 'interrupted', finished_at = ?, error = ? "
                "WHERE id = ?",
                [(finished, _INTERRUPTED_ERROR, job_id) for job_id in lost],
            )
        return Recovery(interrupted, undelivered)

    def _interrupt_active(self, finished: str) -> list[Job]:
        rows = self._db.execute(_SELECT_ACTIVE).fetchall()
        self._db.execute(
            "UPDATE requests SET status = 'interrupted', finished_at = ?, error = ? "
            "WHERE status IN ('queued', 'running')",
            (finished, _INTERRUPTED_ERROR),
        )
        return [_interrupted(row, finished) for row in rows]

    def get_job(self, job_id: int) -> Job | None:
        with _busy_is_retryable():
            row = self._one(_SELECT_JOB, (job_id,))
        return None if row is None else _job(row)

    def find_result(self, source_key: str, mode: Mode, issued_after: datetime) -> Separation | None:
        """The stored result for this source and mode, if issued after ``issued_after``."""
        with _busy_is_retryable():
            row = self._one(
                "SELECT stems, issued_at FROM results "
                "WHERE source_key = ? AND mode = ? AND issued_at > ?",
                (source_key, mode.value, stamp(issued_after)),
            )
        return None if row is None else _separation(mode, row[0], row[1])

    def _refuse_duplicate(self, interaction_id: int) -> None:
        if interaction_id in self._repeats or self._one(
            "SELECT 1 FROM requests WHERE interaction_id = ?", (interaction_id,)
        ):
            raise DuplicateRequestError()

    def _insert(self, request: JobRequest, cost: int, status: JobStatus, now: datetime) -> Job:
        created = stamp(now)
        finished = None if status.is_active else created
        cursor = self._db.execute(
            _INSERT_REQUEST,
            (
                request.interaction_id,
                request.guild_id,
                request.channel_id,
                request.user_id,
                request.mode.value,
                request.source_name,
                request.source_key,
                cost,
                status.value,
                created,
                finished,
            ),
        )
        job_id = cursor.lastrowid
        assert job_id is not None
        return _job(
            (
                job_id,
                request.guild_id,
                request.channel_id,
                request.user_id,
                request.interaction_id,
                request.mode.value,
                request.source_name,
                request.source_key,
                cost,
                status.value,
                created,
                None,
                finished,
                None,
                False,
            )
        )

    def _snapshot(
        self,
        guild_id: int,
        user_id: int | None,
        interaction_id: int | None,
        now: datetime,
        role_ids: Sequence[int] = (),
    ) -> Snapshot:
        day, day_end, month, month_end = window_stamps(utc(now).date())
        row = self._one(
            _SNAPSHOT,
            {
                "interaction": interaction_id,
                "guild": guild_id,
                "user": user_id,
                "day": day,
                "day_end": day_end,
                "month": month,
                "month_end": month_end,
                "roles": json.dumps(list(role_ids)),
            },
        )
        limits = quota_rules.effective_limits(self._policy, row[1:5])
        role_allowance = row[9]
        return Snapshot(
            duplicate=row[0] > 0,
            limits=limits,
            today=row[5],
            month=row[6],
            user_today=row[7],
            user_active=row[8],
            member_limit=quota_rules.member_limit(limits, role_allowance),
            limit_from_role=role_allowance is not None,
        )

    # --- quotas -------------------------------------------------------------------------

    def quota_status(
        self,
        guild_id: int,
        user_id: int | None,
        now: datetime,
        role_ids: Sequence[int] = (),
    ) -> QuotaStatus:
        """Used, limit, remaining and reset time of the guild's windows (and the user's)."""
        budget = self._policy.api_daily_budget
        with self._read():
            seen = self._snapshot(guild_id, user_id, None, now, role_ids)
            budget_spent = budget is not None and self._calls_on(utc(now).date()) >= budget
        return quota_rules.quota_status(
            seen, with_member=user_id is not None, now=now, budget_spent=budget_spent
        )

    def guild_limits(self, guild_id: int) -> GuildLimits:
        """The guild's effective limits: a moderator's override, else the policy's default."""
        with _busy_is_retryable():
            return self._limits(guild_id)

    def _limits(self, guild_id: int) -> GuildLimits:
        row = self._one(
            "SELECT daily_limit, monthly_limit, user_daily_limit, user_active_jobs "
            "FROM guild_settings WHERE guild_id = ?",
            (guild_id,),
        )
        roles = self._db.execute(
            "SELECT role_id, per_user FROM role_allowances WHERE guild_id = ? "
            "ORDER BY per_user DESC, role_id",
            (guild_id,),
        ).fetchall()
        limits = quota_rules.effective_limits(self._policy, row or (None, None, None, None))
        return dataclasses.replace(limits, role_allowances=tuple((r[0], r[1]) for r in roles))

    def reset_limits(self, guild_id: int, names: Sequence[str]) -> GuildLimits:
        """Drop the guild's overrides of ``names`` (daily, monthly, per_user, active_jobs):
        those limits are the defaults again. Returns the limits now in force."""
        unknown = set(names) - set(_LIMIT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown limits: {sorted(unknown)}")
        with self._write():
            for name in names:
                # The column name comes from the constant table above, never from input.
                self._db.execute(
                    f"UPDATE guild_settings SET {_LIMIT_COLUMNS[name]} = NULL "  # noqa: S608
                    "WHERE guild_id = ?",
                    (guild_id,),
                )
            return self._limits(guild_id)

    def set_role_allowance(self, guild_id: int, role_id: int, per_user: int | None) -> GuildLimits:
        """Give a role's members their own daily allowance, or (None) remove it."""
        check_limit(per_user, "per_user")
        with self._write():
            if per_user is None:
                self._db.execute(
                    "DELETE FROM role_allowances WHERE guild_id = ? AND role_id = ?",
                    (guild_id, role_id),
                )
            else:
                self._db.execute(
                    "INSERT INTO role_allowances (guild_id, role_id, per_user) VALUES (?, ?, ?) "
                    "ON CONFLICT (guild_id, role_id) DO UPDATE SET per_user = excluded.per_user",
                    (guild_id, role_id, per_user),
                )
            return self._limits(guild_id)

    def set_limits(
        self,
        guild_id: int,
        *,
        daily: int | None = None,
        monthly: int | None = None,
        per_user: int | None = None,
        active_jobs: int | None = None,
    ) -> GuildLimits:
        """Override some of a guild's limits (None leaves one as it is); returns the result."""
        for value, name in (
            (daily, "daily"),
            (monthly, "monthly"),
            (per_user, "per_user"),
            (active_jobs, "active_jobs"),
        ):
            check_limit(value, name)
        with self._write():
            self._db.execute(
                "INSERT INTO guild_settings "
                "(guild_id, daily_limit, monthly_limit, user_daily_limit, user_active_jobs) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (guild_id) DO UPDATE SET "
                "daily_limit = coalesce(excluded.daily_limit, daily_limit), "
                "monthly_limit = coalesce(excluded.monthly_limit, monthly_limit), "
                "user_daily_limit = coalesce(excluded.user_daily_limit, user_daily_limit), "
                "user_active_jobs = coalesce(excluded.user_active_jobs, user_active_jobs)",
                (guild_id, daily, monthly, per_user, active_jobs),
            )
            return self._limits(guild_id)

    def set_log_channel(self, guild_id: int, channel_id: int | None) -> None:
        """Where moderators' notices for this guild go; None turns them off."""
        with self._write():
            self._db.execute(
                "INSERT INTO guild_settings (guild_id, log_channel_id) VALUES (?, ?) "
                "ON CONFLICT (guild_id) DO UPDATE SET log_channel_id = excluded.log_channel_id",
                (guild_id, channel_id),
            )

    def log_channel(self, guild_id: int) -> int | None:
        with _busy_is_retryable():
            row = self._one(
                "SELECT log_channel_id FROM guild_settings WHERE guild_id = ?", (guild_id,)
            )
        return None if row is None else row[0]

    def claim_alert(
        self, guild_id: int, period: str, period_start: datetime, threshold: int, now: datetime
    ) -> bool:
        """Remember that a quota alert was sent; True only the first time for that window."""
        if period not in ALERT_PERIODS:
            raise ValueError(f"period must be one of {ALERT_PERIODS}")
        with self._write():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO quota_alerts "
                "(guild_id, period, period_start, threshold, sent_at) VALUES (?, ?, ?, ?, ?)",
                (guild_id, period, stamp(period_start), threshold, stamp(now)),
            )
        return cursor.rowcount == 1

    def command_digest(self, scope: str) -> str | None:
        """The digest of the slash commands last synced for ``scope`` (global or a guild)."""
        with _busy_is_retryable():
            row = self._one("SELECT digest FROM command_digests WHERE scope = ?", (scope,))
        return None if row is None else str(row[0])

    def remember_command_digest(self, scope: str, digest: str) -> None:
        with self._write():
            self._db.execute(
                "INSERT INTO command_digests (scope, digest) VALUES (?, ?) "
                "ON CONFLICT (scope) DO UPDATE SET digest = excluded.digest",
                (scope, digest),
            )

    # --- reports ------------------------------------------------------------------------

    def usage_report(
        self, guild_id: int, since: datetime, until: datetime, *, top: int = 10
    ) -> UsageReport:
        """Requests made in ``[since, until)``: totals, by user, by mode, by UTC day."""
        window = (guild_id, stamp(since), stamp(until))
        with self._read():
            grouped = (
                self._grouped("user_id", window, charged=_MEMBER_CHARGED),
                self._grouped("mode", window),
                self._grouped("substr(created_at, 1, 10)", window),
            )
        return reports.usage_report(guild_id, since, until, grouped, top=top)

    def _grouped(
        self, key: str, window: tuple[int, str, str], *, charged: str = _CHARGED
    ) -> list[Any]:
        # ``key`` and ``charged`` are constant expressions chosen above, never user input.
        sql = (
            f"SELECT {key} AS k, sum(request_count), coalesce(sum({charged}), 0), "  # noqa: S608
            f"coalesce(sum({_REFUNDED}), 0) FROM requests "
            "WHERE guild_id = ? AND created_at >= ? AND created_at < ? GROUP BY k ORDER BY k"
        )
        return self._db.execute(sql, window).fetchall()

    def spend_by_day(self, since: datetime, until: datetime) -> list[DailySpend]:
        """Paid API calls and units charged per UTC day and server in ``[since, until)``,
        across all servers: the operator's view of what the bot spends."""
        first, last = utc(since).date().isoformat(), utc(until).date().isoformat()
        with self._read():
            calls = self._db.execute(
                "SELECT day, guild_id, count(*) FROM api_calls "
                "WHERE day >= ? AND day <= ? GROUP BY day, guild_id",
                (first, last),
            ).fetchall()
            units = self._db.execute(
                f"SELECT substr(created_at, 1, 10) AS day, guild_id, sum({_CHARGED}) "  # noqa: S608
                "FROM requests WHERE created_at >= ? AND created_at < ? "
                "GROUP BY day, guild_id",
                (stamp(since), stamp(until)),
            ).fetchall()
        return reports.daily_spend(calls, units)

    def stream_ledger(
        self, guild_id: int, since: datetime, until: datetime, out: TextIO
    ) -> LedgerCount:
        """Write the guild's ledger rows in ``[since, until)`` as CSV, page by page, on a read
        connection of its own: call it from a thread.

        In WAL mode a reader never blocks the bot's writer (nor waits for it), so a long
        export stalls nobody, and it sees one consistent snapshot of the ledger.
        """
        with _reader(self._file) as conn:
            cursor = conn.execute(_SELECT_EXPORT, (guild_id, stamp(since), stamp(until)))
            return write_ledger(iter(lambda: cursor.fetchmany(_EXPORT_PAGE_ROWS), []), out)

    def ledger_days(
        self, guild_id: int, since: datetime, until: datetime
    ) -> list[tuple[date, int]]:
        """How many rows the guild's ledger holds on each UTC day of ``[since, until)``.

        Like ``stream_ledger``, on a connection of its own: call it from a thread.
        """
        with _reader(self._file) as conn:
            rows = conn.execute(
                "SELECT substr(created_at, 1, 10) AS day, count(*) FROM requests "
                "WHERE guild_id = ? AND created_at >= ? AND created_at < ? "
                "GROUP BY day ORDER BY day",
                (guild_id, stamp(since), stamp(until)),
            ).fetchall()
        return [(date.fromisoformat(day), count) for day, count in rows]

    # --- retention ----------------------------------------------------------------------

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
            self._file,
            before,
            stop=stop,
            batch=batch,
            pause_s=pause_s,
            busy_timeout_s=self._busy_timeout_ms / 1000,
        )


_EXPORT_PAGE_ROWS = 1000
# In the index's order (guild, time, then rowid), so no sort of the whole period is needed.
_SELECT_EXPORT = """
SELECT id, created_at, finished_at, guild_id, channel_id, user_id, interaction_id, mode,
       source_name, source_key, cost, status, error, request_count, member_pays
FROM requests INDEXED BY requests_guild_time
WHERE guild_id = ? AND created_at >= ? AND created_at < ?
ORDER BY created_at, id
"""


@contextmanager
def _reader(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection holding one snapshot; closed afterwards."""
    with _busy_is_retryable():
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            conn.execute("BEGIN")
            yield conn
        finally:
            conn.close()


def _prepare(db: Database) -> None:
    db.enable_wal()
    if db.journal_mode != "wal":
        raise sqlite3.OperationalError("the database cannot use WAL mode")
    db.execute("PRAGMA synchronous = FULL")
    # The write lock serialises two processes starting at once: migrations run once.
    db.execute("BEGIN IMMEDIATE")
    try:
        MIGRATIONS.apply(db)
        db.execute("COMMIT")
    except BaseException:
        db.rollback()
        raise


class _RecentInteractions:
    """Interaction ids of free repeats that share an earlier row, for as long as Discord may
    deliver one again (its token lives 15 minutes); older ones are forgotten."""

    _KEEP = timedelta(minutes=20)

    def __init__(self) -> None:
        self._seen: dict[int, datetime] = {}

    def remember(self, interaction_id: int, now: datetime) -> None:
        horizon = now - self._KEEP
        # Insertion order is time order: the oldest come first.
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if at >= horizon:
                break
            del self._seen[oldest]
        self._seen[interaction_id] = now

    def __contains__(self, interaction_id: object) -> bool:
        return interaction_id in self._seen
