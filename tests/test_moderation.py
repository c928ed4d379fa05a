"""The moderators' service over a real SQLite ledger: usage, limits, export, refunds, alerts."""

from __future__ import annotations

import csv
import io
import itertools
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stembot.config import QuotaPolicy
from stembot.errors import (
    ModerationError,
    NotRefundableError,
    QuotaExceededError,
    RequestNotFoundError,
)
from stembot.ledger_csv import CSV_COLUMNS
from stembot.models import Mode, NewRequest, RequestStatus, Separation, Stem
from stembot.moderation import LedgerExport, ModerationService
from stembot.store import Store
from stembot.store.asynchronous import AsyncStore
from tests.ledger_reads import charged

NOW = datetime(2026, 5, 14, 12, 0, tzinfo=UTC)
GUILD = 111
OTHER_GUILD = 222
ALICE, BOB, CAROL = 1001, 1002, 1003
LOG_CHANNEL = 7777
POLICY = QuotaPolicy(
    guild_daily_limit=10, guild_monthly_limit=100, user_daily_limit=10, user_active_jobs=5
)
_interactions = itertools.count(50_000_000)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "ledger.db", POLICY)
    yield opened
    opened.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def moderation(
    store: Store, tmp_path: Path, clock: Clock
) -> AsyncIterator[ModerationService]:
    """The service on the asynchronous store, on the same file the tests write through."""
    beside = await AsyncStore.open(tmp_path / "ledger.db", POLICY)
    yield ModerationService(beside, clock)
    await beside.close()


def new_request(user: int = ALICE, mode: Mode = Mode.VOCALS, guild: int = GUILD) -> NewRequest:
    return NewRequest(
        guild_id=guild,
        channel_id=555,
        user_id=user,
        interaction_id=next(_interactions),
        mode=mode,
        source_url="https://cdn.example/song.mp3?sig=abc",
        source_name="song.mp3",
        source_key=f"attachment:{next(_interactions)}",
    )


def separation(mode: Mode) -> Separation:
    return Separation(mode, (Stem("vocals", "https://stems.example/v.mp3"),), NOW)


def succeeded(
    store: Store, user: int = ALICE, mode: Mode = Mode.VOCALS, at: datetime = NOW, guild=GUILD
):
    """A request reserved and settled at ``at``: it holds its cost."""
    request = store.ledger.reserve(new_request(user, mode, guild), at)
    store.ledger.settle(request.id, separation(mode), request.source_key, at)
    return request


def status_of(store: Store, request_id: int) -> RequestStatus:
    request = store.ledger.get_request(request_id)
    assert request is not None
    return request.status


async def exported(
    moderation: ModerationService, since=None, until=None
) -> tuple[LedgerExport, str]:
    """The export as the Discord layer gets it, and the text of its CSV."""
    with tempfile.TemporaryDirectory() as folder:
        export = await moderation.export(GUILD, since, until, max_bytes=10**9, folder=Path(folder))
        assert export.path is not None
        return export, export.path.read_text(encoding="utf-8")


async def export_rows(
    moderation: ModerationService, since=None, until=None
) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((await exported(moderation, since, until))[1])))


# --- usage -----------------------------------------------------------------------------------


async def test_usage_figures_match_the_ledger(store: Store, moderation: ModerationService) -> None:
    """Units and requests today, by mode and by member, equal what the ledger charged."""
    succeeded(store, ALICE, Mode.ALL)
    succeeded(store, ALICE, Mode.VOCALS)
    succeeded(store, BOB, Mode.VOCALS)
    failed = store.ledger.reserve(new_request(CAROL, Mode.INSTRUMENTS), NOW)
    store.ledger.refund_all([failed.id], RequestStatus.FAILED, "API failed", NOW)
    overview = await moderation.usage(GUILD)
    assert overview.quota.guild_daily.used == 4
    assert overview.quota.guild_daily.limit == 10
    assert (overview.today.total.requests, overview.today.total.units) == (4, 4)
    assert overview.today.total.refunded == 1
    by_mode = {mode: (line.requests, line.units) for mode, line in overview.today.by_mode}
    assert by_mode == {Mode.ALL: (1, 2), Mode.VOCALS: (2, 2), Mode.INSTRUMENTS: (1, 0)}
    assert [(user, line.units) for user, line in overview.month.top_users] == [
        (ALICE, 3),
        (BOB, 1),
        (CAROL, 0),
    ]


