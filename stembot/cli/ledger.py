"""Which ledger the commands use: the PostgreSQL database of STEMBOT_DATABASE_URL when it is
set, else the SQLite file of STEMBOT_DB_PATH. Built here, handed to everything else as a
``LedgerStore``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from stembot.bot.identify import IdentifyPacer, SharedIdentifyPacer
from stembot.config import Settings
from stembot.database_lock import hold_database
from stembot.process_lease import ProcessLease
from stembot.sharing import Alone, Leased, Sharing
from stembot.store.asynchronous import AsyncStore
from stembot.store.interface import LedgerStore
from stembot.store.postgres import PostgresStore


async def open_ledger(settings: Settings) -> LedgerStore:
    """The configured store, opened (and migrated); StoreUnavailableError, one line, when it
    cannot be."""
    if settings.database_url is not None:
        return await PostgresStore.open(
            settings.database_url.reveal(),
            settings.quota,
            busy_timeout_s=settings.db_busy_timeout_s,
        )
    return await AsyncStore.open(
        settings.db_path, settings.quota, busy_timeout_s=settings.db_busy_timeout_s
    )


@contextmanager
def hold_ledger(settings: Settings) -> Iterator[None]:
    """One bot per SQLite file: held until the block ends (DatabaseInUseError when another
    bot holds it). Any number of bot processes share a PostgreSQL ledger, each holding a
    lease (``take_lease``)."""
    if settings.database_url is not None:
        yield
    else:
        with hold_database(settings.db_path):
            yield


async def take_lease(store: LedgerStore, settings: Settings) -> ProcessLease | None:
    """This process's lease on a shared (PostgreSQL) ledger; None on the SQLite file."""
    if not isinstance(store, PostgresStore):
        return None
    shards = ",".join(map(str, settings.shard_ids)) if settings.shard_ids is not None else "all"
    return await ProcessLease.take(
        store.leases, shards=shards, lease_s=settings.lease_s, heartbeat_s=settings.heartbeat_s
    )


def sharing_of(store: LedgerStore, lease: ProcessLease | None) -> Sharing:
    """How the service shares the ledger: alone, or by ``lease`` with other processes."""
    if lease is None or not isinstance(store, PostgresStore):
        return Alone(store)
    store.ledger.hold_with(lease.id)
    store.events.hold_with(lease.id)
    return Leased(store.leases, store.calls, lease, store.listening)


def identify_pacer_of(store: LedgerStore) -> IdentifyPacer | None:
    """IDENTIFYs paced with every process on a shared (PostgreSQL) ledger; None: by this
    process alone."""
    if not isinstance(store, PostgresStore):
        return None
    return SharedIdentifyPacer(store.identify)


def ledger_name(settings: Settings) -> str:
    """The ledger as a log line or a message may name it (never a password)."""
    if settings.database_url is not None:
        return str(settings.database_url)
    return str(settings.db_path.absolute())
