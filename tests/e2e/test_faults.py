"""Fault injection, end to end: for each fault, what the user finally sees, what the ledger
holds afterwards, and how many API calls were made. Nothing lost, nothing charged twice.

Covered elsewhere, not repeated here:
- API: a hang past the timeout, 429 past the retry budget, a malformed body, {"Detail": ...}:
    test_bot_behaviour.py::test_an_api_failure_is_explained_and_refunded
  503 then success: test_bot_behaviour.py::test_a_503_is_retried_and_the_result_delivered_...
  an invalid key: test_bot_behaviour.py::test_a_refused_api_key_gets_a_neutral_answer_...
- Discord: the token expired before delivery (channel post with a mention):
    test_stems_flow.py::test_a_result_after_token_expiry_is_posted_in_the_channel
  the channel post refused, DM fallback:
    test_stems_flow.py::test_the_dm_fallback_runs_when_the_channel_refuses
  the same interaction delivered twice:
    test_bot_behaviour.py::test_an_interaction_delivered_twice_runs_and_charges_once
- Process: SIGKILL mid-request then restart, SIGTERM with requests queued and running:
    test_restart.py.
- Input: a link redirecting to a private address is stopped at connect time on every hop:
    tests/test_url_probe.py::test_redirect_to_private_literal_is_refused_without_connecting
    tests/test_url_probe.py::test_redirect_to_name_resolving_private_is_refused_without_connecting
  (with everything on loopback the stack has no public first hop to redirect from); a loopback
  link with private URLs forbidden, through the bot:
    test_bot_behaviour.py::test_a_link_to_a_loopback_address_is_refused_without_cost
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from stembot.config import QuotaPolicy
from stembot.errors import StoreBusyError
from stembot.models import RequestStatus
from stembot.store import Store
from tests.e2e.stack import (
    API_KEY,
    WAV,
    BotProcess,
    Stack,
    acked_in_time,
    channel_posts,
    description,
    eventually,
    is_result,
    request_status,
    running_stack,
    stack_env,
    used_today,
)
from tests.standins.discord import EPHEMERAL, DiscordEmulator, Guild, InteractionRecord, Member
from tests.standins.local_http import serving
from tests.standins.soundverse import Reply, SoundverseStandin

PATCH_ORIGINAL = "/webhooks/{webhook_id}/{webhook_token}/messages/@original"
FOLLOWUP = "/webhooks/{webhook_id}/{webhook_token}"
CHANNEL_POST = "/channels/{channel_id}/messages"
NOT_CHARGED = "not charged"


# --- helpers --------------------------------------------------------------------------------


def statuses(stack: Stack, method: str, route: str) -> list[int]:
    """Discord's answers to the bot's ``method route`` calls, in order (429s included: they
    never reach a handler, so they are not in an interaction's own calls)."""
    return [c.status for c in stack.discord.calls if c.method == method and c.route == route]


def nothing_else_posted(stack: Stack, interaction: InteractionRecord) -> bool:
    """The answer is the interaction's own message: no followup, channel post or DM."""
    return (
        interaction.followups == []
        and channel_posts(stack.discord, stack.channel) == []
        and stack.discord.dm_messages(stack.member) == []
    )


# --- API faults that pass: retried, answered once, charged once -------------------------------


@dataclass(frozen=True)
class Passing:
    reply: Reply
    # The least time the client must have waited before its second call.
    wait_s: float


PASSING = {
    "429 with Retry-After": Passing(Reply.http_status(429, retry_after="1"), 1.0),
    # No Retry-After: the client's own backoff, 1 s less up to 25 % jitter.
    "429 without Retry-After": Passing(Reply.http_status(429), 0.75),
    "502 HTML page": Passing(Reply.html(502), 0.75),
}


@pytest.mark.parametrize("fault", PASSING.values(), ids=PASSING.keys())
async def test_an_api_fault_that_passes_is_retried_and_charged_once(
    stack: Stack, fault: Passing
) -> None:
    """One refused attempt, then success: two calls, spaced as asked, one answer, one unit."""
    stack.api.fail_next(fault.reply)
    interaction = await stack.stems("vocals")
    final = await stack.answer(interaction, timeout_s=15)
    assert is_result(final)
    assert nothing_else_posted(stack, interaction)
    first, second = stack.api.requests
    assert second.received_at - first.received_at >= fault.wait_s
    assert used_today(stack) == 1
    assert request_status(stack, 1) is RequestStatus.SUCCEEDED


# --- API faults that end the request: one honest answer, refunded ------------------------------


@dataclass(frozen=True)
class Ending:
    reply: Reply
    shown: str
    calls: int


ENDING = {
    # The API may have done (and billed) the work: never repeated, the user told so.
    "500": Ending(Reply.http_status(500), "the result is unknown", 1),
    "reset after the request was sent": Ending(Reply.reset(), "the result is unknown", 1),
    # A wait past the call's deadline (STEMBOT_API_TIMEOUT_S=5 in the stack) is not waited.
    "429 asking for longer than the deadline": Ending(
        Reply.http_status(429, retry_after="30"), "is busy", 1
    ),
}


@pytest.mark.parametrize("fault", ENDING.values(), ids=ENDING.keys())
async def test_an_api_fault_that_ends_the_request_is_explained_and_refunded(
    stack: Stack, fault: Ending
) -> None:
    """The user is told what happened and that it cost nothing; the call is not repeated."""
    stack.api.fail_next(fault.reply)
    interaction = await stack.stems("vocals")
    final = await stack.answer(interaction, timeout_s=15)
    assert fault.shown in description(final)
    assert NOT_CHARGED in description(final)
    assert not is_result(final)
    assert nothing_else_posted(stack, interaction)
    assert stack.api_calls() == fault.calls
    assert used_today(stack) == 0
    assert request_status(stack, 1) is RequestStatus.FAILED


# --- Discord faults ---------------------------------------------------------------------------


async def test_a_rate_limited_final_edit_is_retried_and_delivered_once(tmp_path: Path) -> None:
    """Two 429s (with Via) on the edit carrying the result: discord.py waits; one answer."""
    async with running_stack(tmp_path / "db.sqlite", api_latency=0.5) as stack:
        interaction = await stack.stems("vocals")
        # The "processing" status edit goes through first; the next edit is the result.
        await eventually(lambda: statuses(stack, "PATCH", PATCH_ORIGINAL) == [200])
        stack.discord.rate_limit("PATCH", PATCH_ORIGINAL, times=2)
        final = await stack.answer(interaction)
        assert is_result(final)
        assert statuses(stack, "PATCH", PATCH_ORIGINAL) == [200, 429, 429, 200]
        assert nothing_else_posted(stack, interaction)
        assert stack.api_calls() == 1
        assert used_today(stack) == 1


async def test_a_cloudflare_429_on_the_final_edit_falls_back_to_the_channel(
    tmp_path: Path,
) -> None:
    """A 429 without Via is not retried by discord.py: the result is posted in the channel once."""
    async with running_stack(tmp_path / "db.sqlite", api_latency=0.5) as stack:
        interaction = await stack.stems("vocals")
        await eventually(lambda: statuses(stack, "PATCH", PATCH_ORIGINAL) == [200])
        stack.discord.rate_limit("PATCH", PATCH_ORIGINAL, times=1, via=False)
        await eventually(lambda: channel_posts(stack.discord, stack.channel))
        await asyncio.sleep(0.2)  # room for a wrongly repeated delivery to show itself
        (posted,) = channel_posts(stack.discord, stack.channel)
        assert posted.content.startswith(f"<@{stack.member.id}> your stems for")
        assert is_result(posted.data)
        assert statuses(stack, "PATCH", PATCH_ORIGINAL) == [200, 429]
        assert interaction.followups == []
        assert stack.discord.dm_messages(stack.member) == []
        assert stack.api_calls() == 1
        assert used_today(stack) == 1
        assert request_status(stack, 1) is RequestStatus.SUCCEEDED


async def test_a_rate_limited_followup_is_retried_and_sent_once(stack: Stack) -> None:
    """A refusal's private followup meets two 429s: it arrives once; no call, no charge."""
    page = stack.upload("page.html", "text/html", b"<!doctype html><html></html>")
    stack.discord.rate_limit("POST", FOLLOWUP, times=2)
    interaction = await stack.stems("vocals", options={"url": page["url"]})
    assert "web page" in await stack.refusal(interaction)
    assert statuses(stack, "POST", FOLLOWUP) == [429, 429, 200]
    assert len(interaction.followups) == 1
    assert stack.api_calls() == 0
    assert used_today(stack) == 0
    assert stack.ledger().ledger.get_request(1) is None


async def test_a_result_with_nowhere_to_go_is_kept_and_given_free_on_request(
    tmp_path: Path,
) -> None:
    """Token expired, channel and DMs refused: charged once; asking again gets it free."""
    async with running_stack(tmp_path / "db.sqlite", api_latency=0.3) as stack:
        stack.discord.refuse_channel(stack.channel)
        stack.discord.refuse_dms(stack.member)
        track = stack.upload()
        interaction = await stack.stems("vocals", options={"file": track})
        await stack.discord.acknowledged(interaction)
        stack.discord.age(interaction, 16 * 60)
        await eventually(lambda: _refused_posts(stack) == 2)  # the channel, then the DM
        assert interaction.view().original is not None  # still the status; the token is gone
        assert channel_posts(stack.discord, stack.channel) == []
        assert stack.discord.dm_messages(stack.member) == []
        assert request_status(stack, 1) is RequestStatus.SUCCEEDED
        assert used_today(stack) == 1
        again = await stack.stems("vocals", options={"file": track})
        assert is_result(await stack.answer(again))
        assert stack.api_calls() == 1
        assert used_today(stack) == 1


def _refused_posts(stack: Stack) -> int:
    return len([c for c in stack.discord.calls if c.route == CHANNEL_POST and c.status == 403])


@pytest.mark.parametrize("how", ["drop", "reconnect"])
async def test_a_gateway_break_mid_request_is_resumed_and_nothing_is_lost(
    tmp_path: Path, how: str
) -> None:
    """A break while a request runs: RESUME; both the running and a mid-break request served."""
    async with running_stack(tmp_path / "db.sqlite", api_latency=0.5) as stack:
        gateway = stack.discord.gateway
        first = await stack.stems("vocals")
        await eventually(lambda: stack.api_calls() == 1)
        if how == "drop":
            await stack.discord.drop_gateway()
        else:
            await stack.discord.request_reconnect()
        bob = stack.discord.add_member(stack.guild, "bob")
        second = await stack.stems("vocals", member=bob)
        finals = [await stack.answer(first), await stack.answer(second)]
        assert all(is_result(final) for final in finals)
        assert [e.op for e in gateway.log] == ["IDENTIFY", "RESUME"]
        assert acked_in_time(second)
        assert stack.api_calls() == 2
        assert used_today(stack) == 2
        assert [request_status(stack, n) for n in (1, 2)] == [RequestStatus.SUCCEEDED] * 2


# --- Process faults -----------------------------------------------------------------------------

# Short enough for a fast test; the default is 5 s (STEMBOT_DB_BUSY_TIMEOUT_S).
BUSY_TIMEOUT_S = 1.0

_HOLD_WRITE_LOCK = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
connection.rollback()
"""


@contextlib.asynccontextmanager
async def write_lock_held_by_another_process(db_path: Path) -> AsyncIterator[None]:
    """Another OS process holds the database's write lock until the block ends."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOLD_WRITE_LOCK,
        str(db_path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert await asyncio.wait_for(holder.stdout.readline(), 10) == b"locked\n"
        yield
    finally:
        holder.stdin.close()
        await asyncio.wait_for(holder.wait(), 10)


@pytest.mark.slow
async def test_a_database_locked_past_the_busy_timeout_refuses_at_no_cost(tmp_path: Path) -> None:
    """Another process holds the write lock: "busy, try again", free; then served again."""
    db = tmp_path / "stembot.db"
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY) as api:
        guild = await discord.add_guild()
        alice, bob = discord.add_member(guild, "alice"), discord.add_member(guild, "bob")
        env = {**stack_env(discord, api, db), "STEMBOT_DB_BUSY_TIMEOUT_S": str(BUSY_TIMEOUT_S)}
        bot = BotProcess(env, tmp_path / "bot.log")
        await bot.start()
        try:
            await discord.wait_ready(timeout_s=20)
            async with write_lock_held_by_another_process(db):
                refused = await _slash_vocals(discord, guild, alice)
                await discord.acknowledged(refused)
                # Store calls run on the bot's event loop: this waits for the store to give up.
                bystander = await discord.slash("stems quota", member=bob)
                await discord.acknowledged(bystander, timeout_s=10)
                await eventually(lambda: refused.followups)
            served = await _slash_vocals(discord, guild, alice)
            await eventually(lambda: is_result(served.view().original or {}), 10)
        finally:
            bot.signal(signal.SIGTERM)
            assert await bot.wait() == 0, bot.log_text()
        (followup,) = refused.view().followups
        assert followup["content"] == StoreBusyError().user_message
        assert followup["flags"] & EPHEMERAL
        assert refused.view().original is None  # the public "thinking" message is gone
        assert len(api.requests) == 1  # the served request only
    store = Store.open(db, QuotaPolicy())
    assert [store.ledger.get_request(n) is not None for n in (1, 2)] == [True, False]
    assert store.quotas.quota_status(guild.id, None, datetime.now(UTC)).guild_daily.used == 1
    store.close()
    assert acked_in_time(bystander)
    assert bystander.acked_at is not None
    stalled = bystander.acked_at - bystander.created_at
    print(f"\nacknowledging a bystander took {stalled:.2f} s (busy timeout {BUSY_TIMEOUT_S} s)")


@pytest.mark.slow
async def test_a_database_held_for_five_seconds_delays_no_acknowledgement(tmp_path: Path) -> None:
    """Another process holds the write lock for 5 s while members keep asking: the store
    waits on its own threads, so every interaction is still acknowledged within 3 s."""
    db = tmp_path / "stembot.db"
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY) as api:
        guild = await discord.add_guild()
        members = [discord.add_member(guild, f"member{n}") for n in range(6)]
        env = {**stack_env(discord, api, db), "STEMBOT_DB_BUSY_TIMEOUT_S": "5"}
        bot = BotProcess(env, tmp_path / "bot.log")
        await bot.start()
        try:
            await discord.wait_ready(timeout_s=20)
            asked: list[InteractionRecord] = []
            async with write_lock_held_by_another_process(db):
                for member in members:
                    asked.append(await _slash_vocals(discord, guild, member))
                    asked.append(await discord.slash("stems quota", member=member))
                    await asyncio.sleep(0.4)
                for interaction in asked:
                    await discord.acknowledged(interaction, timeout_s=10)
            for interaction in asked:
                await eventually(functools.partial(_answered, interaction))
        finally:
            bot.signal(signal.SIGTERM)
            assert await bot.wait() == 0, bot.log_text()
    late = [(i.created_at, i.acked_at) for i in asked if not acked_in_time(i)]
    assert not late, f"acknowledged after the 3 s deadline (asked, acknowledged): {late}"


