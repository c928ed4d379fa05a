"""The asynchronous store: group commit keeps every promise of the synchronous one, and no
SQLite call makes the event loop wait."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stembot.errors import StoreBusyError
from stembot.store import Store
from stembot.store.asynchronous import AsyncStore
from tests.test_store import GUILD, NOW, POLICY, new_request


@pytest.fixture
async def astore(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    store = await AsyncStore.open(tmp_path / "ledger.db", POLICY, busy_timeout_s=0.3)
    yield store
    await store.close()


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """What a separate connection sees: only what was committed."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_concurrent_reservations_share_commits(astore: AsyncStore, tmp_path: Path) -> None:
    """Reservations made at once are committed in groups (fewer commits than writes), each
    durable and visible to another connection once awaited. (That none over-grants is in
    tests/test_store_contract.py.)"""
    await asyncio.gather(
        *(astore.ledger.reserve(new_request(user=user), NOW) for user in range(40))
    )
    assert astore.writer.groups < astore.writer.writes
    assert _rows(tmp_path / "ledger.db", "SELECT count(*) FROM requests") == [(40,)]


async def test_a_database_held_by_another_process_never_stalls_the_loop(
    astore: AsyncStore, tmp_path: Path
) -> None:
    holder = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    gaps: list[float] = []
    stop = threading.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    try:
        with pytest.raises(StoreBusyError):
            await astore.ledger.reserve(new_request(), NOW)
        # Reads go on while the write lock is taken elsewhere.
        status = await astore.quotas.quota_status(GUILD, None, NOW)
        assert status.guild_daily.used == 0
    finally:
        stop.set()
        await ticking
        holder.execute("ROLLBACK")
        holder.close()
    # The writer waited its busy timeout (0.3 s) on its own thread: the loop kept ticking.
    assert max(gaps) < 0.15
    # And the store works again once the lock is gone.
    await astore.ledger.reserve(new_request(), NOW)


async def test_the_synchronous_store_and_the_asynchronous_one_share_one_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    astore = await AsyncStore.open(path, POLICY)
    try:
        recorded = await astore.ledger.reserve(new_request(), NOW)
    finally:
        await astore.close()
    store = Store.open(path, POLICY)
    try:
        found = store.ledger.get_request(recorded.id)
    finally:
        store.close()
    assert found == recorded
