"""What only the PostgreSQL store has: a server to reach, migrations shared by processes that
start at once, locks other sessions hold. (Its contract with the SQLite store is in
tests/test_store_contract.py.)"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import resource
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stembot.cli import main
from stembot.errors import QuotaExceededError, StoreBusyError, StoreUnavailableError
from stembot.models import Mode, RequestStatus
from stembot.remix_event_models import EventSpec, SourceRef
from stembot.store.asynchronous import AsyncStore
from stembot.store.postgres import PostgresStore
from stembot.store.postgres.migrations import MIGRATIONS
from tests.postgres import URL_VARIABLE, empty_tables, fresh_database
from tests.test_store import ALICE, BOB, GUILD, NOW, POLICY, new_request, separation

EVENT = EventSpec("Spring remix", "song.wav", "event-song", SourceRef(555, 700, 900))


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


async def test_a_connection_numbered_past_1024_is_handed_out(postgres_url: str) -> None:
    """A busy bot holds many sockets and files: the pool's check of a connection it hands
    out works whatever the number of the connection's socket (select() takes none past
    1,023; the pool would refuse every connection as busy)."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1200:
        pytest.skip("this process may not open 1,200 files")
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        store = await PostgresStore.open(postgres_url, POLICY)
        try:
            await store.ledger.reserve(new_request(), NOW)
            assert await store.quotas.api_calls_today(NOW) == 1
        finally:
            await store.close()
    finally:
        for fd in held:
            os.close(fd)


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


# --- several processes ---------------------------------------------------------------------


def _reserve_from_a_process(
    url: str, proc: int, clients: int, attempts: int, start: Any, out: Any
) -> None:
    """Child process: ``clients`` requesters reserve against one guild; count the outcomes."""

    async def main() -> Counter[str]:
        outcomes: Counter[str] = Counter()
        store = await PostgresStore.open(url, POLICY, busy_timeout_s=30)

        async def client(index: int) -> None:
            for attempt in range(attempts):
                ident = proc * 1_000_000 + index * 1000 + attempt
                try:
                    await store.ledger.reserve(new_request(user=ident, interaction=ident), NOW)
                    outcomes["granted"] += 1
                except QuotaExceededError:
                    outcomes["refused"] += 1

        try:
            await asyncio.to_thread(start.wait, 60)
            await asyncio.gather(*(client(i) for i in range(clients)))
        finally:
            await store.close()
        return outcomes

    out.put(dict(asyncio.run(main())))


@pytest.mark.slow
async def test_four_processes_grant_exactly_the_guild_limit(postgres_url: str) -> None:
    """Four processes x 10 requesters x 10 attempts race for one server's 100 daily units:
    exactly 100 are granted, and the processes' reservations interleave."""
    setup = await PostgresStore.open(postgres_url, POLICY)
    empty_tables(postgres_url)
    await setup.guilds.set_limits(GUILD, daily=100, per_user=1000, active_requests=1000)
    await setup.close()

    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    out = ctx.Queue()
    children = [
        ctx.Process(target=_reserve_from_a_process, args=(postgres_url, proc, 10, 10, start, out))
        for proc in (1, 2, 3, 4)
    ]
    for child in children:
        child.start()
    try:
        totals: Counter[str] = Counter()
        for _ in children:
            totals.update(await asyncio.to_thread(out.get, True, 120))
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
    assert totals == {"granted": 100, "refused": 300}
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT interaction_id / 1000000, cost FROM requests ORDER BY id"
        ).fetchall()
    assert sum(cost for _, cost in rows) == 100
    writers = [proc for proc, _ in rows]
    switches = sum(1 for a, b in itertools.pairwise(writers) if a != b)
    assert len(set(writers)) > 1 and switches >= 3, "the processes never overlapped"


