"""``ping``, the health check's question to the database, on both stores: it answers while the
database does, and raises once the SQLite file is gone or PostgreSQL refuses connections."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stembot.errors import StembotError
from stembot.store.asynchronous import AsyncStore
from stembot.store.postgres import PostgresStore
from tests.postgres import fresh_database, let_in
from tests.test_store import POLICY


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_sqlite_answers_until_its_file_is_deleted_or_replaced(
    tmp_path: Path, how: str
) -> None:
    db = tmp_path / "stembot.db"
    store = await AsyncStore.open(db, POLICY)
    try:
        await store.ping()
        if how == "deleted":
            db.unlink()
        else:
            other = tmp_path / "other.db"
            other.write_bytes(b"")
            os.replace(other, db)
        with pytest.raises(StembotError):
            await store.ping()
    finally:
        await store.close()


async def test_postgresql_answers_until_it_refuses_connections(postgres_url: str) -> None:
    """The server stops letting anyone in and ends the pool's sessions: the pool cannot get a
    connection back, so ping raises (within the store's busy timeout)."""
    with fresh_database(postgres_url) as url:
        store = await PostgresStore.open(url, POLICY, busy_timeout_s=0.5)
        try:
            await store.ping()
            let_in(url, allowed=False)
            with pytest.raises(StembotError):
                await store.ping()
        finally:
            await store.close()
