"""Bot processes on one PostgreSQL ledger, as the tests stand them in: each a store of its
own holding its own lease (stembot/process_lease.py), sharing the ledger as `stembot run`
does (stembot/sharing.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import psycopg

from stembot.config import QuotaPolicy
from stembot.process_lease import ProcessLease
from stembot.sharing import Leased
from stembot.store.postgres import PostgresStore
from tests.postgres import empty_tables
from tests.test_store import POLICY


@dataclass
class Process:
    """One bot process's store, holding its own lease."""

    store: PostgresStore
    lease: ProcessLease

    @property
    def sharing(self) -> Leased:
        return Leased(self.store.leases, self.store.calls, self.lease, self.store.listening)


async def a_process(
    url: str, clock: list[float] | None = None, policy: QuotaPolicy = POLICY
) -> Process:
    """A store holding a new lease of 30 s; ``clock`` (monotonic seconds) is its own clock."""
    store = await PostgresStore.open(url, policy)
    times = clock if clock is not None else [0.0]
    lease = await ProcessLease.take(
        store.leases, shards="0", lease_s=30, heartbeat_s=5, clock=lambda: times[0]
    )
    store.ledger.hold_with(lease.id)
    return Process(store, lease)


def run_out(url: str, process: Process) -> None:
    """The lease's time runs out, as the database's clock sees it."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE stembot_processes SET expires_at = clock_timestamp() - interval '1 second' "
            "WHERE id = %s",
            (process.lease.id,),
        )


@asynccontextmanager
async def processes_on(
    url: str, count: int, policy: QuotaPolicy = POLICY
) -> AsyncIterator[list[Process]]:
    """``count`` processes on the run's database, its tables (leases too) emptied first."""
    first = await a_process(url, policy=policy)  # migrates a new database
    empty_tables(url)
    await first.store.close()
    processes = [await a_process(url, policy=policy) for _ in range(count)]
    try:
        yield processes
    finally:
        for process in processes:
            await process.store.close()
