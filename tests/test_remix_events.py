"""The remix event service with the real store (each: a SQLite file, the PostgreSQL database),
the real StemService and the
real Soundverse client against the local stand-in: one paid call per mode for a crowd, charged
to the server alone; budgets, refusals, retries, the cap, the end, and a restart."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from stembot.address_policy import AddressPolicy
from stembot.config import QuotaPolicy, Secret
from stembot.errors import (
    InvalidSourceError,
    QuotaLimitReached,
    RemixEventBudgetSpentError,
    RemixEventCallNotCancellableError,
    RemixEventEndedError,
    RemixEventError,
    RemixEventModeError,
    RemixEventNotFoundError,
    ShuttingDownError,
    SoundverseRejected,
    StembotError,
    SubmissionRefusedError,
    TooManyRemixEventsError,
)
from stembot.guarded_connector import GuardedConnector
from stembot.models import Mode, QuotaStatus, Request, Separation
from stembot.remix_event_models import (
    EventSpec,
    RemixEvent,
    SourceRef,
    Take,
    TakeState,
    TakeStatus,
)
from stembot.remix_events import RemixEventService
from stembot.request_inputs import CheckedSource, Requester
from stembot.soundverse import SoundverseClient
from stembot.stem_service import StemService
from stembot.store.interface import LedgerStore
from stembot.url_probe import UrlProbe
from tests.standins.soundverse import Reply, SoundverseStandin
from tests.store_backends import Backend

API_KEY = "sv-test-key"
GUILD = 1001
CHANNEL = 2
ORGANISER = 900
KEY = "attachment:4242"
SPEC = EventSpec(
    title="Spring remix",
    source_name="song.wav",
    source_key=KEY,
    source_ref=SourceRef(CHANNEL, 700, 4242),
    modes=(Mode.VOCALS, Mode.ALL),
)
POLICY = QuotaPolicy(guild_daily_limit=50, user_daily_limit=3)
members = itertools.count(10_000)
# What the card was told: the event, the mode, and the refusal's type (None: stems ready).
Changed = tuple[int, Mode, str | None]


@dataclass
class Listener:
    """A TakeListener that remembers what it was told (and that take() had returned)."""

    returned: bool = False
    told_before_return: bool = False
    separation: Separation | None = None
    error: StembotError | None = None
    told: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_ready(self, separation: Separation) -> None:
        self.told_before_return |= not self.returned
        self.separation = separation
        self.told.set()

    async def on_failed(self, error: StembotError) -> None:
        self.told_before_return |= not self.returned
        self.error = error
        self.told.set()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)  # the API stamps results with the real time

    def __call__(self) -> datetime:
        return self.now


class Resolver:
    """The Discord layer's part: a fresh URL for the event's track (counted; can fail)."""

    def __init__(self) -> None:
        self.calls = 0
        self.refusal: StembotError | None = None

    async def __call__(self, event: RemixEvent) -> CheckedSource:
        self.calls += 1
        if self.refusal is not None:
            raise self.refusal
        assert event.source_ref is not None
        return CheckedSource(
            f"http://cdn.test/{event.source_ref.attachment_id}.wav?sig=fresh", "x.wav", "ignored"
        )


@dataclass
class Rig:
    events: RemixEventService
    stems: StemService
    backend: Backend  # the bot's store, and the test's own connection to the same ledger
    bot_store: LedgerStore
    api: SoundverseStandin
    clock: Clock
    resolver: Resolver
    session: aiohttp.ClientSession
    connector: aiohttp.BaseConnector
    changed: list[Changed] = field(default_factory=list)

    async def start(self, **changes: object) -> RemixEvent:
        organiser = Requester(GUILD, CHANNEL, ORGANISER, next(members))
        return await self.events.start(organiser, replace(SPEC, **changes))  # type: ignore[arg-type]

    async def take(
        self, event: RemixEvent, mode: Mode = Mode.VOCALS, member: int | None = None
    ) -> tuple[Listener, TakeState]:
        listener = Listener()
        try:
            outcome = await self.events.take(
                event.id, mode, member or next(members), listener, guild_id=GUILD
            )
        finally:
            listener.returned = True
        return listener, outcome.state

    def rows(self) -> list[tuple[object, ...]]:
        """The ledger's rows: cost, status, member_pays, remix_event_id, user_id."""
        return self.backend.rows(
            "SELECT cost, status, member_pays, remix_event_id, user_id FROM requests ORDER BY id"
        )

    async def used(self) -> int:
        status = await self.bot_store.quotas.quota_status(GUILD, None, self.clock())
        return status.guild_daily.used

    async def member_quota(self, member: int) -> tuple[object, ...]:
        """The member's own figures (the server's move with the event's call)."""
        status: QuotaStatus = await self.bot_store.quotas.quota_status(GUILD, member, self.clock())
        return status.user_daily, status.user_active_requests

    async def takes(self, event: RemixEvent) -> list[Take]:
        return await self.bot_store.events.takes(event.id)


