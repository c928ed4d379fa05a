"""The operator caps the spend, and cheap checks come before costly ones (issue 10, sections 2
and 3): the real bot over the loopback Discord, with the ledger it keeps."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from stembot.models import RequestStatus
from tests.e2e.stack import WAV, Stack, eventually, is_result, running_stack, used_today
from tests.e2e.test_admin import admin, moderator, text_of
from tests.e2e.test_remix_event import _cancel_button, _cancel_id
from tests.standins.discord import Member
from tests.standins.local_http import serving

# --- a link whose server counts every fetch -------------------------------------------------


@dataclass
class CountingAudio:
    """A local server with one WAV file per path; ``fetches`` counts every request it got."""

    base: str
    fetches: list[str] = field(default_factory=list)

    def url(self, name: str = "song.wav") -> str:
        return f"{self.base}/{name}"


@contextlib.asynccontextmanager
async def counting_audio() -> AsyncIterator[CountingAudio]:
    server = CountingAudio("")

    async def serve(request: web.Request) -> web.Response:
        server.fetches.append(request.path)
        return web.Response(body=WAV, headers={"Content-Type": "audio/wav"})

    app = web.Application()
    app.router.add_route("*", "/{name}", serve)
    async with serving(app) as server.base:
        yield server


async def by_url(stack: Stack, url: str, member: Member | None = None) -> Any:
    return await stack.stems("vocals", member=member, options={"url": url})


# --- 2.1 the operator's ceilings ------------------------------------------------------------


async def test_moderators_cannot_set_limits_above_the_operators_ceilings(tmp_path: Path) -> None:
    """Above the ceiling: refused, naming it, nothing changed; at the ceiling: accepted."""
    env = {"STEMBOT_MAX_GUILD_DAILY_LIMIT": "100", "STEMBOT_MAX_GUILD_MONTHLY_LIMIT": "1000"}
    async with running_stack(tmp_path / "db.sqlite", env) as stack:
        mod = moderator(stack)
        refused = await admin(stack, "limits", mod, {"daily": 101, "monthly": 900})
        assert refused["content"] == (
            "This bot's operator caps the daily limit at 100 units. Choose 100 or less."
        )
        refused = await admin(stack, "limits", mod, {"monthly": 1_000_000})
        assert "caps the monthly limit at 1,000 units" in refused["content"]
        assert stack.ledger().guilds.guild_limits(stack.guild.id).overridden == frozenset()
        accepted = await admin(stack, "limits", mod, {"daily": 100, "monthly": 1000})
        assert "Server per UTC day: **100 units** (set on this server)" in text_of(accepted)


async def test_a_limit_set_before_the_ceiling_is_held_to_it(tmp_path: Path) -> None:
    """A daily 100 a moderator set before the operator chose a ceiling of 1 binds at 1."""
    env = {"STEMBOT_MAX_GUILD_DAILY_LIMIT": "1", "STEMBOT_GUILD_DAILY_LIMIT": "1"}
    async with running_stack(tmp_path / "db.sqlite", env) as stack:
        stack.ledger().guilds.set_limits(stack.guild.id, daily=100)  # as an older bot let them
        await stack.answer(await stack.stems())
        assert "used 1 of its 1 daily units" in await stack.refusal(await stack.stems())
        shown = text_of(await admin(stack, "limits", moderator(stack), {"monthly": 400}))
        assert "Server per UTC day: **1 unit** (the most the bot's operator allows)" in shown


# --- 2.4 back to the default ------------------------------------------------------------------


async def test_a_moderator_can_reset_a_limit_to_the_default(stack: Stack) -> None:
    """daily:1 binds; reset:daily brings back the default 50 and the next request runs."""
    mod = moderator(stack)
    await admin(stack, "limits", mod, {"daily": 1, "monthly": 40})
    await stack.answer(await stack.stems())
    assert "daily units" in await stack.refusal(await stack.stems())
    message = await admin(stack, "limits", mod, {"reset": "daily"})
    text = text_of(message)
    assert "Server per UTC day: **50 units** (default)" in text
    assert "Server per UTC month: **40 units** (set on this server)" in text
    assert is_result(await stack.answer(await stack.stems()))
    everything = await admin(stack, "limits", mod, {"reset": "all"})
    assert "Server per UTC month: **500 units** (default)" in text_of(everything)
    assert stack.ledger().guilds.guild_limits(stack.guild.id).overridden == frozenset()


async def test_a_limit_cannot_be_set_and_reset_at_once(stack: Stack) -> None:
    """daily:5 with reset:daily is contradictory: refused, nothing changed."""
    message = await admin(stack, "limits", moderator(stack), {"daily": 5, "reset": "daily"})
    assert "can't be both set and reset" in message["content"]
    assert stack.ledger().guilds.guild_limits(stack.guild.id).overridden == frozenset()


# --- 2.2 the bot-wide API budget -----------------------------------------------------------


async def test_a_spent_api_budget_refuses_new_calls_but_not_repeats_or_joins(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Budget 1: the second new song is refused privately with no call; a member joining the
    running call and a later repeat are answered; the log says so once."""
    env = {"STEMBOT_API_DAILY_BUDGET": "1"}
    caplog.set_level(logging.INFO, logger="stembot")
    async with running_stack(tmp_path / "db.sqlite", env, api_latency=0.5) as stack:
        track = stack.upload("track.wav")
        first = await stack.stems(options={"file": track})
        await eventually(lambda: stack.api_calls() == 1)
        bob = stack.discord.add_member(stack.guild, "bob")
        joined = await stack.stems(member=bob, options={"file": track})
        carol = stack.discord.add_member(stack.guild, "carol")
        refused = await stack.stems(member=carol)
        text = await stack.refusal(refused)
        assert text.startswith("stembot has made all the new separations it can today (1 across")
        assert "songs already split recently are still answered" in text
        assert is_result(await stack.answer(first))
        assert is_result(await stack.answer(joined))
        again = await stack.stems(member=carol, options={"file": track})
        assert is_result(await stack.answer(again))
        await stack.refusal(await stack.stems(member=carol))
        assert stack.api_calls() == 1
        quota = await stack.discord.slash("stems quota", member=carol, channel=stack.channel)
        await eventually(lambda: quota.view().original is not None)
        assert "stembot has made all the new separations it can today" in text_of(
            quota.view().original or {}
        )
    notices = [r for r in caplog.records if "API daily budget is spent" in r.getMessage()]
    assert len(notices) == 1 and notices[0].levelno == logging.WARNING


