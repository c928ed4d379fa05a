"""The ledger: quotas held exactly, refunds once, windows, recovery, reports, contention."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import multiprocessing
import random
import signal
import sqlite3
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from stembot.config import QuotaPolicy
from stembot.errors import (
    DatabaseReplacedError,
    DuplicateRequestError,
    QuotaExceededError,
    QuotaLimitReached,
    StoreBusyError,
    StoreFailedError,
    StoreUnavailableError,
)
from stembot.models import Mode, NewRequest, QuotaLimit, RequestStatus, Separation, Stem
from stembot.store import Store
from stembot.store.migrations import MIGRATIONS
from tests.ledger_reads import charged, delivered_via

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
    source_key: str = "attachment:42",
) -> NewRequest:
    return NewRequest(
        guild_id=guild,
        channel_id=555,
        user_id=user,
        interaction_id=next(_ids) if interaction is None else interaction,
        mode=mode,
        source_url="https://cdn.example/song.mp3?sig=abc",
        source_name="song.mp3",
        source_key=source_key,
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


def test_naive_datetimes_are_refused(store: Store) -> None:
    """A datetime without a timezone is a bug, not something to guess about."""
    with pytest.raises(ValueError, match="timezone"):
        store.ledger.reserve(new_request(), datetime(2026, 5, 14, 12, 0))


# --- reserve, settle, refund ---------------------------------------------------------------------


def test_reserve_records_a_queued_request_at_the_mode_cost(store: Store) -> None:
    """A reservation is a queued ledger row charged at its mode's cost."""
    request = store.ledger.reserve(new_request(mode=Mode.ALL), NOW)
    assert (request.status, request.cost, request.created_at) == (RequestStatus.QUEUED, 2, NOW)
    assert store.ledger.get_request(request.id) == request
    assert used_today(store) == 2


def test_same_interaction_never_reserves_twice(store: Store) -> None:
    """A redelivered interaction is refused and charged once."""
    store.ledger.reserve(new_request(interaction=7), NOW)
    with pytest.raises(DuplicateRequestError):
        store.ledger.reserve(new_request(interaction=7, user=BOB), NOW)
    assert used_today(store) == 1


def test_refunded_interaction_still_cannot_reserve_again(store: Store) -> None:
    """A refund does not free the interaction id for a second reservation."""
    request = store.ledger.reserve(new_request(interaction=8), NOW)
    store.ledger.refund_all([request.id], RequestStatus.FAILED, "api failed", NOW)
    with pytest.raises(DuplicateRequestError):
        store.ledger.reserve(new_request(interaction=8), NOW)


def test_refund_happens_exactly_once(store: Store) -> None:
    """However often a refund is asked for, the units come back once."""
    store.ledger.reserve(new_request(user=BOB), NOW)
    request = store.ledger.reserve(new_request(mode=Mode.ALL), NOW)
    assert used_today(store) == 3
    outcomes = [
        store.ledger.refund_all([request.id], RequestStatus.FAILED, "api failed", NOW) == 1
        for _ in range(3)
    ]
    outcomes.append(
        store.ledger.refund_all([request.id], RequestStatus.CANCELLED, "cancelled", NOW) == 1
    )
    assert outcomes == [True, False, False, False]
    assert used_today(store) == 1
    refunded = store.ledger.get_request(request.id)
    assert refunded is not None
    assert (refunded.status, refunded.error, charged(refunded)) == (
        RequestStatus.FAILED,
        "api failed",
        0,
    )


def test_settled_request_cannot_be_refunded(store: Store) -> None:
    """A success settles the charge; a later refund changes nothing."""
    request = store.ledger.reserve(new_request(), NOW)
    store.ledger.mark_all_running([request.id], NOW)
    assert store.ledger.settle(request.id, separation(), "attachment:42", NOW) is True
    assert (store.ledger.refund_all([request.id], RequestStatus.FAILED, "late", NOW) == 1) is False
    assert used_today(store) == 1
    settled = store.ledger.get_request(request.id)
    assert settled is not None and settled.status is RequestStatus.SUCCEEDED


def test_settle_after_refund_keeps_the_refund(store: Store) -> None:
    """A result arriving for a cancelled request is kept for reuse but not charged."""
    request = store.ledger.reserve(new_request(), NOW)
    store.ledger.refund_all([request.id], RequestStatus.CANCELLED, "cancelled", NOW)
    assert store.ledger.settle(request.id, separation(), "attachment:42", NOW) is False
    assert used_today(store) == 0
    assert (
        store.ledger.find_result("attachment:42", Mode.VOCALS, NOW - timedelta(hours=1)) is not None
    )