async def test_usage_tells_when_each_window_resets(moderation: ModerationService) -> None:
    """The day resets at the next UTC midnight, the month on the 1st of the next month."""
    overview = await moderation.usage(GUILD)
    assert overview.quota.guild_daily.resets_at == datetime(2026, 5, 15, tzinfo=UTC)
    assert overview.quota.guild_monthly.resets_at == datetime(2026, 6, 1, tzinfo=UTC)


async def test_usage_counts_earlier_days_in_the_month_only(
    store: Store, moderation: ModerationService
) -> None:
    """A request from yesterday is in this month's figures, not today's."""
    succeeded(store, at=NOW - timedelta(days=1))
    succeeded(store, at=NOW)
    overview = await moderation.usage(GUILD)
    assert overview.today.total.units == 1
    assert overview.month.total.units == 2
    assert overview.quota.guild_monthly.used == 2


async def test_usage_of_one_guild_ignores_another(
    store: Store, moderation: ModerationService
) -> None:
    """Another server's requests never show in this server's figures."""
    succeeded(store, guild=OTHER_GUILD)
    overview = await moderation.usage(GUILD)
    assert overview.month.total.requests == 0
    assert overview.quota.guild_monthly.used == 0


# --- limits ----------------------------------------------------------------------------------


async def test_limits_set_are_enforced_on_the_next_request(
    store: Store, moderation: ModerationService
) -> None:
    """A daily limit of 1 lets one vocals request through and refuses the next."""
    limits = await moderation.set_limits(GUILD, daily=1)
    assert limits.daily == 1
    assert limits.overridden == {"daily"}
    store.ledger.reserve(new_request(ALICE), NOW)
    with pytest.raises(QuotaExceededError, match="1 of its 1 daily units"):
        store.ledger.reserve(new_request(BOB), NOW)


async def test_limits_left_out_stay_as_they_were(moderation: ModerationService) -> None:
    """Setting the monthly limit keeps an earlier daily override and the per-member default."""
    await moderation.set_limits(GUILD, daily=7)
    limits = await moderation.set_limits(GUILD, monthly=70)
    assert (limits.daily, limits.monthly, limits.per_user) == (7, 70, POLICY.user_daily_limit)
    assert limits.overridden == {"daily", "monthly"}


@pytest.mark.parametrize(
    ("options", "refusal"),
    [
        ({"role_id": 77}, "With `role`, give `per_user`"),
        ({"role_id": 77, "daily": 5}, "A role gets only a `per_user` allowance"),
        ({"role_id": 77, "per_user": 5, "reset": "per_user"}, "not both"),
        ({"daily": 5, "reset": "all"}, "`daily` can't be both set and reset"),
        ({"reset": "active_requests"}, "`reset` must be one of daily, monthly, per_user, all"),
    ],
)
async def test_contradictory_limit_changes_are_refused_and_change_nothing(
    store: Store, moderation: ModerationService, options: dict[str, Any], refusal: str
) -> None:
    """Each mix of options that can't be done is refused, saying what to give instead."""
    with pytest.raises(ModerationError, match=re.escape(refusal)):
        await moderation.set_limits(GUILD, **options)
    limits = store.guilds.guild_limits(GUILD)
    assert (limits.overridden, limits.role_allowances) == (frozenset(), ())


async def test_limits_need_at_least_one_value(moderation: ModerationService) -> None:
    """Setting nothing is refused with what to give."""
    with pytest.raises(ModerationError, match="at least one"):
        await moderation.set_limits(GUILD)