async def test_the_budget_is_kept_across_a_restart(tmp_path: Path) -> None:
    """A restarted bot still knows today's calls: no fresh budget."""
    env = {"STEMBOT_API_DAILY_BUDGET": "1"}
    async with running_stack(tmp_path / "db.sqlite", env) as stack:
        await stack.answer(await stack.stems())
    async with running_stack(tmp_path / "db.sqlite", env) as stack:
        text = await stack.refusal(await stack.stems())
        assert "new separations it can today" in text
        assert stack.api_calls() == 0


# --- 2.3 per-role allowances ---------------------------------------------------------------


async def test_a_roles_members_get_their_own_daily_allowance(stack: Stack) -> None:
    """per_user 1 for the server, 3 for Patrons (2 for DJs): a Patron and DJ gets 3, shown in
    /stems quota and /stems-admin usage; removed, the member is back to 1."""
    patrons = await stack.discord.add_role(stack.guild, "Patrons")
    djs = await stack.discord.add_role(stack.guild, "DJs")
    mod = moderator(stack)
    await admin(stack, "limits", mod, {"per_user": 1})
    set_ = await admin(stack, "limits", mod, {"role": patrons, "per_user": 3})
    assert f"Members of <@&{patrons.id}>: **3 units** a day" in text_of(set_)
    await admin(stack, "limits", mod, {"role": djs, "per_user": 2})
    patron = stack.discord.add_member(stack.guild, "pat", roles=[djs, patrons])
    for _ in range(3):
        assert is_result(await stack.answer(await stack.stems(member=patron)))
    assert "You have used 3 of your 3 daily units" in await stack.refusal(
        await stack.stems(member=patron)
    )
    await stack.answer(await stack.stems())  # a plain member: 1
    assert "used 1 of your 1 daily" in await stack.refusal(await stack.stems())
    quota = await stack.discord.slash("stems quota", member=patron, channel=stack.channel)
    await eventually(lambda: quota.view().original is not None)
    original = quota.view().original
    assert original is not None
    fields = {f["name"]: f["value"] for f in original["embeds"][0]["fields"]}
    assert fields["You today (your role's allowance)"].startswith("**0** of 3 units left")
    usage = text_of(await admin(stack, "usage", mod))
    assert f"Members of <@&{patrons.id}>: **3 units** a day" in usage
    assert f"Members of <@&{djs.id}>: **2 units** a day" in usage
    removed = await admin(stack, "limits", mod, {"role": patrons, "reset": "per_user"})
    assert f"<@&{patrons.id}>" not in text_of(removed)
    status = stack.ledger().quotas.quota_status(
        stack.guild.id, patron.id, _now(), (patrons.id, djs.id)
    )
    assert status.user_daily is not None and status.user_daily.limit == 2


