"""The loopback Discord's sharding, spoken to as a raw gateway client: which session gets which
guild, GET /gateway/bot's recommendation and session start limit, IDENTIFY pacing, 4011, and
the token reset past the limit."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from tests.standins.discord import BOT_DM, DiscordEmulator
from tests.standins.discord.sharding import SessionStartLimit, shard_of

HELLO, IDENTIFY, INVALID_SESSION, DISPATCH = 10, 2, 9, 0


@dataclass
class RawShard:
    """One gateway connection, read frame by frame."""

    ws: aiohttp.ClientWebSocketResponse
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    close_code: int | None = None

    async def next_frame(self) -> dict[str, Any] | None:
        """The next frame, or None once the gateway closed the socket (``close_code``: the
        code its close frame carried)."""
        message = await self.ws.receive(timeout=5)
        if message.type == aiohttp.WSMsgType.CLOSE:
            self.close_code = message.data
        if message.type != aiohttp.WSMsgType.TEXT:
            return None
        frame: dict[str, Any] = json.loads(message.data)
        if frame["op"] == DISPATCH:
            self.events.append((frame["t"], frame["d"]))
        return frame

    async def until_event(self, name: str) -> dict[str, Any]:
        while True:
            frame = await self.next_frame()
            assert frame is not None, f"closed with {self.close_code} before {name}"
            if frame["op"] == DISPATCH and frame["t"] == name:
                data: dict[str, Any] = frame["d"]
                return data

    def guild_ids(self) -> set[int]:
        return {int(data["id"]) for name, data in self.events if name == "GUILD_CREATE"}


@contextlib.asynccontextmanager
async def raw_shard(
    emulator: DiscordEmulator, shard: list[int] | None, token: str | None = None
) -> AsyncIterator[RawShard]:
    """A connection that has sent IDENTIFY (with ``shard``, or none) after HELLO."""
    async with aiohttp.ClientSession() as http, http.ws_connect(emulator.gateway_url) as ws:
        connection = RawShard(ws)
        hello = await connection.next_frame()
        assert hello is not None and hello["op"] == HELLO
        identify: dict[str, Any] = {"token": token or emulator.token, "intents": 1}
        if shard is not None:
            identify["shard"] = shard
        await ws.send_json({"op": IDENTIFY, "d": identify})
        yield connection


async def gateway_bot(emulator: DiscordEmulator, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bot {token or emulator.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(emulator.api_base + "/gateway/bot", headers=headers) as answer,
    ):
        return answer.status, await answer.json()


async def test_each_shard_gets_its_own_guilds_in_ready_and_guild_create() -> None:
    """IDENTIFY with shard [i, 3]: READY names that shard and its guilds only, and only those
    guilds arrive as GUILD_CREATE; together the three shards hold every guild once."""
    async with DiscordEmulator(validate_spec=False) as emulator:
        guilds = [await emulator.add_guild(f"g{n}", shard=(n % 3, 3)) for n in range(7)]
        seen: list[int] = []
        for shard_id in range(3):
            async with raw_shard(emulator, [shard_id, 3]) as shard:
                ready = await shard.until_event("READY")
                expected = {g.id for g in guilds if shard_of(g.id, 3) == shard_id}
                for _ in expected:
                    await shard.until_event("GUILD_CREATE")
                assert ready["shard"] == [shard_id, 3]
                assert {int(g["id"]) for g in ready["guilds"]} == expected
                assert shard.guild_ids() == expected
                seen += sorted(expected)
        assert sorted(seen) == sorted(g.id for g in guilds)


async def test_guild_events_and_interactions_reach_only_their_shard_and_dms_shard_0() -> None:
    """A new guild, a message in a guild and a slash command there reach the session of the
    guild's shard; a command in the bot's DM reaches shard 0."""
    async with DiscordEmulator(validate_spec=False) as emulator:
        emulator.commands[None] = [{"id": "11", "name": "ping", "type": 1, "options": []}]
        async with (
            raw_shard(emulator, [0, 2]) as zero,
            raw_shard(emulator, [1, 2]) as one,
        ):
            await zero.until_event("READY")
            await one.until_event("READY")
            guild = await emulator.add_guild("late", shard=(1, 2))
            member = emulator.add_member(guild, "alice")
            await emulator.post_user_message(guild.default_channel, member, "hi")
            in_guild = await emulator.slash("ping", member=member)
            in_dm = await emulator.slash("ping", member=member, context=BOT_DM)
            assert (await one.until_event("GUILD_CREATE"))["id"] == str(guild.id)
            await one.until_event("MESSAGE_CREATE")
            assert (await one.until_event("INTERACTION_CREATE"))["id"] == str(in_guild.id)
            assert (await zero.until_event("INTERACTION_CREATE"))["id"] == str(in_dm.id)
            assert [name for name, _ in zero.events] == ["READY", "INTERACTION_CREATE"]
            assert [name for name, _ in one.events] == [
                "READY",
                "GUILD_CREATE",
                "MESSAGE_CREATE",
                "INTERACTION_CREATE",
            ]


async def test_a_second_identify_in_a_bucket_within_5_s_gets_an_invalid_session() -> None:
    """With pacing on and max_concurrency 2, shards 0 and 1 (buckets 0 and 1) identify at once;
    shard 2 (bucket 0 again) is answered with op 9, and nothing is spent for it."""
    limit = SessionStartLimit(max_concurrency=2)
    async with DiscordEmulator(
        validate_spec=False, identify_window_s=5.0, session_start_limit=limit
    ) as emulator:
        async with raw_shard(emulator, [0, 3]) as zero, raw_shard(emulator, [1, 3]) as one:
            await zero.until_event("READY")
            await one.until_event("READY")
            async with raw_shard(emulator, [2, 3]) as two:
                frame = await two.next_frame()
                assert frame == {"op": INVALID_SESSION, "d": False}
        outcomes = [(e.shard, e.outcome) for e in emulator.gateway.log]
        assert outcomes == [((0, 3), "ready"), ((1, 3), "ready"), ((2, 3), "rate limited")]
        assert limit.left() == 998


async def test_a_shard_past_the_guild_limit_is_closed_with_4011_and_more_shards_connect() -> None:
    """Past ``max_guilds_per_shard`` on one session the gateway closes with 4011 (sharding
    required); with two shards each holds few enough and gets READY."""
    async with DiscordEmulator(validate_spec=False, max_guilds_per_shard=2) as emulator:
        for n in range(4):
            await emulator.add_guild(f"g{n}", shard=(n % 2, 2))
        async with raw_shard(emulator, None) as unsharded:
            assert await unsharded.next_frame() is None
            assert unsharded.close_code == 4011
        for shard_id in range(2):
            async with raw_shard(emulator, [shard_id, 2]) as shard:
                assert (await shard.until_event("READY"))["shard"] == [shard_id, 2]
        assert [e.outcome for e in emulator.gateway.log] == ["sharding required", "ready", "ready"]


async def test_an_impossible_shard_is_closed_with_4010() -> None:
    """shard [3, 3] does not exist: close code 4010 (invalid shard)."""
    async with (
        DiscordEmulator(validate_spec=False) as emulator,
        raw_shard(emulator, [3, 3]) as shard,
    ):
        assert await shard.next_frame() is None
        assert shard.close_code == 4010


async def test_gateway_bot_recommends_shards_and_counts_down_the_session_starts() -> None:
    """GET /gateway/bot: one shard per 1,000 guilds (or the test's number), and a session start
    limit that each IDENTIFY lowers and that is full again once reset_after has passed."""
    limit = SessionStartLimit(total=1000, remaining=5, reset_after_s=60.0, max_concurrency=4)
    async with DiscordEmulator(validate_spec=False, session_start_limit=limit) as emulator:
        status, body = await gateway_bot(emulator)
        assert status == 200 and body["shards"] == 1
        starts = body["session_start_limit"]
        assert (starts["total"], starts["remaining"], starts["max_concurrency"]) == (1000, 5, 4)
        assert 59_000 < starts["reset_after"] <= 60_000
        async with raw_shard(emulator, [0, 1]) as shard:
            await shard.until_event("READY")
        assert (await gateway_bot(emulator))[1]["session_start_limit"]["remaining"] == 4
        emulator.recommended_shards = 3
        assert (await gateway_bot(emulator))[1]["shards"] == 3
    with_reset = SessionStartLimit(total=10, remaining=1, reset_after_s=0.0)
    assert (with_reset.left(), with_reset.payload()["remaining"]) == (10, 10)


async def test_past_the_session_start_limit_discord_ends_every_session_and_resets_the_token() -> (
    None
):
    """The IDENTIFY after the last one allowed: every session closes with 4004 and the old token
    no longer works, on the gateway or over REST."""
    limit = SessionStartLimit(total=10, remaining=1)
    async with DiscordEmulator(validate_spec=False, session_start_limit=limit) as emulator:
        old_token = emulator.token
        async with raw_shard(emulator, [0, 2]) as first:
            await first.until_event("READY")
            async with raw_shard(emulator, [1, 2]) as second:
                assert await second.next_frame() is None
                assert second.close_code == 4004
            assert await first.next_frame() is None
            assert first.close_code == 4004
        assert emulator.token != old_token
        assert (await gateway_bot(emulator, old_token))[0] == 401
        assert (await gateway_bot(emulator))[0] == 200


@pytest.mark.parametrize("count", [1, 2, 5])
def test_guilds_made_for_a_shard_land_on_it(count: int) -> None:
    """guild_id_on picks ids the sharding formula sends to the asked shard."""
    from tests.standins.discord.sharding import guild_id_on

    for shard_id in range(count):
        assert shard_of(guild_id_on((shard_id, count)), count) == shard_id
