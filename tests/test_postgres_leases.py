"""Process leases on the PostgreSQL ledger (stembot/store/postgres/leases.py and
stembot/process_lease.py): two stores stand for two bot processes on one database. Time
passing is the database's: a lease is made to run out by moving its expiry into the past,
as the database clock would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from stembot.errors import ShuttingDownError
from stembot.models import Mode, RequestStatus
from stembot.process_lease import ProcessLease
from stembot.remix_event_models import EventSpec, SourceRef
from stembot.store.postgres import PostgresStore
from tests.lease_holders import Process, a_process, processes_on, run_out
from tests.test_store import ALICE, BOB, NOW, POLICY, new_request, separation


@pytest.fixture
async def processes(postgres_url: str) -> AsyncIterator[tuple[Process, Process]]:
    async with processes_on(postgres_url, 2) as (a, b):
        yield a, b


def owner(url: str, request_id: int) -> tuple[str, int | None]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT status, lease_id FROM requests WHERE id = %s", (request_id,)
        ).fetchone()
    assert row is not None
    return row[0], row[1]


async def test_every_request_records_the_lease_of_the_process_holding_it(
    postgres_url: str, processes: tuple[Process, Process]
) -> None:
    a, b = processes
    mine = await a.store.ledger.reserve(new_request(), NOW)
    theirs = await b.store.ledger.reserve(new_request(user=BOB), NOW)
    joined = await a.store.ledger.reserve_joined(
        new_request(user=BOB + 1, source_key=mine.source_key), NOW, running=False
    )
    assert owner(postgres_url, mine.id) == ("queued", a.lease.id)
    assert owner(postgres_url, joined.id) == ("queued", a.lease.id)
    assert owner(postgres_url, theirs.id) == ("queued", b.lease.id)


async def test_a_live_process_never_recovers_another_live_ones_requests(
    postgres_url: str, processes: tuple[Process, Process]
) -> None:
    """Both leases alive: the sweeps and a start-up recovery leave every request alone, and
    each process still settles its own."""
    a, b = processes
    mine = await a.store.ledger.reserve(new_request(), NOW)
    theirs = await b.store.ledger.reserve(new_request(user=BOB), NOW)
    await a.store.ledger.mark_all_running([mine.id], NOW)
    for recovered in (
        await a.sharing.sweep(NOW),
        await b.sharing.sweep(NOW),
        await b.sharing.recover(NOW),
    ):
        assert recovered.interrupted == [] and recovered.undelivered == []
    assert await a.store.ledger.settle(mine.id, separation(), mine.source_key, NOW)
    assert await b.store.ledger.refund_all([theirs.id], RequestStatus.FAILED, "no", NOW) == 1


async def test_a_dead_processs_requests_are_taken_over_once(
    postgres_url: str, processes: tuple[Process, Process]
) -> None:
    """A's lease runs out: B's sweep refunds A's request in progress, settles the one whose
    call had landed (a stored result for it) and hands back the result A never delivered;
    B holds them now, and neither the next sweep nor a start-up finds them again."""
    a, b = processes
    running = await a.store.ledger.reserve(new_request(), NOW)
    await a.store.ledger.mark_all_running([running.id], NOW)
    landed = await a.store.ledger.reserve(new_request(user=BOB), NOW)
    undelivered = await a.store.ledger.reserve(new_request(user=BOB + 1), NOW)
    await a.store.ledger.settle(undelivered.id, separation(), undelivered.source_key, NOW)
    # Another process stored the result of ``landed``'s source and mode after it was made.
    other = await b.store.ledger.reserve(new_request(user=BOB + 2, source_key="elsewhere"), NOW)
    await b.store.ledger.settle(other.id, separation(), landed.source_key, NOW)
    run_out(postgres_url, a)

    recovered = await b.sharing.sweep(NOW)

    assert [r.id for r in recovered.interrupted] == [running.id]
    assert recovered.interrupted[0].status is RequestStatus.INTERRUPTED
    assert sorted(r.id for r, _ in recovered.undelivered) == [landed.id, undelivered.id]
    assert owner(postgres_url, running.id) == ("interrupted", b.lease.id)
    assert owner(postgres_url, landed.id) == ("succeeded", b.lease.id)
    assert owner(postgres_url, undelivered.id) == ("succeeded", b.lease.id)
    status = await b.store.quotas.quota_status(running.guild_id, ALICE, NOW)
    assert status.user_daily is not None and status.user_daily.used == 0  # refunded
    for again in (await b.sharing.sweep(NOW), await b.sharing.recover(NOW)):
        assert again.interrupted == [] and again.undelivered == []


async def test_a_process_that_lost_its_lease_changes_and_records_nothing(
    postgres_url: str, processes: tuple[Process, Process]
) -> None:
    """Frozen past its lease, then awake: A's settle, refund and hand-over change nothing,
    whether or not B has taken its requests yet; it records no new request; and it may tell
    none of them. B's sweep then refunds them, once."""
    a, b = processes
    paid = await a.store.ledger.reserve(new_request(), NOW)
    joined = await a.store.ledger.reserve_joined(
        new_request(user=BOB, source_key=paid.source_key), NOW, running=False
    )
    run_out(postgres_url, a)
    assert not await a.store.ledger.settle(paid.id, separation(), paid.source_key, NOW)
    assert await a.store.ledger.refund_all([joined.id], RequestStatus.FAILED, "x", NOW) == 0
    assert await a.store.ledger.mark_all_running([paid.id], NOW) == 0
    assert await a.store.ledger.hand_over_charge(paid.id, [(joined.id, ())], NOW) is None
    with pytest.raises(ShuttingDownError):
        await a.store.ledger.reserve(new_request(user=BOB + 1), NOW)
    assert await a.sharing.kept([paid.id, joined.id], RequestStatus.SUCCEEDED) == set()
    assert not await a.store.leases.renew(a.lease.id, 30)  # dead for good

    recovered = await b.sharing.sweep(NOW)
    # The API's result was stored all the same: the payer's call landed, so it succeeded.
    assert sorted(r.id for r, _ in recovered.undelivered) == [paid.id, joined.id]
    assert not await a.store.ledger.settle(paid.id, separation(), paid.source_key, NOW)
    assert await a.sharing.kept([paid.id], RequestStatus.SUCCEEDED) == set()
    assert await b.sharing.kept([paid.id, joined.id], RequestStatus.SUCCEEDED) == {
        paid.id,
        joined.id,
    }


