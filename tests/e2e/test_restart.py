"""A crash and a graceful stop: nothing lost, everything refunded once, nothing re-run."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stembot.config import QuotaPolicy
from stembot.models import RequestStatus
from stembot.store import Store
from tests.e2e.ledgers import BotLedger
from tests.e2e.stack import (
    API_KEY,
    WAV,
    BotProcess,
    channel_posts,
    description,
    eventually,
    is_result,
    new_gateway_session,
    stack_env,
    vocals,
)
from tests.ledger_reads import delivered_via
from tests.standins.discord import (
    DiscordEmulator,
    Guild,
    InteractionRecord,
    MessageRecord,
)
from tests.standins.soundverse import SoundverseStandin

pytestmark = pytest.mark.slow

NOT_CHARGED = "not charged"


def request_status(ledger: Store, request_id: int) -> RequestStatus | None:
    request = ledger.ledger.get_request(request_id)
    return None if request is None else request.status


async def test_sigkill_mid_request_is_reported_and_refunded_after_restart(
    tmp_path: Path, bot_ledger: BotLedger
) -> None:
    """A bot killed while the API works is told of on restart: notice in channel, one refund;
    on either store (the SQLite file, or PostgreSQL, where the next bot takes the request
    over once the killed bot's lease has run out)."""
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY, latency=60) as api:
        guild = await discord.add_guild()
        member = discord.add_member(guild, "alice")
        env = {**stack_env(discord, api, bot_ledger.db_path), **bot_ledger.env}
        first = BotProcess(env, tmp_path / "bot.log")
        await first.start()
        try:
            await discord.wait_ready(timeout_s=20)
            session = discord.gateway.current
            attachment = discord.upload_attachment(WAV, "song.wav", "audio/wav")
            interaction = await discord.slash(
                "stems vocals",
                member=member,
                channel=guild.default_channel,
                options={"file": attachment},
            )
            await discord.acknowledged(interaction)
            await eventually(lambda: len(api.requests) == 1)
        finally:
            first.signal(signal.SIGKILL)
            await first.wait()
        api.latency = 0
        second = BotProcess(env, tmp_path / "bot.log")
        await second.start()
        try:
            await new_gateway_session(discord, session)
            await eventually(lambda: channel_posts(discord, guild.default_channel))
        finally:
            second.signal(signal.SIGTERM)
            assert await second.wait() == 0, second.log_text()
        (notice,) = channel_posts(discord, guild.default_channel)
        assert notice.content == f"<@{member.id}>"
        assert "not charged" in str(notice.embeds[0]).lower()
        assert len(api.requests) == 1  # nothing re-run behind the user's back
    async with bot_ledger.reading() as store:
        request = await store.ledger.get_request(1)
        assert request is not None and request.status is RequestStatus.INTERRUPTED
        status = await store.quotas.quota_status(guild.id, member.id, datetime.now(UTC))
        assert status.guild_daily.used == 0
        assert (await store.ledger.recover(datetime.now(UTC))).interrupted == []


async def test_sigterm_keeps_queued_requests_for_the_next_start_and_exits_cleanly(
    tmp_path: Path,
) -> None:
    """SIGTERM with one request running and one queued: the running one is cut short past
    the grace (refunded, told); the queued one keeps its place (told so) and the next start
    makes its call once and posts its stems in the channel, mentioning its member, once."""
    db = tmp_path / "stembot.db"
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY, latency=60) as api:
        guild = await discord.add_guild()
        alice, bob = discord.add_member(guild, "alice"), discord.add_member(guild, "bob")
        env = {
            **stack_env(discord, api, db),
            "STEMBOT_MAX_CONCURRENT_JOBS": "1",
            "STEMBOT_API_TIMEOUT_S": "60",
            "STEMBOT_SHUTDOWN_GRACE_S": "0.5",
        }
        bot = BotProcess(env, tmp_path / "bot.log")
        await bot.start()
        await discord.wait_ready(timeout_s=20)
        session = discord.gateway.current
        interactions = []
        for member in (alice, bob):
            attachment = discord.upload_attachment(WAV, "song.wav", "audio/wav")
            interactions.append(
                await discord.slash(
                    "stems vocals",
                    member=member,
                    channel=guild.default_channel,
                    options={"file": attachment},
                )
            )
            await discord.acknowledged(interactions[-1])
        await eventually(lambda: len(api.requests) == 1)
        bot.signal(signal.SIGTERM)
        assert await bot.wait() == 0, bot.log_text()
        running, queued = (i.view().original for i in interactions)
        assert running is not None and "restarted" in str(running["embeds"][0]).lower()
        assert queued is not None and "keeps its place" in str(queued["embeds"][0])
        store = Store.open(db, QuotaPolicy())
        statuses = [store.ledger.get_request(n).status for n in (1, 2)]  # type: ignore[union-attr]
        assert statuses == [RequestStatus.INTERRUPTED, RequestStatus.QUEUED]
        assert store.quotas.quota_status(guild.id, None, datetime.now(UTC)).guild_daily.used == 1
        api.latency = 0
        again = BotProcess(env, tmp_path / "again.log")
        await again.start()
        try:
            await new_gateway_session(discord, session)
            await eventually(lambda: channel_posts(discord, guild.default_channel), timeout_s=15)
            await asyncio.sleep(0.5)  # room for a second answer to show itself
        finally:
            again.signal(signal.SIGTERM)
            assert await again.wait() == 0, again.log_text()
        (post,) = channel_posts(discord, guild.default_channel)
        assert post.content.startswith(f"<@{bob.id}> your stems") and is_result(post.data)
        assert len(api.requests) == 2
        assert store.ledger.get_request(2).status is RequestStatus.SUCCEEDED  # type: ignore[union-attr]
        assert store.quotas.quota_status(guild.id, None, datetime.now(UTC)).guild_daily.used == 1
        store.close()


