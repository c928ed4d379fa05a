"""Which ledger the commands use: the PostgreSQL database of STEMBOT_DATABASE_URL when it is
set, else the SQLite file of STEMBOT_DB_PATH. Built here, handed to everything else as a
``LedgerStore``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from stembot.config import Settings
from stembot.database_lock import hold_database
from stembot.store.asynchronous import AsyncStore
from stembot.store.interface import LedgerStore
from stembot.store.postgres import PostgresStore
from stembot.store.postgres.bot_lock import hold_postgres


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
    """One bot per database, whichever: held until the block ends (DatabaseInUseError when
    another bot holds it)."""
    if settings.database_url is not None:
        with hold_postgres(settings.database_url.reveal()):
            yield
    else:
        with hold_database(settings.db_path):
            yield


def ledger_name(settings: Settings) -> str:
    """The ledger as a log line or a message may name it (never a password)."""
    if settings.database_url is not None:
        return str(settings.database_url)
    return str(settings.db_path.absolute())