async def test_a_negative_limit_is_refused(moderation: ModerationService) -> None:
    """Out-of-range values are refused, naming the option, and nothing changes."""
    with pytest.raises(ModerationError, match="per_user"):
        await moderation.set_limits(GUILD, per_user=-1)
    assert (await moderation.usage(GUILD)).limits.overridden == frozenset()


# --- export ----------------------------------------------------------------------------------


async def test_export_defaults_to_this_month_and_parses_back(
    store: Store, moderation: ModerationService
) -> None:
    """Without dates the CSV holds this month's rows through today, times in ISO-8601 UTC."""
    succeeded(store, at=datetime(2026, 4, 30, 23, 59, tzinfo=UTC))
    request = succeeded(store, BOB, Mode.ALL, at=datetime(2026, 5, 2, 8, 30, tzinfo=UTC))
    export, text = await exported(moderation)
    assert export.since == datetime(2026, 5, 1, tzinfo=UTC)
    assert export.until == datetime(2026, 5, 15, tzinfo=UTC)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [row["request_id"] for row in rows] == [str(request.id)]
    assert rows[0]["created_at"] == "2026-05-02T08:30:00Z"
    assert datetime.fromisoformat(rows[0]["created_at"]).tzinfo == UTC
    assert (rows[0]["user_id"], rows[0]["mode"], rows[0]["charged"]) == (f'="{BOB}"', "all", "2")
    assert export.rows == 1


async def test_export_includes_both_named_days(store: Store, moderation: ModerationService) -> None:
    """since=05-01 until=05-02 holds the 1st and the whole 2nd, not the 3rd."""
    for day in (1, 2, 3):
        succeeded(store, at=datetime(2026, 5, day, 23, 0, tzinfo=UTC))
    rows = await export_rows(moderation, "2026-05-01", "2026-05-02")
    assert [row["created_at"][:10] for row in rows] == ["2026-05-01", "2026-05-02"]


async def test_export_names_the_file_after_the_guild_and_days(
    moderation: ModerationService,
) -> None:
    """The filename says whose ledger and which days it holds."""
    export, _ = await exported(moderation, "2026-04-01", "2026-04-30")
    assert export.filename == f"stembot-ledger-{GUILD}-2026-04-01-to-2026-04-30.csv"


@pytest.mark.parametrize("text", ["May 1", "2026-13-01", "20260501", "2026-05-1"])
def test_export_refuses_a_badly_written_date(moderation: ModerationService, text: str) -> None:
    """A date not written YYYY-MM-DD is refused with an example."""
    with pytest.raises(ModerationError, match="YYYY-MM-DD"):
        moderation.export_period(text, None)


def test_export_refuses_since_after_until(moderation: ModerationService) -> None:
    """A period that ends before it starts is refused."""
    with pytest.raises(ModerationError, match="before"):
        moderation.export_period("2026-05-10", "2026-05-09")


# --- refunds ---------------------------------------------------------------------------------


async def test_refund_gives_a_succeeded_request_back_once(
    store: Store, moderation: ModerationService
) -> None:
    """A moderator's refund frees the units; a second one is refused as already done."""
    request = succeeded(store, ALICE, Mode.ALL)
    refund = await moderation.refund(GUILD, request.id)
    assert refund.units == 2
    assert (await moderation.usage(GUILD)).quota.guild_daily.used == 0
    with pytest.raises(NotRefundableError, match="already refunded \\(by a moderator\\)"):
        await moderation.refund(GUILD, request.id)
    assert (await moderation.usage(GUILD)).quota.guild_daily.used == 0


async def test_a_refund_shows_in_the_ledger(store: Store, moderation: ModerationService) -> None:
    """The exported row says cancelled, charged 0, and who refunded it."""
    request = succeeded(store)
    await moderation.refund(GUILD, request.id)
    (row,) = await export_rows(moderation)
    assert (row["status"], row["charged"], row["cost"]) == ("cancelled", "0", "1")
    assert row["error"] == "refunded by a moderator at 2026-05-14T12:00:00Z"
    assert row["finished_at"] == "2026-05-14T12:00:00Z"


