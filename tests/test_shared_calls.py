"""API calls shared by bot processes on one PostgreSQL ledger, with the real service, the
real Soundverse client and the stand-in: two services, each on a store of its own holding its
own lease, stand for two processes (the proof with real processes is
tests/e2e/test_processes.py). One call per source and mode across them, the one cap for both,
and a request riding on the other's call is answered with its result or its failure."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import psycopg
import pytest

from stembot.address_policy import AddressPolicy
from stembot.config import Secret
from stembot.errors import SharedCallEndedError, SharedCallFailedError
from stembot.guarded_connector import GuardedConnector
from stembot.models import Mode, Request
from stembot.request_inputs import CheckedSource, Requester
from stembot.soundverse import SoundverseClient
from stembot.source_urls import source_key_for_url
from stembot.stem_service import StemService
from stembot.url_probe import UrlProbe
from tests.lease_holders import Process, processes_on
from tests.standins.soundverse import Reply, SoundverseStandin
from tests.test_shared_queue import ROOMY
from tests.test_stem_service import KEY, Recorder

ids = itertools.count(1)


@dataclass
class Bot:
    """One process: its service on its own store and lease."""

    process: Process
    service: StemService

    async def submit(
        self, track: str, guild: int = 1, user: int | None = None
    ) -> tuple[Request, Recorder]:
        listener = Recorder()
        requester = Requester(guild, 2, user or next(ids), next(ids))
        source = CheckedSource(f"http://cdn.test/{track}.wav", "song.wav", track)
        return await self.service.submit(requester, Mode.VOCALS, source, listener), listener


@pytest.fixture
async def api() -> AsyncIterator[SoundverseStandin]:
    async with SoundverseStandin(api_key=KEY) as standin:
        yield standin


@pytest.fixture
async def bots(postgres_url: str, api: SoundverseStandin) -> AsyncIterator[tuple[Bot, Bot]]:
    async with bots_on(postgres_url, api, 2) as (a, b):
        yield a, b


@contextlib.asynccontextmanager
async def bots_on(url: str, api: SoundverseStandin, count: int) -> AsyncIterator[list[Bot]]:
    """``count`` processes' services on the run's database, a cap of one call for all."""
    async with (
        processes_on(url, count, ROOMY) as processes,
        aiohttp.ClientSession() as session,
        GuardedConnector(AddressPolicy(allow_private=True)) as connector,
        contextlib.AsyncExitStack() as running,
    ):
        made = []
        for process in processes:
            sharing = process.sharing
            service = StemService(
                process.store,
                SoundverseClient(session, api.base_url, Secret(KEY), timeout_s=30),
                UrlProbe(connector, max_bytes=1024),
                max_concurrent_calls=1,
                max_input_bytes=1024,
                result_ttl_s=3600,
                sharing=sharing,
            )
            await running.enter_async_context(sharing.running())
            made.append(Bot(process, service))
        yield made
        for bot in made:
            await bot.service.shutdown(grace_s=0.1)


async def finished(*listeners: Recorder) -> None:
    await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in listeners)), 10)


async def eventually(condition: object, timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def paid_rows(url: str, key: str) -> list[tuple[int, int, bool]]:
    """(id, cost, member_pays) of the requests that paid for a call of ``key`` made."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT id, cost, member_pays FROM requests WHERE source_key = %s AND pays_call "
            "AND status = 'succeeded' ORDER BY id",
            (key,),
        ).fetchall()


def charged(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(cost), 0) FROM requests WHERE status = 'succeeded'"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_request_in_another_process_rides_on_the_call_and_shares_its_result(
    postgres_url: str, api: SoundverseStandin, bots: tuple[Bot, Bot]
) -> None:
    """A is calling the API for a track; B's member asks for the same: no second call, no
    refusal; B's request costs nothing, hears the call start and gets the same stems."""
    a, b = bots
    api.hold()
    _, payer = await a.submit("song")
    await eventually(lambda: len(api.requests) == 1)
    request, rider = await b.submit("song")
    assert request.cost == 0
    await eventually(lambda: "started" in rider.events)
    api.release()
    await finished(payer, rider)
    assert rider.events == ["started", "succeeded"] and rider.result == payer.result
    assert len(api.requests) == 1
    assert charged(postgres_url) == 1