def test_refund_only_ends_a_request_as_failed_cancelled_or_interrupted(store: Store) -> None:
    """Refunding "as succeeded" is a programming error."""
    request = store.ledger.reserve(new_request(), NOW)
    with pytest.raises(ValueError, match="refund"):
        store.ledger.refund_all([request.id], RequestStatus.SUCCEEDED, "", NOW)


def test_mark_running_moves_only_queued_requests(store: Store) -> None:
    """A cancelled request cannot be started; a queued one can, once."""
    cancelled = store.ledger.reserve(new_request(user=BOB), NOW)
    store.ledger.refund_all([cancelled.id], RequestStatus.CANCELLED, "cancelled", NOW)
    request = store.ledger.reserve(new_request(), NOW)
    assert store.ledger.mark_all_running([cancelled.id], NOW) == 0
    assert store.ledger.mark_all_running([request.id], NOW + timedelta(seconds=1)) == 1
    assert store.ledger.mark_all_running([request.id], NOW) == 0
    running = store.ledger.get_request(request.id)
    assert running is not None
    assert (running.status, running.started_at) == (
        RequestStatus.RUNNING,
        NOW + timedelta(seconds=1),
    )


# --- limits --------------------------------------------------------------------------------------


def test_guild_daily_limit_names_itself_and_its_reset(store: Store) -> None:
    """Past the server's daily units the refusal says which limit and when it resets."""
    store.guilds.set_limits(GUILD, daily=3)
    for user in (1, 2, 3):
        store.ledger.reserve(new_request(user=user), NOW)
    with pytest.raises(QuotaLimitReached) as refused:
        store.ledger.reserve(new_request(user=4), NOW)
    assert refused.value.limit is QuotaLimit.GUILD_DAILY
    assert refused.value.resets_at == datetime(2026, 5, 15, tzinfo=UTC)
    assert "server" in refused.value.user_message and "daily" in refused.value.user_message
    assert used_today(store) == 3


def test_a_mode_costing_more_than_what_is_left_is_refused(store: Store) -> None:
    """With one unit left, "all" (2 units) is refused and "vocals" (1 unit) is not."""
    store.guilds.set_limits(GUILD, daily=3)
    store.ledger.reserve(new_request(user=1, mode=Mode.ALL), NOW)
    with pytest.raises(QuotaExceededError):
        store.ledger.reserve(new_request(user=2, mode=Mode.ALL), NOW)
    store.ledger.reserve(new_request(user=2, mode=Mode.INSTRUMENTS), NOW)
    assert used_today(store) == 3


def test_day_window_turns_at_midnight_utc(store: Store) -> None:
    """23:59:59 counts for its day; 00:00:00 starts a fresh one."""
    store.guilds.set_limits(GUILD, daily=1)
    late = datetime(2026, 5, 14, 23, 59, 59, tzinfo=UTC)
    store.ledger.reserve(new_request(user=1), late)
    with pytest.raises(QuotaLimitReached) as refused:
        store.ledger.reserve(new_request(user=2), late + timedelta(microseconds=999_999))
    assert refused.value.resets_at == datetime(2026, 5, 15, tzinfo=UTC)
    store.ledger.reserve(new_request(user=2), datetime(2026, 5, 15, 0, 0, 0, tzinfo=UTC))


def test_day_window_follows_utc_not_the_callers_offset(store: Store) -> None:
    """A time given in another timezone is counted in its UTC day."""
    store.guilds.set_limits(GUILD, daily=1)
    store.ledger.reserve(new_request(user=1), datetime(2026, 5, 14, 23, 30, tzinfo=UTC))
    tokyo = datetime(2026, 5, 15, 17, 45, tzinfo=timezone(timedelta(hours=9)))
    store.ledger.reserve(new_request(user=2), tokyo)  # 2026-05-15 08:45 UTC: a new day
    assert store.quotas.quota_status(GUILD, None, tokyo).guild_daily.used == 1


def test_month_window_turns_on_the_first_at_midnight_utc(store: Store) -> None:
    """The last second of a month counts for it; the 1st at 00:00 starts a fresh month."""
    store.guilds.set_limits(GUILD, monthly=2, daily=100)
    last_second = datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)
    store.ledger.reserve(new_request(user=1), datetime(2026, 1, 2, tzinfo=UTC))
    store.ledger.reserve(new_request(user=2), last_second)
    with pytest.raises(QuotaLimitReached) as refused:
        store.ledger.reserve(new_request(user=3), last_second)
    assert refused.value.limit is QuotaLimit.GUILD_MONTHLY
    assert refused.value.resets_at == datetime(2026, 2, 1, tzinfo=UTC)
    store.ledger.reserve(new_request(user=3), datetime(2026, 2, 1, 0, 0, 0, tzinfo=UTC))


