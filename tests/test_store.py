"""The ledger: quotas held exactly, refunds once, windows, recovery, reports, contention."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import random
import signal
import sqlite3
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from stembot.config import QuotaPolicy
from stembot.errors import (
    DatabaseReplacedError,
    QuotaExceededError,
    StoreBusyError,
    StoreFailedError,
    StoreUnavailableError,
)
from stembot.models import Mode, NewRequest, RequestStatus, Separation, Stem
from stembot.store import Store
from stembot.store.migrations import MIGRATIONS
from tests.ledger_reads import delivered_via

NOW = datetime(2026, 5, 14, 12, 0, tzinfo=UTC)
GUILD = 111
OTHER_GUILD = 222
ALICE = 1001
BOB = 1002
POLICY = QuotaPolicy(
    guild_daily_limit=50, guild_monthly_limit=500, user_daily_limit=10, user_active_jobs=1
)
_ids = iter(range(10_000_000, 20_000_000))


def new_request(
    user: int = ALICE,
    mode: Mode = Mode.VOCALS,
    guild: int = GUILD,
    interaction: int | None = None,
    source_key: str | None = None,
) -> NewRequest:
    """A request; by default of a file of its own (one paid call per source and mode is in
    flight at a time: requests for the same source share it)."""
    ident = next(_ids) if interaction is None else interaction
    return NewRequest(
        guild_id=guild,
        channel_id=555,
        user_id=user,
        interaction_id=ident,
        mode=mode,
        source_url="https://cdn.example/song.mp3?sig=abc",
        source_name="song.mp3",
        source_key=f"attachment:{ident}" if source_key is None else source_key,
    )


def separation(mode: Mode = Mode.VOCALS, issued_at: datetime = NOW) -> Separation:
    return Separation(
        mode=mode, stems=(Stem("vocals", "https://stems.example/v.mp3"),), issued_at=issued_at
    )


def open_store(path: Path, policy: QuotaPolicy = POLICY, **kwargs: Any) -> Store:
    return Store.open(path, policy, **kwargs)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def store(db_path: Path):
    opened = open_store(db_path)
    yield opened
    opened.close()


def used_today(store: Store, guild: int = GUILD, now: datetime = NOW) -> int:
    return store.quotas.quota_status(guild, None, now).guild_daily.used


# --- opening -----------------------------------------------------------------------------------


def test_open_uses_wal_and_full_sync(store: Store) -> None:
    """The connection runs in WAL mode with synchronous=FULL."""
    conn = store.connection.db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_all_migrations_run_in_the_one_start_up_transaction(db_path: Path) -> None:
    """The start-up write lock holds across every migration (none commits on its own), so two
    processes opening an old database at once never both migrate it."""
    conn = sqlite3.connect(db_path)
    try:
        db = Database(conn, execute_plugins=False)
        conn.execute("BEGIN IMMEDIATE")
        MIGRATIONS.apply(db)
        assert conn.in_transaction
        conn.rollback()
        assert (
            conn.execute("SELECT name FROM sqlite_master WHERE name = 'requests'").fetchall() == []
        )
    finally:
        conn.close()


def test_migrations_are_safe_to_rerun(db_path: Path) -> None:
    """Opening an existing database again keeps its data and applies nothing twice."""
    first = open_store(db_path)
    request = first.ledger.reserve(new_request(), NOW)
    first.close()
    second = open_store(db_path)
    try:
        assert second.ledger.get_request(request.id) == request
        applied = second.connection.db.conn.execute(
            "SELECT name FROM _sqlite_migrations"
        ).fetchall()
        assert applied == [
            ("0001_ledger",),
            ("0002_command_digests",),
            ("0003_deliveries",),
            ("0004_spend",),
            ("0005_privacy",),
            ("0006_moderator_refunds",),
            ("0007_request_noun",),
            ("0008_remix_events",),
            ("0009_one_call_in_flight",),
            ("0010_event_calls_in_flight",),
            ("0011_sealed_sources",),
        ]
    finally:
        second.close()


@pytest.mark.parametrize("problem", ["missing folder", "not a database"])
def test_an_unusable_file_gives_a_clear_error(tmp_path: Path, problem: str) -> None:
    """A path in a missing folder or a file that is not SQLite names the path, not a traceback."""
    path = tmp_path / "missing" / "ledger.db"
    if problem == "not a database":
        path = tmp_path / "notes.txt"
        path.write_text("hello, this is not SQLite " * 100)
    with pytest.raises(StoreUnavailableError, match="cannot use the database at"):
        open_store(path)


# --- reserve, settle, refund ---------------------------------------------------------------------


# --- limits --------------------------------------------------------------------------------------


# --- stored results ------------------------------------------------------------------------------


# --- recovery ------------------------------------------------------------------------------------


def test_upgrading_does_not_deliver_earlier_answers_again(db_path: Path) -> None:
    """Requests answered before deliveries were recorded count as delivered ("unrecorded")."""
    old = Database(db_path)
    MIGRATIONS.apply(old, stop_before="0003_deliveries")
    old.execute(
        "INSERT INTO requests (interaction_id, guild_id, channel_id, user_id, mode, source_name,"
        " source_key, cost, status, created_at, finished_at) VALUES "
        "(1, ?, 555, ?, 'vocals', 'song.mp3', 'attachment:42', 1, 'succeeded', ?, ?)",
        (GUILD, ALICE, "2026-05-14T11:00:00.000000Z", "2026-05-14T11:00:05.000000Z"),
    )
    old.execute(
        "INSERT INTO results (source_key, mode, stems, issued_at, job_id) "
        "VALUES ('attachment:42', 'vocals', '[]', '2026-05-14T11:00:05.000000Z', 1)"
    )
    old.conn.commit()
    old.close()
    store = open_store(db_path)
    try:
        assert store.ledger.recover(NOW).undelivered == []
        assert delivered_via(store, 1) == "unrecorded"
    finally:
        store.close()


def test_upgrading_keeps_who_refunded(db_path: Path) -> None:
    """A moderator's refund noted before it was a column is still known as one."""
    old = Database(db_path)
    MIGRATIONS.apply(old, stop_before="0006_moderator_refunds")
    for interaction, error in ((1, "refunded by a moderator at 2026-05-14T11:00:00Z"), (2, None)):
        old.execute(
            "INSERT INTO requests (interaction_id, guild_id, channel_id, user_id, mode,"
            " source_name, source_key, cost, status, created_at, finished_at, error) VALUES "
            "(?, ?, 555, ?, 'vocals', 'song.mp3', 'attachment:42', 1, 'cancelled', ?, ?, ?)",
            (interaction, GUILD, ALICE, "2026-05-14T10:00:00.000000Z", None, error),
        )
    old.conn.commit()
    old.close()
    store = open_store(db_path)
    try:
        requests = [store.ledger.get_request(n) for n in (1, 2)]
        assert [request.refunded_by_moderator for request in requests if request] == [True, False]
    finally:
        store.close()