async def test_one_cap_for_both_processes(api: SoundverseStandin, bots: tuple[Bot, Bot]) -> None:
    """A cap of one: B's call for another track waits for A's to end, then goes."""
    a, b = bots
    api.hold()
    _, first = await a.submit("one")
    await eventually(lambda: len(api.requests) == 1)
    waiting, second = await b.submit("two", guild=2)
    await asyncio.sleep(0.3)
    assert len(api.requests) == 1 and second.events == []
    assert b.service.position(waiting.id) == 1
    api.release()
    await finished(first, second)
    assert len(api.requests) == 2 and api.max_in_flight == 1
    assert second.events == ["started", "succeeded"]


async def test_a_ridden_call_that_fails_fails_its_riders_free(
    postgres_url: str, api: SoundverseStandin, bots: tuple[Bot, Bot]
) -> None:
    a, b = bots
    api.hold()
    api.fail_next(Reply.detail("The file could not be separated."))
    _, payer = await a.submit("bad")
    await eventually(lambda: len(api.requests) == 1)
    _, rider = await b.submit("bad")
    api.release()
    await finished(payer, rider)
    assert rider.events == ["started", "failed"]
    assert isinstance(rider.error, SharedCallFailedError)
    assert payer.error is not None and rider.error.user_message == payer.error.user_message
    assert charged(postgres_url) == 0


async def behind_a_running_call(
    api: SoundverseStandin, a: Bot
) -> tuple[Recorder, Request, Recorder]:
    """With the API held, A's member's call for "busy" takes the one turn and A's member's
    request for "queued" (server 2) waits behind it: their listeners and the waiting request."""
    api.hold()
    made = len(api.requests)
    _, busy = await a.submit("busy")
    await eventually(lambda: len(api.requests) == made + 1)
    queued, payer = await a.submit("queued", guild=2)
    return busy, queued, payer


async def test_a_ridden_call_cancelled_before_it_ran_is_taken_on_by_its_rider(
    postgres_url: str, api: SoundverseStandin, bots: tuple[Bot, Bot]
) -> None:
    """A's member cancels their queued request, which B's member rode on: B's request takes
    the call on (B has the link in memory) and queues it in the shared queue, charged to B's
    member as a cancelled payer's heir is; one call, charged once."""
    a, b = bots
    busy, queued, payer = await behind_a_running_call(api, a)
    heir_request, heir = await b.submit("queued", guild=3)
    await a.service.cancel(queued.id, queued.user_id)
    # B's request is a call of B's own now, first in the queue behind A's running call.
    await eventually(lambda: b.service.position(heir_request.id) == 1)
    assert payer.events == ["cancelled"] and heir.events == []
    api.release()
    await finished(busy, heir)
    assert heir.events == ["started", "succeeded"]
    assert len(api.requests) == 2
    assert paid_rows(postgres_url, "queued") == [(heir_request.id, 1, True)]
    assert charged(postgres_url) == 2  # A's busy call and B's member, one unit each


async def test_the_heir_elsewhere_is_the_first_rider_with_room_in_their_allowance(
    postgres_url: str, api: SoundverseStandin, bots: tuple[Bot, Bot]
) -> None:
    """As within one process: a rider whose own allowance is spent rides free; the next one
    with room pays."""
    a, b = bots
    await b.process.store.guilds.set_limits(3, per_user=1)
    _, spent = await b.submit("first", guild=3, user=31)
    await finished(spent)
    busy, queued, _ = await behind_a_running_call(api, a)
    _, broke = await b.submit("queued", guild=3, user=31)
    heir_request, heir = await b.submit("queued", guild=3, user=32)
    await a.service.cancel(queued.id, queued.user_id)
    await eventually(lambda: b.service.position(heir_request.id) == 1)
    api.release()
    await finished(busy, broke, heir)
    assert broke.events == heir.events == ["started", "succeeded"]
    assert paid_rows(postgres_url, "queued") == [(heir_request.id, 1, True)]


