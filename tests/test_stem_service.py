"""The service: reuse, shared calls, cancel, fairness and failures, with the real store and
the real Soundverse client against the local stand-in."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from stembot.address_policy import AddressPolicy
from stembot.config import QuotaPolicy, Secret
from stembot.errors import (
    AlreadyStartedError,
    IncidentError,
    NotYourRequestError,
    RequestEndedError,
    RequestInterruptedError,
    SharedCallEndedError,
    SoundverseRejected,
    StembotError,
)
from stembot.guarded_connector import GuardedConnector
from stembot.models import Mode, QuotaStatus, Request, RequestStatus, Separation
from stembot.request_inputs import AttachmentInput, CheckedSource, Requester
from stembot.soundverse import SoundverseClient
from stembot.stem_service import StemService
from stembot.store import Store
from stembot.store.asynchronous import AsyncStore
from stembot.url_probe import UrlProbe
from tests.ledger_reads import charged
from tests.standins.soundverse import Reply, SoundverseStandin

KEY = "sv-test-key"
GUILD = 1001
ids = itertools.count(1)


@dataclass
class Recorder:
    """A RequestListener that remembers what it was told."""

    events: list[str] = field(default_factory=list)
    result: Separation | None = None
    error: StembotError | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_started(self, request: Request) -> None:
        self.events.append("started")

    async def on_succeeded(
        self, request: Request, separation: Separation, quota: QuotaStatus | None
    ) -> None:
        self.events.append("succeeded")
        self.result = separation
        self.done.set()

    async def on_failed(
        self, request: Request, error: StembotError, quota: QuotaStatus | None
    ) -> None:
        self.events.append("failed")
        self.error = error
        self.done.set()

    async def on_cancelled(self, request: Request) -> None:
        self.events.append("cancelled")
        self.done.set()

    async def on_handed_over(self, request: Request) -> None:
        self.events.append("handed over")
        self.done.set()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)  # the API stamps results with the real time

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Rig:
    service: StemService
    store: Store
    api: SoundverseStandin
    clock: Clock

    async def submit(
        self,
        *,
        user: int | None = None,
        guild: int = GUILD,
        track: str = "attachment:1",
        mode: Mode = Mode.VOCALS,
    ) -> tuple[Request, Recorder]:
        listener = Recorder()
        requester = Requester(guild, 2, user or next(ids), next(ids))
        source = CheckedSource(f"http://cdn.test/{track}.wav", "song.wav", track)
        return await self.service.submit(requester, mode, source, listener), listener

    def used(self, guild: int = GUILD) -> int:
        return self.store.quotas.quota_status(guild, None, self.clock()).guild_daily.used


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with (
        SoundverseStandin(api_key=KEY, latency=0.2) as api,
        aiohttp.ClientSession() as session,
        GuardedConnector(AddressPolicy(allow_private=True)) as connector,
    ):
        store = Store.open(tmp_path / "stembot.db", QuotaPolicy(user_daily_limit=100))
        # The service's own store, on the same file the tests read through ``store``.
        bot_store = await AsyncStore.open(store.connection.file, store.policy)
        clock = Clock()
        service = StemService(
            bot_store,
            SoundverseClient(session, api.base_url, Secret(KEY), timeout_s=5),
            UrlProbe(connector, max_bytes=1024),
            max_concurrent_calls=1,
            max_input_bytes=1024,
            result_ttl_s=3600,
            clock=clock,
        )
        yield Rig(service, store, api, clock)
        await service.shutdown(grace_s=0.1)
        await bot_store.close()
        store.close()


async def finished(*listeners: Recorder) -> None:
    await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in listeners)), 5)


async def test_twenty_identical_requests_make_one_call_and_one_charge(rig: Rig) -> None:
    """20 people splitting one track at once: one API call, 20 results, one unit charged."""
    submitted = await asyncio.gather(*(rig.submit() for _ in range(20)))
    listeners = [listener for _, listener in submitted]
    await finished(*listeners)
    assert len(rig.api.requests) == 1
    assert all(r.events == ["started", "succeeded"] for r in listeners)
    assert rig.used() == 1


async def test_a_request_joining_while_its_call_lands_is_settled_and_told(rig: Rig) -> None:
    """The API answers while another process holds the database, so the settle waits; a
    member asking meanwhile joins the landing call: one call, their result, no charge."""
    _, payer = await rig.submit()
    await asyncio.sleep(0.05)  # reserved and marked running
    holder = sqlite3.connect(rig.store.connection.file, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        await asyncio.sleep(0.3)  # the API has answered; settling waits for the lock
        joining = asyncio.create_task(rig.submit())
        await asyncio.sleep(0.1)
        assert not joining.done() and not payer.done.is_set()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    request, joiner = await joining
    await finished(payer, joiner)
    assert request.cost == 0 and request.status is RequestStatus.RUNNING  # joined, not reused
    assert joiner.events == ["started", "succeeded"] and joiner.result == payer.result
    assert len(rig.api.requests) == 1
    assert rig.used() == 1


async def test_a_repeat_after_completion_is_answered_from_the_store(rig: Rig) -> None:
    """The same track and mode again: answered at once, no API call, no charge."""
    _, first = await rig.submit()
    await finished(first)
    request, again = await rig.submit()
    await finished(again)
    assert request.status is RequestStatus.SUCCEEDED and request.cost == 0
    assert again.events == ["succeeded"]
    assert again.result == first.result
    assert len(rig.api.requests) == 1
    assert rig.used() == 1


async def test_the_charge_hook_runs_only_for_a_request_that_charged_units(rig: Rig) -> None:
    """Quota alerts hang on this hook: a join or a stored answer charges nothing, so no call."""
    charged_guilds: list[int] = []

    async def hook(guild_id: int) -> None:
        charged_guilds.append(guild_id)

    rig.service.after_charge(hook)
    _, payer = await rig.submit()
    _, joiner = await rig.submit()
    await finished(payer, joiner)
    _, repeat = await rig.submit()
    await finished(repeat)
    assert charged_guilds == [GUILD]


async def test_another_mode_of_the_same_track_is_a_new_call(rig: Rig) -> None:
    """Vocals and all stems of one track are different work: two calls."""
    _, vocals = await rig.submit(mode=Mode.VOCALS)
    _, everything = await rig.submit(mode=Mode.ALL)
    await finished(vocals, everything)
    assert len(rig.api.requests) == 2


async def test_a_stored_result_older_than_the_ttl_is_not_reused(rig: Rig) -> None:
    """After STEMBOT_RESULT_TTL the stem links may be gone: the API is called again."""
    _, first = await rig.submit()
    await finished(first)
    # The result is stamped with the real time the API answered, which a loaded machine can
    # put well after the test clock's start: count the hour from now, not from that start.
    rig.clock.now = datetime.now(UTC) + timedelta(seconds=3601)
    _, later = await rig.submit()
    await finished(later)
    assert len(rig.api.requests) == 2


async def test_a_failed_shared_call_refunds_and_tells_everyone(rig: Rig) -> None:
    """The API rejects a track three people asked for: all three told, nothing charged."""
    rig.api.fail_next(Reply.nsfw())
    listeners = [(await rig.submit())[1] for _ in range(3)]
    await finished(*listeners)
    assert all(isinstance(r.error, SoundverseRejected) for r in listeners)
    assert rig.used() == 0
    assert len(rig.api.requests) == 1


async def test_cancel_by_the_requester_refunds_and_leaves_the_queue(rig: Rig) -> None:
    """A waiting request cancelled by its requester is refunded and never reaches the API."""
    _, running = await rig.submit(track="attachment:1")
    waiting_request, waiting = await rig.submit(user=7, track="attachment:2")
    await rig.service.cancel(waiting_request.id, 7)
    await finished(running, waiting)
    assert waiting.events == ["cancelled"]
    assert len(rig.api.requests) == 1
    request = rig.store.ledger.get_request(waiting_request.id)
    assert request is not None and request.status is RequestStatus.CANCELLED
    assert rig.used() == 1


async def test_only_a_request_that_succeeded_has_a_stored_result_to_mix(rig: Rig) -> None:
    """A request cancelled while its call waited has no result to make mixes from, even once
    the call it left stored one; the requests it served find theirs."""
    _, running = await rig.submit(track="attachment:1")
    waiting_request, waiting = await rig.submit(user=7, track="attachment:2")
    left_request, left = await rig.submit(user=8, track="attachment:2")
    await rig.service.cancel(left_request.id, 8)
    await finished(running, waiting, left)
    found = await rig.service.stored_result(waiting_request.id)
    assert found is not None
    request, separation = found
    assert request.id == waiting_request.id and separation == waiting.result
    assert await rig.service.stored_result(left_request.id) is None
    assert await rig.service.stored_result(10**9) is None


async def test_cancel_by_someone_else_is_refused(rig: Rig) -> None:
    """Only the requester may cancel; the request stays queued."""
    await rig.submit(track="attachment:1")
    request, _ = await rig.submit(user=7, track="attachment:2")
    with pytest.raises(NotYourRequestError):
        await rig.service.cancel(request.id, 8)
    assert rig.service.position(request.id) == 1


async def test_cancel_after_the_call_started_is_refused(rig: Rig) -> None:
    """Once the API is working on it, a request can no longer be cancelled."""
    request, listener = await rig.submit(user=7)
    await asyncio.sleep(0)  # the call starts
    with pytest.raises(AlreadyStartedError):
        await rig.service.cancel(request.id, 7)
    await finished(listener)
    with pytest.raises(RequestEndedError):
        await rig.service.cancel(request.id, 7)


async def test_when_the_payer_cancels_the_next_requester_pays(rig: Rig) -> None:
    """The payer of a shared call leaves: the charge moves, the call is paid exactly once."""
    await rig.submit(track="attachment:1")
    payer_request, _ = await rig.submit(user=7, track="attachment:2")
    heir_request, heir = await rig.submit(user=8, track="attachment:2")
    await rig.service.cancel(payer_request.id, 7)
    await finished(heir)
    assert heir.events == ["started", "succeeded"]
    assert rig.used() == 2  # track 1's payer and the heir, one unit each
    heir_row = rig.store.ledger.get_request(heir_request.id)
    assert heir_row is not None and charged(heir_row) == 1


async def test_when_the_payer_cancels_a_requester_of_another_server_may_pay(rig: Rig) -> None:
    """The same link asked for in two servers shares one call: its payer leaves, and the
    requester of the other server takes the charge (their server had room): one call, paid
    once, in the heir's server. (Before, the call ran unpaid.)"""
    await rig.submit(track="attachment:1")
    payer_request, payer = await rig.submit(user=7, track="attachment:2")
    heir_request, heir = await rig.submit(user=8, guild=GUILD + 1, track="attachment:2")
    await rig.service.cancel(payer_request.id, 7)
    await finished(payer, heir)
    assert heir.events == ["started", "succeeded"]
    assert len(rig.api.requests) == 2
    assert (rig.used(), rig.used(GUILD + 1)) == (1, 1)
    heir_row = rig.store.ledger.get_request(heir_request.id)
    assert heir_row is not None and charged(heir_row) == 1


