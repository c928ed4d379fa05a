"""The contract every ledger store keeps, run against each: SQLite (a file in tmp_path) and
PostgreSQL (a database of the test run, from STEMBOT_TEST_POSTGRES_URL; skipped, saying why,
without it). Quotas held exactly, refunds once, windows, one paid call in flight per source
and mode, recovery, reports, moderators' settings, shared calls, the API budget.

What only one engine has (SQLite's file, WAL and migrations; PostgreSQL's processes) is
tested in tests/test_store.py, tests/test_async_store.py and tests/test_postgres_store.py.
"""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from stembot.errors import (
    CallInFlightError,
    DuplicateRequestError,
    QuotaExceededError,
    QuotaLimitReached,
)
from stembot.models import Mode, QuotaLimit, RequestStatus
from stembot.store.interface import LedgerStore
from tests.ledger_reads import charged
from tests.store_backends import Backend
from tests.test_store import (
    ALICE,
    BOB,
    GUILD,
    NOW,
    OTHER_GUILD,
    POLICY,
    _ids,
    new_request,
    separation,
)


@pytest.fixture
def store(backend: Backend) -> LedgerStore:
    return backend.store


async def used_today(store: LedgerStore, guild: int = GUILD, now: datetime = NOW) -> int:
    return (await store.quotas.quota_status(guild, None, now)).guild_daily.used


def delivered_via(backend: Backend, request_id: int) -> str | None:
    """Where the request's answer went, or None while it is undelivered (or unknown)."""
    found = backend.rows("SELECT delivered_via FROM requests WHERE id = ?", (request_id,))
    return None if not found else found[0][0]


# --- the tests of tests/test_store.py that hold for every store ----------------------------


async def test_naive_datetimes_are_refused(store: LedgerStore) -> None:
    """A datetime without a timezone is a bug, not something to guess about."""
    with pytest.raises(ValueError, match="timezone"):
        await store.ledger.reserve(new_request(), datetime(2026, 5, 14, 12, 0))


async def test_reserve_records_a_queued_request_at_the_mode_cost(store: LedgerStore) -> None:
    """A reservation is a queued ledger row charged at its mode's cost."""
    request = await store.ledger.reserve(new_request(mode=Mode.ALL), NOW)
    assert (request.status, request.cost, request.created_at) == (RequestStatus.QUEUED, 2, NOW)
    assert await store.ledger.get_request(request.id) == request
    assert await used_today(store) == 2


async def test_same_interaction_never_reserves_twice(store: LedgerStore) -> None:
    """A redelivered interaction is refused and charged once."""
    await store.ledger.reserve(new_request(interaction=7), NOW)
    with pytest.raises(DuplicateRequestError):
        await store.ledger.reserve(new_request(interaction=7, user=BOB), NOW)
    assert await used_today(store) == 1


async def test_refunded_interaction_still_cannot_reserve_again(store: LedgerStore) -> None:
    """A refund does not free the interaction id for a second reservation."""
    request = await store.ledger.reserve(new_request(interaction=8), NOW)
    await store.ledger.refund_all([request.id], RequestStatus.FAILED, "api failed", NOW)
    with pytest.raises(DuplicateRequestError):
        await store.ledger.reserve(new_request(interaction=8), NOW)


async def test_refund_happens_exactly_once(store: LedgerStore) -> None:
    """However often a refund is asked for, the units come back once."""
    await store.ledger.reserve(new_request(user=BOB), NOW)
    request = await store.ledger.reserve(new_request(mode=Mode.ALL), NOW)
    assert await used_today(store) == 3
    outcomes = [
        await store.ledger.refund_all([request.id], RequestStatus.FAILED, "api failed", NOW) == 1
        for _ in range(3)
    ]
    outcomes.append(
        await store.ledger.refund_all([request.id], RequestStatus.CANCELLED, "cancelled", NOW) == 1
    )
    assert outcomes == [True, False, False, False]
    assert await used_today(store) == 1
    refunded = await store.ledger.get_request(request.id)
    assert refunded is not None
    assert (refunded.status, refunded.error, charged(refunded)) == (
        RequestStatus.FAILED,
        "api failed",
        0,
    )


async def test_settled_request_cannot_be_refunded(store: LedgerStore) -> None:
    """A success settles the charge; a later refund changes nothing."""
    request = await store.ledger.reserve(new_request(), NOW)
    await store.ledger.mark_all_running([request.id], NOW)
    assert await store.ledger.settle(request.id, separation(), "attachment:42", NOW) is True
    assert (
        await store.ledger.refund_all([request.id], RequestStatus.FAILED, "late", NOW) == 1
    ) is False
    assert await used_today(store) == 1
    settled = await store.ledger.get_request(request.id)
    assert settled is not None and settled.status is RequestStatus.SUCCEEDED


async def test_settle_after_refund_keeps_the_refund(store: LedgerStore) -> None:
    """A result arriving for a cancelled request is kept for reuse but not charged."""
    request = await store.ledger.reserve(new_request(), NOW)
    await store.ledger.refund_all([request.id], RequestStatus.CANCELLED, "cancelled", NOW)
    assert await store.ledger.settle(request.id, separation(), "attachment:42", NOW) is False
    assert await used_today(store) == 0
    assert (
        await store.ledger.find_result("attachment:42", Mode.VOCALS, NOW - timedelta(hours=1))
        is not None
    )


async def test_refund_only_ends_a_request_as_failed_cancelled_or_interrupted(
    store: LedgerStore,
) -> None:
    """Refunding "as succeeded" is a programming error."""
    request = await store.ledger.reserve(new_request(), NOW)
    with pytest.raises(ValueError, match="refund"):
        await store.ledger.refund_all([request.id], RequestStatus.SUCCEEDED, "", NOW)


