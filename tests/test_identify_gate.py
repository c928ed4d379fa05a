"""IDENTIFY pacing: the reserve of session starts, the wait for Discord's reset (asked of the
loopback Discord's GET /gateway/bot), and one IDENTIFY per bucket per 5 s (on a test clock)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from stembot.bot.identify import (
    IdentifyGate,
    LocalIdentifyPacer,
    SessionStartLimit,
    spoken_duration,
)
from tests.standins.discord import DiscordEmulator
from tests.standins.discord import sharding as emulated


class ManualClock:
    """A clock that moves only when the code under test sleeps on it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def test_the_reserve_is_a_tenth_of_the_day_or_one_start_of_every_shard() -> None:
    """1,000 a day keeps 100 back; 300 shards keep 300; a tiny budget still leaves one to use."""
    limit = SessionStartLimit.from_discord(
        {"total": 1000, "remaining": 40, "reset_after": 1500, "max_concurrency": 0}
    )
    assert (limit.reset_after_s, limit.max_concurrency) == (1.5, 1)
    assert limit.reserve(shard_count=3) == 100
    assert limit.reserve(shard_count=300) == 300
    assert SessionStartLimit(2, 2, 0.0, 1).reserve(shard_count=3) == 1


async def test_one_identify_per_bucket_per_5_s_and_buckets_do_not_wait_for_each_other() -> None:
    """The same bucket waits out the rest of 5 s after its last turn; another bucket goes at
    once; two shards of one bucket asking together go 5 s apart."""
    clock = ManualClock()
    pacer = LocalIdentifyPacer(clock=clock, sleep=clock.sleep)
    await pacer.take_turn(0)
    await pacer.take_turn(1)
    assert clock.sleeps == []
    clock.now += 2.0
    await pacer.take_turn(0)
    assert clock.sleeps == [3.0]
    turns: list[float] = []

    async def turn() -> None:
        await pacer.take_turn(1)
        turns.append(clock.now)

    await asyncio.gather(turn(), turn())
    assert turns[1] - turns[0] == 5.0


@pytest.fixture(name="limit")
def limit_fixture() -> emulated.SessionStartLimit:
    return emulated.SessionStartLimit(total=1000, remaining=1000, max_concurrency=4)


@pytest.fixture(name="discord")
async def discord_fixture(limit: emulated.SessionStartLimit) -> AsyncIterator[DiscordEmulator]:
    async with DiscordEmulator(validate_spec=False, session_start_limit=limit) as emulator:
        yield emulator


def asking(discord: DiscordEmulator) -> Callable[[], Awaitable[SessionStartLimit]]:
    """What ``discord``'s GET /gateway/bot says of the session starts, each time it is called."""

    async def fetch() -> SessionStartLimit:
        headers = {"Authorization": f"Bot {discord.token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(discord.api_base + "/gateway/bot", headers=headers) as answer,
        ):
            return SessionStartLimit.from_discord((await answer.json())["session_start_limit"])

    return fetch


def gate_on(
    discord: DiscordEmulator, clock: ManualClock, shard_count: int, on_sleep: list[object]
) -> IdentifyGate:
    """A gate asking ``discord``'s GET /gateway/bot; each wait runs ``on_sleep``'s callables
    (the day passing at Discord) before the clock moves."""

    async def sleep(seconds: float) -> None:
        for action in on_sleep:
            assert callable(action)
            action()
        await clock.sleep(seconds)

    pacer = LocalIdentifyPacer(clock=clock, sleep=clock.sleep)
    return IdentifyGate(asking(discord), lambda: shard_count, pacer, sleep=sleep)


async def test_with_starts_to_spare_the_gate_lets_shards_of_other_buckets_go_at_once(
    discord: DiscordEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """max_concurrency 4: shards 0-3 go without a wait, shard 4 (bucket 0) waits 5 s; each
    says how many starts are left."""
    clock = ManualClock()
    gate = gate_on(discord, clock, shard_count=5, on_sleep=[])
    caplog.set_level(logging.INFO, "stembot.bot.identify")
    for shard_id in range(5):
        await gate.before_identify(shard_id)
    assert clock.sleeps == [5.0]
    assert "shard 4 identifying (1000 of 1000 session starts left today)" in caplog.text


async def test_with_only_the_reserve_left_the_gate_waits_for_the_reset_and_says_so(
    discord: DiscordEmulator, limit: emulated.SessionStartLimit, caplog: pytest.LogCaptureFixture
) -> None:
    """100 of 1,000 left (the reserve): one warning with the wait, then, once Discord's day has
    passed, the shard goes; a start above the reserve goes at once."""
    limit.remaining = 100
    clock = ManualClock()
    gate = gate_on(discord, clock, shard_count=3, on_sleep=[limit.reset_now])
    caplog.set_level(logging.INFO, "stembot.bot.identify")
    await gate.before_identify(2)
    waits = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(waits) == 1
    assert waits[0].startswith(
        "Discord's session start limit is nearly spent (100 of 1000 left today, 100 kept in "
        "reserve so that Discord never resets the token): shard 2 waits 24 h 00 min, until "
    )
    assert clock.sleeps == [pytest.approx(86_400, abs=1)]
    assert "shard 2 identifying (1000 of 1000 session starts left today)" in caplog.text
    limit.remaining = 101
    await gate.before_identify(0)
    assert len(clock.sleeps) == 1


def test_waits_are_spoken_in_seconds_minutes_or_hours() -> None:
    assert [spoken_duration(s) for s in (1.5, 119, 600, 7_200, 86_399)] == [
        "1.5 s",
        "119.0 s",
        "10 min",
        "2 h 00 min",
        "24 h 00 min",
    ]


async def test_a_start_checked_before_connecting_is_not_asked_again_at_identify(
    discord: DiscordEmulator,
) -> None:
    """wait_for_starts (before the connection opens) then before_identify: one GET /gateway/bot;
    an IDENTIFY without the check first (a new session) asks itself."""
    clock = ManualClock()
    gate = gate_on(discord, clock, shard_count=1, on_sleep=[])
    await gate.wait_for_starts(0)
    await gate.before_identify(0)
    assert len([c for c in discord.calls if c.route == "/gateway/bot"]) == 1
    await gate.before_identify(0)
    assert len([c for c in discord.calls if c.route == "/gateway/bot"]) == 2


async def test_waiting_again_for_the_same_reset_is_not_announced_again(
    discord: DiscordEmulator, limit: emulated.SessionStartLimit, caplog: pytest.LogCaptureFixture
) -> None:
    """discord.py gives up on a re-IDENTIFY after 60 s and asks again: the same wait is one
    warning, not one a minute."""
    limit.remaining = 3
    clock = ManualClock()
    gives_up = asyncio.CancelledError

    def discord_py_gives_up() -> None:
        raise gives_up

    gate = gate_on(discord, clock, shard_count=1, on_sleep=[discord_py_gives_up])
    for _ in range(2):
        with pytest.raises(gives_up):
            await gate.before_identify(0)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