async def test_a_cancel_button_from_before_a_crash_still_answers(tmp_path: Path) -> None:
    """After a restart, Cancel on an old status message gets an answer, not "did not respond":
    the request was taken over by the new start, and its call is already under way."""
    db = tmp_path / "stembot.db"
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY, latency=60) as api:
        guild = await discord.add_guild()
        alice, bob = discord.add_member(guild, "alice"), discord.add_member(guild, "bob")
        env = {**stack_env(discord, api, db), "STEMBOT_MAX_CONCURRENT_JOBS": "1"}
        first = BotProcess(env, tmp_path / "bot.log")
        await first.start()
        try:
            await discord.wait_ready(timeout_s=20)
            session = discord.gateway.current
            for member in (alice, bob):
                attachment = discord.upload_attachment(WAV, f"{member.id}.wav", "audio/wav")
                queued = await discord.slash(
                    "stems vocals",
                    member=member,
                    channel=guild.default_channel,
                    options={"file": attachment},
                )
            await eventually(lambda: "Cancel" in str(queued.view().original), timeout_s=15)
            # Alice's call is under way (not merely started): the one API call this test counts.
            await eventually(lambda: len(api.requests) == 1, timeout_s=15)
        finally:
            first.signal(signal.SIGKILL)
            await first.wait()
        second = BotProcess(env, tmp_path / "bot.log")
        await second.start()
        try:
            await new_gateway_session(discord, session)
            assert queued.original is not None
            (cancel,) = [
                c["custom_id"]
                for row in queued.original.components
                for c in row["components"]
                if c.get("label") == "Cancel"
            ]
            click = await discord.click(queued.original, cancel, member=bob)
            await discord.acknowledged(click)
            await eventually(lambda: click.view().original or click.view().followups)
        finally:
            second.signal(signal.SIGTERM)
            assert await second.wait() == 0, second.log_text()
        answer = click.view().original or click.view().followups[0]
        assert "can no longer be cancelled" in answer["content"]
        assert len(api.requests) == 2  # bob's queued call, made once, by the new start


# --- a crash at each step of a request: one answer, the right charge, never a second call -----

PATCH_ORIGINAL = "/webhooks/{webhook_id}/{webhook_token}/messages/@original"
QUEUED = "before the call (queued)"
CALLING = "during the call"
SETTLED = "after settling, before the reply reached Discord"
SETTLED_NO_CHANNEL = "after settling, before the reply; the channel refuses posts"
REPLIED = "after the reply"


def _separating(interaction: InteractionRecord) -> bool:
    return "Separating" in description(interaction.view().original or {})


def _mentioned(discord: DiscordEmulator, guild: Guild) -> dict[int, list[MessageRecord]]:
    """The bot's posts in the channel, by the member each mentions."""
    posts: dict[int, list[MessageRecord]] = {}
    for post in channel_posts(discord, guild.default_channel):
        user = int(post.content.split(">", 1)[0].removeprefix("<@"))
        posts.setdefault(user, []).append(post)
    return posts


