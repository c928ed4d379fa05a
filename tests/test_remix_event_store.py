"""The remix events' store part and the ledger side of an event's call, a contract both stores
keep (SQLite and PostgreSQL, see tests/store_backends.py): charged to the server alone, within
the server's limits, the bot-wide budget and the event's own budget, never a member's
allowance; one paid call of a source and mode in flight, the event's or a member's; takes,
submissions, the end and what survives a restart."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from stembot.config import QuotaPolicy
from stembot.errors import (
    CallInFlightError,
    QuotaLimitReached,
    RemixEventAlreadyPaidError,
    RemixEventBudgetSpentError,
    RemixEventEndedError,
    RemixEventNotFoundError,
    SubmissionRefusedError,
    TooManyRemixEventsError,
)
from stembot.models import Mode, QuotaLimit, Request, RequestStatus
from stembot.remix_event_csv import write_participation
from stembot.remix_event_models import EventSpec, RemixEvent, SourceRef, TakeStatus
from stembot.store.interface import LedgerStore
from tests.store_backends import Backend
from tests.test_store import ALICE, BOB, GUILD, NOW, OTHER_GUILD, POLICY, new_request
from tests.test_store import separation as stems_of

ORGANISER = 2001
CHANNEL = 555
KEY = "attachment:900"
SPEC = EventSpec(
    title="Spring remix",
    source_name="song.wav",
    source_key=KEY,
    source_ref=SourceRef(CHANNEL, 700, 900),
)


@pytest.fixture
def store(backend: Backend) -> LedgerStore:
    return backend.store


async def start(store: LedgerStore, guild: int = GUILD, **changes: Any) -> RemixEvent:
    spec = replace(SPEC, **changes)
    return await store.events.start(guild, CHANNEL, ORGANISER, spec, NOW, max_open=3)


async def reserve(
    store: LedgerStore, event: RemixEvent, mode: Mode = Mode.VOCALS, **kwargs: bool
) -> Request:
    return await store.ledger.reserve_for_event(event.id, mode, "song.wav", KEY, NOW, **kwargs)


def row(backend: Backend, request_id: int) -> tuple[object, ...]:
    """member_pays (0 or false), remix_event_id, user_id, interaction_id."""
    (found,) = backend.rows(
        "SELECT member_pays, remix_event_id, user_id, interaction_id FROM requests WHERE id = ?",
        (request_id,),
    )
    return tuple(found)


async def test_an_events_call_is_charged_to_the_server_alone(backend: Backend) -> None:
    """The row names the event and its organiser, member_pays = 0; the server's figures count
    it, the organiser's own do not (neither units nor requests in progress)."""
    store = backend.store
    event = await start(store)
    request = await reserve(store, event)
    assert (request.cost, request.status, request.user_id) == (1, RequestStatus.QUEUED, ORGANISER)
    assert row(backend, request.id)[:3] == (0, event.id, ORGANISER)
    status = await store.quotas.quota_status(GUILD, ORGANISER, NOW)
    assert status.guild_daily.used == 1
    assert status.user_daily is not None and status.user_daily.used == 0
    assert status.user_active_requests == 0
    # The organiser's own request is not held back by the event's call (1 at once allowed).
    await store.ledger.reserve(new_request(user=ORGANISER), NOW)
    assert await store.quotas.api_calls_today(NOW) == 2


async def test_an_events_calls_come_from_no_interaction(store: LedgerStore) -> None:
    """Each event row is numbered below every Discord id, each its own."""
    event = await start(store)
    await store.ledger.reserve(new_request(interaction=5), NOW)
    first = await reserve(store, event, Mode.VOCALS)
    second = await reserve(store, event, Mode.ALL)
    assert (first.interaction_id, second.interaction_id) == (-1, -2)


async def test_a_members_allowance_never_refuses_an_events_call(backend: Backend) -> None:
    """Members may start nothing (per-member limit 0): the event's call still goes."""
    closed = await backend.open(replace(POLICY, user_daily_limit=0))
    event = await start(closed)
    assert (await reserve(closed, event)).cost == 1