async def test_a_request_of_another_guild_cannot_be_refunded(
    store: Store, moderation: ModerationService
) -> None:
    """Another server's request id is answered as unknown, and stays charged."""
    request = succeeded(store, guild=OTHER_GUILD)
    with pytest.raises(RequestNotFoundError, match=f"no request {request.id}"):
        await moderation.refund(GUILD, request.id)
    assert status_of(store, request.id) is RequestStatus.SUCCEEDED


async def test_an_unknown_request_id_is_refused(moderation: ModerationService) -> None:
    """An id that is in no ledger gets the same answer as another server's."""
    with pytest.raises(RequestNotFoundError, match="export"):
        await moderation.refund(GUILD, 424242)


async def test_a_request_in_progress_is_not_refunded_by_hand(
    store: Store, moderation: ModerationService
) -> None:
    """A queued request stays charged: it is refunded automatically if it fails."""
    request = store.ledger.reserve(new_request(), NOW)
    with pytest.raises(NotRefundableError, match="still queued"):
        await moderation.refund(GUILD, request.id)
    assert status_of(store, request.id) is RequestStatus.QUEUED


async def test_a_failed_request_is_already_refunded(
    store: Store, moderation: ModerationService
) -> None:
    """A request the service refunded on failure cannot be refunded again."""
    request = store.ledger.reserve(new_request(), NOW)
    store.ledger.refund_all([request.id], RequestStatus.FAILED, "API failed", NOW)
    with pytest.raises(NotRefundableError, match="already refunded \\(it failed\\)"):
        await moderation.refund(GUILD, request.id)


async def test_a_free_request_has_nothing_to_refund(
    store: Store, moderation: ModerationService
) -> None:
    """A request answered from a stored result cost nothing and stays as it is."""
    request = store.ledger.record_free(new_request(), separation(Mode.VOCALS), NOW)
    with pytest.raises(NotRefundableError, match="cost nothing"):
        await moderation.refund(GUILD, request.id)


def test_store_refund_by_moderator_is_true_only_once(store: Store) -> None:
    """Store.refund_by_moderator: True for the call that refunded, False after, and for
    another guild."""
    request = succeeded(store)
    assert not store.ledger.refund_by_moderator(request.id, OTHER_GUILD, NOW)
    assert store.ledger.refund_by_moderator(request.id, GUILD, NOW)
    assert not store.ledger.refund_by_moderator(request.id, GUILD, NOW)
    request_now = store.ledger.get_request(request.id)
    assert request_now is not None and charged(request_now) == 0


# --- alerts ----------------------------------------------------------------------------------


def use(store: Store, units: int, user: int = ALICE, at: datetime = NOW) -> None:
    for _ in range(units):
        succeeded(store, user, Mode.VOCALS, at)


async def test_alert_at_80_percent_then_100_once_each(
    store: Store, moderation: ModerationService
) -> None:
    """Daily limit 10: the 8th unit brings the 80% alert, the 10th the 100% one, once each."""
    await moderation.set_log_channel(GUILD, LOG_CHANNEL)
    seen = []
    for _ in range(10):
        use(store, 1)
        seen += [(a.period, a.threshold, a.used) for a in await moderation.alerts_due(GUILD)]
    assert seen == [("day", 80, 8), ("day", 100, 10)]
    assert await moderation.alerts_due(GUILD) == []


async def test_an_alert_names_the_channel_and_the_reset(
    store: Store, moderation: ModerationService
) -> None:
    """The alert carries where to post it and when the window starts over."""
    await moderation.set_log_channel(GUILD, LOG_CHANNEL)
    use(store, 8)
    (alert,) = await moderation.alerts_due(GUILD)
    assert (alert.channel_id, alert.guild_id, alert.limit) == (LOG_CHANNEL, GUILD, 10)
    assert alert.resets_at == datetime(2026, 5, 15, tzinfo=UTC)