def test_upgrading_marks_an_events_finished_paid_call_as_its_call(db_path: Path) -> None:
    """0010_event_calls_in_flight: an event's paid call that finished is marked as the paying
    request; one still queued is left unmarked (a member's paid call of the same source may be
    in flight, and recovery ends it anyway); a free event row is never marked."""
    old = Database(db_path)
    MIGRATIONS.apply(old, stop_before="0010_event_calls_in_flight")
    for interaction, status, cost in (
        (-1, "succeeded", 1),
        (-2, "queued", 1),
        (-3, "succeeded", 0),
    ):
        old.execute(
            "INSERT INTO requests (interaction_id, guild_id, channel_id, user_id, mode,"
            " source_name, source_key, cost, status, created_at, member_pays, remix_event_id)"
            " VALUES (?, ?, 555, ?, 'vocals', 'song.mp3', 'attachment:42', ?, ?,"
            " '2026-05-14T11:00:00.000000Z', 0, 1)",
            (interaction, GUILD, ALICE, cost, status),
        )
    for request_id in (1, 2):
        old.execute(
            "INSERT INTO api_calls (request_id, guild_id, day, reserved_at) "
            "VALUES (?, ?, '2026-05-14', '2026-05-14T11:00:00.000000Z')",
            (request_id, GUILD),
        )
    old.conn.commit()
    old.close()
    store = open_store(db_path)
    try:
        marked = store.connection.db.execute("SELECT id, pays_call FROM requests ORDER BY id")
        assert [tuple(row) for row in marked.fetchall()] == [(1, 1), (2, 0), (3, 0)]
    finally:
        store.close()


