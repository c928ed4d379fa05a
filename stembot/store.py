"""The usage ledger, quotas and stored results in SQLite; the only user of sqlite-utils.

One row of ``requests`` per request is both the ledger entry and the job's state. Quota used
in a window is derived from that ledger (the cost of requests that were not refunded), never
kept as a separate counter, so the money and the jobs cannot drift apart.

Every check-then-write runs in ``BEGIN IMMEDIATE``: in WAL mode a deferred transaction that
reads and then writes fails at once with "database is locked" when another connection
committed in between, whatever the busy timeout (see ../shared/design.md).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from stembot.config import QuotaPolicy
from stembot.errors import (
    DatabaseReplacedError,
    DuplicateRequestError,
    QuotaExceededError,
    StembotError,
    StoreBusyError,
    StoreFailedError,
)
from stembot.models import (
    DailySpend,
    GuildLimits,
    Job,
    JobRequest,
    JobStatus,
    Mode,
    QuotaLimit,
    QuotaStatus,
    Recovery,
    Separation,
    Stem,
    UsageLine,
    UsageReport,
    WindowStatus,
)
from stembot.source_urls import hashed_url_key, without_query

log = logging.getLogger(__name__)

# Largest limit a moderator or operator may set; far above any real budget, well inside int64.
MAX_LIMIT = 1_000_000_000
DEFAULT_BUSY_TIMEOUT_S = 5.0
_MAX_ERROR_CHARS = 1000
_FIRST_PAUSE_S = 0.0002
_LONGEST_PAUSE_S = 0.002
# Retention deletes this many rows per write transaction (a few ms), then lets others write.
PRUNE_BATCH_ROWS = 500
_PRUNE_PAUSE_S = 0.005
_REFUND_STATUSES = (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED)
_INTERRUPTED_ERROR = "stembot stopped while this request was in progress"
# Where the 80% / 100% quota alerts of the moderators' work will be remembered.
ALERT_PERIODS = ("day", "month")

MIGRATIONS = Migrations("stembot")


@MIGRATIONS(name="0001_ledger")
def _create_ledger(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE guild_settings (
            guild_id INTEGER PRIMARY KEY,
            daily_limit INTEGER CHECK (daily_limit >= 0),
            monthly_limit INTEGER CHECK (monthly_limit >= 0),
            user_daily_limit INTEGER CHECK (user_daily_limit >= 0),
            user_active_jobs INTEGER CHECK (user_active_jobs >= 0),
            log_channel_id INTEGER
        ) STRICT;

        CREATE TABLE requests (
            id INTEGER PRIMARY KEY,
            interaction_id INTEGER NOT NULL UNIQUE,
            guild_id INTEGER NOT NULL,
            channel_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            mode TEXT NOT NULL,
            source_name TEXT NOT NULL,
            source_key TEXT NOT NULL,
            cost INTEGER NOT NULL CHECK (cost >= 0),
            status TEXT NOT NULL CHECK (status IN
                ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            error TEXT
        ) STRICT;
        -- Usage is summed from these partial covering indexes alone. They hold only rows
        -- that are charged, so a check reads at most as many entries as the limit has units.
        -- (status is a column only so that SQLite treats them as covering.)
        CREATE INDEX requests_charged ON requests (guild_id, created_at, cost, status)
            WHERE cost > 0 AND status IN ('queued', 'running', 'succeeded');
        CREATE INDEX requests_user_charged
            ON requests (guild_id, user_id, created_at, cost, status)
            WHERE cost > 0 AND status IN ('queued', 'running', 'succeeded');
        CREATE INDEX requests_active ON requests (guild_id, user_id)
            WHERE status IN ('queued', 'running');
        -- Reports and exports.
        CREATE INDEX requests_guild_time ON requests (guild_id, created_at);

        CREATE TABLE results (
            source_key TEXT NOT NULL,
            mode TEXT NOT NULL,
            stems TEXT NOT NULL,
            issued_at TEXT NOT NULL,
            job_id INTEGER NOT NULL,
            PRIMARY KEY (source_key, mode)
        ) STRICT, WITHOUT ROWID;

        CREATE TABLE quota_alerts (
            guild_id INTEGER NOT NULL,
            period TEXT NOT NULL CHECK (period IN ('day', 'month')),
            period_start TEXT NOT NULL,
            threshold INTEGER NOT NULL,
            sent_at TEXT NOT NULL,
            PRIMARY KEY (guild_id, period, period_start, threshold)
        ) STRICT, WITHOUT ROWID;
        """
    )


@MIGRATIONS(name="0002_command_digests")
def _create_command_digests(db: Database) -> None:
    db.execute("CREATE TABLE command_digests (scope TEXT PRIMARY KEY, digest TEXT NOT NULL) STRICT")