def test_december_resets_on_the_first_of_january(store: Store) -> None:
    """The monthly reset of December is the next year's 1 January."""
    status = store.quotas.quota_status(GUILD, None, datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert status.guild_monthly.resets_at == datetime(2027, 1, 1, tzinfo=UTC)
    assert status.guild_daily.resets_at == datetime(2027, 1, 1, tzinfo=UTC)


def test_monthly_refusal_wins_over_daily_when_both_bind(store: Store) -> None:
    """When day and month are both used up, the user hears the later (monthly) reset."""
    store.guilds.set_limits(GUILD, daily=1, monthly=1)
    store.ledger.reserve(new_request(user=1), NOW)
    with pytest.raises(QuotaLimitReached) as refused:
        store.ledger.reserve(new_request(user=2), NOW)
    assert refused.value.limit is QuotaLimit.GUILD_MONTHLY


def test_per_user_daily_cap_counts_that_users_units_in_that_guild(store: Store) -> None:
    """A member's own daily units run out without stopping others or other servers."""
    store.guilds.set_limits(GUILD, per_user=2, active_requests=10)
    store.ledger.reserve(new_request(user=ALICE), NOW)
    store.ledger.reserve(new_request(user=ALICE), NOW)
    with pytest.raises(QuotaLimitReached) as refused:
        store.ledger.reserve(new_request(user=ALICE), NOW)
    assert refused.value.limit is QuotaLimit.USER_DAILY
    assert "You have used 2 of your 2 daily units" in refused.value.user_message
    store.ledger.reserve(new_request(user=BOB), NOW)
    store.ledger.reserve(new_request(user=ALICE, guild=OTHER_GUILD), NOW)
    store.ledger.reserve(new_request(user=ALICE), NOW + timedelta(days=1))


def test_active_requests_cap_counts_queued_and_running(store: Store) -> None:
    """One request at a time by default: queued or running blocks the next until it ends."""
    request = store.ledger.reserve(new_request(), NOW)
    store.ledger.mark_all_running([request.id], NOW)
    with pytest.raises(QuotaLimitReached) as refused:
        store.ledger.reserve(new_request(), NOW)
    assert refused.value.limit is QuotaLimit.USER_ACTIVE
    assert refused.value.resets_at is None
    store.ledger.settle(request.id, separation(), "attachment:42", NOW)
    store.ledger.reserve(new_request(), NOW)


def test_zero_limit_switches_the_guild_off(db_path: Path) -> None:
    """A daily limit of 0 refuses every paid request, even one costing nothing."""
    free_vocals = replace(POLICY, costs={Mode.VOCALS: 0, Mode.INSTRUMENTS: 1, Mode.ALL: 2})
    store = open_store(db_path, free_vocals)
    try:
        assert store.guilds.set_limits(GUILD, daily=0).switched_off
        with pytest.raises(QuotaLimitReached) as refused:
            store.ledger.reserve(new_request(mode=Mode.VOCALS), NOW)
        assert "switched off" in refused.value.user_message
        assert refused.value.resets_at is None
    finally:
        store.close()


def test_override_changes_only_the_given_limits(store: Store) -> None:
    """A moderator's override replaces a default; limits not given keep their value."""
    assert store.guilds.guild_limits(GUILD).overridden == frozenset()
    store.guilds.set_limits(GUILD, monthly=900)
    limits = store.guilds.set_limits(GUILD, per_user=4)
    assert (limits.daily, limits.monthly, limits.per_user, limits.active_requests) == (
        50,
        900,
        4,
        1,
    )
    assert limits.overridden == {"monthly", "per_user"}
    assert store.guilds.guild_limits(OTHER_GUILD).monthly == 500


@pytest.mark.parametrize("bad", [-1, 1_000_000_001, True, 2.5])
def test_override_rejects_impossible_limits(store: Store, bad: Any) -> None:
    """Negative, huge or non-integer limits never reach the database."""
    with pytest.raises(ValueError, match="daily"):
        store.guilds.set_limits(GUILD, daily=bad)
    assert store.guilds.guild_limits(GUILD).overridden == frozenset()


def test_quota_status_knows_used_limit_remaining_and_reset(store: Store) -> None:
    """Status reports every window; remaining never goes below zero after a cut."""
    store.guilds.set_limits(GUILD, active_requests=5)
    store.ledger.reserve(new_request(mode=Mode.ALL), NOW)
    store.ledger.reserve(new_request(user=BOB), NOW)
    store.guilds.set_limits(GUILD, daily=2)
    status = store.quotas.quota_status(GUILD, ALICE, NOW)
    assert (status.guild_daily.used, status.guild_daily.limit) == (3, 2)
    assert status.guild_daily.remaining == 0
    assert status.guild_monthly.remaining == 497
    assert status.user_daily is not None
    assert (status.user_daily.used, status.user_daily.remaining) == (2, 8)
    assert status.user_daily.resets_at == datetime(2026, 5, 15, tzinfo=UTC)
    assert (status.user_active_requests, status.user_active_limit) == (1, 5)
    assert store.quotas.quota_status(GUILD, None, NOW).user_daily is None


# --- stored results ------------------------------------------------------------------------------


def test_reusing_a_stored_result_is_free(store: Store) -> None:
    """A repeat answered from the stored result is recorded at cost 0, even at the limit."""
    store.guilds.set_limits(GUILD, daily=1)
    request = store.ledger.reserve(new_request(), NOW)
    store.ledger.settle(request.id, separation(), "attachment:42", NOW)
    stored = store.ledger.find_result("attachment:42", Mode.VOCALS, NOW - timedelta(days=1))
    assert stored == separation()
    free = store.ledger.record_free(new_request(user=BOB), stored, NOW)
    assert (free.cost, free.status, charged(free)) == (0, RequestStatus.SUCCEEDED, 0)
    assert used_today(store) == 1
    assert (store.ledger.refund_all([free.id], RequestStatus.FAILED, "x", NOW) == 1) is False


def test_free_record_still_refuses_a_repeated_interaction(store: Store) -> None:
    """A redelivered interaction is a duplicate even when the answer is free."""
    store.ledger.record_free(new_request(interaction=9), separation(), NOW)
    with pytest.raises(DuplicateRequestError):
        store.ledger.record_free(new_request(interaction=9), separation(), NOW)


def test_find_result_ignores_results_issued_too_long_ago(store: Store) -> None:
    """Only a result issued after the cut-off, for that source and mode, is offered."""
    request = store.ledger.reserve(new_request(), NOW)
    store.ledger.settle(request.id, separation(), "attachment:42", NOW)
    assert store.ledger.find_result("attachment:42", Mode.VOCALS, NOW) is None
    assert store.ledger.find_result("attachment:42", Mode.ALL, NOW - timedelta(days=1)) is None
    assert store.ledger.find_result("attachment:43", Mode.VOCALS, NOW - timedelta(days=1)) is None


def test_the_stored_result_of_a_request_is_found_by_its_id_however_old(store: Store) -> None:
    """Free mixes need a request's result after the reuse window: the request and the result
    stored for its source and mode, a later call's when one replaced it; None once either
    row is gone."""
    paid = store.ledger.reserve(new_request(), NOW)
    store.ledger.settle(paid.id, separation(issued_at=NOW), "attachment:42", NOW)
    repeat = store.ledger.record_free(new_request(user=BOB), separation(), NOW)
    found = store.ledger.stored_result(repeat.id)
    assert found is not None
    request, stored = found
    assert (request.id, request.user_id, stored) == (repeat.id, BOB, separation())
    later = separation(issued_at=NOW + timedelta(days=40))
    again = store.ledger.reserve(new_request(), NOW + timedelta(days=40))
    store.ledger.settle(again.id, later, "attachment:42", NOW + timedelta(days=40))
    assert store.ledger.stored_result(paid.id) == (store.ledger.get_request(paid.id), later)
    other = store.ledger.reserve(new_request(source_key="attachment:43"), NOW)
    assert store.ledger.stored_result(other.id) is None  # no result for its source
    assert store.ledger.stored_result(10**9) is None


# --- recovery ------------------------------------------------------------------------------------


def test_recovery_interrupts_and_refunds_active_requests_once(store: Store) -> None:
    """Queued and running requests come back interrupted and refunded; finished ones stay."""
    store.guilds.set_limits(GUILD, active_requests=5)
    queued = store.ledger.reserve(new_request(source_key="attachment:1"), NOW)
    running = store.ledger.reserve(new_request(source_key="attachment:2"), NOW)
    store.ledger.mark_all_running([running.id], NOW)
    done = store.ledger.reserve(new_request(), NOW)
    store.ledger.settle(done.id, separation(), "attachment:42", NOW)
    later = NOW + timedelta(minutes=5)
    recovered = store.ledger.recover(later).interrupted
    assert [request.id for request in recovered] == [queued.id, running.id]
    assert {request.status for request in recovered} == {RequestStatus.INTERRUPTED}
    assert all(request.finished_at == later and request.error for request in recovered)
    assert [store.ledger.get_request(request.id) for request in recovered] == recovered
    assert store.ledger.recover(later).interrupted == []
    assert used_today(store) == 1


def test_recovery_sorts_what_a_crash_left_owing(store: Store) -> None:
    """A settled result never delivered is owed (charged); so is a request that shared its
    call but was still marked running; a queued one with no result is refunded; delivered
    ones, and results of another source or mode, are left alone. Nothing is owed twice."""
    store.guilds.set_limits(GUILD, active_requests=5)
    payer = store.ledger.reserve(new_request(), NOW)
    joiner = store.ledger.reserve_joined(new_request(user=BOB), NOW, running=True)
    store.ledger.mark_all_running([payer.id], NOW)
    store.ledger.settle(
        payer.id, separation(issued_at=NOW + timedelta(seconds=5)), "attachment:42", NOW
    )
    queued = store.ledger.reserve(new_request(source_key="attachment:7"), NOW)
    told = store.ledger.reserve(new_request(source_key="attachment:9"), NOW)
    store.ledger.settle(told.id, separation(), "attachment:9", NOW)
    assert store.ledger.record_deliveries([(told.id, "interaction")], NOW) == 1
    forgotten = store.ledger.reserve(new_request(mode=Mode.ALL), NOW)
    store.ledger.settle(forgotten.id, separation(Mode.ALL), "attachment:42", NOW)
    store.connection.db.execute("DELETE FROM results WHERE mode = 'all'")

    later = NOW + timedelta(minutes=5)
    recovery = store.ledger.recover(later)
    assert [(request.id, sep.stems) for request, sep in recovery.undelivered] == [
        (payer.id, separation().stems),
        (joiner.id, separation().stems),
    ]
    assert [request.id for request in recovery.interrupted] == [queued.id, forgotten.id]
    assert [
        store.ledger.get_request(j.id).status  # type: ignore[union-attr]
        for j in (payer, joiner, queued, told, forgotten)
    ] == [
        RequestStatus.SUCCEEDED,
        RequestStatus.SUCCEEDED,
        RequestStatus.INTERRUPTED,
        RequestStatus.SUCCEEDED,
        RequestStatus.INTERRUPTED,
    ]
    assert used_today(store) == 2  # the payer's unit and the delivered one's
    store.ledger.record_deliveries([(payer.id, "channel"), (joiner.id, "dm")], later)
    assert store.ledger.record_deliveries([(payer.id, "dm")], later) == 0  # the first note stands
    assert [delivered_via(store, j.id) for j in (payer, joiner, told)] == [
        "channel",
        "dm",
        "interaction",
    ]
    again = store.ledger.recover(later)
    assert again.interrupted == [] and again.undelivered == []


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
    done = store.ledger.reserve(new_request(user=ALICE, mode=Mode.ALL, interaction=1), NOW)
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


def _fill_ledger(store: Store) -> None:
    """Alice: 2 + 1 units over two days; Bob: 1 unit and one failure; another guild: noise."""
    store.guilds.set_limits(GUILD, active_requests=100)
    day1 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
    day2 = datetime(2026, 5, 2, 18, 30, tzinfo=UTC)
    for user, mode, when in ((ALICE, Mode.ALL, day1), (ALICE, Mode.VOCALS, day2)):
        request = store.ledger.reserve(new_request(user=user, mode=mode), when)
        store.ledger.settle(request.id, separation(mode, when), "attachment:42", when)
    store.ledger.reserve(new_request(user=BOB, mode=Mode.INSTRUMENTS), day2)
    failed = store.ledger.reserve(new_request(user=BOB, mode=Mode.ALL), day2)
    store.ledger.refund_all([failed.id], RequestStatus.FAILED, "=HYPERLINK(evil)", day2)
    store.ledger.reserve(new_request(user=ALICE, guild=OTHER_GUILD), day1)
    store.ledger.reserve(new_request(user=ALICE), datetime(2026, 4, 30, 23, 59, 59, tzinfo=UTC))


def test_usage_report_by_user_mode_and_day(store: Store) -> None:
    """A report covers the period only and splits units by user, mode and UTC day."""
    _fill_ledger(store)
    report = store.reports.usage_report(
        GUILD, datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    )
    assert (report.total.requests, report.total.units, report.total.refunded) == (4, 4, 1)
    assert [(u, line.units, line.requests) for u, line in report.by_user] == [
        (ALICE, 3, 2),
        (BOB, 1, 2),
    ]
    assert {mode: line.units for mode, line in report.by_mode} == {
        Mode.ALL: 2,
        Mode.VOCALS: 1,
        Mode.INSTRUMENTS: 1,
    }
    assert [(day, line.units) for day, line in report.by_day] == [
        (date(2026, 5, 1), 2),
        (date(2026, 5, 2), 2),
    ]
    assert report.top_users[0][0] == ALICE


def test_top_users_are_cut_to_the_requested_count(store: Store) -> None:
    """Top users lists the heaviest users first, at most ``top`` of them."""
    store.guilds.set_limits(GUILD, active_requests=100)
    for user, count in ((1, 1), (2, 3), (3, 2)):
        for _ in range(count):
            store.ledger.reserve(new_request(user=user), NOW)
    report = store.reports.usage_report(
        GUILD, NOW - timedelta(hours=1), NOW + timedelta(hours=1), top=2
    )
    assert [user for user, _ in report.top_users] == [2, 3]


def test_csv_export_parses_back_one_row_per_request(store: Store) -> None:
    """The CSV holds every request of the period with ISO-8601 UTC times."""
    _fill_ledger(store)
    out = io.StringIO()
    written = store.reports.stream_ledger(
        GUILD, datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC), out
    ).rows
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert written == len(rows) == 4
    assert [row["user_id"] for row in rows] == [f'="{u}"' for u in (ALICE, ALICE, BOB, BOB)]
    assert rows[0]["created_at"] == "2026-05-01T09:00:00Z"
    assert datetime.fromisoformat(rows[0]["created_at"]) == datetime(2026, 5, 1, 9, tzinfo=UTC)
    assert [(r["mode"], r["cost"], r["charged"], r["status"]) for r in rows[2:]] == [
        ("instruments", "1", "1", "queued"),
        ("all", "2", "0", "failed"),
    ]
    assert rows[2]["finished_at"] == ""


