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
- ``remix_events.py`` remix events: the events, members' takes, submissions, an event's
                     spend (its paid calls are the ledger's ``reserve_for_event``);
- ``reporting.py``   read-only reports on read-only connections of their own;
- ``migrations.py``  the schema; ``pruning.py`` retention's batched deletions;
- ``asynchronous.py`` the same parts, awaitable, for the bot: run on ``threads.py``'s writer
                     thread (writes committed in groups) and reader thread.

What each part promises, whatever runs it (another process may write the same file):

- A transaction is one method call: every write method is one ``write()`` transaction, all
  or nothing, durable (``synchronous=FULL``) before it returns. A method that checks before
  it writes (reserve, reserve_joined, reserve_for_event, hand_over_charge, record_free, and
  the events' start, submit and remove_submission) holds the write lock from its first read,
  so two processes never both pass a check only one may pass: reserve never over-grants.
- Moving a request on is idempotent: mark_all_running, settle, settle_joined, refund_all,
  refund_by_moderator and record_deliveries change only requests still in the state they
  expect and return how many (or whether) they changed, so a refund happens once whoever
  asks twice.
- Reads see one committed snapshot; the reports read on connections of their own and never
  wait for (or block) the writer.
- Failures are the errors of ``stembot.errors``: StoreBusyError (the lock stayed taken past
  the busy timeout: nothing was written, the caller may try again), StoreFailedError and
  DatabaseReplacedError (nothing was written), DuplicateRequestError, QuotaLimitReached.

``Store`` opens the connection and builds the parts on it: callers reach each through it
(``store.ledger.reserve``, ``store.quotas.quota_status``, ``store.guilds.set_limits``,
``store.events.record_take``, ``store.reports.usage_report``). Its calls are synchronous: the
command line's way in. The bot uses ``AsyncStore`` (asynchronous.py), whose parts have the
same names and promises.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from stembot.config import QuotaPolicy
from stembot.store import pruning
from stembot.store.connection import DEFAULT_BUSY_TIMEOUT_S, Connection
from stembot.store.guilds import ALERT_PERIODS, GuildSettings
from stembot.store.ledger import Ledger
from stembot.store.pruning import PRUNE_BATCH_ROWS, PRUNE_PAUSE_S, Pruned
from stembot.store.quotas import Quotas
from stembot.store.remix_events import RemixEvents
from stembot.store.reporting import Reports

__all__ = ["ALERT_PERIODS", "DEFAULT_BUSY_TIMEOUT_S", "Store"]


class Store:
    """The ledger's file. One instance (one writer connection) per process; calls are short
    and synchronous (``AsyncStore`` runs them off the event loop)."""

    def __init__(self, connection: Connection, policy: QuotaPolicy) -> None:
        self.connection = connection
        self.quotas = Quotas(connection, policy)
        self.ledger = Ledger(connection, self.quotas)
        self.guilds = GuildSettings(connection, policy)
        self.events = RemixEvents(connection)
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