async def test_a_result_shows_the_members_role_allowance(stack: Stack) -> None:
    """The units-left line under a Patron's result counts against the role's allowance (3),
    not the server's per-member limit (1)."""
    patrons = await stack.discord.add_role(stack.guild, "Patrons")
    mod = moderator(stack)
    await admin(stack, "limits", mod, {"per_user": 1})
    await admin(stack, "limits", mod, {"role": patrons, "per_user": 3})
    patron = stack.discord.add_member(stack.guild, "pat", roles=[patrons])
    result = await stack.answer(await stack.stems(member=patron))
    assert "you: 2/3 today" in result["embeds"][0]["footer"]["text"]


async def test_a_role_allowance_cannot_exceed_the_servers_daily_limit(stack: Stack) -> None:
    """A role's allowance above the server's day is refused, naming the daily limit."""
    patrons = await stack.discord.add_role(stack.guild, "Patrons")
    message = await admin(stack, "limits", moderator(stack), {"role": patrons, "per_user": 51})
    assert message["content"] == (
        "A role's allowance can't be above this server's daily limit (50 units). Choose 50 or less."
    )
    assert stack.ledger().guilds.guild_limits(stack.guild.id).role_allowances == ()


# --- 3.1 cheap checks before the URL probe ---------------------------------------------------


async def test_a_switched_off_server_fetches_nothing(stack: Stack) -> None:
    """daily 0: the link is refused before its server is asked for a single byte."""
    await admin(stack, "limits", moderator(stack), {"daily": 0})
    async with counting_audio() as audio:
        text = await stack.refusal(await by_url(stack, audio.url()))
        assert "switched off" in text
        assert audio.fetches == []
    assert stack.api_calls() == 0


async def test_a_spent_member_and_a_spent_budget_fetch_nothing(tmp_path: Path) -> None:
    """A member out of units, then everyone past the bot-wide budget: no fetch either way."""
    env = {"STEMBOT_USER_DAILY_LIMIT": "1", "STEMBOT_API_DAILY_BUDGET": "2"}
    async with running_stack(tmp_path / "db.sqlite", env) as stack, counting_audio() as audio:
        await stack.answer(await stack.stems())
        text = await stack.refusal(await by_url(stack, audio.url("a.wav")))
        assert "used 1 of your 1 daily units" in text
        bob = stack.discord.add_member(stack.guild, "bob")
        await stack.answer(await stack.stems(member=bob))
        carol = stack.discord.add_member(stack.guild, "carol")
        text = await stack.refusal(await by_url(stack, audio.url("b.wav"), carol))
        assert "new separations it can today" in text
        assert audio.fetches == []
        assert stack.api_calls() == 2


async def test_a_member_with_a_request_in_progress_fetches_nothing(tmp_path: Path) -> None:
    """One request at a time: a second link while the first runs is refused unfetched."""
    async with (
        running_stack(tmp_path / "db.sqlite", api_latency=1.0) as stack,
        counting_audio() as audio,
    ):
        running = await stack.stems()
        await eventually(lambda: stack.api_calls() == 1)
        text = await stack.refusal(await by_url(stack, audio.url()))
        assert "already have a request queued or running" in text
        assert audio.fetches == []
        await stack.answer(running)


async def test_a_spent_member_still_gets_a_stored_repeat_of_a_link(tmp_path: Path) -> None:
    """The precheck knows the link's reuse key: a repeat answered free is not refused."""
    env = {"STEMBOT_USER_DAILY_LIMIT": "1"}
    async with running_stack(tmp_path / "db.sqlite", env) as stack, counting_audio() as audio:
        assert is_result(await stack.answer(await by_url(stack, audio.url())))
        again = await by_url(stack, audio.url())
        assert is_result(await stack.answer(again))
        assert stack.api_calls() == 1
        assert used_today(stack) == 1


# --- 3.3 the hand-over rule ------------------------------------------------------------------