def test_csv_export_defuses_spreadsheet_formulas(store: Store) -> None:
    """Text a user controls cannot become a formula when the CSV is opened in a spreadsheet."""
    _fill_ledger(store)
    out = io.StringIO()
    store.reports.stream_ledger(
        GUILD, datetime(2026, 5, 2, tzinfo=UTC), datetime(2026, 5, 3, tzinfo=UTC), out
    )
    errors = [row["error"] for row in csv.DictReader(io.StringIO(out.getvalue()))]
    assert "'=HYPERLINK(evil)" in errors


# --- moderators' settings ------------------------------------------------------------------------


def test_log_channel_can_be_set_and_cleared(store: Store) -> None:
    """The log channel is remembered per guild and can be turned off."""
    store.guilds.set_limits(GUILD, daily=7)
    store.guilds.set_log_channel(GUILD, 999)
    assert store.guilds.log_channel(GUILD) == 999
    store.guilds.set_log_channel(GUILD, None)
    assert store.guilds.log_channel(GUILD) is None
    assert store.guilds.guild_limits(GUILD).daily == 7


def test_quota_alert_is_claimed_once_per_window(store: Store) -> None:
    """An 80% alert for one day is sent once; the next day or 100% are new alerts."""
    day = datetime(2026, 5, 14, tzinfo=UTC)
    assert store.guilds.claim_alert(GUILD, "day", day, 80, NOW) is True
    assert store.guilds.claim_alert(GUILD, "day", day, 80, NOW) is False
    assert store.guilds.claim_alert(GUILD, "day", day, 100, NOW) is True
    assert store.guilds.claim_alert(GUILD, "day", day + timedelta(days=1), 80, NOW) is True