async def test_an_events_call_is_held_to_the_servers_limits(store: LedgerStore) -> None:
    """The server's daily limit binds the event as it binds anyone; nothing is written."""
    await store.guilds.set_limits(GUILD, daily=1)
    event = await start(store)
    with pytest.raises(QuotaLimitReached) as refused:
        await reserve(store, event, Mode.ALL)  # 2 units
    assert refused.value.limit is QuotaLimit.GUILD_DAILY
    assert (await store.quotas.quota_status(GUILD, None, NOW)).guild_daily.used == 0
    assert await store.quotas.api_calls_today(NOW) == 0


async def test_an_events_call_is_held_to_the_bot_wide_budget(backend: Backend) -> None:
    budgeted = await backend.open(replace(POLICY, api_daily_budget=1))
    await budgeted.ledger.reserve(new_request(), NOW)
    event = await start(budgeted)
    with pytest.raises(QuotaLimitReached) as refused:
        await reserve(budgeted, event)
    assert refused.value.limit is QuotaLimit.API_BUDGET


async def test_the_events_budget_counts_its_paid_rows_not_refunded(store: LedgerStore) -> None:
    """Budget 2: vocals (1) fits, all (2) does not; once vocals is refunded, all fits."""
    event = await start(store, budget=2)
    vocals = await reserve(store, event, Mode.VOCALS)
    with pytest.raises(RemixEventBudgetSpentError) as spent:
        await reserve(store, event, Mode.ALL)
    assert (spent.value.budget, spent.value.spent, spent.value.cost) == (2, 1, 2)
    assert "not charged" in spent.value.user_message
    await store.ledger.refund_all([vocals.id], RequestStatus.FAILED, "refused", NOW)
    assert (await reserve(store, event, Mode.ALL)).cost == 2
    assert (await store.events.spend(event.id)).units == 2


async def test_an_event_pays_one_call_per_mode(store: LedgerStore) -> None:
    """A second paid call of a mode is refused while the first runs or after it succeeded;
    a refunded one leaves room for the next try. Another mode is its own call."""
    event = await start(store)
    first = await reserve(store, event)
    with pytest.raises(RemixEventAlreadyPaidError):
        await reserve(store, event)
    await store.ledger.refund_all([first.id], RequestStatus.FAILED, "refused", NOW)
    again = await reserve(store, event)
    await store.ledger.settle(again.id, stems_of(), KEY, NOW)
    with pytest.raises(RemixEventAlreadyPaidError):
        await reserve(store, event)
    await reserve(store, event, Mode.INSTRUMENTS)
    assert (await store.events.spend(event.id)).paid_calls == 2


async def test_an_event_joining_a_call_costs_nothing_and_no_call(store: LedgerStore) -> None:
    event = await start(store, budget=1)
    await store.ledger.reserve(new_request(source_key=KEY), NOW)
    joined = await reserve(store, event, joined=True, running=True)
    assert (joined.cost, joined.status) == (0, RequestStatus.RUNNING)
    assert await store.quotas.api_calls_today(NOW) == 1
    assert (await store.events.spend(event.id)).units == 0


async def test_a_call_for_an_unknown_event_is_refused(store: LedgerStore) -> None:
    with pytest.raises(RemixEventNotFoundError):
        await store.ledger.reserve_for_event(404, Mode.VOCALS, "song.wav", KEY, NOW)


async def test_a_handed_over_charge_never_lands_on_an_events_organiser(
    backend: Backend,
) -> None:
    """A member's call the event joined: the payer leaves; the organiser has room, but the
    event's row takes the charge on the server alone (no member asked for it)."""
    store = backend.store
    event = await start(store)
    payer = await store.ledger.reserve(new_request(source_key=KEY), NOW)
    joined = await reserve(store, event, joined=True)
    handed = await store.ledger.hand_over_charge(payer.id, [(joined.id, ())], NOW)
    assert handed == (joined.id, False)
    assert row(backend, joined.id)[:2] == (0, event.id)
    organiser = (await store.quotas.quota_status(GUILD, ORGANISER, NOW)).user_daily
    assert organiser is not None and organiser.used == 0


