"""The remix events' store part and the ledger side of an event's call: charged to the server
alone, within the server's limits, the bot-wide budget and the event's own budget, never a
member's allowance; takes, submissions, the end and what survives a restart."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from stembot.config import QuotaPolicy
from stembot.errors import (
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
from stembot.store import Store
from tests.test_store import ALICE, BOB, GUILD, NOW, OTHER_GUILD, POLICY, new_request, open_store
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
def store(tmp_path: Path):
    opened = open_store(tmp_path / "ledger.db")
    yield opened
    opened.close()


def start(store: Store, guild: int = GUILD, **changes: Any) -> RemixEvent:
    return store.events.start(guild, CHANNEL, ORGANISER, replace(SPEC, **changes), NOW, max_open=3)


def reserve(store: Store, event: RemixEvent, mode: Mode = Mode.VOCALS, **kwargs: bool) -> Request:
    return store.ledger.reserve_for_event(event.id, mode, "song.wav", KEY, NOW, **kwargs)


def row(store: Store, request_id: int) -> tuple[object, ...]:
    found = store.connection.db.execute(
        "SELECT member_pays, remix_event_id, user_id, interaction_id FROM requests WHERE id = ?",
        (request_id,),
    ).fetchone()
    return tuple(found)


def test_an_events_call_is_charged_to_the_server_alone(store: Store) -> None:
    """The row names the event and its organiser, member_pays = 0; the server's figures count
    it, the organiser's own do not (neither units nor requests in progress)."""
    event = start(store)
    request = reserve(store, event)
    assert (request.cost, request.status, request.user_id) == (1, RequestStatus.QUEUED, ORGANISER)
    assert row(store, request.id)[:3] == (0, event.id, ORGANISER)
    status = store.quotas.quota_status(GUILD, ORGANISER, NOW)
    assert status.guild_daily.used == 1
    assert status.user_daily is not None and status.user_daily.used == 0
    assert status.user_active_requests == 0
    # The organiser's own request is not held back by the event's call (1 at once allowed).
    store.ledger.reserve(new_request(user=ORGANISER), NOW)
    assert store.quotas.api_calls_today(NOW) == 2


def test_an_events_calls_come_from_no_interaction(store: Store) -> None:
    """Each event row is numbered below every Discord id, each its own."""
    event = start(store)
    store.ledger.reserve(new_request(interaction=5), NOW)
    first = reserve(store, event, Mode.VOCALS)
    second = reserve(store, event, Mode.ALL)
    assert (first.interaction_id, second.interaction_id) == (-1, -2)


def test_a_members_allowance_never_refuses_an_events_call(tmp_path: Path) -> None:
    """Members may start nothing (per-member limit 0): the event's call still goes."""
    closed = open_store(tmp_path / "closed.db", replace(POLICY, user_daily_limit=0))
    try:
        event = start(closed)
        assert reserve(closed, event).cost == 1
    finally:
        closed.close()


def test_an_events_call_is_held_to_the_servers_limits(store: Store) -> None:
    """The server's daily limit binds the event as it binds anyone; nothing is written."""
    store.guilds.set_limits(GUILD, daily=1)
    event = start(store)
    with pytest.raises(QuotaLimitReached) as refused:
        reserve(store, event, Mode.ALL)  # 2 units
    assert refused.value.limit is QuotaLimit.GUILD_DAILY
    assert store.quotas.quota_status(GUILD, None, NOW).guild_daily.used == 0
    assert store.quotas.api_calls_today(NOW) == 0


def test_an_events_call_is_held_to_the_bot_wide_budget(tmp_path: Path) -> None:
    budgeted = open_store(tmp_path / "budget.db", replace(POLICY, api_daily_budget=1))
    try:
        budgeted.ledger.reserve(new_request(), NOW)
        event = start(budgeted)
        with pytest.raises(QuotaLimitReached) as refused:
            reserve(budgeted, event)
        assert refused.value.limit is QuotaLimit.API_BUDGET
    finally:
        budgeted.close()