def build(
    bot_store: LedgerStore,
    api: SoundverseStandin,
    session: aiohttp.ClientSession,
    connector: aiohttp.BaseConnector,
    clock: Clock,
    resolver: Resolver,
    changed: list[Changed],
) -> tuple[StemService, RemixEventService]:
    stems = StemService(
        bot_store,
        SoundverseClient(session, api.base_url, Secret(API_KEY), timeout_s=5),
        UrlProbe(connector, max_bytes=1024),
        max_concurrent_calls=2,
        max_input_bytes=1024,
        result_ttl_s=3600,
        clock=clock,
    )

    async def note(event_id: int, mode: Mode, failure: StembotError | None) -> None:
        changed.append((event_id, mode, None if failure is None else type(failure).__name__))

    events = RemixEventService(
        bot_store, stems, resolver, result_ttl_s=3600, on_change=note, clock=clock
    )
    return stems, events


@pytest.fixture
async def rig(backend: Backend) -> AsyncIterator[Rig]:
    async with (
        SoundverseStandin(api_key=API_KEY, latency=0.05) as api,
        aiohttp.ClientSession() as session,
        GuardedConnector(AddressPolicy(allow_private=True)) as connector,
    ):
        bot_store = await backend.open(POLICY)
        clock, resolver, changed = Clock(), Resolver(), list[Changed]()
        stems, events = build(bot_store, api, session, connector, clock, resolver, changed)
        rig = Rig(
            events, stems, backend, bot_store, api, clock, resolver, session, connector, changed
        )
        yield rig
        api.release()
        await rig.stems.shutdown(grace_s=0.5)
        await rig.events.close(grace_s=0.5)
        await backend.close()


async def told(*listeners: Listener) -> None:
    await asyncio.wait_for(asyncio.gather(*(r.told.wait() for r in listeners)), 10)


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], timeout_s: float = 10.0
) -> None:
    """Wait until ``condition()`` holds (awaited when it is a read of the store): bookkeeping
    the service does after telling."""
    async with asyncio.timeout(timeout_s):
        while True:
            held = condition()
            if await held if not isinstance(held, bool) else held:
                return
            await asyncio.sleep(0.005)


async def test_two_hundred_takes_of_a_mode_make_one_call_charged_to_the_server(rig: Rig) -> None:
    """200 members click at once (some twice): one API call, one charged row (the server's:
    member_pays 0, the event's id), every member answered once, no member's allowance used,
    one take per member and mode."""
    event = await rig.start()
    crowd = [next(members) for _ in range(200)]
    before = {member: await rig.member_quota(member) for member in crowd}
    rig.api.hold()
    taken = await asyncio.gather(
        *(rig.take(event, Mode.VOCALS, member) for member in crowd),
        *(rig.take(event, Mode.VOCALS, member) for member in crowd[:20]),
    )
    assert {state for _, state in taken} == {TakeState.PENDING}
    assert rig.events.separating(event.id) == {Mode.VOCALS}
    rig.api.release()
    await told(*(listener for listener, _ in taken))
    assert len(rig.api.requests) == 1
    assert rig.rows() == [(1, "succeeded", 0, event.id, ORGANISER)]
    assert all(listener.separation is not None for listener, _ in taken)
    assert not any(listener.told_before_return for listener, _ in taken)
    assert {member: await rig.member_quota(member) for member in crowd} == before
    takes = await rig.takes(event)
    assert len(takes) == 200 and {t.user_id for t in takes} == set(crowd)
    # The answered takes are noted after they were told, and then the card is told.
    await eventually(lambda: rig.changed == [(event.id, Mode.VOCALS, None)])
    assert {t.status for t in await rig.takes(event)} == {TakeStatus.ANSWERED}
    # Later takes are answered at once from the event's stems: still one call, one row.
    listener, state = await rig.take(event)
    assert state is TakeState.READY and not listener.told.is_set()
    assert len(rig.api.requests) == 1 and len(rig.rows()) == 1
    assert (await rig.events.counts(event.id)).members == 201