async def test_a_cancelled_payers_charge_goes_to_the_next_requester_with_room(
    tmp_path: Path,
) -> None:
    """Alice pays, Bob (spent) and Carol (room) join; Alice cancels: Carol carries the charge,
    Bob stays within his limit, the call is paid once, everyone gets the stems, and Carol's
    request is the one a moderator refunds."""
    env = {"STEMBOT_MAX_CONCURRENT_JOBS": "1", "STEMBOT_USER_DAILY_LIMIT": "1"}
    async with running_stack(tmp_path / "db.sqlite", env, api_latency=0.7) as stack:
        bob = stack.discord.add_member(stack.guild, "bob")
        carol = stack.discord.add_member(stack.guild, "carol")
        dave = stack.discord.add_member(stack.guild, "dave")
        await stack.answer(await stack.stems(member=bob))  # Bob's one unit today
        await stack.stems(member=dave)  # holds the only slot
        track = stack.upload("shared.wav")
        payer = await stack.stems(options={"file": track})
        await eventually(lambda: _cancel_button(payer) is not None)
        bobs = await stack.stems(member=bob, options={"file": track})
        carols = await stack.stems(member=carol, options={"file": track})
        await eventually(lambda: stack.ledger().ledger.get_request(5) is not None)
        assert payer.original is not None
        await stack.discord.click(payer.original, _cancel_id(payer), member=stack.member)
        await eventually(lambda: request_status_of(stack, 3) is RequestStatus.CANCELLED)
        assert is_result(await stack.answer(bobs))
        assert is_result(await stack.answer(carols))
        ledger = stack.ledger()
        now = _now()
        for member, used in ((stack.member, 0), (bob, 1), (carol, 1)):
            status = ledger.quotas.quota_status(stack.guild.id, member.id, now)
            assert status.user_daily is not None
            assert status.user_daily.used == used <= status.user_daily.limit
        assert used_today(stack) == 3  # Bob's, Dave's, and the shared call once
        assert stack.api_calls() == 3
        # Carol is now the payer of record: refunding her forgets the stored result.
        refund = await admin(stack, "refund", moderator(stack), {"request_id": 5})
        assert refund["content"].startswith("Refunded request 5 ")
        erin = stack.discord.add_member(stack.guild, "erin")
        assert is_result(
            await stack.answer(await stack.stems(member=erin, options={"file": track}))
        )
        assert stack.api_calls() == 4


async def test_with_nobody_left_with_room_the_server_alone_carries_the_charge(
    tmp_path: Path,
) -> None:
    """Alice pays, Bob (spent) joins; Alice cancels: the server's day keeps the charge and
    Bob's own day does not go over his limit."""
    env = {"STEMBOT_MAX_CONCURRENT_JOBS": "1", "STEMBOT_USER_DAILY_LIMIT": "1"}
    async with running_stack(tmp_path / "db.sqlite", env, api_latency=0.7) as stack:
        bob = stack.discord.add_member(stack.guild, "bob")
        dave = stack.discord.add_member(stack.guild, "dave")
        await stack.answer(await stack.stems(member=bob))
        await stack.stems(member=dave)
        track = stack.upload("shared.wav")
        payer = await stack.stems(options={"file": track})
        await eventually(lambda: _cancel_button(payer) is not None)
        bobs = await stack.stems(member=bob, options={"file": track})
        await eventually(lambda: stack.ledger().ledger.get_request(4) is not None)
        assert payer.original is not None
        await stack.discord.click(payer.original, _cancel_id(payer), member=stack.member)
        assert is_result(await stack.answer(bobs))
        status = stack.ledger().quotas.quota_status(stack.guild.id, bob.id, _now())
        assert status.user_daily is not None and status.user_daily.used == 1
        assert status.guild_daily.used == 3
        usage = text_of(await admin(stack, "usage", moderator(stack)))
        assert f"<@{bob.id}> ({bob.id}): 1 unit, 2 requests" in usage
        out = io.StringIO()
        stack.ledger().reports.stream_ledger(
            stack.guild.id, _now() - timedelta(hours=1), _now(), out
        )
        rows = {r["request_id"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
        assert (rows["4"]["charged"], rows["4"]["charged_to"]) == ("1", "server")
        assert rows["1"]["charged_to"] == "member"


def request_status_of(stack: Stack, request_id: int) -> RequestStatus | None:
    request = stack.ledger().ledger.get_request(request_id)
    return None if request is None else request.status


def _now() -> datetime:
    return datetime.now(UTC)