def test_the_events_budget_counts_its_paid_rows_not_refunded(store: Store) -> None:
    """Budget 2: vocals (1) fits, all (2) does not; once vocals is refunded, all fits."""
    event = start(store, budget=2)
    vocals = reserve(store, event, Mode.VOCALS)
    with pytest.raises(RemixEventBudgetSpentError) as spent:
        reserve(store, event, Mode.ALL)
    assert (spent.value.budget, spent.value.spent, spent.value.cost) == (2, 1, 2)
    assert "not charged" in spent.value.user_message
    store.ledger.refund_all([vocals.id], RequestStatus.FAILED, "refused", NOW)
    assert reserve(store, event, Mode.ALL).cost == 2
    assert store.events.spend(event.id).units == 2


def test_an_event_pays_one_call_per_mode(store: Store) -> None:
    """A second paid call of a mode is refused while the first runs or after it succeeded;
    a refunded one leaves room for the next try. Another mode is its own call."""
    event = start(store)
    first = reserve(store, event)
    with pytest.raises(RemixEventAlreadyPaidError):
        reserve(store, event)
    store.ledger.refund_all([first.id], RequestStatus.FAILED, "refused", NOW)
    again = reserve(store, event)
    store.ledger.settle(again.id, stems_of(), KEY, NOW)
    with pytest.raises(RemixEventAlreadyPaidError):
        reserve(store, event)
    reserve(store, event, Mode.INSTRUMENTS)
    assert store.events.spend(event.id).paid_calls == 2


def test_an_event_joining_a_call_costs_nothing_and_no_call(store: Store) -> None:
    event = start(store, budget=1)
    store.ledger.reserve(new_request(source_key=KEY), NOW)
    joined = reserve(store, event, joined=True, running=True)
    assert (joined.cost, joined.status) == (0, RequestStatus.RUNNING)
    assert store.quotas.api_calls_today(NOW) == 1
    assert store.events.spend(event.id).units == 0


def test_a_call_for_an_unknown_event_is_refused(store: Store) -> None:
    with pytest.raises(RemixEventNotFoundError):
        store.ledger.reserve_for_event(404, Mode.VOCALS, "song.wav", KEY, NOW)


def test_a_handed_over_charge_never_lands_on_an_events_organiser(store: Store) -> None:
    """A member's call the event joined: the payer leaves; the organiser has room, but the
    event's row takes the charge on the server alone (no member asked for it)."""
    event = start(store)
    payer = store.ledger.reserve(new_request(source_key=KEY), NOW)
    joined = reserve(store, event, joined=True)
    handed = store.ledger.hand_over_charge(payer.id, [(joined.id, ())], NOW)
    assert handed == (joined.id, False)
    assert row(store, joined.id)[:2] == (0, event.id)
    organiser = store.quotas.quota_status(GUILD, ORGANISER, NOW).user_daily
    assert organiser is not None and organiser.used == 0


def test_at_most_three_open_events_per_server(store: Store) -> None:
    """The fourth is refused; another server is not counted; an ended event, or one past its
    end, frees a place."""
    events = [start(store) for _ in range(3)]
    with pytest.raises(TooManyRemixEventsError, match="3 remix events"):
        start(store)
    start(store, guild=OTHER_GUILD)
    store.events.end(events[0].id, NOW, ORGANISER)
    start(store)
    store.connection.db.execute(
        "UPDATE remix_events SET ends_at = ? WHERE id = ?",
        ("2026-05-14T11:00:00.000000Z", events[1].id),
    )
    start(store)
    assert len(store.events.open_events(GUILD, NOW)) == 3