@pytest.mark.parametrize("step", [QUEUED, CALLING, SETTLED, SETTLED_NO_CHANNEL, REPLIED])
async def test_a_crash_at_any_step_ends_in_one_answer_and_the_right_charge(
    tmp_path: Path, step: str
) -> None:
    """SIGKILL at each step of a shared call (alice pays, bob joins; carol waits behind them
    when the crash comes before the call). After the restart every requester has exactly one
    answer: stems if the API had answered (charged once, delivered once, from the stored
    result), else a refund notice; the API is never called a second time for a call it had.
    Carol's queued call never reached the API: the restart makes it, once."""
    db = tmp_path / "stembot.db"
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY) as api:
        guild = await discord.add_guild()
        alice, bob, carol = (discord.add_member(guild, n) for n in ("alice", "bob", "carol"))
        env = {**stack_env(discord, api, db), "STEMBOT_MAX_CONCURRENT_JOBS": "1"}
        ledger = Store.open(db, QuotaPolicy())
        first = BotProcess(env, tmp_path / "first.log")
        await first.start()
        try:
            await discord.wait_ready(timeout_s=20)
            session = discord.gateway.current
            track = discord.upload_attachment(WAV, "song.wav", "audio/wav")
            api.hold()
            paying = await vocals(discord, guild, alice, track)
            await eventually(lambda: len(api.requests) == 1)
            joining = await vocals(discord, guild, bob, track)
            await eventually(lambda: ledger.ledger.get_request(2) is not None)
            if step == QUEUED:
                other = discord.upload_attachment(WAV, "other.wav", "audio/wav")
                await vocals(discord, guild, carol, other)
                await eventually(lambda: ledger.ledger.get_request(3) is not None)
            elif step in (SETTLED, SETTLED_NO_CHANNEL):
                await eventually(lambda: _separating(paying) and _separating(joining))
                discord.hold("PATCH", PATCH_ORIGINAL)
                api.release()
                await eventually(lambda: discord.held_calls("PATCH", PATCH_ORIGINAL) == 2)
                assert [request_status(ledger, n) for n in (1, 2)] == [RequestStatus.SUCCEEDED] * 2
            elif step == REPLIED:
                api.release()
                await eventually(lambda: is_result(paying.view().original or {}))
                await eventually(lambda: is_result(joining.view().original or {}))
                await eventually(
                    lambda: None not in (delivered_via(ledger, 1), delivered_via(ledger, 2))
                )
        finally:
            first.signal(signal.SIGKILL)
            await first.wait()
        if step == SETTLED_NO_CHANNEL:
            discord.refuse_channel(guild.default_channel)
        api.release()  # carol's call, made by the restart, is answered at once
        second = BotProcess(env, tmp_path / "second.log")
        await second.start()
        try:
            await new_gateway_session(discord, session)
            await eventually(lambda: "start-up:" in second.log_text(), timeout_s=10)
            if step == QUEUED:
                await eventually(lambda: carol.id in _mentioned(discord, guild), timeout_s=15)
            await asyncio.sleep(0.3)  # room for a wrongly repeated answer to show itself
        finally:
            second.signal(signal.SIGTERM)
            assert await second.wait() == 0, second.log_text()

        posts = _mentioned(discord, guild)
        dms = {m.id: discord.dm_messages(m) for m in (alice, bob, carol)}
        assert len(api.requests) == (2 if step == QUEUED else 1)
        if step in (QUEUED, CALLING):
            told = [alice, bob]
            for member in told:
                (notice,) = posts.pop(member.id)
                assert NOT_CHARGED in str(notice.embeds[0]).lower()
            statuses = [RequestStatus.INTERRUPTED] * len(told)
            charged = 0
            if step == QUEUED:
                (result,) = posts.pop(carol.id)
                assert is_result(result.data)
                statuses, charged = [*statuses, RequestStatus.SUCCEEDED], 1
            assert posts == {}
        else:
            statuses, charged = [RequestStatus.SUCCEEDED] * 2, 1
        if step == SETTLED:
            assert sorted(posts) == sorted([alice.id, bob.id])
            assert all(is_result(post.data) for (post,) in posts.values())
            assert [delivered_via(ledger, n) for n in (1, 2)] == ["channel", "channel"]
        if step == SETTLED_NO_CHANNEL:
            assert posts == {}
            assert [len(dms[m.id]) for m in (alice, bob)] == [1, 1]
            assert all(is_result(dms[m.id][0].data) for m in (alice, bob))
            assert [delivered_via(ledger, n) for n in (1, 2)] == ["dm", "dm"]
        if step in (SETTLED, SETTLED_NO_CHANNEL):
            # The held edits never reached Discord: the status messages still say "Separating".
            assert _separating(paying) and _separating(joining)
        if step == REPLIED:
            assert posts == {}
            assert [delivered_via(ledger, n) for n in (1, 2)] == ["interaction", "interaction"]
        if step != SETTLED_NO_CHANNEL:
            assert all(found == [] for found in dms.values())
        assert [request_status(ledger, n) for n in range(1, len(statuses) + 1)] == statuses
        assert (
            ledger.quotas.quota_status(guild.id, None, datetime.now(UTC)).guild_daily.used
            == charged
        )
        assert ledger.ledger.recover(datetime.now(UTC)).undelivered == []
        ledger.close()
