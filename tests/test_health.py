"""What /healthz decides: every shard this process runs connected, the database answering
within its time, and the bot still taking requests; said in the log when it changes."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from stembot.errors import StoreBusyError
from stembot.health import Health
from stembot.shards import Shards, ShardState


@dataclass
class ShardsNow:
    states: tuple[ShardState, ...] = (ShardState(0, True, 0.05, 3), ShardState(1, True, 0.05, 4))
    count: int | None = 2

    def read(self) -> Shards:
        return Shards(self.count, self.states)


@dataclass
class ServiceNow:
    accepting: bool = True


@dataclass
class Database:
    """Answers, fails or never answers, as the test says."""

    failure: Exception | None = None
    hangs: bool = False
    asked: list[int] = field(default_factory=list)

    async def ping(self) -> None:
        self.asked.append(1)
        if self.hangs:
            await asyncio.Event().wait()
        if self.failure is not None:
            raise self.failure


def health(shards: ShardsNow, database: Database, service: ServiceNow | None = None) -> Health:
    return Health(shards, database.ping, service or ServiceNow(), database_timeout_s=0.05)


async def test_healthy_when_every_shard_is_connected_and_the_database_answers() -> None:
    database = Database()
    report = await health(ShardsNow(), database).check()
    assert report.healthy and database.asked == [1]
    assert report.body() == {
        "status": "ok",
        "shards": {"expected": [0, 1], "connected": [0, 1]},
        "database": "reachable",
        "accepting_requests": True,
        "problems": [],
    }


async def test_a_shard_down_is_unhealthy_and_named() -> None:
    shards = ShardsNow(states=(ShardState(0, True, 0.05, 3), ShardState(1, False, None, 4)))
    report = await health(shards, Database()).check()
    assert not report.healthy
    assert report.body()["status"] == "unavailable"
    assert report.body()["shards"] == {"expected": [0, 1], "connected": [0]}
    assert report.problems() == ["shard(s) 1 not connected"]


async def test_before_any_shard_started_it_is_not_healthy() -> None:
    report = await health(ShardsNow(states=(), count=None), Database()).check()
    assert not report.healthy and report.problems() == ["no shard started yet"]


@pytest.mark.parametrize(
    "database",
    [Database(failure=StoreBusyError()), Database(failure=OSError("gone")), Database(hangs=True)],
    ids=["refused", "driver error", "no answer in time"],
)
async def test_a_database_that_fails_or_does_not_answer_is_unreachable(database: Database) -> None:
    report = await health(ShardsNow(), database).check()
    assert not report.healthy
    assert report.body()["database"] == "unreachable"
    assert report.problems() == ["database unreachable"]


async def test_a_bot_shutting_down_is_not_healthy() -> None:
    report = await health(ShardsNow(), Database(), ServiceNow(accepting=False)).check()
    assert not report.healthy and report.problems() == ["shutting down"]


async def test_the_log_says_when_health_changes_not_at_every_probe(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shards, database = ShardsNow(), Database()
    checks = health(shards, database)
    with caplog.at_level(logging.INFO, logger="stembot.health"):
        for _ in range(3):
            await checks.check()
        shards.states = (ShardState(0, False, None, 3), ShardState(1, True, 0.05, 4))
        database.failure = StoreBusyError()
        for _ in range(3):
            await checks.check()
        shards.states = ShardsNow().states
        database.failure = None
        await checks.check()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "health: ok (shard(s) 0, 1 connected)"),
        ("WARNING", "health: unavailable: shard(s) 0 not connected; database unreachable"),
        ("INFO", "health: ok (shard(s) 0, 1 connected)"),
    ]