def test_the_event_reads_back_as_it_was_started(store: Store) -> None:
    ends = NOW + timedelta(days=3)
    event = start(store, modes=(Mode.ALL, Mode.VOCALS), ends_at=ends, budget=7, prefetch=True)
    assert store.events.get(event.id) == event
    assert (event.modes, event.ends_at, event.budget, event.prefetch) == (
        (Mode.ALL, Mode.VOCALS),
        ends,
        7,
        True,
    )
    assert event.is_open(NOW) and not event.is_open(ends)
    posted = store.events.card_posted(event.id, 9001, 9002, pinned=True, scheduled_event_id=77)
    assert (posted.card_channel_id, posted.card_message_id, posted.pinned) == (9001, 9002, True)
    assert posted.source_ref == SPEC.source_ref  # kept when the card brings no new one
    polled = store.events.poll_posted(event.id, 9100, [3, 1, 2])
    assert (polled.poll_message_id, polled.poll_submission_ids) == (9100, (3, 1, 2))


def test_a_track_re_uploaded_onto_the_card_becomes_the_source(store: Store) -> None:
    event = start(store, source_ref=None)
    assert event.must_prefetch
    ref = SourceRef(9001, 9002, 9003)
    posted = store.events.card_posted(
        event.id, 9001, 9002, pinned=False, scheduled_event_id=None, source_ref=ref
    )
    assert posted.source_ref == ref and not posted.must_prefetch


def test_a_take_is_recorded_once_per_member_and_mode(store: Store) -> None:
    event = start(store)
    for _ in range(3):
        store.events.record_take(event.id, Mode.VOCALS, ALICE, NOW, answered=False)
    store.events.record_take(event.id, Mode.ALL, ALICE, NOW, answered=True)
    store.events.record_take(event.id, Mode.VOCALS, BOB, NOW, answered=False)
    takes = store.events.takes(event.id)
    assert sorted((t.mode, t.user_id, t.status) for t in takes) == [
        (Mode.ALL, ALICE, TakeStatus.ANSWERED),
        (Mode.VOCALS, ALICE, TakeStatus.WAITING),
        (Mode.VOCALS, BOB, TakeStatus.WAITING),
    ]
    assert [(t.mode, t.user_id) for t in store.events.waiting_takes()] == [
        (Mode.VOCALS, ALICE),
        (Mode.VOCALS, BOB),
    ]
    assert store.events.settle_takes(event.id, Mode.VOCALS, [ALICE], TakeStatus.ANSWERED, NOW) == 1
    assert store.events.settle_takes(event.id, Mode.VOCALS, [ALICE], TakeStatus.FAILED, NOW) == 0
    assert store.events.settle_takes(event.id, Mode.VOCALS, [BOB], TakeStatus.FAILED, NOW) == 1
    assert store.events.waiting_takes() == []
    # Bob was told the failure: he counts once he takes again.
    assert store.events.counts(event.id).members == 1
    store.events.record_take(event.id, Mode.VOCALS, BOB, NOW, answered=True)
    assert store.events.counts(event.id).members == 2


def test_the_event_hands_out_its_own_stems_however_old(store: Store) -> None:
    """The stems of the event's own call stay its stems; a result another request left is
    used only while it is fresh."""
    event = start(store)
    fresh_after = NOW - timedelta(hours=1)
    store.ledger.settle(
        store.ledger.reserve(new_request(source_key=KEY), NOW).id,
        stems_of(issued_at=NOW - timedelta(days=2)),
        KEY,
        NOW,
    )
    assert store.events.result(event.id, Mode.VOCALS, fresh_after) is None
    paid = reserve(store, event)
    store.ledger.settle(paid.id, stems_of(issued_at=NOW - timedelta(days=2)), KEY, NOW)
    found = store.events.result(event.id, Mode.VOCALS, fresh_after)
    assert found == stems_of(issued_at=NOW - timedelta(days=2))
    assert store.events.result(event.id, Mode.ALL, fresh_after) is None


