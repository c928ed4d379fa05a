"""One process's connection to the ledger's file, and the transactions every part of the
store runs in: the one writer, its ``BEGIN IMMEDIATE``, busy handling, the file identity check,
and read-only connections of their own for long reads.

Every check-then-write runs in ``BEGIN IMMEDIATE``: in WAL mode a deferred transaction that
reads and then writes fails at once with "database is locked" when another connection
committed in between, whatever the busy timeout (see ../shared/design.md).
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from stembot.config import Settings
from stembot.errors import (
    DatabaseReplacedError,
    StoreBusyError,
    StoreFailedError,
    StoreUnavailableError,
)
from stembot.store.migrations import MIGRATIONS

log = logging.getLogger(__name__)

# The setting's default, for callers that pass none (tests, benchmarks).
DEFAULT_BUSY_TIMEOUT_S = Settings.db_busy_timeout_s
_FIRST_PAUSE_S = 0.0002
_LONGEST_PAUSE_S = 0.002


def _is_busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(error).lower()
    return "locked" in text or "busy" in text


@contextmanager
def busy_is_retryable() -> Iterator[None]:
    """A busy or locked database becomes StoreBusyError (the caller may try again)."""
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


class Connection:
    """The process's one writer connection (or a read-only one); the parts of the store
    share it.

    A transaction is ``write()`` (holds the write lock from its first statement, commits
    durably or rolls back) or ``read()`` (one consistent snapshot). Several ``write()`` calls
    may share one transaction inside ``group()``. Long reads use ``reader()``, a read-only
    connection of their own.

    Not thread-safe: one thread at a time uses it (the store's writer thread, a reader
    thread, or the CLI's only thread).
    """

    def __init__(
        self, db: Database, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, *, path: Path | None
    ) -> None:
        self.db = db
        self._busy_timeout_ms = max(0, round(busy_timeout_s * 1000))
        # The file this connection opened: a write goes nowhere else (see file_problem).
        self._path = path
        self._opened = None if path is None else _identity(path)
        # Where long reads read from, on connections of their own.
        self.file = Path(db.execute("PRAGMA database_list").fetchone()[2])
        self._grouped = False

    @property
    def busy_timeout_s(self) -> float:
        return self._busy_timeout_ms / 1000

    @classmethod
    def open(cls, path: Path, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> Connection:
        """Open (creating if needed) the database: WAL, synchronous=FULL, migrations applied."""
        try:
            # Opened here, used by the store's writer thread: one thread at a time.
            conn = sqlite3.connect(str(path), timeout=busy_timeout_s, check_same_thread=False)
        except sqlite3.Error as error:
            raise StoreUnavailableError(f"cannot use the database at {path}: {error}") from error
        try:
            db = Database(conn, execute_plugins=False)
            with busy_is_retryable():
                _prepare(db)
        except sqlite3.DatabaseError as error:
            conn.close()
            raise StoreUnavailableError(f"cannot use the database at {path}: {error}") from error
        except BaseException:
            conn.close()
            raise
        return cls(db, busy_timeout_s, path=path)

    @classmethod
    def open_read_only(cls, path: Path, busy_timeout_s: float) -> Connection:
        """A read-only connection to an existing database (in WAL mode it never waits for the
        writer, nor makes it wait); no migrations."""
        try:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=busy_timeout_s,
                check_same_thread=False,
            )
        except sqlite3.Error as error:
            raise StoreUnavailableError(f"cannot read the database at {path}: {error}") from error
        return cls(Database(conn, execute_plugins=False), busy_timeout_s, path=None)

    def close(self) -> None:
        self.db.close()

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

    @contextmanager
    def write(self) -> Iterator[None]:
        """A write transaction that holds the write lock from its first statement.

        Inside ``group()`` it is a savepoint of the group's transaction instead: an exception
        from the caller undoes this write alone; a database error fails the whole group.
        """
        if self._grouped:
            with self._savepoint():
                yield
            return
        problem = self.file_problem()
        if problem is not None:
            raise DatabaseReplacedError() from StoreFailedError(problem)
        with busy_is_retryable(), _write_failures_explained():
            self._begin_immediate()
            try:
                yield
                self.db.execute("COMMIT")
            except BaseException:
                self.db.rollback()
                raise

    @contextmanager
    def group(self) -> Iterator[None]:
        """One transaction, one commit (one fsync) for every ``write()`` made inside it: group
        commit. Nothing is durable before the group commits; a busy or broken database fails
        the group as a whole, with nothing written."""
        with self.write():
            self._grouped = True
            try:
                yield
            finally:
                self._grouped = False

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        self.db.execute("SAVEPOINT one_write")
        try:
            yield
        except sqlite3.Error:
            raise  # the group's transaction may be unusable: the group rolls back
        except BaseException:
            self.db.execute("ROLLBACK TO one_write")
            self.db.execute("RELEASE one_write")
            raise
        self.db.execute("RELEASE one_write")

    def _begin_immediate(self) -> None:
        """Take the write lock, polling every millisecond or so until the busy timeout.

        SQLite's own busy handler backs off to 100 ms sleeps, so a process waiting on a busy
        writer can miss every short gap between its transactions for seconds (measured here
        with two processes: waits of 0.8-2.9 s). Polling often shares the lock fairly.
        """
        self.db.execute("PRAGMA busy_timeout = 0")
        try:
            deadline = time.monotonic() + self._busy_timeout_ms / 1000
            pause = _FIRST_PAUSE_S
            while True:
                try:
                    self.db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as error:
                    if not _is_busy(error) or time.monotonic() >= deadline:
                        raise
                time.sleep(random.uniform(0, pause))
                pause = min(pause * 2, _LONGEST_PAUSE_S)
        finally:
            self.db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")

    @contextmanager
    def read(self) -> Iterator[None]:
        """One consistent snapshot for several reads."""
        with busy_is_retryable():
            self.db.execute("BEGIN")
            try:
                yield
            finally:
                self.db.rollback()

    def one(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> Any:
        return self.db.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        return self.db.execute(sql, params).fetchall()

    @contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection of its own holding one snapshot; closed afterwards.

        In WAL mode a reader never blocks the writer (nor waits for it).
        """
        with busy_is_retryable():
            conn = sqlite3.connect(f"{self.file.resolve().as_uri()}?mode=ro", uri=True)
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