def _answered(interaction: InteractionRecord) -> bool:
    view = interaction.view()
    return bool(view.followups or view.original)


async def _slash_vocals(
    discord: DiscordEmulator, guild: Guild, member: Member
) -> InteractionRecord:
    attachment = discord.upload_attachment(WAV, "song.wav", "audio/wav")
    return await discord.slash(
        "stems vocals", member=member, channel=guild.default_channel, options={"file": attachment}
    )


async def test_a_database_locked_when_the_api_answers_loses_nothing(tmp_path: Path) -> None:
    """Locked from mid-call past the settle's timeout: stems delivered, charged once, unstuck."""
    env = {"STEMBOT_DB_BUSY_TIMEOUT_S": "0.5"}
    async with running_stack(tmp_path / "db.sqlite", env, api_latency=0.8) as stack:
        interaction = await stack.stems("vocals")
        await eventually(lambda: stack.api_calls() == 1)
        async with write_lock_held_by_another_process(stack.settings.db_path):
            await eventually(lambda: stack.api.in_flight == 0)
            # The bot shares this event loop: this sleep ends after its settle gave up.
            await asyncio.sleep(1.0)
        final = await stack.answer(interaction, timeout_s=2)
        assert is_result(final)
        assert request_status(stack, 1) is RequestStatus.SUCCEEDED
        assert used_today(stack) == 1
        assert stack.api_calls() == 1
        again = await stack.stems("all")
        assert is_result(await stack.answer(again))


