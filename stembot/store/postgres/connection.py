"""One process's connections to the PostgreSQL ledger: the pool, its transactions, the
advisory locks, and how the server's errors become the store's (``stembot.errors``).

Every connection runs in autocommit with ``timezone = UTC`` and ``lock_timeout`` at the
busy timeout: a statement alone is its own transaction (one round trip, no BEGIN/COMMIT),
and ``write`` opens a transaction only for a check-then-write. A write, once started, is
finished even if its caller stops waiting (it runs shielded), as the SQLite store's writer
thread does.
"""

from __future__ import annotations

import asyncio
import logging
import select
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg.abc import Params
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from stembot.errors import StoreBusyError, StoreFailedError, StoreUnavailableError
from stembot.source_urls import redact_url

log = logging.getLogger(__name__)

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]

# stembot's own advisory locks take the two-key form under this class ("STEM"); a guild's
# lock is the one-key form on its id. PostgreSQL keeps the two forms apart.
LOCK_CLASS = 0x5354454D
MIGRATIONS_LOCK = 1
BUDGET_LOCK = 2
RECOVERY_LOCK = 3
# 4 was the one-bot-per-database lock of the releases before leases: never reuse it.
COMMAND_SYNC_LOCK = 5
DISPATCH_LOCK = 6
# Where the processes sharing a ledger tell each other about its API calls (LISTEN/NOTIFY).
CALLS_CHANNEL = "stembot_calls"

# How long opening waits for the server before saying it cannot be reached.
CONNECT_TIMEOUT_S = 5
DEFAULT_POOL_SIZE = 10
# How long work waits for one of the pool's connections, at least: a burst of members queues
# for them in this process, which is no sign of another process holding the database (the
# busy timeout's case), and every member was acknowledged before the ledger is asked.
POOL_WAIT_S = 15.0


def connection_options(busy_timeout_s: float) -> dict[str, Any]:
    """What every connection of the store is opened with (the pool's and the reports')."""
    lock_ms = max(1, round(busy_timeout_s * 1000))
    return {
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "options": f"-c timezone=UTC -c lock_timeout={lock_ms}",
    }


def unreachable(url: str, error: Exception) -> StoreUnavailableError:
    """One line naming the server (never its password) and what the client was told."""
    told = str(error).strip().splitlines()
    reason = told[0] if told else type(error).__name__
    return StoreUnavailableError(
        f"cannot use the PostgreSQL database at {redact_url(url)}: {reason}"
    )


@contextmanager
def errors_explained() -> Iterator[None]:
    """The server's errors as the store's.

    A lock that stayed taken past the busy timeout, a connection lost, a pool with no free
    connection in time, a deadlock or serialization failure: StoreBusyError (each write is
    idempotent or refused as a duplicate, so trying again is safe). Any other refusal:
    StoreFailedError, logged. Constraint violations are bugs (or mapped by the caller) and
    stay as they are.
    """
    try:
        yield
    except psycopg.IntegrityError:
        raise
    except (PoolTimeout, psycopg.OperationalError, psycopg.InterfaceError) as error:
        raise StoreBusyError() from error
    except psycopg.DatabaseError as error:
        log.error("the database refused a write: %s: %s", type(error).__name__, error)
        raise StoreFailedError() from error


class _ConnectionCut(Exception):
    """A read's connection broke under it (its cause: psycopg's error)."""