async def test_mark_running_moves_only_queued_requests(store: LedgerStore) -> None:
    """A cancelled request cannot be started; a queued one can, once."""
    cancelled = await store.ledger.reserve(new_request(user=BOB), NOW)
    await store.ledger.refund_all([cancelled.id], RequestStatus.CANCELLED, "cancelled", NOW)
    request = await store.ledger.reserve(new_request(), NOW)
    assert await store.ledger.mark_all_running([cancelled.id], NOW) == 0
    assert await store.ledger.mark_all_running([request.id], NOW + timedelta(seconds=1)) == 1
    assert await store.ledger.mark_all_running([request.id], NOW) == 0
    running = await store.ledger.get_request(request.id)
    assert running is not None
    assert (running.status, running.started_at) == (
        RequestStatus.RUNNING,
        NOW + timedelta(seconds=1),
    )


async def test_guild_daily_limit_names_itself_and_its_reset(store: LedgerStore) -> None:
    """Past the server's daily units the refusal says which limit and when it resets."""
    await store.guilds.set_limits(GUILD, daily=3)
    for user in (1, 2, 3):
        await store.ledger.reserve(new_request(user=user), NOW)
    with pytest.raises(QuotaLimitReached) as refused:
        await store.ledger.reserve(new_request(user=4), NOW)
    assert refused.value.limit is QuotaLimit.GUILD_DAILY
    assert refused.value.resets_at == datetime(2026, 5, 15, tzinfo=UTC)
    assert "server" in refused.value.user_message and "daily" in refused.value.user_message
    assert await used_today(store) == 3


async def test_a_mode_costing_more_than_what_is_left_is_refused(store: LedgerStore) -> None:
    """With one unit left, "all" (2 units) is refused and "vocals" (1 unit) is not."""
    await store.guilds.set_limits(GUILD, daily=3)
    await store.ledger.reserve(new_request(user=1, mode=Mode.ALL), NOW)
    with pytest.raises(QuotaExceededError):
        await store.ledger.reserve(new_request(user=2, mode=Mode.ALL), NOW)
    await store.ledger.reserve(new_request(user=2, mode=Mode.INSTRUMENTS), NOW)
    assert await used_today(store) == 3


async def test_day_window_turns_at_midnight_utc(store: LedgerStore) -> None:
    """23:59:59 counts for its day; 00:00:00 starts a fresh one."""
    await store.guilds.set_limits(GUILD, daily=1)
    late = datetime(2026, 5, 14, 23, 59, 59, tzinfo=UTC)
    await store.ledger.reserve(new_request(user=1), late)
    with pytest.raises(QuotaLimitReached) as refused:
        await store.ledger.reserve(new_request(user=2), late + timedelta(microseconds=999_999))
    assert refused.value.resets_at == datetime(2026, 5, 15, tzinfo=UTC)
    await store.ledger.reserve(new_request(user=2), datetime(2026, 5, 15, 0, 0, 0, tzinfo=UTC))


async def test_day_window_follows_utc_not_the_callers_offset(store: LedgerStore) -> None:
    """A time given in another timezone is counted in its UTC day."""
    await store.guilds.set_limits(GUILD, daily=1)
    await store.ledger.reserve(new_request(user=1), datetime(2026, 5, 14, 23, 30, tzinfo=UTC))
    tokyo = datetime(2026, 5, 15, 17, 45, tzinfo=timezone(timedelta(hours=9)))
    await store.ledger.reserve(new_request(user=2), tokyo)  # 2026-05-15 08:45 UTC: a new day
    assert (await store.quotas.quota_status(GUILD, None, tokyo)).guild_daily.used == 1


async def test_month_window_turns_on_the_first_at_midnight_utc(store: LedgerStore) -> None:
    """The last second of a month counts for it; the 1st at 00:00 starts a fresh month."""
    await store.guilds.set_limits(GUILD, monthly=2, daily=100)
    last_second = datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)
    await store.ledger.reserve(new_request(user=1), datetime(2026, 1, 2, tzinfo=UTC))
    await store.ledger.reserve(new_request(user=2), last_second)
    with pytest.raises(QuotaLimitReached) as refused:
        await store.ledger.reserve(new_request(user=3), last_second)
    assert refused.value.limit is QuotaLimit.GUILD_MONTHLY
    assert refused.value.resets_at == datetime(2026, 2, 1, tzinfo=UTC)
    await store.ledger.reserve(new_request(user=3), datetime(2026, 2, 1, 0, 0, 0, tzinfo=UTC))


async def test_december_resets_on_the_first_of_january(store: LedgerStore) -> None:
    """The monthly reset of December is the next year's 1 January."""
    status = await store.quotas.quota_status(
        GUILD, None, datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    )
    assert status.guild_monthly.resets_at == datetime(2027, 1, 1, tzinfo=UTC)
    assert status.guild_daily.resets_at == datetime(2027, 1, 1, tzinfo=UTC)


async def test_monthly_refusal_wins_over_daily_when_both_bind(store: LedgerStore) -> None:
    """When day and month are both used up, the user hears the later (monthly) reset."""
    await store.guilds.set_limits(GUILD, daily=1, monthly=1)
    await store.ledger.reserve(new_request(user=1), NOW)
    with pytest.raises(QuotaLimitReached) as refused:
        await store.ledger.reserve(new_request(user=2), NOW)
    assert refused.value.limit is QuotaLimit.GUILD_MONTHLY