async def test_a_process_that_wrote_its_outcome_may_tell_it_even_after_a_lost_answer(
    processes: tuple[Process, Process],
) -> None:
    """The write landed but its answer was lost (a connection cut): written again it changes
    nothing, yet the process still holds the request in that state, so it tells it."""
    a, _ = processes
    request = await a.store.ledger.reserve(new_request(), NOW)
    assert await a.store.ledger.refund_all([request.id], RequestStatus.FAILED, "x", NOW) == 1
    assert await a.store.ledger.refund_all([request.id], RequestStatus.FAILED, "x", NOW) == 0
    assert await a.sharing.kept([request.id], RequestStatus.FAILED) == {request.id}
    assert await a.sharing.kept([request.id], RequestStatus.SUCCEEDED) == set()


async def test_a_clean_stop_is_recovered_at_once_and_a_start_up_takes_a_bot_before_leases(
    postgres_url: str, processes: tuple[Process, Process]
) -> None:
    a, b = processes
    left = await a.store.ledger.reserve(new_request(), NOW)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO requests (interaction_id, guild_id, channel_id, user_id, mode, "
            "source_name, source_key, cost, status, created_at) VALUES "
            "(42, 111, 5, 7, 'vocals', 'old.wav', 'old', 1, 'running', now())"
        )
    await a.lease.release()
    swept = await b.sharing.sweep(NOW)
    assert [r.id for r in swept.interrupted] == [left.id]  # a sweep leaves the old bot's
    started = await b.sharing.recover(NOW)
    assert [r.source_key for r in started.interrupted] == ["old"]