@MIGRATIONS(name="0003_deliveries")
def _record_deliveries(db: Database) -> None:
    """Where and when each request's answer reached Discord, so that a start-up after a crash
    knows which succeeded requests still owe their requester the result.

    ``delivered_via``: interaction, channel, dm, nowhere (every route refused; the result stays
    stored for a free repeat), or unrecorded (answered before this was kept).
    """
    db.execute("ALTER TABLE requests ADD COLUMN delivered_at TEXT")
    db.execute("ALTER TABLE requests ADD COLUMN delivered_via TEXT")
    db.execute(
        "UPDATE requests SET delivered_at = finished_at, delivered_via = 'unrecorded' "
        "WHERE status = 'succeeded'"
    )
    db.execute(
        "CREATE INDEX requests_undelivered ON requests (id) "
        "WHERE status = 'succeeded' AND delivered_at IS NULL"
    )


@MIGRATIONS(name="0004_spend")
def _create_spend(db: Database) -> None:
    db.executescript(
        """
        -- 0 when the server alone carries a request's charge (a shared call handed over to a
        -- requester with no room left): the member's own daily sum leaves it out.
        ALTER TABLE requests ADD COLUMN member_pays INTEGER NOT NULL DEFAULT 1
            CHECK (member_pays IN (0, 1));

        CREATE TABLE role_allowances (
            guild_id INTEGER NOT NULL,
            role_id INTEGER NOT NULL,
            per_user INTEGER NOT NULL CHECK (per_user >= 0),
            PRIMARY KEY (guild_id, role_id)
        ) STRICT, WITHOUT ROWID;

        -- One row per paid API call, from its reservation: the bot-wide daily budget counts
        -- them. made_at is set when the call goes out (and day becomes that day); one that
        -- never did (cancelled or interrupted while still queued) is deleted by a trigger,
        -- whichever code ends the request.
        CREATE TABLE api_calls (
            job_id INTEGER PRIMARY KEY,
            guild_id INTEGER NOT NULL,
            day TEXT NOT NULL,
            reserved_at TEXT NOT NULL,
            made_at TEXT
        ) STRICT;
        CREATE INDEX api_calls_day ON api_calls (day, guild_id);
        CREATE TRIGGER api_calls_never_made AFTER UPDATE OF status ON requests
            WHEN OLD.status = 'queued' AND NEW.status IN ('cancelled', 'interrupted')
        BEGIN
            DELETE FROM api_calls WHERE job_id = NEW.id AND made_at IS NULL;
        END;

        -- The calls of each day, kept by triggers: a reservation reads one row, not a count.
        CREATE TABLE api_call_days (day TEXT PRIMARY KEY, calls INTEGER NOT NULL) STRICT;
        CREATE TRIGGER api_call_counted AFTER INSERT ON api_calls BEGIN
            INSERT INTO api_call_days (day, calls) VALUES (NEW.day, 1)
                ON CONFLICT (day) DO UPDATE SET calls = calls + 1;
        END;
        CREATE TRIGGER api_call_uncounted AFTER DELETE ON api_calls BEGIN
            UPDATE api_call_days SET calls = calls - 1 WHERE day = OLD.day;
        END;
        CREATE TRIGGER api_call_moved AFTER UPDATE OF day ON api_calls
            WHEN OLD.day <> NEW.day
        BEGIN
            UPDATE api_call_days SET calls = calls - 1 WHERE day = OLD.day;
            INSERT INTO api_call_days (day, calls) VALUES (NEW.day, 1)
                ON CONFLICT (day) DO UPDATE SET calls = calls + 1;
        END;

        -- The day the operator's log was told the budget is spent, once a day.
        CREATE TABLE budget_notices (day TEXT PRIMARY KEY, sent_at TEXT NOT NULL) STRICT;
        """
    )


@MIGRATIONS(name="0005_privacy")
def _privacy(db: Database) -> None:
    """Free repeats share a row (``request_count``); links are kept only as hashes.

    Keys written before were the normalised URL, query included (signed links are
    credentials): each becomes the hash the new code computes for that URL, so stored results
    stay reusable. Names that are links lose their query and fragment.
    """
    db.conn.create_function("stembot_url_key", 1, hashed_url_key, deterministic=True)
    db.conn.create_function("stembot_without_query", 1, without_query, deterministic=True)
    db.executescript(
        """
        ALTER TABLE requests ADD COLUMN request_count INTEGER NOT NULL DEFAULT 1
            CHECK (request_count >= 1);
        CREATE INDEX requests_free_repeats
            ON requests (guild_id, user_id, channel_id, source_key, mode, created_at)
            WHERE cost = 0 AND status = 'succeeded';
        UPDATE requests SET source_key = stembot_url_key(source_key)
            WHERE source_key GLOB 'http*://*';
        UPDATE results SET source_key = stembot_url_key(source_key)
            WHERE source_key GLOB 'http*://*';
        UPDATE requests SET source_name = stembot_without_query(source_name)
            WHERE source_name GLOB '*://*' AND (source_name GLOB '*[?#]*');
        """
    )