def test_one_current_submission_per_member(store: Store) -> None:
    event = start(store)
    first, replaced = store.events.submit(event.id, ALICE, "Mine", "a.mp3", 501, NOW)
    assert replaced is None and first.current
    second, replaced = store.events.submit(event.id, ALICE, "Mine v2", "b.mp3", 502, NOW)
    assert replaced is not None and replaced.id == first.id and replaced.replaced_at == NOW
    store.events.submit(event.id, BOB, "Bob's", "c.wav", 503, NOW)
    assert [(s.user_id, s.title) for s in store.events.submissions(event.id)] == [
        (ALICE, "Mine v2"),
        (BOB, "Bob's"),
    ]
    assert store.events.counts(event.id).submissions == 2
    assert second.message_id == 502


def test_who_may_remove_a_submission(store: Store) -> None:
    """Its member, the organiser or a moderator; anyone else is refused; once only."""
    event = start(store)
    alices, _ = store.events.submit(event.id, ALICE, "A", "a.mp3", 501, NOW)
    bobs, _ = store.events.submit(event.id, BOB, "B", "b.mp3", 502, NOW)
    with pytest.raises(SubmissionRefusedError, match="Only its member"):
        store.events.remove_submission(event.id, alices.id, BOB, NOW, moderator=False)
    removed = store.events.remove_submission(event.id, alices.id, ORGANISER, NOW, moderator=False)
    assert (removed.removed_by, removed.current) == (ORGANISER, False)
    with pytest.raises(SubmissionRefusedError, match="already removed"):
        store.events.remove_submission(event.id, alices.id, ORGANISER, NOW, moderator=False)
    store.events.remove_submission(event.id, bobs.id, 3003, NOW, moderator=True)
    assert store.events.submissions(event.id) == []


def test_no_submissions_after_the_end_or_when_off(store: Store) -> None:
    event = start(store, ends_at=NOW + timedelta(hours=1))
    with pytest.raises(RemixEventEndedError):
        store.events.submit(event.id, ALICE, "Late", "a.mp3", 501, NOW + timedelta(hours=1))
    closed = start(store, submissions=False)
    with pytest.raises(SubmissionRefusedError, match="doesn't take"):
        store.events.submit(closed.id, ALICE, "A", "a.mp3", 501, NOW)
    assert store.events.submissions(event.id) == store.events.submissions(closed.id) == []


def test_an_event_ends_once_and_sums_up(store: Store) -> None:
    event = start(store, modes=(Mode.VOCALS, Mode.ALL))
    for user in (ALICE, BOB):
        store.events.record_take(event.id, Mode.VOCALS, user, NOW, answered=True)
    store.events.record_take(event.id, Mode.ALL, ALICE, NOW, answered=True)
    store.events.record_take(event.id, Mode.ALL, 3003, NOW, answered=False)
    store.events.settle_takes(event.id, Mode.ALL, [3003], TakeStatus.FAILED, NOW)
    store.events.submit(event.id, BOB, "B", "b.mp3", 502, NOW)
    store.ledger.settle(reserve(store, event, Mode.ALL).id, stems_of(Mode.ALL), KEY, NOW)
    ended = store.events.end(event.id, NOW, ORGANISER)
    assert (ended.ended_at, ended.ended_by) == (NOW, ORGANISER)
    with pytest.raises(RemixEventEndedError):
        store.events.end(event.id, NOW, None)
    summary = store.events.summary(event.id)
    assert summary.takes_by_mode == ((Mode.VOCALS, 2), (Mode.ALL, 1))
    assert (summary.members, summary.submissions) == (2, 1)
    assert (summary.spend.paid_calls, summary.spend.units) == (1, 2)
    people = {p.user_id: p for p in store.events.participation(event.id)}
    assert people[ALICE].modes == (Mode.VOCALS, Mode.ALL) and people[ALICE].submission is None
    assert people[BOB].submission is not None and 3003 not in people