async def test_per_user_daily_cap_counts_that_users_units_in_that_guild(store: LedgerStore) -> None:
    """A member's own daily units run out without stopping others or other servers."""
    await store.guilds.set_limits(GUILD, per_user=2, active_requests=10)
    await store.ledger.reserve(new_request(user=ALICE), NOW)
    await store.ledger.reserve(new_request(user=ALICE), NOW)
    with pytest.raises(QuotaLimitReached) as refused:
        await store.ledger.reserve(new_request(user=ALICE), NOW)
    assert refused.value.limit is QuotaLimit.USER_DAILY
    assert "You have used 2 of your 2 daily units" in refused.value.user_message
    await store.ledger.reserve(new_request(user=BOB), NOW)
    await store.ledger.reserve(new_request(user=ALICE, guild=OTHER_GUILD), NOW)
    await store.ledger.reserve(new_request(user=ALICE), NOW + timedelta(days=1))


async def test_active_requests_cap_counts_queued_and_running(store: LedgerStore) -> None:
    """One request at a time by default: queued or running blocks the next until it ends."""
    request = await store.ledger.reserve(new_request(), NOW)
    await store.ledger.mark_all_running([request.id], NOW)
    with pytest.raises(QuotaLimitReached) as refused:
        await store.ledger.reserve(new_request(), NOW)
    assert refused.value.limit is QuotaLimit.USER_ACTIVE
    assert refused.value.resets_at is None
    await store.ledger.settle(request.id, separation(), "attachment:42", NOW)
    await store.ledger.reserve(new_request(), NOW)


async def test_zero_limit_switches_the_guild_off(backend: Backend) -> None:
    """A daily limit of 0 refuses every paid request, even one costing nothing."""
    free_vocals = replace(POLICY, costs={Mode.VOCALS: 0, Mode.INSTRUMENTS: 1, Mode.ALL: 2})
    store = await backend.open(free_vocals)
    assert (await store.guilds.set_limits(GUILD, daily=0)).switched_off
    with pytest.raises(QuotaLimitReached) as refused:
        await store.ledger.reserve(new_request(mode=Mode.VOCALS), NOW)
    assert "switched off" in refused.value.user_message
    assert refused.value.resets_at is None


async def test_override_changes_only_the_given_limits(store: LedgerStore) -> None:
    """A moderator's override replaces a default; limits not given keep their value."""
    assert (await store.guilds.guild_limits(GUILD)).overridden == frozenset()
    await store.guilds.set_limits(GUILD, monthly=900)
    limits = await store.guilds.set_limits(GUILD, per_user=4)
    assert (limits.daily, limits.monthly, limits.per_user, limits.active_requests) == (
        50,
        900,
        4,
        1,
    )
    assert limits.overridden == {"monthly", "per_user"}
    assert (await store.guilds.guild_limits(OTHER_GUILD)).monthly == 500


@pytest.mark.parametrize("bad", [-1, 1_000_000_001, True, 2.5])
async def test_override_rejects_impossible_limits(store: LedgerStore, bad: Any) -> None:
    """Negative, huge or non-integer limits never reach the database."""
    with pytest.raises(ValueError, match="daily"):
        await store.guilds.set_limits(GUILD, daily=bad)
    assert (await store.guilds.guild_limits(GUILD)).overridden == frozenset()


async def test_quota_status_knows_used_limit_remaining_and_reset(store: LedgerStore) -> None:
    """Status reports every window; remaining never goes below zero after a cut."""
    await store.guilds.set_limits(GUILD, active_requests=5)
    await store.ledger.reserve(new_request(mode=Mode.ALL), NOW)
    await store.ledger.reserve(new_request(user=BOB), NOW)
    await store.guilds.set_limits(GUILD, daily=2)
    status = await store.quotas.quota_status(GUILD, ALICE, NOW)
    assert (status.guild_daily.used, status.guild_daily.limit) == (3, 2)
    assert status.guild_daily.remaining == 0
    assert status.guild_monthly.remaining == 497
    assert status.user_daily is not None
    assert (status.user_daily.used, status.user_daily.remaining) == (2, 8)
    assert status.user_daily.resets_at == datetime(2026, 5, 15, tzinfo=UTC)
    assert (status.user_active_requests, status.user_active_limit) == (1, 5)
    assert (await store.quotas.quota_status(GUILD, None, NOW)).user_daily is None


async def test_reusing_a_stored_result_is_free(store: LedgerStore) -> None:
    """A repeat answered from the stored result is recorded at cost 0, even at the limit."""
    await store.guilds.set_limits(GUILD, daily=1)
    request = await store.ledger.reserve(new_request(), NOW)
    await store.ledger.settle(request.id, separation(), "attachment:42", NOW)
    stored = await store.ledger.find_result("attachment:42", Mode.VOCALS, NOW - timedelta(days=1))
    assert stored == separation()
    free = await store.ledger.record_free(new_request(user=BOB), stored, NOW)
    assert (free.cost, free.status, charged(free)) == (0, RequestStatus.SUCCEEDED, 0)
    assert await used_today(store) == 1
    assert (await store.ledger.refund_all([free.id], RequestStatus.FAILED, "x", NOW) == 1) is False


async def test_free_record_still_refuses_a_repeated_interaction(store: LedgerStore) -> None:
    """A redelivered interaction is a duplicate even when the answer is free."""
    await store.ledger.record_free(new_request(interaction=9), separation(), NOW)
    with pytest.raises(DuplicateRequestError):
        await store.ledger.record_free(new_request(interaction=9), separation(), NOW)


async def test_find_result_ignores_results_issued_too_long_ago(store: LedgerStore) -> None:
    """Only a result issued after the cut-off, for that source and mode, is offered."""
    request = await store.ledger.reserve(new_request(), NOW)
    await store.ledger.settle(request.id, separation(), "attachment:42", NOW)
    assert await store.ledger.find_result("attachment:42", Mode.VOCALS, NOW) is None
    assert (
        await store.ledger.find_result("attachment:42", Mode.ALL, NOW - timedelta(days=1)) is None
    )
    assert (
        await store.ledger.find_result("attachment:43", Mode.VOCALS, NOW - timedelta(days=1))
        is None
    )