def test_command_digest_is_remembered_per_scope(store: Store) -> None:
    """The bot's last synced command digest survives per scope and can be replaced."""
    assert store.guilds.command_digest("global") is None
    store.guilds.remember_command_digest("global", "abc")
    store.guilds.remember_command_digest("guild:1", "def")
    store.guilds.remember_command_digest("global", "xyz")
    assert (store.guilds.command_digest("global"), store.guilds.command_digest("guild:1")) == (
        "xyz",
        "def",
    )


# --- requests sharing one API call ----------------------------------------------------------


def test_a_joined_request_costs_nothing_but_still_counts_as_active(store: Store) -> None:
    """Joining a shared call charges 0 units, and the member's active-request cap holds."""
    store.ledger.reserve(new_request(ALICE), NOW)
    joined = store.ledger.reserve_joined(new_request(BOB), NOW, running=True)
    assert joined.cost == 0 and joined.status is RequestStatus.RUNNING
    assert used_today(store) == 1
    with pytest.raises(QuotaLimitReached) as refused:
        store.ledger.reserve_joined(new_request(BOB), NOW, running=False)
    assert refused.value.limit is QuotaLimit.USER_ACTIVE


def test_a_joined_request_is_refused_in_a_switched_off_server(store: Store) -> None:
    """A server with a limit of 0 gets nothing, not even free shared results."""
    store.guilds.set_limits(GUILD, daily=0)
    with pytest.raises(QuotaExceededError):
        store.ledger.reserve_joined(new_request(BOB), NOW, running=False)