def test_events_and_takes_survive_a_restart_and_an_event_past_its_end_is_due(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    first = open_store(path)
    event = start(first, ends_at=NOW + timedelta(hours=2))
    start(first)  # no end: never due
    first.events.record_take(event.id, Mode.VOCALS, ALICE, NOW, answered=False)
    first.close()
    second = open_store(path)
    try:
        assert second.events.get(event.id) == event
        assert [(t.event_id, t.user_id) for t in second.events.waiting_takes()] == [
            (event.id, ALICE)
        ]
        assert second.events.due(NOW + timedelta(hours=1)) == []
        assert second.events.due(NOW + timedelta(hours=2)) == [event]
        second.events.end(event.id, NOW + timedelta(hours=2), None)
        assert second.events.due(NOW + timedelta(days=9)) == []
    finally:
        second.close()


def test_recovery_never_delivers_an_events_call_as_a_members_result(store: Store) -> None:
    """An event's call that succeeded is answered to its takes, never posted as a result."""
    event = start(store)
    store.ledger.settle(reserve(store, event).id, stems_of(), KEY, NOW)
    assert store.ledger.recover(NOW).undelivered == []


def test_usage_reports_show_event_spend_apart_from_members(store: Store) -> None:
    event = start(store)
    store.ledger.reserve(new_request(user=ALICE), NOW)
    reserve(store, event, Mode.ALL)
    report = store.reports.usage_report(GUILD, NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    assert report.total.units == 3
    assert [user for user, _ in report.by_user] == [ALICE]
    assert [(e.event_id, e.title, e.usage.units) for e in report.by_event] == [
        (event.id, "Spring remix", 2)
    ]
    assert report.events_total.units == 2
    out = io.StringIO()
    store.reports.stream_ledger(GUILD, NOW - timedelta(hours=1), NOW + timedelta(hours=1), out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["charged_to"], r["remix_event_id"]) for r in rows] == [
        ("member", ""),
        ("event", str(event.id)),
    ]


def test_retention_removes_events_ended_before_the_cutoff(store: Store) -> None:
    old, kept, running = start(store), start(store), start(store)
    for event in (old, kept, running):
        store.events.record_take(event.id, Mode.VOCALS, ALICE, NOW, answered=True)
        store.events.submit(event.id, ALICE, "A", "a.mp3", 501, NOW)
    store.events.end(old.id, NOW, None)
    store.events.end(kept.id, NOW + timedelta(days=2), None)
    store.prune(NOW + timedelta(days=1), pause_s=0)
    assert store.events.get(old.id) is None
    assert store.events.get(kept.id) is not None and store.events.get(running.id) is not None
    counts = store.connection.db.execute(
        "SELECT (SELECT count(*) FROM remix_event_takes), "
        "(SELECT count(*) FROM remix_event_submissions)"
    ).fetchone()
    assert tuple(counts) == (2, 2)


def test_a_policy_without_an_event_budget_still_checks_the_server(tmp_path: Path) -> None:
    """No budget of its own: only the server's month binds (monthly limit 1, all needs 2)."""
    small = open_store(
        tmp_path / "small.db", QuotaPolicy(guild_monthly_limit=1, guild_daily_limit=1)
    )
    try:
        event = start(small)
        with pytest.raises(QuotaLimitReached) as refused:
            reserve(small, event, Mode.ALL)
        assert refused.value.limit is QuotaLimit.GUILD_MONTHLY
    finally:
        small.close()


def test_participation_as_csv_for_the_moderators(store: Store) -> None:
    """One row per member, ids kept whole, a member's title never run as a formula."""
    event = start(store, modes=(Mode.VOCALS, Mode.ALL))
    store.events.record_take(event.id, Mode.ALL, ALICE, NOW, answered=True)
    store.events.record_take(event.id, Mode.VOCALS, ALICE, NOW, answered=True)
    store.events.submit(event.id, BOB, "=HYPERLINK(1)", "b.mp3", 502, NOW)
    out = io.StringIO()
    assert write_participation(store.events.participation(event.id), out) == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [tuple(r.values()) for r in rows] == [
        (f'="{ALICE}"', "vocals all", "2026-05-14T12:00:00Z", "", "", ""),
        (f'="{BOB}"', "", "", "'=HYPERLINK(1)", "b.mp3", "2026-05-14T12:00:00Z"),
    ]