async def test_a_spent_event_budget_is_a_clear_refusal_and_charges_nobody(rig: Rig) -> None:
    """Budget 1: vocals (1 unit) is paid; all stems (2 units) is refused for everyone at once,
    nothing charged, no take recorded; vocals are still given out."""
    event = await rig.start(budget=1)
    listener, _ = await rig.take(event, Mode.VOCALS)
    await told(listener)
    refused = await asyncio.gather(
        *(rig.take(event, Mode.ALL) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RemixEventBudgetSpentError) for r in refused)
    assert "budget is spent" in str(refused[0]) and "not charged" in str(refused[0])
    assert rig.resolver.calls == 1  # the track is not read for a call that cannot be paid
    assert len(rig.api.requests) == 1 and await rig.used() == 1
    assert [t.mode for t in await rig.takes(event)] == [Mode.VOCALS]
    counts = await rig.events.counts(event.id)
    assert (counts.spend.units, counts.budget_left()) == (1, 0)
    _, state = await rig.take(event, Mode.VOCALS)
    assert state is TakeState.READY


async def test_a_refusal_by_the_server_limit_charges_nobody(rig: Rig) -> None:
    await rig.bot_store.guilds.set_limits(GUILD, daily=1)
    event = await rig.start()
    with pytest.raises(QuotaLimitReached):
        await rig.take(event, Mode.ALL)
    assert rig.rows() == [] and await rig.takes(event) == []


async def test_an_api_refusal_is_refunded_told_and_the_next_take_retries(rig: Rig) -> None:
    """The API refuses the track: the server is refunded, every waiting take is told the
    failure; a later take makes a new call that succeeds."""
    event = await rig.start()
    rig.api.fail_next(Reply.nsfw())
    rig.api.hold()
    waiting = [await rig.take(event) for _ in range(5)]
    rig.api.release()
    await told(*(listener for listener, _ in waiting))
    assert all(isinstance(listener.error, SoundverseRejected) for listener, _ in waiting)
    assert await rig.used() == 0
    assert rig.rows() == [(1, "failed", 0, event.id, ORGANISER)]
    assert {t.status for t in await rig.takes(event)} == {TakeStatus.FAILED}  # noted before telling
    assert (await rig.events.counts(event.id)).members == 0
    retry, state = await rig.take(event)
    assert state is TakeState.PENDING
    await told(retry)
    assert retry.separation is not None
    assert len(rig.api.requests) == 2 and await rig.used() == 1


async def test_a_track_that_cannot_be_read_again_refuses_the_take_and_charges_nobody(
    rig: Rig,
) -> None:
    event = await rig.start()
    rig.resolver.refusal = InvalidSourceError("The event's track was deleted.")
    with pytest.raises(InvalidSourceError, match="deleted"):
        await rig.take(event)
    assert rig.rows() == [] and await rig.takes(event) == [] and rig.api.requests == []
    rig.resolver.refusal = None
    listener, _ = await rig.take(event)
    await told(listener)
    assert listener.separation is not None


class MemberRequest:
    """A member's own `/stems` of the event's track, through the same StemService."""

    def __init__(self) -> None:
        self.told = Listener(returned=True)

    async def on_started(self, request: Request) -> None:
        return None

    async def on_succeeded(
        self, request: Request, separation: Separation, quota: QuotaStatus | None
    ) -> None:
        await self.told.on_ready(separation)

    async def on_failed(
        self, request: Request, error: StembotError, quota: QuotaStatus | None
    ) -> None:
        await self.told.on_failed(error)

    async def on_cancelled(self, request: Request) -> None:
        return None

    async def on_handed_over(self, request: Request) -> None:
        return None