def test_upgrading_to_the_request_columns_keeps_their_rows(db_path: Path) -> None:
    """0007_request_noun: a paid call, a stored result and a server's limit written under the
    old column names are still read, counted and ended under the new ones."""
    old = Database(db_path)
    MIGRATIONS.apply(old, stop_before="0007_request_noun")
    for interaction, status, key in (
        (1, "queued", "attachment:41"),
        (2, "succeeded", "attachment:42"),
    ):
        old.execute(
            "INSERT INTO requests (interaction_id, guild_id, channel_id, user_id, mode,"
            " source_name, source_key, cost, status, created_at) VALUES "
            "(?, ?, 555, ?, 'vocals', 'song.mp3', ?, 1, ?, '2026-05-14T11:00:00.000000Z')",
            (interaction, GUILD, ALICE, key, status),
        )
    old.execute(
        "INSERT INTO api_calls (job_id, guild_id, day, reserved_at) "
        "VALUES (1, ?, '2026-05-14', '2026-05-14T11:00:00.000000Z')",
        (GUILD,),
    )
    old.execute(
        "INSERT INTO results (source_key, mode, stems, issued_at, job_id) "
        "VALUES ('attachment:42', 'vocals', '[]', '2026-05-14T11:00:05.000000Z', 2)"
    )
    old.execute("INSERT INTO guild_settings (guild_id, user_active_jobs) VALUES (?, 3)", (GUILD,))
    old.conn.commit()
    old.close()
    store = open_store(db_path)
    try:
        db = store.connection.db
        assert store.guilds.guild_limits(GUILD).active_requests == 3
        assert (
            store.ledger.find_result("attachment:42", Mode.VOCALS, NOW - timedelta(hours=2))
            is not None
        )
        # The trigger names the new column: a queued request cancelled never made its call.
        store.ledger.refund_all([1], RequestStatus.CANCELLED, "cancelled", NOW)
        assert db.execute("SELECT count(*) FROM api_calls").fetchone() == (0,)
        request = store.ledger.reserve(new_request(), NOW)
        assert db.execute("SELECT request_id FROM api_calls").fetchall() == [(request.id,)]
        assert store.ledger.refund_by_moderator(2, GUILD, NOW)
        assert (
            store.ledger.find_result("attachment:42", Mode.VOCALS, NOW - timedelta(hours=2)) is None
        )
    finally:
        store.close()


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_vanished_database_file_refuses_writes_instead_of_writing_nowhere(
    db_path: Path, store: Store, how: str
) -> None:
    """SQLite would go on writing through the open handle; the store refuses and says why."""
    request = store.ledger.reserve(new_request(), NOW)
    assert store.file_problem() is None
    db_path.unlink()
    if how == "replaced":
        sqlite3.connect(db_path).close()
    assert store.file_problem() == f"the database file {db_path} was {how}" + (
        " by another file" if how == "replaced" else ""
    )
    with pytest.raises(DatabaseReplacedError):
        store.ledger.settle(request.id, separation(), "attachment:42", NOW)
    with pytest.raises(DatabaseReplacedError):
        store.ledger.reserve(new_request(user=BOB), NOW)


def test_a_corrupt_page_is_a_store_failure_not_a_crash(db_path: Path, store: Store) -> None:
    """A write that hits a corrupt page raises StoreFailedError (safe to show), not sqlite's."""
    request = store.ledger.reserve(new_request(), NOW)
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (root,) = other.execute("SELECT rootpage FROM sqlite_master WHERE name = 'requests'").fetchone()
    (page_size,) = other.execute("PRAGMA page_size").fetchone()
    with db_path.open("r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\xff" * page_size)
    other.execute("INSERT INTO command_digests (scope, digest) VALUES ('x', '')")
    other.close()
    with pytest.raises(StoreFailedError) as raised:
        store.ledger.settle(request.id, separation(), "attachment:42", NOW)
    assert isinstance(raised.value.__cause__, sqlite3.DatabaseError)


def _hold_a_running_request(path: str, ready: Any) -> None:
    """Child process: settle one request, leave another running, report, then wait to be killed."""
    store = Store.open(Path(path), POLICY)
    done = store.ledger.reserve(
        new_request(user=ALICE, mode=Mode.ALL, interaction=1, source_key="attachment:42"), NOW
    )
    store.ledger.mark_all_running([done.id], NOW)
    store.ledger.settle(done.id, separation(Mode.ALL), "attachment:42", NOW)
    request = store.ledger.reserve(new_request(user=BOB, interaction=2), NOW)
    store.ledger.mark_all_running([request.id], NOW)
    ready.send((done.id, request.id))
    time.sleep(60)