async def test_recovery_interrupts_and_refunds_active_requests_once(store: LedgerStore) -> None:
    """Queued and running requests come back interrupted and refunded; finished ones stay."""
    await store.guilds.set_limits(GUILD, active_requests=5)
    queued = await store.ledger.reserve(new_request(source_key="attachment:1"), NOW)
    running = await store.ledger.reserve(new_request(source_key="attachment:2"), NOW)
    await store.ledger.mark_all_running([running.id], NOW)
    done = await store.ledger.reserve(new_request(source_key="attachment:42"), NOW)
    await store.ledger.settle(done.id, separation(), "attachment:42", NOW)
    later = NOW + timedelta(minutes=5)
    recovered = (await store.ledger.recover(later)).interrupted
    assert [request.id for request in recovered] == [queued.id, running.id]
    assert {request.status for request in recovered} == {RequestStatus.INTERRUPTED}
    assert all(request.finished_at == later and request.error for request in recovered)
    assert [await store.ledger.get_request(request.id) for request in recovered] == recovered
    assert (await store.ledger.recover(later)).interrupted == []
    assert await used_today(store) == 1


async def test_recovery_sorts_what_a_crash_left_owing(backend: Backend) -> None:
    """A settled result never delivered is owed (charged); so is a request that shared its
    call but was still marked running; a queued one with no result is refunded; delivered
    ones, and results of another source or mode, are left alone. Nothing is owed twice."""
    store = backend.store
    await store.guilds.set_limits(GUILD, active_requests=5)
    payer = await store.ledger.reserve(new_request(source_key="attachment:42"), NOW)
    joiner = await store.ledger.reserve_joined(
        new_request(user=BOB, source_key="attachment:42"), NOW, running=True
    )
    await store.ledger.mark_all_running([payer.id], NOW)
    await store.ledger.settle(
        payer.id, separation(issued_at=NOW + timedelta(seconds=5)), "attachment:42", NOW
    )
    queued = await store.ledger.reserve(new_request(source_key="attachment:7"), NOW)
    told = await store.ledger.reserve(new_request(source_key="attachment:9"), NOW)
    await store.ledger.settle(told.id, separation(), "attachment:9", NOW)
    assert await store.ledger.record_deliveries([(told.id, "interaction")], NOW) == 1
    forgotten = await store.ledger.reserve(new_request(mode=Mode.ALL), NOW)
    await store.ledger.settle(forgotten.id, separation(Mode.ALL), "attachment:42", NOW)
    backend.rows("DELETE FROM results WHERE mode = 'all'")

    later = NOW + timedelta(minutes=5)
    recovery = await store.ledger.recover(later)
    assert [(request.id, sep.stems) for request, sep in recovery.undelivered] == [
        (payer.id, separation().stems),
        (joiner.id, separation().stems),
    ]
    assert [request.id for request in recovery.interrupted] == [queued.id, forgotten.id]
    assert [
        (await store.ledger.get_request(j.id)).status  # type: ignore[union-attr]
        for j in (payer, joiner, queued, told, forgotten)
    ] == [
        RequestStatus.SUCCEEDED,
        RequestStatus.SUCCEEDED,
        RequestStatus.INTERRUPTED,
        RequestStatus.SUCCEEDED,
        RequestStatus.INTERRUPTED,
    ]
    assert await used_today(store) == 2  # the payer's unit and the delivered one's
    await store.ledger.record_deliveries([(payer.id, "channel"), (joiner.id, "dm")], later)
    assert (
        await store.ledger.record_deliveries([(payer.id, "dm")], later) == 0
    )  # the first note stands
    assert [delivered_via(backend, j.id) for j in (payer, joiner, told)] == [
        "channel",
        "dm",
        "interaction",
    ]
    again = await store.ledger.recover(later)
    assert again.interrupted == [] and again.undelivered == []


async def _fill_ledger(store: LedgerStore) -> None:
    """Alice: 2 + 1 units over two days; Bob: 1 unit and one failure; another guild: noise."""
    await store.guilds.set_limits(GUILD, active_requests=100)
    day1 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
    day2 = datetime(2026, 5, 2, 18, 30, tzinfo=UTC)
    for user, mode, when in ((ALICE, Mode.ALL, day1), (ALICE, Mode.VOCALS, day2)):
        request = await store.ledger.reserve(new_request(user=user, mode=mode), when)
        await store.ledger.settle(request.id, separation(mode, when), "attachment:42", when)
    await store.ledger.reserve(new_request(user=BOB, mode=Mode.INSTRUMENTS), day2)
    failed = await store.ledger.reserve(new_request(user=BOB, mode=Mode.ALL), day2)
    await store.ledger.refund_all([failed.id], RequestStatus.FAILED, "=HYPERLINK(evil)", day2)
    await store.ledger.reserve(new_request(user=ALICE, guild=OTHER_GUILD), day1)
    await store.ledger.reserve(
        new_request(user=ALICE), datetime(2026, 4, 30, 23, 59, 59, tzinfo=UTC)
    )


