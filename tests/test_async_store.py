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

from stembot.errors import DuplicateRequestError, QuotaLimitReached, StoreBusyError
from stembot.models import Mode, RequestStatus
from stembot.store import Store
from stembot.store.asynchronous import AsyncStore
from tests.test_store import GUILD, NOW, POLICY, new_request, separation


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


async def test_concurrent_reservations_share_commits_and_never_over_grant(
    astore: AsyncStore, tmp_path: Path
) -> None:
    # 80 members at once against the server's daily limit of 50 units.
    cost = POLICY.cost_of(Mode.VOCALS)
    members = range(1, 81)
    results = await asyncio.gather(
        *(astore.ledger.reserve(new_request(user=user), NOW) for user in members),
        return_exceptions=True,
    )
    granted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, QuotaLimitReached)]
    assert len(granted) * cost <= POLICY.guild_daily_limit
    assert len(granted) == POLICY.guild_daily_limit // cost
    assert len(granted) + len(refused) == len(members)
    # Fewer commits than writes: they were grouped.
    assert astore.writer.groups < astore.writer.writes
    # Durable and visible to anyone once awaited.
    (count,) = _rows(tmp_path / "ledger.db", "SELECT count(*) FROM requests")[0]
    assert count == len(granted)


async def test_a_refused_write_in_a_group_undoes_itself_alone(astore: AsyncStore) -> None:
    first = new_request(user=1)
    await astore.ledger.reserve(first, NOW)
    again = new_request(user=2, interaction=first.interaction_id)
    others = [new_request(user=user) for user in (3, 4, 5)]
    results = await asyncio.gather(
        astore.ledger.reserve(again, NOW),
        *(astore.ledger.reserve(r, NOW) for r in others),
        return_exceptions=True,
    )
    assert isinstance(results[0], DuplicateRequestError)
    assert all(not isinstance(r, BaseException) for r in results[1:])
    status = await astore.quotas.quota_status(GUILD, None, NOW)
    assert status.guild_daily.used == 4 * POLICY.cost_of(Mode.VOCALS)


async def test_a_refund_happens_once_whoever_asks(astore: AsyncStore) -> None:
    recorded = await astore.ledger.reserve(new_request(), NOW)
    changed = await asyncio.gather(
        *(
            astore.ledger.refund_all([recorded.id], RequestStatus.FAILED, "the API failed", NOW)
            for _ in range(5)
        )
    )
    assert sorted(changed) == [0, 0, 0, 0, 1]


async def test_reads_see_every_awaited_write(astore: AsyncStore) -> None:
    recorded = await astore.ledger.reserve(new_request(), NOW)
    await astore.ledger.settle(recorded.id, separation(), "attachment:42", NOW)
    found = await astore.ledger.get_request(recorded.id)
    assert found is not None and found.status is RequestStatus.SUCCEEDED
    assert await astore.ledger.find_result("attachment:42", Mode.VOCALS, NOW.replace(hour=0))


async def test_a_write_whose_caller_stopped_waiting_is_still_made(astore: AsyncStore) -> None:
    task = asyncio.create_task(astore.ledger.reserve(new_request(user=7), NOW))
    await asyncio.sleep(0)  # queued on the writer
    task.cancel()
    await asyncio.sleep(0.2)
    status = await astore.quotas.quota_status(GUILD, 7, NOW)
    assert status.guild_daily.used == POLICY.cost_of(Mode.VOCALS)


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