def test_handing_over_the_charge_keeps_one_payment(store: Store) -> None:
    """The payer cancels: refunded, the heir now carries the cost, the total stays one call."""
    payer = store.ledger.reserve(new_request(ALICE, Mode.ALL), NOW)
    heir = store.ledger.reserve_joined(new_request(BOB, Mode.ALL), NOW, running=False)
    assert store.ledger.hand_over_charge(payer.id, [(heir.id, ())], NOW) == (heir.id, True)
    assert used_today(store) == 2
    payer_now, heir_now = store.ledger.get_request(payer.id), store.ledger.get_request(heir.id)
    assert payer_now is not None and payer_now.status is RequestStatus.CANCELLED
    assert heir_now is not None and charged(heir_now) == 2
    assert store.quotas.quota_status(GUILD, BOB, NOW).user_daily.used == 2  # type: ignore[union-attr]
    # the payer is no longer active
    assert store.ledger.hand_over_charge(payer.id, [(heir.id, ())], NOW) is None


def test_the_charge_skips_an_heir_without_room(store: Store) -> None:
    """The first heir has spent their allowance: the next one, who has room, takes the charge."""
    for _ in range(10):
        request = store.ledger.reserve(new_request(BOB, source_key="other"), NOW)
        store.ledger.settle(request.id, separation(), "other", NOW)
    payer = store.ledger.reserve(new_request(ALICE), NOW)
    full = store.ledger.reserve_joined(new_request(BOB), NOW, running=False)
    roomy = store.ledger.reserve_joined(new_request(1003), NOW, running=False)
    handed = store.ledger.hand_over_charge(payer.id, [(full.id, ()), (roomy.id, ())], NOW)
    assert handed == (roomy.id, True)
    assert store.quotas.quota_status(GUILD, BOB, NOW).user_daily.used == 10  # type: ignore[union-attr]
    assert store.quotas.quota_status(GUILD, 1003, NOW).user_daily.used == 1  # type: ignore[union-attr]
    assert used_today(store) == 11