async def test_usage_report_by_user_mode_and_day(store: LedgerStore) -> None:
    """A report covers the period only and splits units by user, mode and UTC day."""
    await _fill_ledger(store)
    report = await store.reports.usage_report(
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


async def test_top_users_are_cut_to_the_requested_count(store: LedgerStore) -> None:
    """Top users lists the heaviest users first, at most ``top`` of them."""
    await store.guilds.set_limits(GUILD, active_requests=100)
    for user, count in ((1, 1), (2, 3), (3, 2)):
        for _ in range(count):
            await store.ledger.reserve(new_request(user=user), NOW)
    report = await store.reports.usage_report(
        GUILD, NOW - timedelta(hours=1), NOW + timedelta(hours=1), top=2
    )
    assert [user for user, _ in report.top_users] == [2, 3]


async def test_csv_export_parses_back_one_row_per_request(store: LedgerStore) -> None:
    """The CSV holds every request of the period with ISO-8601 UTC times."""
    await _fill_ledger(store)
    out = io.StringIO()
    written = (
        await store.reports.stream_ledger(
            GUILD, datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC), out
        )
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


async def test_csv_export_defuses_spreadsheet_formulas(store: LedgerStore) -> None:
    """Text a user controls cannot become a formula when the CSV is opened in a spreadsheet."""
    await _fill_ledger(store)
    out = io.StringIO()
    await store.reports.stream_ledger(
        GUILD, datetime(2026, 5, 2, tzinfo=UTC), datetime(2026, 5, 3, tzinfo=UTC), out
    )
    errors = [row["error"] for row in csv.DictReader(io.StringIO(out.getvalue()))]
    assert "'=HYPERLINK(evil)" in errors


async def test_log_channel_can_be_set_and_cleared(store: LedgerStore) -> None:
    """The log channel is remembered per guild and can be turned off."""
    await store.guilds.set_limits(GUILD, daily=7)
    await store.guilds.set_log_channel(GUILD, 999)
    assert await store.guilds.log_channel(GUILD) == 999
    await store.guilds.set_log_channel(GUILD, None)
    assert await store.guilds.log_channel(GUILD) is None
    assert (await store.guilds.guild_limits(GUILD)).daily == 7


async def test_quota_alert_is_claimed_once_per_window(store: LedgerStore) -> None:
    """An 80% alert for one day is sent once; the next day or 100% are new alerts."""
    day = datetime(2026, 5, 14, tzinfo=UTC)
    assert await store.guilds.claim_alert(GUILD, "day", day, 80, NOW) is True
    assert await store.guilds.claim_alert(GUILD, "day", day, 80, NOW) is False
    assert await store.guilds.claim_alert(GUILD, "day", day, 100, NOW) is True
    assert await store.guilds.claim_alert(GUILD, "day", day + timedelta(days=1), 80, NOW) is True


async def test_command_digest_is_remembered_per_scope(store: LedgerStore) -> None:
    """The bot's last synced command digest survives per scope and can be replaced."""
    assert await store.guilds.command_digest("global") is None
    await store.guilds.remember_command_digest("global", "abc")
    await store.guilds.remember_command_digest("guild:1", "def")
    await store.guilds.remember_command_digest("global", "xyz")
    assert (
        await store.guilds.command_digest("global"),
        await store.guilds.command_digest("guild:1"),
    ) == (
        "xyz",
        "def",
    )


async def test_a_joined_request_costs_nothing_but_still_counts_as_active(
    store: LedgerStore,
) -> None:
    """Joining a shared call charges 0 units, and the member's active-request cap holds."""
    await store.ledger.reserve(new_request(ALICE), NOW)
    joined = await store.ledger.reserve_joined(new_request(BOB), NOW, running=True)
    assert joined.cost == 0 and joined.status is RequestStatus.RUNNING
    assert await used_today(store) == 1
    with pytest.raises(QuotaLimitReached) as refused:
        await store.ledger.reserve_joined(new_request(BOB), NOW, running=False)
    assert refused.value.limit is QuotaLimit.USER_ACTIVE


async def test_a_joined_request_is_refused_in_a_switched_off_server(store: LedgerStore) -> None:
    """A server with a limit of 0 gets nothing, not even free shared results."""
    await store.guilds.set_limits(GUILD, daily=0)
    with pytest.raises(QuotaExceededError):
        await store.ledger.reserve_joined(new_request(BOB), NOW, running=False)


async def test_handing_over_the_charge_keeps_one_payment(store: LedgerStore) -> None:
    """The payer cancels: refunded, the heir now carries the cost, the total stays one call."""
    payer = await store.ledger.reserve(new_request(ALICE, Mode.ALL), NOW)
    heir = await store.ledger.reserve_joined(new_request(BOB, Mode.ALL), NOW, running=False)
    assert await store.ledger.hand_over_charge(payer.id, [(heir.id, ())], NOW) == (heir.id, True)
    assert await used_today(store) == 2
    payer_now, heir_now = (
        await store.ledger.get_request(payer.id),
        await store.ledger.get_request(heir.id),
    )
    assert payer_now is not None and payer_now.status is RequestStatus.CANCELLED
    assert heir_now is not None and charged(heir_now) == 2
    assert (await store.quotas.quota_status(GUILD, BOB, NOW)).user_daily.used == 2  # type: ignore[union-attr]
    # the payer is no longer active
    assert await store.ledger.hand_over_charge(payer.id, [(heir.id, ())], NOW) is None


async def test_an_heir_of_another_server_takes_the_charge_only_if_that_server_has_room(
    store: LedgerStore,
) -> None:
    """The same link asked for in two servers shares one call: its charge moves to the other
    server's requester only when that server's limits take it (it had not counted it)."""
    await store.guilds.set_limits(OTHER_GUILD, daily=1)
    spent = await store.ledger.reserve(new_request(BOB, guild=OTHER_GUILD, source_key="o"), NOW)
    await store.ledger.settle(spent.id, separation(), "o", NOW)
    payer = await store.ledger.reserve(new_request(ALICE), NOW)
    heir = await store.ledger.reserve_joined(
        new_request(1003, guild=OTHER_GUILD), NOW, running=False
    )
    assert await store.ledger.hand_over_charge(payer.id, [(heir.id, ())], NOW) is None
    assert await used_today(store) == 1  # nothing changed: the payer still pays
    await store.guilds.set_limits(OTHER_GUILD, daily=5)
    assert await store.ledger.hand_over_charge(payer.id, [(heir.id, ())], NOW) == (heir.id, True)
    assert await used_today(store) == 0
    other = await store.quotas.quota_status(OTHER_GUILD, 1003, NOW)
    assert other.guild_daily.used == 2 and other.user_daily is not None
    assert other.user_daily.used == 1


async def test_the_charge_skips_an_heir_without_room(store: LedgerStore) -> None:
    """The first heir has spent their allowance: the next one, who has room, takes the charge."""
    for _ in range(10):
        request = await store.ledger.reserve(new_request(BOB, source_key="other"), NOW)
        await store.ledger.settle(request.id, separation(), "other", NOW)
    payer = await store.ledger.reserve(new_request(ALICE), NOW)
    full = await store.ledger.reserve_joined(new_request(BOB), NOW, running=False)
    roomy = await store.ledger.reserve_joined(new_request(1003), NOW, running=False)
    handed = await store.ledger.hand_over_charge(payer.id, [(full.id, ()), (roomy.id, ())], NOW)
    assert handed == (roomy.id, True)
    assert (await store.quotas.quota_status(GUILD, BOB, NOW)).user_daily.used == 10  # type: ignore[union-attr]
    assert (await store.quotas.quota_status(GUILD, 1003, NOW)).user_daily.used == 1  # type: ignore[union-attr]
    assert await used_today(store) == 11


async def test_with_no_heir_with_room_the_server_alone_carries_the_charge(
    store: LedgerStore,
) -> None:
    """Nobody left has room: the server's sum keeps the charge, no member is shown over limit."""
    await store.guilds.set_limits(GUILD, per_user=2)
    earlier = await store.ledger.reserve(new_request(1003, source_key="other"), NOW)
    await store.ledger.settle(earlier.id, separation(), "other", NOW)
    payer = await store.ledger.reserve(new_request(ALICE, Mode.ALL), NOW)
    heir = await store.ledger.reserve_joined(new_request(1003, Mode.ALL), NOW, running=False)
    assert await store.ledger.hand_over_charge(payer.id, [(heir.id, ())], NOW) == (heir.id, False)
    status = await store.quotas.quota_status(GUILD, 1003, NOW)
    assert status.user_daily is not None and status.user_daily.used == 1
    assert status.guild_daily.used == 3
    report = await store.reports.usage_report(
        GUILD, NOW - timedelta(hours=1), NOW + timedelta(hours=1)
    )
    assert report.total.units == 3
    assert dict(report.by_user)[1003].units == 1


async def test_a_role_allowance_replaces_the_per_member_limit(store: LedgerStore) -> None:
    """The highest allowance among the member's roles holds; other members keep the default."""
    await store.guilds.set_limits(GUILD, per_user=1)
    await store.guilds.set_role_allowance(GUILD, 77, 3)
    await store.guilds.set_role_allowance(GUILD, 78, 2)
    patron = replace(new_request(ALICE), role_ids=(78, 77))
    for _ in range(3):
        request = await store.ledger.reserve(replace(patron, interaction_id=next(_ids)), NOW)
        await store.ledger.settle(request.id, separation(), request.source_key, NOW)
    with pytest.raises(QuotaLimitReached) as refused:
        await store.ledger.reserve(replace(patron, interaction_id=next(_ids)), NOW)
    assert refused.value.limit is QuotaLimit.USER_DAILY
    status = await store.quotas.quota_status(GUILD, ALICE, NOW, (77, 78))
    assert status.user_daily is not None and status.user_daily.limit == 3
    assert status.user_limit_from_role
    bob = await store.ledger.reserve(new_request(BOB), NOW)
    await store.ledger.settle(bob.id, separation(), bob.source_key, NOW)
    with pytest.raises(QuotaLimitReached):
        await store.ledger.reserve(new_request(BOB), NOW)
    assert (await store.guilds.guild_limits(GUILD)).role_allowances == ((77, 3), (78, 2))
    await store.guilds.set_role_allowance(GUILD, 77, None)
    assert (await store.quotas.quota_status(GUILD, ALICE, NOW, (77, 78))).user_daily.limit == 2  # type: ignore[union-attr]


async def test_a_role_allowance_never_goes_beyond_the_server_day(store: LedgerStore) -> None:
    """An allowance above the server's daily limit is held to the daily limit."""
    await store.guilds.set_role_allowance(GUILD, 77, 40)
    await store.guilds.set_limits(GUILD, daily=5)
    status = await store.quotas.quota_status(GUILD, ALICE, NOW, (77,))
    assert status.user_daily is not None and status.user_daily.limit == 5


async def test_reset_limits_brings_back_the_defaults(store: LedgerStore) -> None:
    """Overrides dropped by name are the defaults again; the others stay."""
    await store.guilds.set_limits(GUILD, daily=3, monthly=30, per_user=2)
    limits = await store.guilds.reset_limits(GUILD, ["daily", "per_user"])
    assert (limits.daily, limits.monthly, limits.per_user) == (50, 30, 10)
    assert limits.overridden == frozenset({"monthly"})


async def test_the_api_budget_counts_calls_across_servers_and_survives_reopening(
    backend: Backend,
) -> None:
    """Two calls a day: the third paid request anywhere is refused; joins and repeats are not."""
    policy = replace(POLICY, api_daily_budget=2)
    store = await backend.open(policy)
    first = await store.ledger.reserve(new_request(ALICE), NOW)
    await store.ledger.mark_all_running([first.id], NOW)
    await store.ledger.refund_all(
        [first.id], RequestStatus.FAILED, "the API failed", NOW
    )  # a made call still counts
    cancelled = await store.ledger.reserve(new_request(BOB, source_key="b"), NOW)
    await store.ledger.refund_all(
        [cancelled.id], RequestStatus.CANCELLED, "cancelled", NOW
    )  # never made: given back
    await store.ledger.reserve(new_request(ALICE, guild=OTHER_GUILD, source_key="c"), NOW)
    store = await backend.open(policy)
    assert await store.quotas.api_calls_today(NOW) == 2
    with pytest.raises(QuotaLimitReached) as refused:
        await store.ledger.reserve(new_request(BOB, source_key="d"), NOW)
    assert refused.value.limit is QuotaLimit.API_BUDGET
    assert "across all servers" in refused.value.user_message
    await store.ledger.reserve_joined(
        new_request(1004, guild=OTHER_GUILD, source_key="c"), NOW, running=False
    )
    await store.quotas.check_limits(GUILD, BOB, (), None, NOW)  # a join passes the precheck
    with pytest.raises(QuotaLimitReached):
        await store.quotas.check_limits(GUILD, BOB, (), 1, NOW)
    assert await store.quotas.api_calls_today(NOW + timedelta(days=1)) == 0
    assert await store.guilds.claim_budget_notice(
        NOW
    ) and not await store.guilds.claim_budget_notice(NOW)


async def test_shared_calls_settle_and_refund_every_request_once(store: LedgerStore) -> None:
    """All requests of a call become running, then succeeded or refunded together, once."""
    payer = await store.ledger.reserve(new_request(ALICE), NOW)
    joined = [
        await store.ledger.reserve_joined(new_request(user), NOW, running=False)
        for user in (BOB, 1003)
    ]
    ids = [payer.id, *(j.id for j in joined)]
    assert await store.ledger.mark_all_running(ids, NOW) == 3
    assert await store.ledger.refund_all(ids, RequestStatus.FAILED, "API failed", NOW) == 3
    assert await store.ledger.refund_all(ids, RequestStatus.FAILED, "API failed", NOW) == 0
    assert await used_today(store) == 0
    again = await store.ledger.reserve(new_request(ALICE), NOW)
    late = await store.ledger.reserve_joined(new_request(BOB), NOW, running=True)
    assert await store.ledger.settle(again.id, separation(), again.source_key, NOW)
    assert await store.ledger.settle_joined([late.id], NOW) == 1
    assert await store.ledger.settle_joined([late.id], NOW) == 0
    assert await used_today(store) == 1


async def test_a_limit_set_before_a_ceiling_is_held_to_it(backend: Backend) -> None:
    """A server's old override above a new ceiling binds at the ceiling, marked as capped."""
    store = await backend.open()
    await store.guilds.set_limits(GUILD, daily=1_000_000, monthly=1_000_000)
    store = await backend.open(replace(POLICY, max_guild_daily_limit=60))
    limits = await store.guilds.guild_limits(GUILD)
    assert (limits.daily, limits.monthly, limits.capped) == (60, 1_000_000, frozenset({"daily"}))
    assert (await store.quotas.quota_status(GUILD, None, NOW)).guild_daily.limit == 60


async def test_a_call_counts_on_the_day_it_goes_out_and_only_if_it_did(
    backend: Backend,
) -> None:
    """Interrupted while queued: given back; interrupted while running: it counts; a call
    reserved before midnight and made after counts on the day it was made."""
    store = await backend.open(replace(POLICY, api_daily_budget=5))
    await store.ledger.reserve(new_request(ALICE), NOW)
    running = await store.ledger.reserve(new_request(BOB, source_key="b"), NOW)
    await store.ledger.mark_all_running([running.id], NOW)
    await store.ledger.recover(NOW)
    assert await store.quotas.api_calls_today(NOW) == 1
    late = NOW.replace(hour=23, minute=59)
    tomorrow = late + timedelta(minutes=2)
    queued = await store.ledger.reserve(new_request(ALICE, source_key="c"), late)
    assert await store.quotas.api_calls_today(late) == 2
    await store.ledger.mark_all_running([queued.id], tomorrow)
    assert (
        await store.quotas.api_calls_today(late),
        await store.quotas.api_calls_today(tomorrow),
    ) == (1, 1)


# --- one paid call per source and mode in flight -----------------------------------------


async def test_one_paid_call_per_source_and_mode_is_in_flight(store: LedgerStore) -> None:
    """A second paid reservation of a source and mode waiting for or in its call is refused,
    whoever asks and from whichever server (nothing is charged); another mode, a join, or the
    same source once the call has ended are not."""
    await store.guilds.set_limits(GUILD, active_requests=5)
    first = await store.ledger.reserve(new_request(ALICE, source_key="song"), NOW)
    for asked in (
        new_request(BOB, source_key="song"),
        new_request(BOB, guild=OTHER_GUILD, source_key="song"),
    ):
        with pytest.raises(CallInFlightError) as refused:
            await store.ledger.reserve(asked, NOW)
        assert refused.value.says_not_charged
    assert await used_today(store) == 1
    assert await used_today(store, OTHER_GUILD) == 0
    other_mode = await store.ledger.reserve(new_request(BOB, Mode.ALL, source_key="song"), NOW)
    await store.ledger.reserve_joined(new_request(1003, source_key="song"), NOW, running=False)
    await store.ledger.mark_all_running([first.id], NOW)
    with pytest.raises(CallInFlightError):
        await store.ledger.reserve(new_request(1004, source_key="song"), NOW)
    await store.ledger.settle(first.id, separation(), "song", NOW)
    again = await store.ledger.reserve(new_request(1004, source_key="song"), NOW)
    await store.ledger.refund_all([again.id, other_mode.id], RequestStatus.FAILED, "x", NOW)
    await store.ledger.reserve(new_request(1005, source_key="song"), NOW)


async def test_a_handed_over_call_keeps_one_payer_in_flight(store: LedgerStore) -> None:
    """The heir takes the call over: still one paid call in flight for the source, then none
    once the heir's request ends."""
    payer = await store.ledger.reserve(new_request(ALICE, source_key="song"), NOW)
    heir = await store.ledger.reserve_joined(
        new_request(BOB, source_key="song"), NOW, running=False
    )
    assert await store.ledger.hand_over_charge(payer.id, [(heir.id, ())], NOW) == (heir.id, True)
    with pytest.raises(CallInFlightError):
        await store.ledger.reserve(new_request(1003, source_key="song"), NOW)
    await store.ledger.refund_all([heir.id], RequestStatus.CANCELLED, "cancelled", NOW)
    await store.ledger.reserve(new_request(1003, source_key="song"), NOW)


# --- the tests of tests/test_async_store.py that hold for every store ----------------------


async def test_concurrent_reservations_never_over_grant(store: LedgerStore) -> None:
    """80 members at once against the server's daily limit of 50 units: exactly 50 granted."""
    cost = POLICY.cost_of(Mode.VOCALS)
    members = range(1, 81)
    results = await asyncio.gather(
        *(store.ledger.reserve(new_request(user=user), NOW) for user in members),
        return_exceptions=True,
    )
    granted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, QuotaLimitReached)]
    assert len(granted) == POLICY.guild_daily_limit // cost
    assert len(granted) + len(refused) == len(members)
    assert await used_today(store) == POLICY.guild_daily_limit


