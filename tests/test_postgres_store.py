"""What only the PostgreSQL store has: a server to reach, migrations shared by processes that
start at once, locks other sessions hold. (Its contract with the SQLite store is in
tests/test_store_contract.py.)"""

from __future__ import annotations

import asyncio
import os

import psycopg
import pytest

from stembot.errors import StoreBusyError, StoreUnavailableError
from stembot.store.postgres import PostgresStore
from stembot.store.postgres.migrations import MIGRATIONS
from tests.postgres import URL_VARIABLE, empty_tables, fresh_database
from tests.test_store import GUILD, NOW, POLICY, new_request


def test_the_configured_server_is_reachable() -> None:
    """Where STEMBOT_TEST_POSTGRES_URL is set (CI), the server answers: the PostgreSQL tests
    fail there rather than skip when it does not."""
    url = os.environ.get(URL_VARIABLE)
    if not url:
        pytest.skip(f"{URL_VARIABLE} is not set")
    with psycopg.connect(url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


async def test_a_server_that_is_down_is_one_line_without_the_password() -> None:
    """Nothing listens on the port: one StoreUnavailableError naming the server, its password
    never shown."""
    url = "postgresql://stembot:hunter2@127.0.0.1:9/ledger"
    with pytest.raises(StoreUnavailableError) as refused:
        await PostgresStore.open(url, POLICY)
    message = refused.value.user_message
    assert message.startswith("cannot use the PostgreSQL database at postgresql://127.0.0.1:9/")
    assert "\n" not in message and "hunter2" not in message and "stembot:" not in message


async def test_processes_starting_at_once_migrate_once(postgres_url: str) -> None:
    """Four stores opening a new database at the same moment: the schema is made once."""
    with fresh_database(postgres_url) as url:
        stores = await asyncio.gather(*(PostgresStore.open(url, POLICY) for _ in range(4)))
        try:
            request = await stores[0].ledger.reserve(new_request(), NOW)
            assert await stores[3].ledger.get_request(request.id) == request
        finally:
            await asyncio.gather(*(store.close() for store in stores))
        with psycopg.connect(url) as conn:
            applied = conn.execute("SELECT name FROM stembot_migrations ORDER BY name").fetchall()
    assert applied == [(name,) for name, _ in MIGRATIONS]


async def test_a_guild_locked_past_the_busy_timeout_is_a_retryable_error(
    postgres_url: str,
) -> None:
    """Another session holds the guild's lock: the reservation waits its busy timeout, then
    StoreBusyError, nothing written; once the lock is gone it goes through."""
    store = await PostgresStore.open(postgres_url, POLICY, busy_timeout_s=0.2)
    empty_tables(postgres_url)
    try:
        with psycopg.connect(postgres_url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", (GUILD,))
            with pytest.raises(StoreBusyError):
                await store.ledger.reserve(new_request(), NOW)
            status = await store.quotas.quota_status(GUILD, None, NOW)
            assert status.guild_daily.used == 0
        await store.ledger.reserve(new_request(), NOW)
    finally:
        await store.close()