async def test_the_local_clock_gives_up_a_lease_not_renewed_in_time(postgres_url: str) -> None:
    """By the process's own monotonic clock: held until the lease's time since the last
    renewal was sent, then lost for good, whatever the database would say; it tells nothing
    from then on."""
    clock = [0.0]
    process = await a_process(postgres_url, clock)
    try:
        clock[0] = 29.9
        assert process.lease.held()
        clock[0] = 30.0
        assert not process.lease.held() and process.lease.lost.is_set()
        request_ids = [1, 2]
        assert await process.sharing.kept(request_ids, RequestStatus.FAILED) == set()
    finally:
        await process.store.close()


async def test_keep_renews_the_lease_and_stops_once_the_database_says_it_expired(
    postgres_url: str,
) -> None:
    store = await PostgresStore.open(postgres_url, POLICY)
    try:
        lease = await ProcessLease.take(store.leases, shards="all", lease_s=30, heartbeat_s=0.01)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            first = conn.execute(
                "SELECT expires_at FROM stembot_processes WHERE id = %s", (lease.id,)
            ).fetchone()
        keeper = asyncio.create_task(lease.keep())

        def expiry() -> object:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                return conn.execute(
                    "SELECT expires_at FROM stembot_processes WHERE id = %s", (lease.id,)
                ).fetchone()

        async with asyncio.timeout(10):
            while expiry() == first:  # noqa: ASYNC110 - another task renews it
                await asyncio.sleep(0.01)
        assert not keeper.done()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE stembot_processes SET expires_at = clock_timestamp() WHERE id = %s",
                (lease.id,),
            )
        await asyncio.wait_for(keeper, 10)
        assert lease.lost.is_set() and not lease.held()
    finally:
        await store.close()


async def test_one_process_at_a_time_syncs_the_commands(
    processes: tuple[Process, Process],
) -> None:
    """The second waits while the first holds the sync; then it goes."""
    a, b = processes
    order: list[str] = []
    async with a.store.guilds.syncing():
        second = asyncio.create_task(_sync(b.store, order))
        await asyncio.sleep(0.2)
        order.append("first done")
    await asyncio.wait_for(second, 10)
    assert order == ["first done", "second syncing"]


async def _sync(store: PostgresStore, order: list[str]) -> None:
    async with store.guilds.syncing():
        order.append("second syncing")


async def test_only_a_gone_processs_waiting_takes_are_resumed_and_once(
    postgres_url: str, processes: tuple[Process, Process]
) -> None:
    """A member's take waits for its event's call in A: B's start-up or sweep leaves it while
    A lives; once A is found gone, B takes it over (to make the call and answer it), once."""
    a, b = processes
    a.store.events.hold_with(a.lease.id)
    b.store.events.hold_with(b.lease.id)
    spec = EventSpec("Spring remix", "song.wav", "event-song", SourceRef(555, 700, 900))
    event = await a.store.events.start(111, 555, 1009, spec, NOW, max_open=3)
    await a.store.events.record_take(event.id, Mode.VOCALS, ALICE, NOW, answered=False)
    assert await b.store.events.waiting_takes() == []
    run_out(postgres_url, a)
    assert await b.store.events.waiting_takes() == []  # not before its requests are recovered
    await b.sharing.sweep(NOW)
    (take,) = await b.store.events.waiting_takes()
    assert (take.event_id, take.mode, take.user_id) == (event.id, Mode.VOCALS, ALICE)
    assert await b.store.events.waiting_takes() == []


async def test_retention_forgets_processes_taken_over_before_its_cutoff(
    postgres_url: str, processes: tuple[Process, Process]
) -> None:
    a, b = processes
    await a.lease.release()
    await b.sharing.sweep(NOW)
    await b.store.prune(datetime.now(UTC) + timedelta(days=1), stop=lambda: False)
    with psycopg.connect(postgres_url) as conn:
        left = conn.execute("SELECT id FROM stembot_processes").fetchall()
    assert left == [(b.lease.id,)]