async def member_splits(rig: Rig) -> MemberRequest:
    member = MemberRequest()
    requester = Requester(GUILD, CHANNEL, next(members), next(members))
    source = CheckedSource("http://cdn.test/4242.wav", "song.wav", KEY)
    await rig.stems.submit(requester, Mode.VOCALS, source, member)
    return member


async def test_stems_a_member_already_split_are_given_out_free(rig: Rig) -> None:
    """A member's own request for the same track left a result: the event reuses it, with no
    call and no row of its own."""
    await told((await member_splits(rig)).told)
    event = await rig.start()
    _, state = await rig.take(event)
    assert state is TakeState.READY
    assert len(rig.api.requests) == 1 and len(rig.rows()) == 1
    assert (await rig.events.counts(event.id)).spend.paid_calls == 0


async def test_an_event_joins_a_members_running_call_at_no_cost(rig: Rig) -> None:
    """A member's own call of the track is running: the event rides on it (a free row of its
    own), and is answered when it lands; one call, the member's unit only."""
    event = await rig.start()
    rig.api.hold()
    member = await member_splits(rig)
    await asyncio.sleep(0.05)  # the member's call is running
    listener, state = await rig.take(event)
    assert state is TakeState.PENDING
    rig.api.release()
    await told(listener, member.told)
    assert listener.separation == member.told.separation
    assert [r[:4] for r in rig.rows()] == [(1, "succeeded", 1, None), (0, "succeeded", 0, event.id)]
    assert len(rig.api.requests) == 1
    assert (await rig.events.counts(event.id)).spend.paid_calls == 0


async def test_the_events_call_cannot_be_cancelled_with_a_forged_cancel_button(rig: Rig) -> None:
    """A Cancel button's id carries a request id; the event's paid call is recorded under its
    organiser's id, yet no Cancel takes it out (it would leave every member who took the mode
    without stems): a clear refusal, and the call goes on."""
    event = await rig.start()
    rig.api.hold()
    for n in range(2):  # the two calls the cap allows run first: the event's call waits
        requester = Requester(GUILD, CHANNEL, next(members), next(members))
        source = CheckedSource(f"http://cdn.test/{n}.wav", "x.wav", f"attachment:{n}")
        await rig.stems.submit(requester, Mode.VOCALS, source, MemberRequest())
    listener, state = await rig.take(event)
    assert state is TakeState.PENDING
    [(call_id, organiser)] = rig.backend.rows(
        "SELECT id, user_id FROM requests WHERE remix_event_id IS NOT NULL"
    )
    assert organiser == ORGANISER and rig.stems.position(call_id) == 1
    with pytest.raises(RemixEventCallNotCancellableError):
        await rig.stems.cancel(call_id, ORGANISER)
    assert rig.stems.position(call_id) == 1
    rig.api.release()
    await told(listener)
    assert listener.separation is not None


async def test_a_member_joins_the_events_running_call_at_no_cost(rig: Rig) -> None:
    event = await rig.start()
    rig.api.hold()
    listener, _ = await rig.take(event)
    await asyncio.sleep(0.05)
    member = await member_splits(rig)
    rig.api.release()
    await told(listener, member.told)
    assert [r[:4] for r in rig.rows()] == [(1, "succeeded", 0, event.id), (0, "succeeded", 1, None)]
    assert len(rig.api.requests) == 1