async def test_copy_ledger_moves_a_sqlite_ledger_into_postgresql(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every table comes across: the requests with their ids, states and charges, a stored
    result, a server's limits and role allowance, an alert, a digest, the day's paid calls, a
    remix event with its call, takes and submission; both stores then answer alike, and new
    requests, events and event calls get new ids. A second copy into the now used database is
    refused."""
    path = tmp_path / "ledger.db"
    sqlite = await AsyncStore.open(path, POLICY)
    try:
        await sqlite.guilds.set_limits(GUILD, daily=20, active_requests=5)
        await sqlite.guilds.set_role_allowance(GUILD, 77, 3)
        await sqlite.guilds.claim_alert(GUILD, "day", NOW, 80, NOW)
        await sqlite.guilds.remember_command_digest("global", "abc")
        done = await sqlite.ledger.reserve(new_request(source_key="song"), NOW)
        await sqlite.ledger.mark_all_running([done.id], NOW)
        await sqlite.ledger.settle(done.id, separation(), "song", NOW)
        await sqlite.ledger.record_deliveries([(done.id, "interaction")], NOW)
        failed = await sqlite.ledger.reserve(new_request(BOB), NOW)
        await sqlite.ledger.refund_all([failed.id], RequestStatus.FAILED, "API failed", NOW)
        waiting = await sqlite.ledger.reserve(new_request(1003, source_key="other"), NOW)
        event = await sqlite.events.start(GUILD, 555, 1009, EVENT, NOW, max_open=3)
        event_call = await sqlite.ledger.reserve_for_event(
            event.id, Mode.VOCALS, "song.wav", "event-song", NOW
        )
        await sqlite.ledger.settle(event_call.id, separation(), "event-song", NOW)
        await sqlite.events.record_take(event.id, Mode.VOCALS, ALICE, NOW, answered=False)
        submitted, _ = await sqlite.events.submit(event.id, BOB, "Mine", "b.mp3", 7, NOW)
        ids = (done.id, failed.id, waiting.id, event_call.id)
        before = [await sqlite.ledger.get_request(request_id) for request_id in ids]
        status_before = await sqlite.quotas.quota_status(GUILD, ALICE, NOW, (77,))
        calls_before = await sqlite.quotas.api_calls_today(NOW)
    finally:
        await sqlite.close()

    with fresh_database(postgres_url) as url:
        env = {"STEMBOT_DB_PATH": str(path)}
        assert await asyncio.to_thread(main, ["copy-ledger", "--to", url], env) == 0
        said = capsys.readouterr().out
        assert "copied" in said and "4 requests" in said and "2 results" in said
        assert "1 remix_events" in said and "1 remix_event_submissions" in said
        store = await PostgresStore.open(url, POLICY)
        try:
            assert [await store.ledger.get_request(request_id) for request_id in ids] == before
            assert await store.quotas.quota_status(GUILD, ALICE, NOW, (77,)) == status_before
            assert await store.quotas.api_calls_today(NOW) == calls_before
            assert await store.ledger.find_result("song", Mode.VOCALS, NOW - timedelta(hours=1))
            assert (await store.guilds.guild_limits(GUILD)).role_allowances == ((77, 3),)
            assert not await store.guilds.claim_alert(GUILD, "day", NOW, 80, NOW)
            assert await store.guilds.command_digest("global") == "abc"
            assert (await store.ledger.recover(NOW)).undelivered == []
            later = await store.ledger.reserve(new_request(1004), NOW)
            assert later.id > max(ids)
            assert await store.events.get(event.id) == event
            assert [t.user_id for t in await store.events.waiting_takes()] == [ALICE]
            assert await store.events.submissions(event.id) == [submitted]
            assert (await store.events.spend(event.id)).units == 1
            second = await store.events.start(GUILD, 555, 1009, EVENT, NOW, max_open=3)
            assert second.id > event.id
            next_call = await store.ledger.reserve_for_event(
                second.id, Mode.VOCALS, "song.wav", "second-song", NOW
            )
            assert next_call.interaction_id < event_call.interaction_id < 0
            again, _ = await store.events.submit(event.id, ALICE, "Hers", "a.mp3", 8, NOW)
            assert again.id > submitted.id
        finally:
            await store.close()
        assert await asyncio.to_thread(main, ["copy-ledger", "--to", url], env) == 1
        assert "already holds 6 requests" in capsys.readouterr().err