async def test_riders_of_other_servers_none_may_pay_for_are_told_to_ask_again(rig: Rig) -> None:
    """The payer leaves and the only other requester's server has no units left: the call
    is not made (unpaid), and that requester is told, free, to ask again."""
    rig.store.guilds.set_limits(GUILD + 1, daily=1)
    _, spent = await rig.submit(guild=GUILD + 1, track="attachment:9")
    await finished(spent)
    await rig.submit(track="attachment:1")
    payer_request, payer = await rig.submit(user=7, track="attachment:2")
    _, rider = await rig.submit(user=8, guild=GUILD + 1, track="attachment:2")
    await rig.service.cancel(payer_request.id, 7)
    await finished(payer, rider)
    assert rider.events == ["failed"] and isinstance(rider.error, SharedCallEndedError)
    await asyncio.sleep(0.5)  # the running call lands; nothing else goes
    assert len(rig.api.requests) == 2
    assert (rig.used(), rig.used(GUILD + 1)) == (1, 1)


async def test_a_quiet_guild_is_not_starved_by_a_busy_one(rig: Rig) -> None:
    """With one call at a time, a second guild's request goes next, not after the flood."""
    started: list[int] = []
    flood = []
    for n in range(4):
        request, listener = await rig.submit(track=f"attachment:{n + 10}")
        flood.append((request, listener))
    quiet_request, quiet = await rig.submit(guild=2002, track="attachment:99")
    assert rig.service.position(quiet_request.id) == 1  # the first flood request is already running
    await finished(quiet, *(listener for _, listener in flood))
    started = [int(r.json()["audioUrl"].rsplit(":", 1)[1].split(".")[0]) for r in rig.api.requests]
    assert started[:2] == [10, 99]