async def test_when_no_rider_elsewhere_may_pay_they_are_told_to_ask_again(
    api: SoundverseStandin, bots: tuple[Bot, Bot]
) -> None:
    """A rider whose server has no units left cannot take the cancelled call on: it is told
    the call ended (nothing charged, ask again), as before."""
    a, b = bots
    await b.process.store.guilds.set_limits(3, daily=1)
    _, spent = await b.submit("first", guild=3)
    await finished(spent)
    busy, queued, payer = await behind_a_running_call(api, a)
    _, rider = await b.submit("queued", guild=3)
    await a.service.cancel(queued.id, queued.user_id)
    await finished(rider, payer)
    assert rider.events == ["failed"] and isinstance(rider.error, SharedCallEndedError)
    api.release()
    await finished(busy)
    assert len(api.requests) == 2


async def test_with_riders_in_two_other_processes_one_takes_the_call_on_the_other_rides(
    postgres_url: str, api: SoundverseStandin
) -> None:
    """Riders in B and in C when A's payer cancels: both processes try; one call is made,
    charged once, and every rider gets its stems."""
    async with bots_on(postgres_url, api, 3) as (a, b, c):
        busy, queued, _ = await behind_a_running_call(api, a)
        _, on_b = await b.submit("queued", guild=3)
        _, on_c = await c.submit("queued", guild=4)
        await a.service.cancel(queued.id, queued.user_id)
        await asyncio.sleep(0.3)
        assert on_b.events == on_c.events == []
        api.release()
        await finished(busy, on_b, on_c)
        assert on_b.events == on_c.events == ["started", "succeeded"]
        assert on_b.result == on_c.result
        assert len(api.requests) == 2
        assert len(paid_rows(postgres_url, "queued")) == 1
        assert charged(postgres_url) == 2


async def test_a_payers_charge_passes_to_a_requester_of_another_server_in_its_process(
    postgres_url: str, api: SoundverseStandin, bots: tuple[Bot, Bot]
) -> None:
    """On the shared queue too: A's payer leaves, A's requester of another server takes the
    charge and the call goes. (Before, no request paid for it, so the shared queue never gave
    it a turn: it waited until the process stopped.)"""
    a, _ = bots
    busy, queued, _ = await behind_a_running_call(api, a)
    heir_request, heir = await a.submit("queued", guild=3)
    await a.service.cancel(queued.id, queued.user_id)
    api.release()
    await finished(busy, heir)
    assert heir.events == ["started", "succeeded"]
    assert paid_rows(postgres_url, "queued") == [(heir_request.id, 1, True)]


async def test_a_server_out_of_units_still_rides_on_another_processs_call(
    api: SoundverseStandin, bots: tuple[Bot, Bot]
) -> None:
    """As a join in one process: riding costs nothing, so a server whose units are spent is
    not refused (neither by the quick check before a link is fetched nor by the request)."""
    a, b = bots
    await b.process.store.guilds.set_limits(2, daily=1)
    _, spent = await b.submit("first", guild=2)
    await finished(spent)
    link = "http://cdn.test/shared.wav"
    api.hold()
    _, payer = await a.submit(source_key_for_url(link))
    await eventually(lambda: len(api.requests) == 2)
    await b.service.precheck(Requester(2, 2, next(ids), next(ids)), Mode.VOCALS, link)
    request, rider = await b.submit(source_key_for_url(link), guild=2)
    assert request.cost == 0
    api.release()
    await finished(payer, rider)
    assert rider.events == ["started", "succeeded"]