async def test_a_refused_write_undoes_itself_alone(store: LedgerStore) -> None:
    """A duplicate among concurrent reservations is refused; the others are all recorded."""
    first = new_request(user=1)
    await store.ledger.reserve(first, NOW)
    again = new_request(user=2, interaction=first.interaction_id)
    others = [new_request(user=user) for user in (3, 4, 5)]
    results = await asyncio.gather(
        store.ledger.reserve(again, NOW),
        *(store.ledger.reserve(r, NOW) for r in others),
        return_exceptions=True,
    )
    assert isinstance(results[0], DuplicateRequestError)
    assert all(not isinstance(r, BaseException) for r in results[1:])
    assert await used_today(store) == 4 * POLICY.cost_of(Mode.VOCALS)


async def test_a_refund_happens_once_whoever_asks(store: LedgerStore) -> None:
    """Five refunds of one request at once: one changes it."""
    recorded = await store.ledger.reserve(new_request(), NOW)
    changed = await asyncio.gather(
        *(
            store.ledger.refund_all([recorded.id], RequestStatus.FAILED, "the API failed", NOW)
            for _ in range(5)
        )
    )
    assert sorted(changed) == [0, 0, 0, 0, 1]


async def test_reads_see_every_awaited_write(store: LedgerStore) -> None:
    recorded = await store.ledger.reserve(new_request(), NOW)
    await store.ledger.settle(recorded.id, separation(), "attachment:42", NOW)
    found = await store.ledger.get_request(recorded.id)
    assert found is not None and found.status is RequestStatus.SUCCEEDED
    assert await store.ledger.find_result("attachment:42", Mode.VOCALS, NOW.replace(hour=0))