async def test_shutdown_interrupts_waiting_requests_and_refunds_them(rig: Rig) -> None:
    """On shutdown, queued requests are told and refunded; running ones get the grace time."""
    rig.api.latency = 5
    _, running = await rig.submit(track="attachment:1")
    _, waiting = await rig.submit(track="attachment:2")
    await asyncio.sleep(0.05)
    await rig.service.shutdown(grace_s=0.1)
    assert isinstance(waiting.error, RequestInterruptedError)
    assert isinstance(running.error, RequestInterruptedError)
    assert rig.used() == 0


async def test_an_unexpected_error_is_refunded_with_an_incident_id(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a call: the user gets only an incident id, the log the traceback, no charge."""

    class BrokenSeparator:
        async def separate(self, mode: Mode, audio_url: str) -> Separation:
            raise RuntimeError("a bug")

    rig.service._calls._separator = BrokenSeparator()
    _, listener = await rig.submit()
    await finished(listener)
    assert isinstance(listener.error, IncidentError)
    assert listener.error.incident_id in listener.error.user_message
    assert "a bug" not in listener.error.user_message
    assert any(listener.error.incident_id in r.getMessage() and r.exc_info for r in caplog.records)
    assert rig.used() == 0


async def test_attachment_checks_run_before_anything_is_spent(rig: Rig) -> None:
    """An oversized attachment is refused by the service with no ledger row and no call."""
    too_big = AttachmentInput(1, "http://cdn.test/a.mp3", "a.mp3", "audio/mpeg", 1025)
    with pytest.raises(StembotError, match="limit"):
        rig.service.check_attachment(too_big)
    assert rig.store.ledger.get_request(1) is None
    assert rig.api.requests == []