async def test_a_jump_past_both_thresholds_gives_one_alert(
    store: Store, moderation: ModerationService
) -> None:
    """From 70% to 100% at once: only the 100% alert, and no 80% one afterwards."""
    await moderation.set_log_channel(GUILD, LOG_CHANNEL)
    use(store, 7)
    assert await moderation.alerts_due(GUILD) == []
    use(store, 3)
    assert [(a.period, a.threshold) for a in await moderation.alerts_due(GUILD)] == [("day", 100)]
    assert await moderation.alerts_due(GUILD) == []


async def test_the_monthly_window_spans_days(
    store: Store, clock: Clock, moderation: ModerationService
) -> None:
    """The month's 80% alert is not repeated on a new day; its 100% alert comes when due."""
    await moderation.set_limits(GUILD, monthly=10, daily=8)
    await moderation.set_log_channel(GUILD, LOG_CHANNEL)
    use(store, 8)
    assert {(a.period, a.threshold) for a in await moderation.alerts_due(GUILD)} == {
        ("day", 100),
        ("month", 80),
    }
    clock.now = NOW + timedelta(days=1)
    use(store, 2, at=clock.now)
    assert [(a.period, a.threshold) for a in await moderation.alerts_due(GUILD)] == [("month", 100)]


async def test_the_daily_alert_returns_on_the_next_day(
    store: Store, clock: Clock, moderation: ModerationService
) -> None:
    """Each UTC day is a new window: reaching 80% again alerts again."""
    await moderation.set_log_channel(GUILD, LOG_CHANNEL)
    use(store, 8)
    assert [a.threshold for a in await moderation.alerts_due(GUILD)] == [80]
    clock.now = NOW + timedelta(days=1)
    use(store, 8, at=clock.now)
    assert [(a.period, a.threshold) for a in await moderation.alerts_due(GUILD)] == [("day", 80)]


async def test_a_refund_below_a_threshold_does_not_re_alert(
    store: Store, moderation: ModerationService
) -> None:
    """Dropping under 80% and climbing back in the same window posts nothing new."""
    await moderation.set_log_channel(GUILD, LOG_CHANNEL)
    use(store, 8)
    assert len(await moderation.alerts_due(GUILD)) == 1
    last = store.ledger.reserve(new_request(BOB), NOW)
    store.ledger.settle(last.id, separation(Mode.VOCALS), last.source_key, NOW)
    await moderation.refund(GUILD, last.id)
    await moderation.refund(GUILD, last.id - 1)
    use(store, 1)
    assert await moderation.alerts_due(GUILD) == []


async def test_no_alert_is_claimed_without_a_log_channel(
    store: Store, moderation: ModerationService
) -> None:
    """Without a channel nothing is decided; a channel set later still hears of the window."""
    use(store, 8)
    assert await moderation.alerts_due(GUILD) == []
    await moderation.set_log_channel(GUILD, LOG_CHANNEL)
    assert [a.threshold for a in await moderation.alerts_due(GUILD)] == [80]


async def test_a_switched_off_server_raises_no_alert(
    store: Store, moderation: ModerationService
) -> None:
    """A limit of 0 is the moderators' choice, not an alert."""
    await moderation.set_log_channel(GUILD, LOG_CHANNEL)
    await moderation.set_limits(GUILD, daily=0)
    assert await moderation.alerts_due(GUILD) == []


def test_a_moderator_refund_forgets_the_stored_result(store: Store) -> None:
    """Refunded stems (bad, say) are not handed out again for free: the next asks the API."""
    request = succeeded(store)
    assert (
        store.ledger.find_result(request.source_key, Mode.VOCALS, NOW - timedelta(days=1))
        is not None
    )
    assert store.ledger.refund_by_moderator(request.id, GUILD, NOW)
    assert (
        store.ledger.find_result(request.source_key, Mode.VOCALS, NOW - timedelta(days=1)) is None
    )