async def test_at_most_three_open_events_per_server(backend: Backend) -> None:
    """The fourth is refused; another server is not counted; an ended event, or one past its
    end, frees a place."""
    store = backend.store
    events = [await start(store) for _ in range(3)]
    with pytest.raises(TooManyRemixEventsError, match="3 remix events"):
        await start(store)
    await start(store, guild=OTHER_GUILD)
    await store.events.end(events[0].id, NOW, ORGANISER)
    await start(store)
    backend.rows(
        "UPDATE remix_events SET ends_at = ? WHERE id = ?",
        (backend.moment(NOW - timedelta(hours=1)), events[1].id),
    )
    await start(store)
    assert len(await store.events.open_events(GUILD, NOW)) == 3


async def test_the_event_reads_back_as_it_was_started(store: LedgerStore) -> None:
    ends = NOW + timedelta(days=3)
    event = await start(store, modes=(Mode.ALL, Mode.VOCALS), ends_at=ends, budget=7, prefetch=True)
    assert await store.events.get(event.id) == event
    assert (event.modes, event.ends_at, event.budget, event.prefetch) == (
        (Mode.ALL, Mode.VOCALS),
        ends,
        7,
        True,
    )
    assert event.is_open(NOW) and not event.is_open(ends)
    posted = await store.events.card_posted(
        event.id, 9001, 9002, pinned=True, scheduled_event_id=77
    )
    assert (posted.card_channel_id, posted.card_message_id, posted.pinned) == (9001, 9002, True)
    assert posted.source_ref == SPEC.source_ref  # kept when the card brings no new one
    polled = await store.events.poll_posted(event.id, 9100, [3, 1, 2])
    assert (polled.poll_message_id, polled.poll_submission_ids) == (9100, (3, 1, 2))


async def test_a_track_re_uploaded_onto_the_card_becomes_the_source(store: LedgerStore) -> None:
    event = await start(store, source_ref=None)
    assert event.must_prefetch
    ref = SourceRef(9001, 9002, 9003)
    posted = await store.events.card_posted(
        event.id, 9001, 9002, pinned=False, scheduled_event_id=None, source_ref=ref
    )
    assert posted.source_ref == ref and not posted.must_prefetch


async def test_a_take_is_recorded_once_per_member_and_mode(store: LedgerStore) -> None:
    event = await start(store)
    for _ in range(3):
        await store.events.record_take(event.id, Mode.VOCALS, ALICE, NOW, answered=False)
    await store.events.record_take(event.id, Mode.ALL, ALICE, NOW, answered=True)
    await store.events.record_take(event.id, Mode.VOCALS, BOB, NOW, answered=False)
    takes = await store.events.takes(event.id)
    assert sorted((t.mode, t.user_id, t.status) for t in takes) == [
        (Mode.ALL, ALICE, TakeStatus.ANSWERED),
        (Mode.VOCALS, ALICE, TakeStatus.WAITING),
        (Mode.VOCALS, BOB, TakeStatus.WAITING),
    ]
    assert [(t.mode, t.user_id) for t in await store.events.waiting_takes()] == [
        (Mode.VOCALS, ALICE),
        (Mode.VOCALS, BOB),
    ]
    assert (
        await store.events.settle_takes(event.id, Mode.VOCALS, [ALICE], TakeStatus.ANSWERED, NOW)
        == 1
    )
    assert (
        await store.events.settle_takes(event.id, Mode.VOCALS, [ALICE], TakeStatus.FAILED, NOW) == 0
    )
    assert (
        await store.events.settle_takes(event.id, Mode.VOCALS, [BOB], TakeStatus.FAILED, NOW) == 1
    )
    assert await store.events.waiting_takes() == []
    # Bob was told the failure: he counts once he takes again.
    assert (await store.events.counts(event.id)).members == 1
    await store.events.record_take(event.id, Mode.VOCALS, BOB, NOW, answered=True)
    assert (await store.events.counts(event.id)).members == 2