async def test_a_write_whose_caller_stopped_waiting_is_still_made(backend: Backend) -> None:
    """Like a synchronous call, a write cannot be half done: its caller's cancellation does
    not undo it, and closing the store waits for it."""
    store = backend.store
    task = asyncio.create_task(store.ledger.reserve(new_request(user=7), NOW))
    await asyncio.sleep(0)  # the write is under way
    task.cancel()
    await backend.close()
    store = await backend.open()
    status = await store.quotas.quota_status(GUILD, 7, NOW)
    assert status.guild_daily.used == POLICY.cost_of(Mode.VOCALS)


async def test_retention_prunes_old_finished_rows_only(store: LedgerStore) -> None:
    """Pruning deletes what ended before the cut-off and its stored results; a request still
    queued, however old, and everything newer stay."""
    old = NOW - timedelta(days=100)
    done = await store.ledger.reserve(new_request(source_key="old"), old)
    await store.ledger.settle(done.id, separation(issued_at=old), "old", old)
    waiting = await store.ledger.reserve(new_request(BOB), old)
    recent = await store.ledger.reserve(new_request(1003), NOW)
    pruned = await store.prune(NOW - timedelta(days=30), stop=lambda: False)
    assert (pruned.requests, pruned.results) == (1, 1)
    assert await store.ledger.get_request(done.id) is None
    assert await store.ledger.get_request(waiting.id) is not None
    assert await store.ledger.get_request(recent.id) is not None
    assert await store.ledger.find_result("old", Mode.VOCALS, old - timedelta(days=1)) is None