class QuotaLimitReached(QuotaExceededError):
    """A QuotaExceededError that also says, for code, which limit refused the request."""

    def __init__(self, limit: QuotaLimit, user_message: str, resets_at: datetime | None) -> None:
        self.limit = limit
        super().__init__(user_message, resets_at)


class StoreUnavailableError(StembotError):
    """The database file cannot be opened or prepared (path, permissions, disk)."""

    default_message = "stembot's database cannot be opened."


# --- time -----------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("the store needs timezone-aware datetimes (UTC)")
    return moment.astimezone(UTC)


def _stamp(moment: datetime) -> str:
    """Fixed-width ISO-8601 UTC text: sorts like the moments it names."""
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _iso_seconds(text: str | None) -> str:
    moment = _parse(text)
    return "" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def day_window(now: datetime) -> tuple[datetime, datetime]:
    """The UTC day holding ``now``: [00:00, next 00:00)."""
    start = _utc(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def month_window(now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month holding ``now``: [the 1st 00:00, next 1st 00:00)."""
    start = _utc(now).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


@functools.lru_cache(maxsize=4)
def _window_stamps(day: date) -> tuple[str, str, str, str]:
    """The stamps bounding the day and the month of ``day`` (cached: every call needs them)."""
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    day_start, day_end = day_window(moment)
    month_start, month_end = month_window(moment)
    return _stamp(day_start), _stamp(day_end), _stamp(month_start), _stamp(month_end)


def _when(resets_at: datetime, now: datetime) -> str:
    left = resets_at - _utc(now)
    hours, rest = divmod(int(left.total_seconds()) + 59, 3600)
    minutes = rest // 60
    wait = f"{hours} h {minutes} min" if hours < 48 else f"{left.days + 1} days"
    return f"{resets_at:%Y-%m-%d %H:%M} UTC (in {wait})"


# --- rows -----------------------------------------------------------------------------------

_JOB_COLUMNS = (
    "id, guild_id, channel_id, user_id, interaction_id, mode, source_name, source_key, "
    "cost, status, created_at, started_at, finished_at, error"
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

CSV_COLUMNS = (
    "request_id",
    "created_at",
    "finished_at",
    "guild_id",
    "channel_id",
    "user_id",
    "interaction_id",
    "mode",
    "source",
    "source_key",
    "cost",
    "charged",
    "status",
    "error",
    "requests",
    # "server" when the server alone carries a handed-over charge (no member's own units).
    "charged_to",
)
# Columns holding Discord ids (snowflakes, up to 19 digits), written so spreadsheets keep them.
CSV_ID_COLUMNS = ("guild_id", "channel_id", "user_id", "interaction_id")


def _job(row: Sequence[Any]) -> Job:
    created_at = _parse(row[10])
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
        started_at=_parse(row[11]),
        finished_at=_parse(row[12]),
        error=row[13],
    )


def _interrupted(row: Sequence[Any], finished: str) -> Job:
    """The job of ``row`` as the start-up left it: interrupted, refunded."""
    return _job((*row[:9], JobStatus.INTERRUPTED.value, *row[10:12], finished, _INTERRUPTED_ERROR))


def _separation(mode: Mode, stems: str, issued: str) -> Separation:
    issued_at = _parse(issued)
    assert issued_at is not None
    stored = tuple(Stem(name=s["name"], url=s["url"]) for s in json.loads(stems))
    return Separation(mode=mode, stems=stored, issued_at=issued_at)


def _spreadsheet_safe(text: str | None) -> str:
    """User-supplied text that a spreadsheet will not run as a formula."""
    if not text:
        return ""
    return "'" + text if text[0] in "=+-@\t\r" else text


_LIMIT_COLUMNS = {
    "daily": "daily_limit",
    "monthly": "monthly_limit",
    "per_user": "user_daily_limit",
    "active_jobs": "user_active_jobs",
}


def _check_limit(value: int | None, name: str) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT
    ):
        raise ValueError(f"{name} must be a whole number from 0 to {MAX_LIMIT}")


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
        cost = self._policy.cost_of(request.mode)
        with self._write():
            seen = self._snapshot(
                request.guild_id, request.user_id, request.interaction_id, now, request.role_ids
            )
            if seen.duplicate or request.interaction_id in self._repeats:
                raise DuplicateRequestError()
            _enforce(seen, cost, now)
            self._enforce_budget(now)
            job = self._insert(request, cost, JobStatus.QUEUED, now)
            self._db.execute(
                "INSERT INTO api_calls (job_id, guild_id, day, reserved_at) VALUES (?, ?, ?, ?)",
                (job.id, job.guild_id, _utc(now).date().isoformat(), _stamp(now)),
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
            _enforce(seen, cost or 0, now)
            if cost is not None:
                self._enforce_budget(now)

    def _enforce_budget(self, now: datetime) -> None:
        budget = self._policy.api_daily_budget
        if budget is not None and self._calls_on(_utc(now).date()) >= budget:
            raise _budget_refusal(budget, now)

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
            return self._calls_on(_utc(now).date())

    def claim_budget_notice(self, now: datetime) -> bool:
        """Remember that the operator was told the day's budget is spent; True the first time."""
        with self._write():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO budget_notices (day, sent_at) VALUES (?, ?)",
                (_utc(now).date().isoformat(), _stamp(now)),
            )
        return cursor.rowcount == 1

    def reserve_joined(self, request: JobRequest, now: datetime, *, running: bool) -> Job:
        """Record a request that joins an identical one already queued or ``running``: cost 0.

        The limits that do not depend on cost still hold (a switched-off server, the member's
        cap on active requests); the first requester pays for the shared call.
        """
        status = JobStatus.RUNNING if running else JobStatus.QUEUED
        with self._write():
            seen = self._snapshot(
                request.guild_id, request.user_id, request.interaction_id, now, request.role_ids
            )
            if seen.duplicate or request.interaction_id in self._repeats:
                raise DuplicateRequestError()
            _enforce(seen, 0, now)
            return self._insert(request, 0, status, now)

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
                if cost == 0 or seen.user_today + cost <= seen.member_limit:
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
                (_stamp(now), "cancelled by the requester", payer_id),
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
                (_stamp(now), earlier),
            )
            self._repeats.remember(request.interaction_id, now)
            return _job(self._one(_SELECT_JOB, (earlier,)))

    def _todays_free_row(self, request: JobRequest, now: datetime) -> int | None:
        day, day_end, _, _ = _window_stamps(_utc(now).date())
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

    def mark_running(self, job_id: int, now: datetime) -> bool:
        """queued -> running; False when the job is not queued (cancelled, unknown, ...)."""
        with self._write():
            cursor = self._db.execute(
                "UPDATE requests SET status = 'running', started_at = ? "
                "WHERE id = ? AND status = 'queued'",
                (_stamp(now), job_id),
            )
        return cursor.rowcount == 1

    def mark_all_running(self, job_ids: Sequence[int], now: datetime) -> int:
        """queued -> running for every job sharing one call; how many changed.

        The call counts against the budget of the day it is made.
        """
        ids = json.dumps(list(job_ids))
        with self._write():
            cursor = self._db.execute(
                "UPDATE requests SET status = 'running', started_at = ? "
                "WHERE status = 'queued' AND id IN (SELECT value FROM json_each(?))",
                (_stamp(now), ids),
            )
            changed = cursor.rowcount
            self._db.execute(
                "UPDATE api_calls SET made_at = ?, day = ? "
                "WHERE made_at IS NULL AND job_id IN (SELECT value FROM json_each(?))",
                (_stamp(now), _utc(now).date().isoformat(), ids),
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
                (_stamp(now), json.dumps(list(job_ids))),
            )
        return cursor.rowcount

    def refund_all(
        self, job_ids: Sequence[int], status: JobStatus, error: str, now: datetime
    ) -> int:
        """``refund`` for every job that shared one call, in one transaction; how many."""
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
                (status.value, _stamp(now), error[:_MAX_ERROR_CHARS], json.dumps(list(job_ids))),
            )
        return cursor.rowcount

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
                (_stamp(now), job_id),
            )
            self._db.execute(
                "INSERT INTO results (source_key, mode, stems, issued_at, job_id) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (source_key, mode) DO UPDATE SET "
                "stems = excluded.stems, issued_at = excluded.issued_at, job_id = excluded.job_id",
                (source_key, separation.mode.value, stems, _stamp(separation.issued_at), job_id),
            )
        if cursor.rowcount != 1:
            log.warning("job %s settled but was not active; its ledger row is unchanged", job_id)
        return cursor.rowcount == 1

    def refund(self, job_id: int, status: JobStatus, error: str, now: datetime) -> bool:
        """End an active job as failed/cancelled/interrupted, freeing its units.

        True only for the call that refunded it; later calls (and unknown ids) change nothing.
        """
        if status not in _REFUND_STATUSES:
            raise ValueError(
                f"a refund ends a job as failed, cancelled or interrupted, not {status}"
            )
        with self._write():
            cursor = self._db.execute(
                "UPDATE requests SET status = ?, finished_at = ?, error = ? "
                "WHERE id = ? AND status IN ('queued', 'running')",
                (status.value, _stamp(now), error[:_MAX_ERROR_CHARS], job_id),
            )
        return cursor.rowcount == 1

    def refund_by_moderator(self, job_id: int, guild_id: int, now: datetime) -> bool:
        """Give back the units of a finished, charged request of this guild (bad stems, say).

        The row becomes 'cancelled' with the refund noted in its error column; its finish time
        stays. True only for the call that refunded it: a second call, a request of another
        guild, an active, free or already refunded one change nothing. The stored result of
        that request is forgotten too, so the next request for the source calls the API again
        instead of handing out the same refunded stems for free.
        """
        note = f"refunded by a moderator at {_iso_seconds(_stamp(now))}"
        with self._write():
            cursor = self._db.execute(
                "UPDATE requests SET status = 'cancelled', error = ? "
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
        stamp = _stamp(now)
        with self._write():
            cursor = self._db.conn.executemany(
                "UPDATE requests SET delivered_at = ?, delivered_via = ? "
                "WHERE id = ? AND delivered_at IS NULL",
                [(stamp, via, job_id) for job_id, via in deliveries],
            )
        return cursor.rowcount

    def delivered_via(self, job_id: int) -> str | None:
        """Where the request's answer went, or None while it is undelivered (or unknown)."""
        with _busy_is_retryable():
            row = self._one("SELECT delivered_via FROM requests WHERE id = ?", (job_id,))
        return None if row is None else row[0]

    def recover(self, now: datetime) -> Recovery:
        """What a stopped bot left owing, settled in one transaction at start-up.

        A request still queued or running whose call finished (a result for its source and
        mode issued after it was made: it shared a call that was settled) succeeded. Every
        other queued or running one is interrupted and refunded. Every succeeded request
        whose answer never reached Discord is returned with its stored result, to be delivered
        (it stays charged); one whose result is no longer stored is refunded as interrupted.
        """
        finished = _stamp(now)
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
                (source_key, mode.value, _stamp(issued_after)),
            )
        if row is None:
            return None
        stems = tuple(Stem(name=s["name"], url=s["url"]) for s in json.loads(row[0]))
        issued_at = _parse(row[1])
        assert issued_at is not None
        return Separation(mode=mode, stems=stems, issued_at=issued_at)

    def _refuse_duplicate(self, interaction_id: int) -> None:
        if interaction_id in self._repeats or self._one(
            "SELECT 1 FROM requests WHERE interaction_id = ?", (interaction_id,)
        ):
            raise DuplicateRequestError()

    def _insert(self, request: JobRequest, cost: int, status: JobStatus, now: datetime) -> Job:
        created = _stamp(now)
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
        created_at = _parse(created)
        assert created_at is not None
        return Job(
            id=job_id,
            guild_id=request.guild_id,
            channel_id=request.channel_id,
            user_id=request.user_id,
            interaction_id=request.interaction_id,
            mode=request.mode,
            source_name=request.source_name,
            source_key=request.source_key,
            cost=cost,
            status=status,
            created_at=created_at,
            started_at=None,
            finished_at=_parse(finished),
            error=None,
        )

    def _snapshot(
        self,
        guild_id: int,
        user_id: int | None,
        interaction_id: int | None,
        now: datetime,
        role_ids: Sequence[int] = (),
    ) -> _Snapshot:
        day, day_end, month, month_end = _window_stamps(_utc(now).date())
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
        limits = self._effective_limits(row[1:5])
        role_allowance = row[9]
        return _Snapshot(
            duplicate=row[0] > 0,
            limits=limits,
            today=row[5],
            month=row[6],
            user_today=row[7],
            user_active=row[8],
            # A role's allowance replaces the per-member limit, never beyond the server's day.
            member_limit=limits.per_user
            if role_allowance is None
            else min(role_allowance, limits.daily),
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
            budget_spent = budget is not None and self._calls_on(_utc(now).date()) >= budget
        limits = seen.limits
        day_end = day_window(now)[1]
        return QuotaStatus(
            guild_daily=_window(seen.today, limits.daily, day_end),
            guild_monthly=_window(seen.month, limits.monthly, month_window(now)[1]),
            user_daily=None
            if user_id is None
            else _window(seen.user_today, seen.member_limit, day_end),
            user_active_jobs=None if user_id is None else seen.user_active,
            user_active_limit=limits.active_jobs,
            user_limit_from_role=user_id is not None and seen.limit_from_role,
            api_budget_spent=budget_spent,
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
        limits = self._effective_limits(row or (None, None, None, None))
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
        _check_limit(per_user, "per_user")
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

    def _effective_limits(self, overrides: Sequence[int | None]) -> GuildLimits:
        p = self._policy
        defaults = (p.guild_daily_limit, p.guild_monthly_limit, p.user_daily_limit)
        names = ("daily", "monthly", "per_user", "active_jobs")
        values = [
            d if o is None else o
            for o, d in zip(overrides, (*defaults, p.user_active_jobs), strict=True)
        ]
        # The operator's ceilings bind every server, even a limit set before they were.
        capped = set()
        for index, name, ceiling in (
            (0, "daily", p.max_guild_daily_limit),
            (1, "monthly", p.max_guild_monthly_limit),
        ):
            if ceiling is not None and values[index] > ceiling:
                values[index] = ceiling
                capped.add(name)
        return GuildLimits(
            daily=values[0],
            monthly=values[1],
            per_user=values[2],
            active_jobs=values[3],
            overridden=frozenset(n for n, o in zip(names, overrides, strict=True) if o is not None),
            capped=frozenset(capped),
        )

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
            _check_limit(value, name)
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
                (guild_id, period, _stamp(period_start), threshold, _stamp(now)),
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
        window = (guild_id, _stamp(since), _stamp(until))
        with self._read():
            by_user = [
                (row[0], _line(row))
                for row in self._grouped("user_id", window, charged=_MEMBER_CHARGED)
            ]
            by_mode = [(Mode(row[0]), _line(row)) for row in self._grouped("mode", window)]
            by_day = [
                (date.fromisoformat(row[0]), _line(row))
                for row in self._grouped("substr(created_at, 1, 10)", window)
            ]
        by_user.sort(key=lambda item: (-item[1].units, -item[1].requests, item[0]))
        lines = [line for _, line in by_mode]
        total = UsageLine(
            requests=sum(line.requests for line in lines),
            units=sum(line.units for line in lines),
            refunded=sum(line.refunded for line in lines),
        )
        return UsageReport(
            guild_id=guild_id,
            since=_utc(since),
            until=_utc(until),
            total=total,
            by_user=tuple(by_user),
            by_mode=tuple(by_mode),
            by_day=tuple(by_day),
            top_users=tuple(by_user[:top]),
        )

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
        first, last = _utc(since).date().isoformat(), _utc(until).date().isoformat()
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
                (_stamp(since), _stamp(until)),
            ).fetchall()
        spend: dict[tuple[str, int], list[int]] = {}
        for day, guild_id, count in calls:
            spend.setdefault((day, guild_id), [0, 0])[0] = count
        for day, guild_id, charged in units:
            spend.setdefault((day, guild_id), [0, 0])[1] = charged
        return [
            DailySpend(date.fromisoformat(day), guild_id, figures[0], figures[1])
            for (day, guild_id), figures in sorted(spend.items())
        ]

    def export_csv(self, guild_id: int, since: datetime, until: datetime, out: TextIO) -> int:
        """Write the guild's ledger rows in ``[since, until)`` as CSV; returns rows written."""
        with self._read():
            return _write_ledger(self._db.conn, guild_id, since, until, out).rows

    def stream_ledger(
        self, guild_id: int, since: datetime, until: datetime, out: TextIO
    ) -> LedgerCount:
        """``export_csv`` on a read connection of its own, page by page: call it from a thread.

        In WAL mode a reader never blocks the bot's writer (nor waits for it), so a long
        export stalls nobody, and it sees one consistent snapshot of the ledger.
        """
        with _reader(self._file) as conn:
            return _write_ledger(conn, guild_id, since, until, out)

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
                (guild_id, _stamp(since), _stamp(until)),
            ).fetchall()
        return [(date.fromisoformat(day), count) for day, count in rows]

    # --- retention ----------------------------------------------------------------------

    def prune(
        self,
        before: datetime,
        *,
        stop: Callable[[], bool] = lambda: False,
        batch: int = PRUNE_BATCH_ROWS,
        pause_s: float = _PRUNE_PAUSE_S,
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
        cutoff = _stamp(before)
        conn = sqlite3.connect(self._file, timeout=DEFAULT_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            # A deletion lost to a power cut is only done again next time: no fsync per batch.
            conn.execute("PRAGMA synchronous = NORMAL")
            rows = _prune_requests(conn, cutoff, stop, batch, pause_s)
            results = _prune_keyed(conn, _OLD_RESULTS, cutoff, stop, batch, pause_s)
            for table in _OLD_BOOKKEEPING:
                _prune_keyed(conn, table, cutoff, stop, batch, pause_s)
        finally:
            conn.close()
        return Pruned(rows, results)


class Pruned(NamedTuple):
    """What one pruning removed."""

    requests: int
    results: int


_PRUNABLE_REQUEST = "created_at < :cutoff AND status NOT IN ('queued', 'running')"
# (table, key columns, the condition for an old row): tables that stay small, read whole.
_OLD_RESULTS = ("results", "source_key, mode", "issued_at < :cutoff")
_OLD_BOOKKEEPING = (
    ("quota_alerts", "guild_id, period, period_start", "period_start < :cutoff"),
    ("api_calls", "job_id", "day < substr(:cutoff, 1, 10)"),
    ("budget_notices", "day", "day < substr(:cutoff, 1, 10)"),
)


def _prune_requests(
    conn: sqlite3.Connection, cutoff: str, stop: Callable[[], bool], batch: int, pause_s: float
) -> int:
    """Old requests, found page by page in rowid order outside any lock, deleted by id."""
    removed, after = 0, 0
    while not stop():
        ids = [
            row[0]
            for row in conn.execute(
                f"SELECT id FROM requests WHERE id > :after AND {_PRUNABLE_REQUEST} "  # noqa: S608
                "ORDER BY id LIMIT :batch",
                {"after": after, "cutoff": cutoff, "batch": batch},
            )
        ]
        if not ids:
            break
        after = ids[-1]
        removed += _delete_batch(
            conn,
            f"DELETE FROM requests WHERE id IN (SELECT value FROM json_each(:keys)) "  # noqa: S608
            f"AND {_PRUNABLE_REQUEST}",
            {"keys": json.dumps(ids), "cutoff": cutoff},
        )
        time.sleep(pause_s)
    return removed


def _prune_keyed(
    conn: sqlite3.Connection,
    table: tuple[str, str, str],
    cutoff: str,
    stop: Callable[[], bool],
    batch: int,
    pause_s: float,
) -> int:
    name, keys, old = table
    removed = 0
    while not stop():
        # Constant table and column names from the tables above, never user input.
        deleted = _delete_batch(
            conn,
            f"DELETE FROM {name} WHERE ({keys}) IN "  # noqa: S608
            f"(SELECT {keys} FROM {name} WHERE {old} LIMIT :batch)",
            {"cutoff": cutoff, "batch": batch},
        )
        removed += deleted
        if deleted < batch:
            break
        time.sleep(pause_s)
    return removed


def _delete_batch(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        deleted = conn.execute(sql, params).rowcount
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return deleted


_EXPORT_PAGE_ROWS = 1000
# In the index's order (guild, time, then rowid), so no sort of the whole period is needed.
_SELECT_EXPORT = """
SELECT id, created_at, finished_at, guild_id, channel_id, user_id, interaction_id, mode,
       source_name, source_key, cost, status, error, request_count, member_pays
FROM requests INDEXED BY requests_guild_time
WHERE guild_id = ? AND created_at >= ? AND created_at < ?
ORDER BY created_at, id
"""
_CHARGED_STATUSES = frozenset(("queued", "running", "succeeded"))


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


class LedgerCount(NamedTuple):
    """What an export wrote: its rows, and the requests they stand for (free repeats share)."""

    rows: int
    requests: int


def _write_ledger(
    conn: sqlite3.Connection, guild_id: int, since: datetime, until: datetime, out: TextIO
) -> LedgerCount:
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    rows = requests = 0
    cursor = conn.execute(_SELECT_EXPORT, (guild_id, _stamp(since), _stamp(until)))
    while page := cursor.fetchmany(_EXPORT_PAGE_ROWS):
        writer.writerows(map(_csv_row, page))
        rows += len(page)
        requests += sum(row[13] for row in page)
    return LedgerCount(rows, requests)


def _csv_row(row: Sequence[Any]) -> list[object]:
    (request_id, created, finished, guild, channel, user, interaction, mode) = row[:8]
    (name, key, cost, status, error, count, member_pays) = row[8:]
    return [
        request_id,
        _stamp_seconds(created),
        _stamp_seconds(finished),
        _spreadsheet_id(guild),
        _spreadsheet_id(channel),
        _spreadsheet_id(user),
        _spreadsheet_id(interaction),
        mode,
        _spreadsheet_safe(name),
        _spreadsheet_safe(key),
        cost,
        cost if status in _CHARGED_STATUSES else 0,
        status,
        _spreadsheet_safe(error),
        count,
        "member" if member_pays else "server",
    ]


def write_spend_csv(spend: Sequence[DailySpend], out: TextIO) -> None:
    """The operator's bot-wide view as CSV: one row per UTC day and server."""
    writer = csv.writer(out)
    writer.writerow(("day", "guild_id", "api_calls", "units"))
    writer.writerows(
        (line.day.isoformat(), _spreadsheet_id(line.guild_id), line.calls, line.units)
        for line in spend
    )


def _stamp_seconds(stamp: str | None) -> str:
    """A stored stamp (fixed width, see ``_stamp``) to whole seconds: 2026-05-01T09:00:00Z."""
    return "" if stamp is None else stamp[:19] + "Z"


def _spreadsheet_id(snowflake: int) -> str:
    """A Discord id as ``="123..."``: a spreadsheet shows the digits as text.

    Plain, a 19-digit id is read as a number and rounded to 15 significant digits (Excel,
    LibreOffice, Sheets). The formula is a constant made only of digits we wrote ourselves,
    never user text, so it cannot do what ``_spreadsheet_safe`` guards against; a program
    reads the id back with ``int(value.strip('="'))`` (see the README).
    """
    return f'="{int(snowflake)}"'


def _line(row: Sequence[Any]) -> UsageLine:
    return UsageLine(requests=row[1], units=row[2], refunded=row[3])


def _window(used: int, limit: int, resets_at: datetime) -> WindowStatus:
    return WindowStatus(used=used, limit=limit, remaining=max(0, limit - used), resets_at=resets_at)


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


class _Snapshot(NamedTuple):
    """What a reservation is checked against, read in one statement."""

    duplicate: bool
    limits: GuildLimits
    today: int
    month: int
    user_today: int
    user_active: int
    member_limit: int
    limit_from_role: bool = False


def _enforce(seen: _Snapshot, cost: int, now: datetime) -> None:
    """Raise for the limit that binds longest: month, then day, then the user's day, then jobs."""
    limits = seen.limits
    used_today, used_month, user_today, user_active = (
        seen.today,
        seen.month,
        seen.user_today,
        seen.user_active,
    )
    day_end = day_window(now)[1]
    month_end = month_window(now)[1]
    if limits.monthly == 0 or used_month + cost > limits.monthly:
        raise _refusal(QuotaLimit.GUILD_MONTHLY, limits.monthly, used_month, cost, month_end, now)
    if limits.daily == 0 or used_today + cost > limits.daily:
        raise _refusal(QuotaLimit.GUILD_DAILY, limits.daily, used_today, cost, day_end, now)
    member_limit = seen.member_limit
    if member_limit == 0 or user_today + cost > member_limit:
        raise _refusal(QuotaLimit.USER_DAILY, member_limit, user_today, cost, day_end, now)
    if user_active >= limits.active_jobs:
        raise _refusal(QuotaLimit.USER_ACTIVE, limits.active_jobs, user_active, cost, None, now)


def _refusal(
    which: QuotaLimit,
    limit: int,
    used: int,
    cost: int,
    resets_at: datetime | None,
    now: datetime,
) -> QuotaLimitReached:
    if which is QuotaLimit.USER_ACTIVE:
        return QuotaLimitReached(which, _active_message(limit, used), None)
    assert resets_at is not None
    if limit == 0:
        return QuotaLimitReached(which, _SWITCHED_OFF[which], None)
    whose, period = {
        QuotaLimit.GUILD_MONTHLY: ("This server has used {used} of its {limit}", "monthly"),
        QuotaLimit.GUILD_DAILY: ("This server has used {used} of its {limit}", "daily"),
        QuotaLimit.USER_DAILY: ("You have used {used} of your {limit}", "daily"),
    }[which]
    return QuotaLimitReached(
        which,
        whose.format(used=used, limit=limit) + f" {period} units and this request needs {cost}. "
        f"The {period} limit resets at {_when(resets_at, now)}.",
        resets_at,
    )


_SWITCHED_OFF = {
    QuotaLimit.GUILD_MONTHLY: (
        "stembot is switched off on this server (its monthly limit is 0 units). "
        "A moderator can raise it."
    ),
    QuotaLimit.GUILD_DAILY: (
        "stembot is switched off on this server (its daily limit is 0 units). "
        "A moderator can raise it."
    ),
    QuotaLimit.USER_DAILY: (
        "Members can't start requests on this server (the per-member daily limit is 0 units). "
        "A moderator can raise it."
    ),
}


def _budget_refusal(budget: int, now: datetime) -> QuotaLimitReached:
    day_end = day_window(now)[1]
    return QuotaLimitReached(
        QuotaLimit.API_BUDGET,
        f"stembot has made all the new separations it can today ({budget} across all "
        f"servers). New songs can be split again after {_when(day_end, now)}; songs already "
        "split recently are still answered.",
        day_end,
    )


def _active_message(limit: int, active: int) -> str:
    if limit == 0:
        return (
            "Members can't start requests on this server (at most 0 at once). "
            "A moderator can raise it."
        )
    if limit == 1:
        return (
            "You already have a request queued or running. Wait for it to finish, then try again."
        )
    return (
        f"You already have {active} requests queued or running, the most allowed at once. "
        "Wait for one to finish, then try again."
    )
