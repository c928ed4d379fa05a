"""The API calls' queue shared by the processes on one PostgreSQL ledger
(stembot/store/postgres/dispatch.py): the turns it gives are those one process's FairQueue
would give, whichever process queued each call; the cap holds for all processes together,
dispatching at once; only live processes' calls get a turn; and the grants are told on the
channel."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import psycopg
import pytest

from stembot.config import QuotaPolicy
from stembot.flights import Flight
from stembot.models import Mode, Request, RequestStatus
from stembot.store.postgres.dispatch import Word
from stembot.turns import LocalTurns
from tests.lease_holders import Process, processes_on, run_out
from tests.test_store import NOW, new_request

ROOMY = QuotaPolicy(
    guild_daily_limit=100_000,
    guild_monthly_limit=1_000_000,
    user_daily_limit=100_000,
    user_active_jobs=100_000,
)


@pytest.fixture
async def processes(postgres_url: str) -> AsyncIterator[list[Process]]:
    async with processes_on(postgres_url, 3, ROOMY) as processes:
        yield processes


async def queue(process: Process, guild: int) -> Request:
    """A paid call of a file of its own, queued by ``process`` for ``guild``."""
    return await process.store.ledger.reserve(new_request(guild=guild), NOW)


async def end(process: Process, request: Request) -> None:
    await process.store.ledger.refund_all([request.id], RequestStatus.FAILED, "done", NOW)


async def test_turns_are_those_of_one_processs_fair_queue(processes: list[Process]) -> None:
    """Random arrivals from three processes for servers big and small, calls ending in the
    order they started (a few at once now and then), a cap of 3: the shared queue starts the
    calls in exactly the order one process's FairQueue with the same cap does, and the
    places it gives the calls still waiting are that queue's positions."""
    rng = random.Random(11)
    cap = 3
    started: list[int] = []  # by index of arrival
    model = LocalTurns(cap)
    model.bind(lambda flight: started.append(flight.id))
    granted: list[int] = []
    arrivals: list[tuple[Process, Request]] = []
    index_of: dict[int, int] = {}
    running: list[int] = []

    async def dispatch(process: Process) -> None:
        for grant in await process.store.calls.dispatch(cap):
            granted.append(index_of[grant.request_id])
            running.append(index_of[grant.request_id])

    for _ in range(150):
        if running and rng.random() < 0.4:
            # One call ends, or several before the next dispatch (several turns at once).
            for _ in range(min(len(running), rng.choice([1, 1, 3]))):
                finished = running.pop(0)
                process, request = arrivals[finished]
                model.done(Flight(finished, ("", Mode.VOCALS), []))
                await end(process, request)
            await dispatch(rng.choice(processes))
            continue
        guild = rng.choice([1, 1, 1, 1, 2, 3, 4 + rng.randrange(20)])
        process = rng.choice(processes)
        request = await queue(process, guild)
        index_of[request.id] = len(arrivals)
        model.push(Flight(len(arrivals), ("", Mode.VOCALS), []), guild)
        arrivals.append((process, request))
        await dispatch(process)
        assert granted == started
    waiting = [i for i in range(len(arrivals)) if i not in started]
    assert len(waiting) > 5
    places = await processes[0].store.calls.positions([arrivals[i][1].id for i in waiting])
    assert {index_of[i]: place for i, place in places.items()} == {
        i: model.position(Flight(i, ("", Mode.VOCALS), [])) for i in waiting
    }


async def test_the_cap_holds_for_all_processes_dispatching_at_once(
    postgres_url: str, processes: list[Process]
) -> None:
    """30 calls waiting, three processes dispatching together with a cap of 4, again and
    again: 4 hold a turn, never more; an ended call's turn goes to the next."""
    for n in range(30):
        await queue(processes[n % 3], 10 + n % 5)
    for _ in range(3):
        await asyncio.gather(*(p.store.calls.dispatch(4) for p in processes))
    holding = granted(postgres_url)
    assert len(holding) == 4
    first, lease = holding[0]
    owner = next(p for p in processes if p.lease.id == lease)
    await owner.store.ledger.refund_all([first], RequestStatus.FAILED, "done", NOW)
    grants = await processes[1].store.calls.dispatch(4)
    assert len(grants) == 1 and grants[0].request_id not in {i for i, _ in holding}
    assert len(granted(postgres_url)) == 4


async def test_a_dead_processs_calls_get_no_turn_and_free_theirs(
    postgres_url: str, processes: list[Process]
) -> None:
    """A's lease ran out: its waiting call is passed over; once the sweep took A's granted
    call over, its turn goes to a live process's call."""
    a, b, _ = processes
    held = await queue(a, 1)
    assert [g.request_id for g in await a.store.calls.dispatch(1)] == [held.id]
    passed_over = await queue(a, 2)
    live = await queue(b, 3)
    run_out(postgres_url, a)
    assert await b.store.calls.dispatch(1) == []  # A's granted call still holds the turn
    await b.sharing.sweep(NOW)
    assert [g.request_id for g in await b.store.calls.dispatch(1)] == [live.id]
    assert passed_over.id not in [g.request_id for g in await b.store.calls.dispatch(5)]


async def test_a_grant_is_told_to_the_listening_processes(processes: list[Process]) -> None:
    a, b, _ = processes
    heard: list[Word] = []
    caught_up = asyncio.Event()

    async def catch_up() -> None:
        caught_up.set()

    listener = asyncio.create_task(b.store.listening(heard.append, catch_up).run())
    try:
        await asyncio.wait_for(caught_up.wait(), 10)
        request = await queue(a, 1)
        await b.store.calls.dispatch(2)
        async with asyncio.timeout(10):
            while not heard:  # noqa: ASYNC110 - the listener's task appends
                await asyncio.sleep(0.01)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    assert heard == [Word("grant", lease_id=a.lease.id, request_ids=(request.id,))]


def test_words_read_back_as_said() -> None:
    for word in (
        Word("grant", lease_id=7, request_ids=(1, 22, 333)),
        Word("started", key="url:sha256:ab12", mode=Mode.ALL),
        Word("ended", key="attachment:99", mode=Mode.INSTRUMENTS),
    ):
        assert Word.parse(word.payload()) == word
    assert Word.parse("nonsense") is None and Word.parse("ended nomode key") is None


def granted(url: str) -> list[tuple[int, int]]:
    """(request, lease) of the calls holding a turn now."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id, lease_id FROM requests WHERE granted_at IS NOT NULL "
            "AND status IN ('queued', 'running') ORDER BY id"
        ).fetchall()
    return [(int(a), int(b)) for a, b in rows]