async def test_prefetch_runs_every_offered_mode_once(rig: Rig) -> None:
    event = await rig.start(prefetch=True)
    assert await rig.events.stems(event.id, Mode.VOCALS) is None
    source = CheckedSource("http://cdn.test/upload.wav", "song.wav", KEY)
    outcomes = await rig.events.prefetch(event.id, source)
    assert {mode: o.state for mode, o in outcomes.items()} == {  # type: ignore[union-attr]
        Mode.VOCALS: TakeState.PENDING,
        Mode.ALL: TakeState.PENDING,
    }
    assert rig.resolver.calls == 0  # the track as checked at start
    await eventually(lambda: not rig.events.separating(event.id))
    _, vocals = await rig.take(event, Mode.VOCALS)
    _, everything = await rig.take(event, Mode.ALL)
    assert (vocals, everything) == (TakeState.READY, TakeState.READY)
    stored = await rig.events.stems(event.id, Mode.ALL)
    assert stored is not None and stored.mode is Mode.ALL
    assert len(rig.api.requests) == 2 and await rig.used() == 3
    again = await rig.events.prefetch(event.id)
    assert {o.state for o in again.values()} == {TakeState.READY}  # type: ignore[union-attr]


async def test_takes_the_event_cannot_answer_are_refused(rig: Rig) -> None:
    event = await rig.start(ends_at=rig.clock.now + timedelta(hours=1))
    with pytest.raises(RemixEventModeError, match="Instruments"):
        await rig.take(event, Mode.INSTRUMENTS)
    with pytest.raises(RemixEventNotFoundError):
        await rig.events.take(event.id, Mode.VOCALS, 1, Listener(), guild_id=GUILD + 1)
    rig.clock.now += timedelta(hours=1)
    with pytest.raises(RemixEventEndedError):
        await rig.take(event)
    assert rig.rows() == [] and await rig.takes(event) == []


async def test_at_most_three_open_events_per_server(rig: Rig) -> None:
    events = [await rig.start() for _ in range(3)]
    with pytest.raises(TooManyRemixEventsError):
        await rig.start()
    await rig.events.end(events[0].id, by_user_id=ORGANISER, guild_id=GUILD)
    await rig.start()
    assert len(await rig.events.open_events(GUILD)) == 3


async def test_a_spec_that_cannot_run_is_refused(rig: Rig) -> None:
    for changes in (
        {"title": "  "},
        {"modes": ()},
        {"modes": (Mode.ALL, Mode.ALL)},
        {"ends_at": rig.clock.now},
        {"budget": 0},
    ):
        with pytest.raises(RemixEventError):
            await rig.start(**changes)
    assert (await rig.start(title="  Trimmed  ")).title == "Trimmed"


async def test_the_end_sums_up_the_event(rig: Rig) -> None:
    event = await rig.start()
    crowd = [next(members) for _ in range(4)]
    vocals = [await rig.take(event, Mode.VOCALS, member) for member in crowd]
    everything = [await rig.take(event, Mode.ALL, member) for member in crowd[:2]]
    await told(*(listener for listener, _ in vocals + everything))
    await rig.events.submit(event.id, crowd[0], "My remix", "mix.mp3", 77, guild_id=GUILD)
    summary = await rig.events.end(event.id, by_user_id=ORGANISER, guild_id=GUILD)
    assert summary.takes_by_mode == ((Mode.VOCALS, 4), (Mode.ALL, 2))
    assert (summary.members, summary.submissions) == (4, 1)
    assert (summary.spend.paid_calls, summary.spend.units) == (2, 3)
    assert summary.event.ended_by == ORGANISER
    with pytest.raises(RemixEventEndedError):
        await rig.events.end(event.id, by_user_id=None)
    with pytest.raises(RemixEventEndedError):
        await rig.take(event)
    with pytest.raises(RemixEventEndedError):
        await rig.events.submit(event.id, crowd[1], "Late", "late.mp3", 78, guild_id=GUILD)


