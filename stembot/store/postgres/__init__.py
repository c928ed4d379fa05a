"""The ledger on PostgreSQL, for several bot processes sharing one ledger: the same parts and
promises as the SQLite store (``stembot.store``, ``stembot.store.asynchronous``), checked by
the same contract tests (tests/test_store_contract.py). ``STEMBOT_DATABASE_URL`` selects it.

Split like the SQLite store, one concern per file:

- ``connection.py`` the pool, transactions, advisory locks, errors as the store's;
- ``migrations.py`` the schema, applied once at opening under a lock;
- ``ledger.py``     reserve (under the guild's lock), settle, refund, hand-over, free
                    repeats, deliveries; ``recovery.py`` what a stopped bot left owing;
- ``quotas.py``     what was used against the limits, derived from the rows;
- ``guilds.py``     a server's settings and the one-time claims;
- ``leases.py``     each bot process's lease, and the recovery of the requests of processes
                    that are gone;
- ``dispatch.py``   the API calls' queue shared by the processes: the global cap, the
                    servers' turns; ``notifications.py`` what the processes tell each other;
                    ``inheritance.py`` a call whose payer cancelled, taken on by a rider in
                    another process; ``heirs.py`` who pays when a payer leaves;
- ``identify_pacing.py`` the gateway IDENTIFYs of every process on the bot's token: the
                    rate-limit buckets' turns, the session starts of Discord's window;
- ``remix_events.py`` remix events: the events, takes, submissions, an event's spend (its
                    paid calls are the ledger's ``reserve_for_event``);
- ``reporting.py``  read-only reports on connections of their own;
- ``pruning.py``    retention's batched deletions.

Why psycopg 3 with psycopg_pool rather than asyncpg: psycopg is typed (mypy strict needs no
stubs package), has the synchronous and the asynchronous API in one package (the reports and
the ledger copy run synchronously in a thread, the bot's calls asynchronously, with the same
SQL and the same types), its pool checks a connection before handing it out and reconnects
after the server drops it, and its LISTEN/NOTIFY is an async iterator (the later cross-process
wake-ups). asyncpg is faster per query, but a reservation here is bound by the guild's lock
and the commit's WAL flush, not by the driver (tests/benchmarks/bench_ledger.py measures it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from stembot.config import QuotaPolicy
from stembot.store.connection import DEFAULT_BUSY_TIMEOUT_S
from stembot.store.postgres import migrations
from stembot.store.postgres.connection import DEFAULT_POOL_SIZE, Database
from stembot.store.postgres.dispatch import PostgresCalls, Word
from stembot.store.postgres.guilds import PostgresGuildSettings
from stembot.store.postgres.identify_pacing import PostgresIdentifyPacing
from stembot.store.postgres.leases import PostgresLeases
from stembot.store.postgres.ledger import PostgresLedger
from stembot.store.postgres.notifications import Listening
from stembot.store.postgres.pruning import prune
from stembot.store.postgres.quotas import PostgresQuotas
from stembot.store.postgres.remix_events import PostgresRemixEvents
from stembot.store.postgres.reporting import PostgresReports
from stembot.store.pruning import Pruned

__all__ = ["PostgresStore"]


class PostgresStore:
    """One per process: the pool and the parts on it (``stembot.store.interface``)."""

    def __init__(self, db: Database, policy: QuotaPolicy) -> None:
        self._db = db
        self.quotas = PostgresQuotas(db, policy)
        self.ledger = PostgresLedger(db, self.quotas)
        self.guilds = PostgresGuildSettings(db, policy)
        self.events = PostgresRemixEvents(db)
        self.leases = PostgresLeases(db)
        self.calls = PostgresCalls(db, self.quotas)
        self.identify = PostgresIdentifyPacing(db)
        self.reports = PostgresReports(db.url, db.busy_timeout_s)

    @classmethod
    async def open(
        cls,
        url: str,
        policy: QuotaPolicy,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> PostgresStore:
        """Connect, migrate (once, whoever else starts), open the pool.

        A server that is down or refuses raises StoreUnavailableError, one line naming it.
        """
        db = await Database.open(url, busy_timeout_s, pool_size=pool_size, prepare=migrations.apply)
        return cls(db, policy)

    def listening(
        self, heard: Callable[[Word], None], caught_up: Callable[[], Awaitable[None]]
    ) -> Listening:
        """A connection of its own hearing the other processes (notifications.py)."""
        return Listening(self._db.url, self._db.busy_timeout_s, heard, caught_up)

    async def close(self) -> None:
        """Finish the writes under way, then close every connection."""
        await self._db.close()

    @property
    def policy(self) -> QuotaPolicy:
        """The default limits and the cost of each mode."""
        return self.quotas.policy

    def file_problem(self) -> str | None:
        """A server database cannot be deleted under the bot as a file can: never a problem."""
        return None

    async def prune(self, before: datetime, *, stop: Callable[[], bool]) -> Pruned:
        """Retention's batched deletions (pruning.py)."""
        return await prune(self._db, before, stop=stop)

    async def ping(self) -> None:
        """A connection of the pool answers a read (the health check); StoreBusyError when
        none can be had within the busy timeout (the server down, say)."""
        await self._db.read(lambda conn: conn.execute("SELECT 1"))