def test_with_no_heir_with_room_the_server_alone_carries_the_charge(store: Store) -> None:
    """Nobody left has room: the server's sum keeps the charge, no member is shown over limit."""
    store.guilds.set_limits(GUILD, per_user=2)
    earlier = store.ledger.reserve(new_request(1003, source_key="other"), NOW)
    store.ledger.settle(earlier.id, separation(), "other", NOW)
    payer = store.ledger.reserve(new_request(ALICE, Mode.ALL), NOW)
    heir = store.ledger.reserve_joined(new_request(1003, Mode.ALL), NOW, running=False)
    assert store.ledger.hand_over_charge(payer.id, [(heir.id, ())], NOW) == (heir.id, False)
    status = store.quotas.quota_status(GUILD, 1003, NOW)
    assert status.user_daily is not None and status.user_daily.used == 1
    assert status.guild_daily.used == 3
    report = store.reports.usage_report(GUILD, NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    assert report.total.units == 3
    assert dict(report.by_user)[1003].units == 1


def test_a_role_allowance_replaces_the_per_member_limit(store: Store) -> None:
    """The highest allowance among the member's roles holds; other members keep the default."""
    store.guilds.set_limits(GUILD, per_user=1)
    store.guilds.set_role_allowance(GUILD, 77, 3)
    store.guilds.set_role_allowance(GUILD, 78, 2)
    patron = replace(new_request(ALICE), role_ids=(78, 77))
    for _ in range(3):
        request = store.ledger.reserve(replace(patron, interaction_id=next(_ids)), NOW)
        store.ledger.settle(request.id, separation(), request.source_key, NOW)
    with pytest.raises(QuotaLimitReached) as refused:
        store.ledger.reserve(replace(patron, interaction_id=next(_ids)), NOW)
    assert refused.value.limit is QuotaLimit.USER_DAILY
    status = store.quotas.quota_status(GUILD, ALICE, NOW, (77, 78))
    assert status.user_daily is not None and status.user_daily.limit == 3
    assert status.user_limit_from_role
    bob = store.ledger.reserve(new_request(BOB), NOW)
    store.ledger.settle(bob.id, separation(), bob.source_key, NOW)
    with pytest.raises(QuotaLimitReached):
        store.ledger.reserve(new_request(BOB), NOW)
    assert store.guilds.guild_limits(GUILD).role_allowances == ((77, 3), (78, 2))
    store.guilds.set_role_allowance(GUILD, 77, None)
    assert store.quotas.quota_status(GUILD, ALICE, NOW, (77, 78)).user_daily.limit == 2  # type: ignore[union-attr]


def test_a_role_allowance_never_goes_beyond_the_server_day(store: Store) -> None:
    """An allowance above the server's daily limit is held to the daily limit."""
    store.guilds.set_role_allowance(GUILD, 77, 40)
    store.guilds.set_limits(GUILD, daily=5)
    status = store.quotas.quota_status(GUILD, ALICE, NOW, (77,))
    assert status.user_daily is not None and status.user_daily.limit == 5


def test_reset_limits_brings_back_the_defaults(store: Store) -> None:
    """Overrides dropped by name are the defaults again; the others stay."""
    store.guilds.set_limits(GUILD, daily=3, monthly=30, per_user=2)
    limits = store.guilds.reset_limits(GUILD, ["daily", "per_user"])
    assert (limits.daily, limits.monthly, limits.per_user) == (50, 30, 10)
    assert limits.overridden == frozenset({"monthly"})


def test_the_api_budget_counts_calls_across_servers_and_survives_reopening(
    db_path: Path,
) -> None:
    """Two calls a day: the third paid request anywhere is refused; joins and repeats are not."""
    policy = replace(POLICY, api_daily_budget=2)
    store = open_store(db_path, policy)
    first = store.ledger.reserve(new_request(ALICE), NOW)
    store.ledger.mark_all_running([first.id], NOW)
    store.ledger.refund_all(
        [first.id], RequestStatus.FAILED, "the API failed", NOW
    )  # a made call still counts
    cancelled = store.ledger.reserve(new_request(BOB, source_key="b"), NOW)
    store.ledger.refund_all(
        [cancelled.id], RequestStatus.CANCELLED, "cancelled", NOW
    )  # never made: given back
    store.ledger.reserve(new_request(ALICE, guild=OTHER_GUILD, source_key="c"), NOW)
    store.close()
    store = open_store(db_path, policy)
    assert store.quotas.api_calls_today(NOW) == 2
    with pytest.raises(QuotaLimitReached) as refused:
        store.ledger.reserve(new_request(BOB, source_key="d"), NOW)
    assert refused.value.limit is QuotaLimit.API_BUDGET
    assert "across all servers" in refused.value.user_message
    store.ledger.reserve_joined(
        new_request(1004, guild=OTHER_GUILD, source_key="c"), NOW, running=False
    )
    store.quotas.check_limits(GUILD, BOB, (), None, NOW)  # a join passes the precheck
    with pytest.raises(QuotaLimitReached):
        store.quotas.check_limits(GUILD, BOB, (), 1, NOW)
    assert store.quotas.api_calls_today(NOW + timedelta(days=1)) == 0
    assert store.guilds.claim_budget_notice(NOW) and not store.guilds.claim_budget_notice(NOW)
    store.close()


def test_shared_calls_settle_and_refund_every_request_once(store: Store) -> None:
    """All requests of a call become running, then succeeded or refunded together, once."""
    payer = store.ledger.reserve(new_request(ALICE), NOW)
    joined = [
        store.ledger.reserve_joined(new_request(user), NOW, running=False) for user in (BOB, 1003)
    ]
    ids = [payer.id, *(j.id for j in joined)]
    assert store.ledger.mark_all_running(ids, NOW) == 3
    assert store.ledger.refund_all(ids, RequestStatus.FAILED, "API failed", NOW) == 3
    assert store.ledger.refund_all(ids, RequestStatus.FAILED, "API failed", NOW) == 0
    assert used_today(store) == 0
    again = store.ledger.reserve(new_request(ALICE), NOW)
    late = store.ledger.reserve_joined(new_request(BOB), NOW, running=True)
    assert store.ledger.settle(again.id, separation(), again.source_key, NOW)
    assert store.ledger.settle_joined([late.id], NOW) == 1
    assert store.ledger.settle_joined([late.id], NOW) == 0
    assert used_today(store) == 1


def test_a_limit_set_before_a_ceiling_is_held_to_it(db_path: Path) -> None:
    """A server's old override above a new ceiling binds at the ceiling, marked as capped."""
    store = open_store(db_path)
    store.guilds.set_limits(GUILD, daily=1_000_000, monthly=1_000_000)
    store.close()
    store = open_store(db_path, replace(POLICY, max_guild_daily_limit=60))
    limits = store.guilds.guild_limits(GUILD)
    assert (limits.daily, limits.monthly, limits.capped) == (60, 1_000_000, frozenset({"daily"}))
    assert store.quotas.quota_status(GUILD, None, NOW).guild_daily.limit == 60
    store.close()


def test_a_call_counts_on_the_day_it_goes_out_and_only_if_it_did(db_path: Path) -> None:
    """Interrupted while queued: given back; interrupted while running: it counts; a call
    reserved before midnight and made after counts on the day it was made."""
    store = open_store(db_path, replace(POLICY, api_daily_budget=5))
    store.ledger.reserve(new_request(ALICE), NOW)
    running = store.ledger.reserve(new_request(BOB, source_key="b"), NOW)
    store.ledger.mark_all_running([running.id], NOW)
    store.ledger.recover(NOW)
    assert store.quotas.api_calls_today(NOW) == 1
    late = NOW.replace(hour=23, minute=59)
    tomorrow = late + timedelta(minutes=2)
    queued = store.ledger.reserve(new_request(ALICE, source_key="c"), late)
    assert store.quotas.api_calls_today(late) == 2
    store.ledger.mark_all_running([queued.id], tomorrow)
    assert (store.quotas.api_calls_today(late), store.quotas.api_calls_today(tomorrow)) == (1, 1)
    store.close()
