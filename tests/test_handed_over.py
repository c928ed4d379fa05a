"""Queued calls handed over rather than refunded (stembot/handed_over.py), with the real
service, store and Soundverse client against the stand-in: a stop leaves its queued calls in
the ledger, and the next start (SQLite) or a live process at once (PostgreSQL) makes each
once and answers its requesters; a key that cannot open them refunds them."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from stembot.address_policy import AddressPolicy
from stembot.config import QuotaPolicy, Secret
from stembot.guarded_connector import GuardedConnector
from stembot.models import Mode, Request, RequestStatus
from stembot.request_inputs import CheckedSource, Requester
from stembot.sealed_sources import SourceSeal
from stembot.sharing import Sharing
from stembot.soundverse import SoundverseClient
from stembot.stem_service import StemService
from stembot.store.asynchronous import AsyncStore
from stembot.store.interface import LedgerStore
from stembot.url_probe import UrlProbe
from tests.lease_holders import processes_on
from tests.standins.soundverse import SoundverseStandin
from tests.test_shared_calls import charged
from tests.test_shared_queue import ROOMY
from tests.test_stem_service import KEY, Recorder

GUILD = 1001


@dataclass
class Parts:
    api: SoundverseStandin
    session: aiohttp.ClientSession
    connector: aiohttp.BaseConnector

    def service(
        self, store: LedgerStore, seal_key: str = KEY, sharing: Sharing | None = None
    ) -> StemService:
        return StemService(
            store,
            SoundverseClient(self.session, self.api.base_url, Secret(KEY), timeout_s=30),
            UrlProbe(self.connector, max_bytes=1024),
            max_concurrent_calls=1,
            max_input_bytes=1024,
            result_ttl_s=3600,
            sharing=sharing,
            seal=SourceSeal(seal_key),
        )


@pytest.fixture
async def parts() -> AsyncIterator[Parts]:
    async with (
        SoundverseStandin(api_key=KEY) as api,
        aiohttp.ClientSession() as session,
        GuardedConnector(AddressPolicy(allow_private=True)) as connector,
    ):
        yield Parts(api, session, connector)


class Answers:
    """The listeners of requests taken over, by request id."""

    def __init__(self) -> None:
        self.by_request: dict[int, Recorder] = {}

    def __call__(self, request: Request) -> Recorder:
        return self.by_request.setdefault(request.id, Recorder())


async def submit(
    service: StemService, track: str, user: int, interaction: int
) -> tuple[Request, Recorder]:
    listener = Recorder()
    source = CheckedSource(f"http://cdn.test/{track}.wav?sig=secret", "song.wav", track)
    requester = Requester(GUILD, 2, user, interaction)
    return await service.submit(requester, Mode.VOCALS, source, listener), listener


async def eventually(condition: Callable[[], object], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def calls_per_source(api: SoundverseStandin) -> Counter[str]:
    return Counter(str(r.json()["audioUrl"]) for r in api.requests)


async def a_stop_with_calls_queued(
    parts: Parts, service: StemService
) -> tuple[Request, list[tuple[Request, Recorder]]]:
    """One call held at the API (the cap of one), two more queued with a rider on the first
    of them; then the service stops. Returns the running request and the queued ones."""
    parts.api.hold()
    running, _ = await submit(service, "running", 1, 101)
    await eventually(lambda: len(parts.api.requests) == 1)
    queued = [
        await submit(service, "one", 2, 102),
        await submit(service, "one", 3, 103),  # rides on the call above
        await submit(service, "two", 4, 104),
    ]
    await service.shutdown(grace_s=0.2)
    return running, queued


async def test_a_stop_leaves_queued_calls_that_the_next_start_makes_once(
    tmp_path: Path, parts: Parts
) -> None:
    """SQLite: the stop leaves two queued calls (and a rider) queued and tells their
    requesters so; the next start makes each call once and answers all three; the running
    call cut short is refunded; the two payers are charged once each."""
    store = await AsyncStore.open(tmp_path / "stembot.db", QuotaPolicy(user_daily_limit=100))
    try:
        running, queued = await a_stop_with_calls_queued(parts, parts.service(store))
        assert [listener.events for _, listener in queued] == [["handed over"]] * 3
        parts.api.release()
        answers = Answers()
        restarted = parts.service(store)
        recovery = await restarted.recover(answers)
        assert recovery.interrupted == []  # the running call: refunded by the stop itself
        cut_short = await store.ledger.get_request(running.id)
        assert cut_short is not None and cut_short.status is RequestStatus.INTERRUPTED
        assert [call.payer.id for call in recovery.handed_over] == [
            queued[0][0].id,
            queued[2][0].id,
        ]
        await eventually(lambda: len(answers.by_request) == 3)
        await asyncio.wait_for(
            asyncio.gather(*(r.done.wait() for r in answers.by_request.values())), 10
        )
        assert [answers.by_request[r.id].events for r, _ in queued] == [
            ["started", "succeeded"]
        ] * 3
        made = calls_per_source(parts.api)
        assert sorted(made.values()) == [1, 1, 1], made
        statuses = [(await store.ledger.get_request(r.id)) for r, _ in queued]
        assert [(s.status, s.cost) for s in statuses if s] == [
            (RequestStatus.SUCCEEDED, 1),
            (RequestStatus.SUCCEEDED, 0),
            (RequestStatus.SUCCEEDED, 1),
        ]
        await restarted.shutdown(grace_s=0.1)
    finally:
        await store.close()


async def test_a_key_that_cannot_open_the_source_refunds_the_call(
    tmp_path: Path, parts: Parts, caplog: pytest.LogCaptureFixture
) -> None:
    """The API key changed between the stop and the start: the queued calls are refunded and
    their requesters told (as interrupted), with one line in the log; no call is made."""
    store = await AsyncStore.open(tmp_path / "stembot.db", QuotaPolicy(user_daily_limit=100))
    try:
        _, queued = await a_stop_with_calls_queued(parts, parts.service(store))
        parts.api.release()
        parts.api.clear()
        restarted = parts.service(store, seal_key="sv-rotated-key")
        recovery = await restarted.recover(Answers())
        assert recovery.handed_over == []
        refunded = {r.id for r in recovery.interrupted}
        assert {r.id for r, _ in queued} <= refunded
        for request, _ in queued:
            found = await store.ledger.get_request(request.id)
            assert found is not None and found.status is RequestStatus.INTERRUPTED
        assert parts.api.requests == []
        lines = [r for r in caplog.records if "could not be opened" in r.getMessage()]
        assert len(lines) == 1
        await restarted.shutdown(grace_s=0.1)
    finally:
        await store.close()


async def test_a_stopping_process_hands_its_queued_calls_to_a_live_one_at_once(
    postgres_url: str, parts: Parts
) -> None:
    """PostgreSQL: A stops with two calls queued (and a rider); B hears it at once (not at
    its next beat, 5 s here), takes them over, makes each once and answers all three; A's
    running call, cut short by its stop, is refunded. Two units charged in all."""
    async with processes_on(postgres_url, 2, ROOMY) as (a, b), contextlib.AsyncExitStack() as on:
        services = []
        for process in (a, b):
            sharing = process.sharing
            await on.enter_async_context(sharing.running())
            services.append(parts.service(process.store, sharing=sharing))
        stopping, live = services
        live_store = b.store
        running, queued = await a_stop_with_calls_queued(parts, stopping)
        parts.api.release()
        began = time.monotonic()
        await asyncio.wait_for(live.sweep_due(), 10)
        assert time.monotonic() - began < 2.0
        answers = Answers()
        recovery = await live.sweep(answers)
        assert [call.payer.id for call in recovery.handed_over] == [
            queued[0][0].id,
            queued[2][0].id,
        ]
        await eventually(lambda: len(answers.by_request) == 3)
        await asyncio.wait_for(
            asyncio.gather(*(r.done.wait() for r in answers.by_request.values())), 20
        )
        assert [answers.by_request[r.id].events for r, _ in queued] == [
            ["started", "succeeded"]
        ] * 3
        assert sorted(calls_per_source(parts.api).values()) == [1, 1, 1]
        assert charged(postgres_url) == 2
        cut_short = await live_store.ledger.get_request(running.id)
        assert cut_short is not None and cut_short.status is RequestStatus.INTERRUPTED
        await live.shutdown(grace_s=0.1)


async def test_a_call_whose_source_stays_sealed_is_refunded_not_made(
    tmp_path: Path, parts: Parts
) -> None:
    """SQLite: the database is held by another process just as a call gets its turn, so its
    row cannot be marked running and would keep its sealed source through the call: a crash
    then would have the next start make it a second time. It is refunded instead, never
    made; its row ends with no seal."""
    store = await AsyncStore.open(
        tmp_path / "stembot.db", QuotaPolicy(user_daily_limit=100), busy_timeout_s=0.2
    )
    service = parts.service(store)
    try:
        request, listener = await submit(service, "song", 1, 101)
        # Before the call's task runs: it finds the database held.
        holder = sqlite3.connect(tmp_path / "stembot.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            await asyncio.sleep(0.5)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await asyncio.wait_for(listener.done.wait(), 20)
        assert listener.events[-1] == "failed"
        assert parts.api.requests == []
        found = await store.ledger.get_request(request.id)
        assert found is not None and found.status is RequestStatus.FAILED
        assert _sealed_rows(tmp_path / "stembot.db") == 0
        await service.shutdown(grace_s=0.1)
    finally:
        await store.close()


def _sealed_rows(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        query = "SELECT count(*) FROM requests WHERE sealed_source IS NOT NULL"
        return int(conn.execute(query).fetchone()[0])