async def test_a_restart_keeps_events_and_takes_and_owes_the_waiting_ones(rig: Rig) -> None:
    """The bot stops while a mode's call runs: after the restart (store reopened, new
    services) the event and its takes are there, the waiting takes get their stems from a new
    call (the cut one refunded), and an event past its end is due."""
    event = await rig.start(ends_at=rig.clock.now + timedelta(hours=2))
    rig.api.hold()
    waiting = [await rig.take(event) for _ in range(3)]
    await asyncio.sleep(0.1)  # the call is running
    await rig.stems.shutdown(grace_s=0.05)
    await rig.events.close(grace_s=0.05)
    await rig.backend.close()
    rig.api.release()
    assert not any(listener.told.is_set() for listener, _ in waiting)

    bot_store = await rig.backend.open(POLICY)
    stems, events = build(
        bot_store,
        rig.api,
        rig.session,
        rig.connector,
        rig.clock,
        rig.resolver,
        rig.changed,
    )
    rig.bot_store, rig.stems, rig.events = bot_store, stems, events
    assert await events.get(event.id) == event
    await stems.recover()
    owed: list[Listener] = []

    def listener_for(take: Take) -> Listener:
        owed.append(Listener(returned=True))
        return owed[-1]

    assert await events.resume(listener_for) == 3
    await told(*owed)
    assert all(listener.separation is not None for listener in owed)
    assert [r[:2] for r in rig.rows()] == [(1, "interrupted"), (1, "succeeded")]
    assert await rig.used() == 1

    async def all_answered() -> bool:
        return {t.status for t in await rig.takes(event)} == {TakeStatus.ANSWERED}

    await eventually(all_answered)
    assert await events.due() == []
    rig.clock.now += timedelta(hours=2)
    assert [due.id for due in await events.due()] == [event.id]
    summary = await events.end(event.id, by_user_id=None)
    assert summary.members == 3 and summary.event.ended_by is None


async def test_a_members_submission_replaces_their_last(rig: Rig) -> None:
    event = await rig.start()
    member = next(members)
    first, replaced = await rig.events.submit(
        event.id, member, "One", "one.mp3", 71, guild_id=GUILD
    )
    assert replaced is None
    second, replaced = await rig.events.submit(
        event.id, member, " Two ", "two.mp3", 72, guild_id=GUILD
    )
    assert replaced is not None and replaced.message_id == 71 and second.title == "Two"
    assert [s.id for s in await rig.events.submissions(event.id)] == [second.id]
    await rig.events.remove_submission(event.id, second.id, ORGANISER, guild_id=GUILD)
    assert await rig.events.submissions(event.id) == []
    assert first.id != second.id


async def test_a_submission_is_found_by_its_id_in_its_own_server(rig: Rig) -> None:
    """What a post's Remove button and the vote's answers name: current or not, but never
    another server's, nor one that does not exist."""
    event = await rig.start()
    member = next(members)
    first, _ = await rig.events.submit(event.id, member, "One", "one.mp3", 71, guild_id=GUILD)
    second, _ = await rig.events.submit(event.id, member, "Two", "two.mp3", 72, guild_id=GUILD)
    found = await rig.events.submission(first.id, guild_id=GUILD)
    assert (found.id, found.title, found.current) == (first.id, "One", False)
    assert (await rig.events.submission(second.id, guild_id=GUILD)).current
    for submission_id, guild_id in ((second.id, GUILD + 1), (second.id + 1, GUILD)):
        with pytest.raises(SubmissionRefusedError):
            await rig.events.submission(submission_id, guild_id=guild_id)


async def test_a_failed_telling_does_not_stop_the_others(rig: Rig) -> None:
    """One member's answer cannot be sent: everyone else still gets theirs."""
    event = await rig.start()

    class Broken(Listener):
        async def on_ready(self, separation: Separation) -> None:
            self.told.set()
            raise RuntimeError("Discord refused the edit")

    broken = Broken()
    rig.api.hold()
    await rig.events.take(event.id, Mode.VOCALS, next(members), broken, guild_id=GUILD)
    broken.returned = True
    others = [await rig.take(event) for _ in range(3)]
    rig.api.release()
    await told(broken, *(listener for listener, _ in others))
    assert all(listener.separation is not None for listener, _ in others)


async def test_the_card_is_told_when_a_mode_fails(rig: Rig) -> None:
    event = await rig.start()
    rig.api.fail_next(Reply.nsfw())
    listener, _ = await rig.take(event)
    await told(listener)
    await eventually(lambda: rig.changed == [(event.id, Mode.VOCALS, "SoundverseRejected")])


async def test_a_take_while_shutting_down_is_refused_and_not_recorded(rig: Rig) -> None:
    event = await rig.start()
    await rig.stems.shutdown(grace_s=0.05)
    with pytest.raises(ShuttingDownError):
        await rig.take(event)
    assert await rig.takes(event) == [] and rig.rows() == []