class Database:
    """The pool and the ways the store's parts use it."""

    def __init__(self, pool: AsyncConnectionPool[Conn], url: str, busy_timeout_s: float) -> None:
        self._pool = pool
        self.url = url
        self.busy_timeout_s = busy_timeout_s
        self._writes: set[asyncio.Task[Any]] = set()

    @classmethod
    async def open(
        cls,
        url: str,
        busy_timeout_s: float,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        prepare: Callable[[Conn], Awaitable[object]] | None = None,
    ) -> Database:
        """Connect once (a server that is down or refuses is one clear StoreUnavailableError),
        run ``prepare`` (the migrations) on that connection, then open the pool."""
        options = connection_options(busy_timeout_s)
        try:
            first = await psycopg.AsyncConnection.connect(url, **options)
        except psycopg.Error as error:
            raise unreachable(url, error) from error
        try:
            if prepare is not None:
                await prepare(first)
        except psycopg.Error as error:
            raise unreachable(url, error) from error
        finally:
            await first.close()
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs=options,
            open=False,
            name="stembot-ledger",
            # A connection the server dropped is noticed before it is handed out.
            check=check_idle_connection,
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout as error:
            await pool.close()
            raise unreachable(url, error) from error
        return cls(pool, url, busy_timeout_s)

    async def close(self) -> None:
        """Wait for the writes under way, then close every connection."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await self._pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A connection of the pool (autocommit: each statement its own transaction)."""
        with errors_explained():
            wait_s = max(self.busy_timeout_s, POOL_WAIT_S)
            async with self._pool.connection(timeout=wait_s) as conn:
                yield conn

    async def write(self, work: Callable[[Conn], Awaitable[T]], *, atomic: bool = True) -> T:
        """``work`` on a connection, in one transaction (``atomic``) or as the single
        statement it makes; finished even if the caller stops waiting."""
        task = asyncio.ensure_future(self._run(work, atomic))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return await asyncio.shield(task)

    async def read(self, work: Callable[[Conn], Awaitable[T]], *, one_snapshot: bool = True) -> T:
        """``work``, which only reads, on a connection: with ``one_snapshot`` its statements
        see one snapshot (a read-only transaction), else each runs alone (no BEGIN/COMMIT).

        A read whose connection is cut under it (a network cut, the server ending its
        connections) is asked once more, on another of the pool's connections: it changed
        nothing, and the member gets the answer rather than a busy refusal. Writes are never
        asked again here: whether a cut write landed is for its caller to find out (the
        ledger's reservations and settles, ledger.py)."""
        try:
            return await self._read(work, one_snapshot)
        except _ConnectionCut:
            log.info("a read's database connection was cut; asking again on another")
        try:
            return await self._read(work, one_snapshot)
        except _ConnectionCut as cut:
            raise StoreBusyError() from cut.__cause__

    async def fetch_one(
        self, sql: LiteralString | bytes, params: Params | None = None
    ) -> tuple[Any, ...] | None:
        """The first row of one statement that only reads (``read``, asked again once if its
        connection is cut)."""

        async def work(conn: Conn) -> tuple[Any, ...] | None:
            return await (await conn.execute(sql, params)).fetchone()

        return await self.read(work, one_snapshot=False)

    async def fetch_all(
        self, sql: LiteralString | bytes, params: Params | None = None
    ) -> list[tuple[Any, ...]]:
        """Every row of one statement that only reads (as ``fetch_one``)."""

        async def work(conn: Conn) -> list[tuple[Any, ...]]:
            return await (await conn.execute(sql, params)).fetchall()

        return await self.read(work, one_snapshot=False)

    async def _read(self, work: Callable[[Conn], Awaitable[T]], one_snapshot: bool) -> T:
        async with self.connection() as conn:
            try:
                with errors_explained():
                    if not one_snapshot:
                        return await work(conn)
                    async with conn.transaction():
                        await conn.execute(
                            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
                        )
                        return await work(conn)
            except StoreBusyError as busy:
                if conn.broken:
                    raise _ConnectionCut() from busy.__cause__
                raise

    async def outlive(self, backend_pid: int) -> None:
        """End the server process of a connection this process lost, and wait for it to be
        gone (at most the busy timeout): what it was writing is then committed or not."""
        wait_ms = max(1, round(self.busy_timeout_s * 1000))
        async with self.connection() as conn:
            await conn.execute(
                "SELECT pg_terminate_backend(pid, %s) FROM pg_stat_activity "
                "WHERE pid = %s AND datname = current_database()",
                (wait_ms, backend_pid),
            )

    async def _run(self, work: Callable[[Conn], Awaitable[T]], atomic: bool) -> T:
        async with self.connection() as conn:
            with errors_explained():
                if not atomic:
                    return await work(conn)
                async with conn.transaction():
                    return await work(conn)


async def check_idle_connection(conn: Conn) -> None:
    """The pool's check of a connection before handing it out. An idle connection hears
    nothing from the server unless it is ending it (its last words, then the socket closes)
    or the network did: only then is a round trip worth its cost, and it raises when the
    connection is gone. Two round trips in eight of a reservation and its settle went to
    asking every time (bench_postgres_ledger)."""
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    # poll, not select: a busy bot's sockets may be numbered past select's 1,024.
    listening = select.poll()
    listening.register(conn.fileno(), select.POLLIN)
    if listening.poll(0):
        await AsyncConnectionPool.check_connection(conn)


async def lock_guild(conn: Conn, guild_id: int) -> None:
    """Hold the guild's lock until the transaction ends: the checks and the write that
    follow are one step for every process (quotas never over-grant)."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (guild_id,))


async def lock(conn: Conn, which: int) -> None:
    """Hold one of stembot's own locks (``BUDGET_LOCK``...) until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, which))