# --- Input faults (url: sources, probed before anything is spent) -------------------------------

# The probe's overall deadline for the trickling server; the default is 20 s.
PROBE_TIMEOUT_S = 1.0


async def _longer_than_declared(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Declares 1000 bytes of WAV, then keeps sending far more."""
    try:
        await reader.readuntil(b"\r\n\r\n")
        head = b"HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nContent-Length: 1000\r\n\r\n"
        writer.write(head + WAV[:1000] + bytes(256 * 1024))
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _trickle(request: web.Request) -> web.StreamResponse:
    """A byte every 50 ms: each read is quick, the whole never arrives in time."""
    response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
    response.content_length = len(WAV)
    await response.prepare(request)
    for byte in WAV[:100]:  # bounded: ~5 s, long after the probe gave up
        await response.write(bytes([byte]))
        await asyncio.sleep(0.05)
    return response


@contextlib.asynccontextmanager
async def odd_servers() -> AsyncIterator[dict[str, str]]:
    """Local servers misbehaving as a user's link can; yields their URLs by fault."""
    raw = await asyncio.start_server(_longer_than_declared, "127.0.0.1", 0)
    app = web.Application()
    app.router.add_get("/trickle.wav", _trickle)
    try:
        async with serving(app) as base:
            yield {
                "body longer than its Content-Length": (
                    f"http://127.0.0.1:{raw.sockets[0].getsockname()[1]}/song.wav"
                ),
                "trickling server": f"{base}/trickle.wav",
            }
    finally:
        raw.close()
        await raw.wait_closed()


INPUT_FAULTS = {
    "expired CDN link": "That link no longer works (the server answered 404 Not Found)",
    "body longer than its Content-Length": "The server for that link sent a malformed answer",
    "trickling server": f"That link took too long to answer (over {PROBE_TIMEOUT_S:g} second",
}


@pytest.mark.parametrize("fault", INPUT_FAULTS.keys())
async def test_a_bad_link_is_refused_privately_at_no_cost(tmp_path: Path, fault: str) -> None:
    """Acknowledged within 3 s, then a private, specific refusal; no call, no row, no charge."""
    env = {"STEMBOT_URL_PROBE_TIMEOUT_S": str(PROBE_TIMEOUT_S)}
    async with running_stack(tmp_path / "db.sqlite", env) as stack, odd_servers() as urls:
        if fault == "expired CDN link":
            expired = stack.discord.upload_attachment(
                WAV, "song.wav", "audio/wav", expires_in_s=-60
            )
            urls[fault] = expired["url"]
        interaction = await stack.stems("vocals", options={"url": urls[fault]})
        text = await stack.refusal(interaction)
        assert acked_in_time(interaction)
        assert text.startswith(INPUT_FAULTS[fault])
        assert stack.api_calls() == 0
        assert stack.ledger().ledger.get_request(1) is None
        assert used_today(stack) == 0