async def test_the_event_hands_out_its_own_stems_however_old(store: LedgerStore) -> None:
    """The stems of the event's own call stay its stems; a result another request left is
    used only while it is fresh."""
    event = await start(store)
    fresh_after = NOW - timedelta(hours=1)
    await store.ledger.settle(
        (await store.ledger.reserve(new_request(source_key=KEY), NOW)).id,
        stems_of(issued_at=NOW - timedelta(days=2)),
        KEY,
        NOW,
    )
    assert await store.events.result(event.id, Mode.VOCALS, fresh_after) is None
    paid = await reserve(store, event)
    await store.ledger.settle(paid.id, stems_of(issued_at=NOW - timedelta(days=2)), KEY, NOW)
    found = await store.events.result(event.id, Mode.VOCALS, fresh_after)
    assert found == stems_of(issued_at=NOW - timedelta(days=2))
    assert await store.events.result(event.id, Mode.ALL, fresh_after) is None


async def test_one_current_submission_per_member(store: LedgerStore) -> None:
    event = await start(store)
    first, replaced = await store.events.submit(event.id, ALICE, "Mine", "a.mp3", 501, NOW)
    assert replaced is None and first.current
    second, replaced = await store.events.submit(event.id, ALICE, "Mine v2", "b.mp3", 502, NOW)
    assert replaced is not None and replaced.id == first.id and replaced.replaced_at == NOW
    await store.events.submit(event.id, BOB, "Bob's", "c.wav", 503, NOW)
    assert [(s.user_id, s.title) for s in await store.events.submissions(event.id)] == [
        (ALICE, "Mine v2"),
        (BOB, "Bob's"),
    ]
    assert (await store.events.counts(event.id)).submissions == 2
    assert second.message_id == 502


async def test_who_may_remove_a_submission(store: LedgerStore) -> None:
    """Its member, the organiser or a moderator; anyone else is refused; once only."""
    event = await start(store)
    alices, _ = await store.events.submit(event.id, ALICE, "A", "a.mp3", 501, NOW)
    bobs, _ = await store.events.submit(event.id, BOB, "B", "b.mp3", 502, NOW)
    with pytest.raises(SubmissionRefusedError, match="Only its member"):
        await store.events.remove_submission(event.id, alices.id, BOB, NOW, moderator=False)
    removed = await store.events.remove_submission(
        event.id, alices.id, ORGANISER, NOW, moderator=False
    )
    assert (removed.removed_by, removed.current) == (ORGANISER, False)
    with pytest.raises(SubmissionRefusedError, match="already removed"):
        await store.events.remove_submission(event.id, alices.id, ORGANISER, NOW, moderator=False)
    await store.events.remove_submission(event.id, bobs.id, 3003, NOW, moderator=True)
    assert await store.events.submissions(event.id) == []
    # Removed, it is still found by its id (its post's button, the vote); an unknown id is not.
    assert await store.events.submission(alices.id) == removed
    assert await store.events.submission(bobs.id + 100) is None


async def test_no_submissions_after_the_end_or_when_off(store: LedgerStore) -> None:
    event = await start(store, ends_at=NOW + timedelta(hours=1))
    with pytest.raises(RemixEventEndedError):
        await store.events.submit(event.id, ALICE, "Late", "a.mp3", 501, NOW + timedelta(hours=1))
    closed = await start(store, submissions=False)
    with pytest.raises(SubmissionRefusedError, match="doesn't take"):
        await store.events.submit(closed.id, ALICE, "A", "a.mp3", 501, NOW)
    assert (
        await store.events.submissions(event.id) == await store.events.submissions(closed.id) == []
    )