async def test_the_stored_result_of_a_request_is_found_by_its_id_however_old(
    store: LedgerStore,
) -> None:
    """Free mixes need a request's result after the reuse window: the request and the result
    stored for its source and mode, a later call's when one replaced it; None once either
    row is gone."""
    paid = await store.ledger.reserve(new_request(source_key="attachment:42"), NOW)
    await store.ledger.settle(paid.id, separation(issued_at=NOW), "attachment:42", NOW)
    repeat = await store.ledger.record_free(
        new_request(user=BOB, source_key="attachment:42"), separation(), NOW
    )
    found = await store.ledger.stored_result(repeat.id)
    assert found is not None
    request, stored = found
    assert (request.id, request.user_id, stored) == (repeat.id, BOB, separation())
    later = separation(issued_at=NOW + timedelta(days=40))
    again = await store.ledger.reserve(
        new_request(source_key="attachment:42"), NOW + timedelta(days=40)
    )
    await store.ledger.settle(again.id, later, "attachment:42", NOW + timedelta(days=40))
    assert await store.ledger.stored_result(paid.id) == (
        await store.ledger.get_request(paid.id),
        later,
    )
    other = await store.ledger.reserve(new_request(source_key="attachment:43"), NOW)
    assert await store.ledger.stored_result(other.id) is None  # no result for its source
    assert await store.ledger.stored_result(10**9) is None