@pytest.mark.slow
def test_sigkill_mid_request_loses_nothing_and_refunds_once(db_path: Path) -> None:
    """A process killed with SIGKILL while running a request: recovery refunds it exactly once."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_hold_a_running_request, args=(str(db_path), sender))
    child.start()
    try:
        assert receiver.poll(30), "the child never reported its running request"
        done_id, running_id = receiver.recv()
    finally:
        child.kill()
        child.join(10)
    assert child.exitcode == -signal.SIGKILL

    store = open_store(db_path)
    try:
        assert used_today(store) == 3
        recovered = store.ledger.recover(NOW + timedelta(minutes=1)).interrupted
        assert [(request.id, request.status, request.user_id) for request in recovered] == [
            (running_id, RequestStatus.INTERRUPTED, BOB)
        ]
        assert store.ledger.recover(NOW + timedelta(minutes=2)).interrupted == []
        assert (
            store.ledger.refund_all([running_id], RequestStatus.INTERRUPTED, "again", NOW) == 1
        ) is False
        assert used_today(store) == 2
        done = store.ledger.get_request(done_id)
        assert done is not None and done.status is RequestStatus.SUCCEEDED
        assert store.ledger.find_result("attachment:42", Mode.ALL, NOW - timedelta(hours=1))
    finally:
        store.close()


# --- contention ----------------------------------------------------------------------------------


def _contend(
    path: str, proc: int, coroutines: int, attempts: int, same_user: bool, start: Any, out: Any
) -> None:
    """Child process: many coroutines reserve against one file; count every outcome."""
    outcomes: Counter[str] = Counter()
    store = Store.open(Path(path), POLICY)

    async def one(index: int) -> None:
        for attempt in range(attempts):
            # the think time a real request has between awaits; lets the processes interleave
            await asyncio.sleep(random.uniform(0, 0.002))
            ident = proc * 1_000_000 + index * 1000 + attempt
            user = ALICE if same_user else ident
            try:
                store.ledger.reserve(new_request(user=user, interaction=ident), NOW)
                outcomes["granted"] += 1
            except QuotaExceededError:
                outcomes["refused"] += 1
            except StoreBusyError:
                outcomes["busy"] += 1
            except sqlite3.OperationalError as error:
                outcomes[f"sqlite: {error}"] += 1

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(coroutines)))

    start.wait(30)
    asyncio.run(main())
    store.close()
    out.put(dict(outcomes))


def _run_contenders(db_path: Path, coroutines: int, attempts: int, same_user: bool) -> Counter[str]:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(3)
    out = ctx.Queue()
    children = [
        ctx.Process(
            target=_contend,
            args=(str(db_path), proc, coroutines, attempts, same_user, start, out),
        )
        for proc in (1, 2)
    ]
    for child in children:
        child.start()
    try:
        start.wait(60)
        totals: Counter[str] = Counter()
        for _ in children:
            totals.update(out.get(timeout=60))
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
    return totals


@pytest.mark.slow
def test_two_processes_grant_exactly_the_guild_limit(db_path: Path) -> None:
    """Two processes x 40 coroutines x 10 attempts grant exactly 400 units, none locked."""
    setup = open_store(db_path)
    setup.guilds.set_limits(GUILD, daily=400, per_user=1000, active_requests=1000)
    setup.close()

    totals = _run_contenders(db_path, coroutines=40, attempts=10, same_user=False)

    assert totals == {"granted": 400, "refused": 400}
    store = open_store(db_path)
    try:
        assert used_today(store) == 400
        rows = store.connection.db.conn.execute(
            "SELECT interaction_id / 1000000, cost FROM requests ORDER BY id"
        ).fetchall()
    finally:
        store.close()
    assert sum(cost for _, cost in rows) == 400
    writers = [proc for proc, _ in rows]
    switches = sum(1 for a, b in itertools.pairwise(writers) if a != b)
    assert switches >= 2, "the two processes never overlapped, so nothing contended"


@pytest.mark.slow
def test_two_processes_give_one_user_one_active_request(db_path: Path) -> None:
    """The same member pressing enter in two processes at once gets exactly one request."""
    open_store(db_path).close()
    totals = _run_contenders(db_path, coroutines=20, attempts=2, same_user=True)
    assert totals == {"granted": 1, "refused": 79}


def test_a_locked_database_gives_a_retryable_error(db_path: Path) -> None:
    """Past the busy timeout the caller gets StoreBusyError, nothing half-written."""
    store = open_store(db_path, busy_timeout_s=0.05)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreBusyError) as busy:
            store.ledger.reserve(new_request(), NOW)
        assert "try again" in busy.value.user_message
        blocker.execute("ROLLBACK")
        assert used_today(store) == 0
        store.ledger.reserve(new_request(), NOW)
        assert used_today(store) == 1
    finally:
        blocker.close()
        store.close()


# --- reports -------------------------------------------------------------------------------------


# --- moderators' settings ------------------------------------------------------------------------


# --- requests sharing one API call ----------------------------------------------------------