async def test_an_event_ends_once_and_sums_up(store: LedgerStore) -> None:
    event = await start(store, modes=(Mode.VOCALS, Mode.ALL))
    for user in (ALICE, BOB):
        await store.events.record_take(event.id, Mode.VOCALS, user, NOW, answered=True)
    await store.events.record_take(event.id, Mode.ALL, ALICE, NOW, answered=True)
    await store.events.record_take(event.id, Mode.ALL, 3003, NOW, answered=False)
    await store.events.settle_takes(event.id, Mode.ALL, [3003], TakeStatus.FAILED, NOW)
    await store.events.submit(event.id, BOB, "B", "b.mp3", 502, NOW)
    await store.ledger.settle(
        (await reserve(store, event, Mode.ALL)).id, stems_of(Mode.ALL), KEY, NOW
    )
    ended = await store.events.end(event.id, NOW, ORGANISER)
    assert (ended.ended_at, ended.ended_by) == (NOW, ORGANISER)
    with pytest.raises(RemixEventEndedError):
        await store.events.end(event.id, NOW, None)
    summary = await store.events.summary(event.id)
    assert summary.takes_by_mode == ((Mode.VOCALS, 2), (Mode.ALL, 1))
    assert (summary.members, summary.submissions) == (2, 1)
    assert (summary.spend.paid_calls, summary.spend.units) == (1, 2)
    people = {p.user_id: p for p in await store.events.participation(event.id)}
    assert people[ALICE].modes == (Mode.VOCALS, Mode.ALL) and people[ALICE].submission is None
    assert people[BOB].submission is not None and 3003 not in people


async def test_events_and_takes_survive_a_restart_and_an_event_past_its_end_is_due(
    backend: Backend,
) -> None:
    first = backend.store
    event = await start(first, ends_at=NOW + timedelta(hours=2))
    await start(first)  # no end: never due
    await first.events.record_take(event.id, Mode.VOCALS, ALICE, NOW, answered=False)
    second = await backend.open()
    assert await second.events.get(event.id) == event
    assert [(t.event_id, t.user_id) for t in await second.events.waiting_takes()] == [
        (event.id, ALICE)
    ]
    assert await second.events.due(NOW + timedelta(hours=1)) == []
    assert await second.events.due(NOW + timedelta(hours=2)) == [event]
    await second.events.end(event.id, NOW + timedelta(hours=2), None)
    assert await second.events.due(NOW + timedelta(days=9)) == []


async def test_recovery_never_delivers_an_events_call_as_a_members_result(
    store: LedgerStore,
) -> None:
    """An event's call that succeeded is answered to its takes, never posted as a result."""
    event = await start(store)
    await store.ledger.settle((await reserve(store, event)).id, stems_of(), KEY, NOW)
    assert (await store.ledger.recover(NOW)).undelivered == []


async def test_usage_reports_show_event_spend_apart_from_members(store: LedgerStore) -> None:
    event = await start(store)
    await store.ledger.reserve(new_request(user=ALICE), NOW)
    await reserve(store, event, Mode.ALL)
    report = await store.reports.usage_report(
        GUILD, NOW - timedelta(hours=1), NOW + timedelta(hours=1)
    )
    assert report.total.units == 3
    assert [user for user, _ in report.by_user] == [ALICE]
    assert [(e.event_id, e.title, e.usage.units) for e in report.by_event] == [
        (event.id, "Spring remix", 2)
    ]
    assert report.events_total.units == 2
    out = io.StringIO()
    await store.reports.stream_ledger(
        GUILD, NOW - timedelta(hours=1), NOW + timedelta(hours=1), out
    )
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["charged_to"], r["remix_event_id"]) for r in rows] == [
        ("member", ""),
        ("event", str(event.id)),
    ]


