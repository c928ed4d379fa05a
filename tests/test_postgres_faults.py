"""A connection to PostgreSQL cut at the worst moment (issue 14, item 4): after the server
committed, before the bot heard it (tests/standins/postgres_proxy.py cuts it there). The
request is not left charged and in progress with nobody to answer it, and an outcome written
that way is still told, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from stembot.errors import StoreBusyError
from stembot.models import RequestStatus
from stembot.store.postgres import PostgresStore
from tests.lease_holders import Process, a_process, processes_on
from tests.standins.postgres_proxy import PostgresProxy
from tests.test_shared_queue import ROOMY
from tests.test_store import ALICE, GUILD, NOW, new_request, separation


@pytest.fixture
async def behind_a_proxy(postgres_url: str) -> AsyncIterator[tuple[Process, PostgresProxy]]:
    """A process whose every connection goes through the proxy (the run's tables emptied)."""
    async with processes_on(postgres_url, 0, ROOMY), PostgresProxy(postgres_url).running() as proxy:
        process = await a_process(proxy.url(postgres_url), policy=ROOMY)
        try:
            yield process, proxy
        finally:
            await process.store.close()


def rows(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT status, cost, lease_id FROM requests").fetchall()


async def test_a_reservation_whose_commit_was_not_heard_is_the_request(
    postgres_url: str, behind_a_proxy: tuple[Process, PostgresProxy]
) -> None:
    """The reservation committed and its answer was cut: the bot finds its row and goes on
    with it (queued, charged once), rather than refusing a member it has charged."""
    process, proxy = behind_a_proxy
    proxy.cut_after_next(b"SELECT")  # one statement, committed as it completes
    request = await process.store.ledger.reserve(new_request(), NOW)
    assert proxy.cut == 1
    assert request.status is RequestStatus.QUEUED and request.cost == 1
    assert rows(postgres_url) == [("queued", 1, process.lease.id)]
    assert await process.store.ledger.get_request(request.id) == request


async def test_a_reservation_cut_while_it_waits_records_nothing(
    postgres_url: str, behind_a_proxy: tuple[Process, PostgresProxy]
) -> None:
    """The connection is cut while the reservation waits for its server's lock. The server
    would still run the statement once the lock is free, and commit it, charging a member
    who was told to try again: the bot ends that server process first, so nothing is
    recorded (and the pool recovers)."""
    _, proxy = behind_a_proxy
    # Its own store: the statement must still wait when the cut comes, however slow the
    # machine (the busy timeout would end the wait first).
    store = await PostgresStore.open(proxy.url(postgres_url), ROOMY, busy_timeout_s=30)
    asked = new_request()
    holder = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
    # Another connection watches: inside the holder's transaction the activity seen would
    # stay what it first was.
    watcher = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock(%s)", (asked.guild_id,))
            reserving = asyncio.create_task(store.ledger.reserve(asked, NOW))
            await _until_seen(watcher, "wait_event_type = 'Lock'")
            proxy.cut_all()
            with pytest.raises(StoreBusyError):
                await reserving
        # A statement left running would take the lock and commit now.
        await _until_seen(watcher, "true", seen=False)
        assert rows(postgres_url) == []
        await store.ledger.reserve(new_request(), NOW)  # the pool recovered
        assert len(rows(postgres_url)) == 1
    finally:
        await watcher.close()
        await holder.close()
        await store.close()


async def _until_seen(conn: psycopg.AsyncConnection[Any], which: str, *, seen: bool = True) -> None:
    """Until another connection to the test's database runs a statement ``which`` (SQL on
    pg_stat_activity), or until none does."""
    query = (
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() "  # noqa: S608 (the tests' own)
        f"AND state = 'active' AND pid <> pg_backend_pid() AND {which}"
    )
    async with asyncio.timeout(10):
        while True:
            cursor = await conn.execute(query.encode())
            row = await cursor.fetchone()
            if row is not None and row[0] is seen:
                return
            await asyncio.sleep(0.01)


async def test_a_settle_whose_answer_was_lost_is_written_once_and_still_told(
    behind_a_proxy: tuple[Process, PostgresProxy],
) -> None:
    """The API answered; the settle committed but its answer was cut. Written again (as the
    service retries it) it changes nothing, and the process may still tell the member."""
    process, proxy = behind_a_proxy
    request = await process.store.ledger.reserve(new_request(), NOW)
    proxy.cut_after_next(b"SELECT")
    with pytest.raises(StoreBusyError):
        await process.store.ledger.settle(request.id, separation(), request.source_key, NOW)
    assert proxy.cut == 1
    assert not await process.store.ledger.settle(request.id, separation(), request.source_key, NOW)
    assert await process.sharing.kept([request.id], RequestStatus.SUCCEEDED) == {request.id}
    settled = await process.store.ledger.get_request(request.id)
    assert settled is not None and settled.status is RequestStatus.SUCCEEDED


async def test_a_read_whose_connection_is_cut_is_asked_again_and_answered(
    behind_a_proxy: tuple[Process, PostgresProxy],
) -> None:
    """A quota check, a server's limits (one snapshot) and a stored result, each cut with its
    connection in the middle: asked again on another connection, answered, never refused as
    busy. Two cuts in a row are refused (asked once more only)."""
    process, proxy = behind_a_proxy
    store = process.store
    request = await store.ledger.reserve(new_request(), NOW)
    await store.ledger.settle(request.id, separation(), request.source_key, NOW)
    expected = (
        await store.quotas.quota_status(GUILD, ALICE, NOW),
        await store.guilds.guild_limits(GUILD),
        await store.ledger.stored_result(request.id),
    )
    proxy.cut_after_next(b"SELECT")
    status = await store.quotas.quota_status(GUILD, ALICE, NOW)
    proxy.cut_after_next(b"SELECT")
    limits = await store.guilds.guild_limits(GUILD)
    proxy.cut_after_next(b"SELECT")
    stored = await store.ledger.stored_result(request.id)
    assert proxy.cut == 3
    assert (status, limits, stored) == expected
    proxy.cut_after_next(b"SELECT")
    proxy.cut_after_next(b"SELECT")
    with pytest.raises(StoreBusyError):
        await store.ledger.get_request(request.id)
    assert proxy.cut == 5