async def test_retention_removes_events_ended_before_the_cutoff(backend: Backend) -> None:
    store = backend.store
    old, kept, running = await start(store), await start(store), await start(store)
    for event in (old, kept, running):
        await store.events.record_take(event.id, Mode.VOCALS, ALICE, NOW, answered=True)
        await store.events.submit(event.id, ALICE, "A", "a.mp3", 501, NOW)
    await store.events.end(old.id, NOW, None)
    await store.events.end(kept.id, NOW + timedelta(days=2), None)
    await store.prune(NOW + timedelta(days=1), stop=lambda: False)
    assert await store.events.get(old.id) is None
    assert (
        await store.events.get(kept.id) is not None
        and await store.events.get(running.id) is not None
    )
    counts = backend.rows(
        "SELECT (SELECT count(*) FROM remix_event_takes), "
        "(SELECT count(*) FROM remix_event_submissions)"
    )
    assert counts == [(2, 2)]


async def test_a_policy_without_an_event_budget_still_checks_the_server(
    backend: Backend,
) -> None:
    """No budget of its own: only the server's month binds (monthly limit 1, all needs 2)."""
    small = await backend.open(QuotaPolicy(guild_monthly_limit=1, guild_daily_limit=1))
    event = await start(small)
    with pytest.raises(QuotaLimitReached) as refused:
        await reserve(small, event, Mode.ALL)
    assert refused.value.limit is QuotaLimit.GUILD_MONTHLY


async def test_participation_as_csv_for_the_moderators(store: LedgerStore) -> None:
    """One row per member, ids kept whole, a member's title never run as a formula."""
    event = await start(store, modes=(Mode.VOCALS, Mode.ALL))
    await store.events.record_take(event.id, Mode.ALL, ALICE, NOW, answered=True)
    await store.events.record_take(event.id, Mode.VOCALS, ALICE, NOW, answered=True)
    await store.events.submit(event.id, BOB, "=HYPERLINK(1)", "b.mp3", 502, NOW)
    out = io.StringIO()
    assert write_participation(await store.events.participation(event.id), out) == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [tuple(r.values()) for r in rows] == [
        (f'="{ALICE}"', "vocals all", "2026-05-14T12:00:00Z", "", "", ""),
        (f'="{BOB}"', "", "", "'=HYPERLINK(1)", "b.mp3", "2026-05-14T12:00:00Z"),
    ]


async def test_an_events_paid_call_is_the_one_call_in_flight(store: LedgerStore) -> None:
    """The event's paid call holds its source and mode as a member's does: a member's paid
    call of the same track and mode is refused while it is queued or running (they join it),
    and the event's is refused while a member's is; once it lands, a new call may go."""
    event = await start(store)
    paid = await reserve(store, event)
    with pytest.raises(CallInFlightError):
        await store.ledger.reserve(new_request(source_key=KEY), NOW)
    joined = await store.ledger.reserve_joined(
        new_request(user=BOB, source_key=KEY), NOW, running=False
    )
    assert joined.cost == 0
    await store.ledger.settle(paid.id, stems_of(), KEY, NOW)
    members_call = await store.ledger.reserve(new_request(source_key=KEY, mode=Mode.ALL), NOW)
    with pytest.raises(CallInFlightError):
        await reserve(store, event, Mode.ALL)
    assert (await store.events.spend(event.id)).paid_calls == 1
    await store.ledger.refund_all([members_call.id], RequestStatus.FAILED, "refused", NOW)
    assert (await reserve(store, event, Mode.ALL)).cost == 2


async def test_a_refused_events_call_writes_nothing(backend: Backend) -> None:
    """Refused by the call in flight: no row, no API call counted, the budget untouched."""
    store = backend.store
    event = await start(store)
    await store.ledger.reserve(new_request(source_key=KEY), NOW)
    with pytest.raises(CallInFlightError):
        await reserve(store, event)
    assert backend.rows("SELECT count(*) FROM requests WHERE remix_event_id IS NOT NULL") == [(0,)]
    assert await store.quotas.api_calls_today(NOW) == 1
    assert (await store.events.spend(event.id)).units == 0
