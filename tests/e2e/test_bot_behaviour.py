"""How the bot behaves around a request, end to end: status, concurrency, acks, failures,
duplicates, secrets. The real bot over the loopback Discord and the Soundverse stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from stembot.bot import delivery
from stembot.errors import IncidentError
from stembot.logs import TOKEN_CARRYING_LOGGERS, configure_logging
from stembot.models import RequestStatus
from stembot.stem_service import StemService
from tests.e2e.stack import (
    API_KEY,
    STATUS_PROMISE,
    WAV,
    Stack,
    acked_in_time,
    channel_posts,
    description,
    eventually,
    is_result,
    running_stack,
    used_today,
)
from tests.standins.discord import DEFAULT_SPEC_PATH, InteractionRecord
from tests.standins.local_http import serving
from tests.standins.soundverse import Reply

# Small enough to keep the status tests fast, large enough to be seen in the edit times.
FAST_STATUS_INTERVAL_S = 0.25
# Emulator timestamps are taken on arrival, the bot's throttle clock before sending.
CLOCK_SLACK_S = 0.1


# --- helpers --------------------------------------------------------------------------------


def waiting_count(service: StemService) -> int:
    """Calls queued in the service, not yet started (identical requests share one)."""
    return sum(1 for flight in service._board._by_key.values() if not flight.started)


def running_count(service: StemService) -> int:
    """Calls the service has running now."""
    return len(service._calls._running)


def whole_text(message: dict[str, Any]) -> str:
    return f"{message.get('content', '')} {message.get('embeds', '')}"


def is_status(message: dict[str, Any]) -> bool:
    return STATUS_PROMISE in description(message)


def edits_of(interaction: InteractionRecord) -> list[tuple[float, dict[str, Any]]]:
    """Every state of the public response after the deferral, with the time Discord got it."""
    assert interaction.original is not None
    return interaction.original.history[1:]


def status_edits(interaction: InteractionRecord) -> list[tuple[float, dict[str, Any]]]:
    return [(at, data) for at, data in edits_of(interaction) if is_status(data)]


def shown_states(interaction: InteractionRecord) -> list[str]:
    """The status descriptions the user saw, in order, repeats folded."""
    states: list[str] = []
    for _, data in status_edits(interaction):
        if not states or states[-1] != description(data):
            states.append(description(data))
    return states


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


# --- 1. the status message ------------------------------------------------------------------


async def test_queued_requesters_see_their_place_then_processing_then_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One call at a time: the third requester sees #2, then next, then processing, then stems."""
    monkeypatch.setattr(delivery, "STATUS_EDIT_INTERVAL_S", FAST_STATUS_INTERVAL_S)
    env = {"STEMBOT_MAX_CONCURRENT_JOBS": "1", "STEMBOT_API_TIMEOUT_S": "30"}
    async with running_stack(tmp_path / "db.sqlite", env) as stack:
        # The first call holds the line until all three are in; the second lasts long enough
        # for the third to be seen at the front.
        stack.api.script(Reply.hang(1.0), Reply.hang(4 * FAST_STATUS_INTERVAL_S))
        bob = stack.discord.add_member(stack.guild, "bob")
        carol = stack.discord.add_member(stack.guild, "carol")
        service = stack.bot.service
        first = await stack.stems("vocals")
        await eventually(lambda: stack.api_calls() == 1)
        second = await stack.stems("vocals", member=bob)
        await eventually(lambda: waiting_count(service) == 1)
        third = await stack.stems("vocals", member=carol)
        await eventually(lambda: waiting_count(service) == 2)
        finals = [await stack.answer(i) for i in (first, second, third)]
    assert all(is_result(final) for final in finals)
    assert "Separating" in shown_states(first)[-1]
    assert "next in the queue" in shown_states(second)[0]
    assert "Separating" in shown_states(second)[-1]
    states = shown_states(third)
    assert "**#2** in the queue" in states[0]
    assert any("next in the queue" in s for s in states[1:-1]), states
    assert "Separating" in states[-1]
    for interaction in (first, second, third):
        spacing = gaps([at for at, _ in status_edits(interaction)])
        assert all(gap >= FAST_STATUS_INTERVAL_S - CLOCK_SLACK_S for gap in spacing), spacing


async def test_a_change_within_5_s_waits_but_the_final_answer_does_not(tmp_path: Path) -> None:
    """Real 5 s throttle: a start just after the queued edit is not shown; the result is."""
    env = {"STEMBOT_MAX_CONCURRENT_JOBS": "1"}
    async with running_stack(tmp_path / "db.sqlite", env) as stack:
        stack.api.script(Reply.hang(1.0))  # the first request holds bob in the queue
        bob = stack.discord.add_member(stack.guild, "bob")
        first = await stack.stems("vocals")
        await eventually(lambda: stack.api_calls() == 1)
        second = await stack.stems("vocals", member=bob)
        final = await stack.answer(second)
        await stack.answer(first)
        request = stack.ledger().ledger.get_request(2)
    assert is_result(final)
    assert request is not None and request.started_at is not None  # it did go through processing
    ((queued_at, queued),) = status_edits(second)  # "processing" came too soon to be shown
    assert "next in the queue" in description(queued)
    answered_at, _ = edits_of(second)[-1]
    assert answered_at - queued_at < delivery.STATUS_EDIT_INTERVAL_S


async def test_status_edits_are_at_least_5_s_apart_and_the_result_is_not(tmp_path: Path) -> None:
    """The real interval: "next", then "processing" no sooner than 5 s later, result right after."""
    env = {"STEMBOT_MAX_CONCURRENT_JOBS": "1", "STEMBOT_API_TIMEOUT_S": "30"}
    async with running_stack(tmp_path / "db.sqlite", env) as stack:
        # bob waits 1 s in the queue; his own call ends 6 s in, after the throttled edit.
        stack.api.script(Reply.hang(1.0), Reply.hang(5.0))
        bob = stack.discord.add_member(stack.guild, "bob")
        first = await stack.stems("vocals")
        await eventually(lambda: stack.api_calls() == 1)
        second = await stack.stems("vocals", member=bob)
        final = await stack.answer(second, timeout_s=20)
        await stack.answer(first)
    assert is_result(final)
    (queued_at, queued), (processing_at, processing) = status_edits(second)
    assert "next in the queue" in description(queued)
    assert "Separating" in description(processing)
    assert processing_at - queued_at >= delivery.STATUS_EDIT_INTERVAL_S - CLOCK_SLACK_S
    answered_at, _ = edits_of(second)[-1]
    assert answered_at - processing_at < delivery.STATUS_EDIT_INTERVAL_S


# --- 2. the concurrency bound and the fair share ---------------------------------------------


async def test_a_burst_of_ten_never_has_more_than_two_api_calls_in_flight(tmp_path: Path) -> None:
    """Ten members at once with a bound of 2: at most 2 calls at a time, all ten answered."""
    env = {"STEMBOT_MAX_CONCURRENT_JOBS": "2"}
    async with running_stack(tmp_path / "db.sqlite", env, api_latency=0.2) as stack:
        members = [stack.discord.add_member(stack.guild, f"fan{n}") for n in range(10)]
        interactions = [await stack.stems("vocals", member=m) for m in members]
        finals = [await stack.answer(i, timeout_s=20) for i in interactions]
        assert stack.api_calls() == 10
        assert stack.api.max_in_flight == 2
        assert used_today(stack) == 10
    assert all(is_result(final) for final in finals)
    assert all(acked_in_time(i) for i in interactions)


async def test_another_guilds_request_starts_before_most_of_a_flood(tmp_path: Path) -> None:
    """Guild A queues 8, then guild B asks once: B's call comes before at least 5 of A's."""
    env = {"STEMBOT_MAX_CONCURRENT_JOBS": "2"}
    async with running_stack(tmp_path / "db.sqlite", env, api_latency=0.2) as stack:
        stack.api.script(Reply.hang(1.0), Reply.hang(1.0))  # the flood stays queued meanwhile
        service = stack.bot.service
        flooders = [stack.discord.add_member(stack.guild, f"fan{n}") for n in range(8)]
        for member in flooders:
            await stack.stems("vocals", member=member)
        await eventually(lambda: waiting_count(service) == 6 and running_count(service) == 2)
        other = await stack.discord.add_guild("Quiet server")
        loner = stack.discord.add_member(other, "loner")
        attachment = stack.discord.upload_attachment(
            WAV, "mine.wav", "audio/wav", channel=other.default_channel
        )
        lone = await stack.discord.slash(
            "stems vocals",
            member=loner,
            channel=other.default_channel,
            options={"file": attachment},
        )
        final = await stack.answer(lone, timeout_s=20)
        await eventually(lambda: stack.api_calls() == 9, timeout_s=20)
        await eventually(lambda: running_count(service) == 0)
    assert is_result(final)
    order = [call.json()["audioUrl"] for call in stack.api.requests]
    flood_after = len(order) - 1 - order.index(attachment["url"])
    assert flood_after >= 5, order


# --- 3. acknowledged within 3 s, whatever the URL's server does --------------------------------


@dataclass
class HeldAudio:
    """A local server that starts sending a WAV file and holds the rest until released."""

    url: str
    asked: asyncio.Event
    release: asyncio.Event


@contextlib.asynccontextmanager
async def held_audio_server() -> AsyncIterator[HeldAudio]:
    asked, release = asyncio.Event(), asyncio.Event()

    async def trickle(request: web.Request) -> web.StreamResponse:
        asked.set()
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        await response.prepare(request)
        await response.write(WAV[:16])
        await release.wait()
        await response.write(WAV[16:])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/slow/song.wav", trickle)
    async with serving(app) as base:
        try:
            yield HeldAudio(f"{base}/slow/song.wav", asked, release)
        finally:
            release.set()


async def test_a_slow_url_is_acknowledged_before_the_probe_finishes(stack: Stack) -> None:
    """While the link's server still holds the file back, the interaction is already deferred."""
    async with held_audio_server() as server:
        interaction = await stack.stems("vocals", options={"url": server.url})
        await asyncio.wait_for(server.asked.wait(), 5)
        assert await stack.discord.acknowledged(interaction) == 5  # deferred, probe still held
        assert acked_in_time(interaction)
        assert stack.api_calls() == 0
        server.release.set()
        final = await stack.answer(interaction)
    assert is_result(final)
    assert stack.api.requests[0].json() == {"audioUrl": server.url}


# --- 4. the URL guard -----------------------------------------------------------------------


async def test_a_link_to_a_loopback_address_is_refused_without_cost(tmp_path: Path) -> None:
    """With private URLs forbidden, a 127.0.0.1 link is refused privately: no fetch, no call."""
    env = {"STEMBOT_ALLOW_PRIVATE_URLS": "false"}
    async with running_stack(tmp_path / "db.sqlite", env) as stack:
        url = stack.upload("remote.wav")["url"]
        interaction = await stack.stems("vocals", options={"url": url})
        text = await stack.refusal(interaction)
        assert "private or local network" in text
        assert stack.api_calls() == 0
        assert stack.discord.cdn_fetches == 0
        assert stack.ledger().ledger.get_request(1) is None
        assert used_today(stack) == 0


# --- 5. an invalid API key ------------------------------------------------------------------


async def test_a_refused_api_key_gets_a_neutral_answer_an_error_log_and_a_refund(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 401 from the API: users never hear about keys, the operator's log does; unit back."""
    env = {"SOUNDVERSE_API_KEY": "sv-wrong-key-9876543210"}
    async with running_stack(tmp_path / "db.sqlite", env) as stack:
        interaction = await stack.stems("vocals")
        final = await stack.answer(interaction)
        assert stack.api_calls() == 1  # an auth failure is not retried
        assert used_today(stack) == 0
    text = whole_text(final).lower()
    assert "can't use the stem separation service" in text
    assert "key" not in text and "401" not in text
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("SOUNDVERSE_API_KEY" in r.getMessage() for r in errors)


# --- 6. what each API failure costs and shows -------------------------------------------------


@dataclass(frozen=True)
class Failure:
    replies: tuple[Reply, ...]
    env: dict[str, str]
    shown: str
    calls: int


FAILURES = {
    "generation failed": Failure(
        (Reply.detail("Stem separation failed: corrupt audio."),),
        {},
        "could not separate this audio: Stem separation failed: corrupt audio",
        1,
    ),
    "timeout": Failure(
        (Reply.hang(30),), {"STEMBOT_API_TIMEOUT_S": "1"}, "did not finish answering", 1
    ),
    "429 past the budget": Failure(
        (Reply.http_status(429, retry_after="0"),) * 6, {}, "is busy", 4
    ),
    "malformed body": Failure((Reply.not_json(),), {}, "could not read", 1),
}


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
async def test_an_api_failure_is_explained_and_refunded(tmp_path: Path, failure: Failure) -> None:
    """Each failure: the user is told what happened and that it cost nothing; calls counted."""
    async with running_stack(tmp_path / "db.sqlite", failure.env) as stack:
        stack.api.script(*failure.replies)
        interaction = await stack.stems("vocals")
        final = await stack.answer(interaction, timeout_s=15)
        assert failure.shown in description(final)
        assert "not charged" in description(final)
        assert stack.api_calls() == failure.calls
        assert used_today(stack) == 0
        request = stack.ledger().ledger.get_request(1)
        assert request is not None and request.status is RequestStatus.FAILED


async def test_a_503_is_retried_and_the_result_delivered_and_charged_once(stack: Stack) -> None:
    """503 then success: two calls, one answer to the user, one unit charged."""
    stack.api.fail_next(Reply.http_status(503))
    interaction = await stack.stems("vocals")
    final = await stack.answer(interaction, timeout_s=15)
    assert is_result(final)
    assert stack.api_calls() == 2
    assert used_today(stack) == 1
    request = stack.ledger().ledger.get_request(1)
    assert request is not None and request.status is RequestStatus.SUCCEEDED
    assert interaction.followups == []
    assert channel_posts(stack.discord, stack.channel) == []
    assert stack.discord.dm_messages(stack.member) == []


# --- 7. secrets never reach the logs -----------------------------------------------------------

# discord.py logs webhook URLs and gateway payloads (interaction tokens) at DEBUG; the bot's
# logging set-up holds exactly these above DEBUG whatever STEMBOT_LOG_LEVEL says.


@pytest.fixture
def logs_at_debug(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG, then the bot's own set-up for STEMBOT_LOG_LEVEL=DEBUG on top.

    Loggers below the token-carrying ones keep inheriting from them, as in the real process.
    caplog puts every level back afterwards; its handler on the root logger makes
    basicConfig (inside configure_logging) add nothing.
    """
    caplog.set_level(logging.DEBUG)
    for name in {*logging.root.manager.loggerDict, *TOKEN_CARRYING_LOGGERS}:
        if not name.startswith(tuple(f"{noisy}." for noisy in TOKEN_CARRYING_LOGGERS)):
            caplog.set_level(logging.DEBUG, logger=name)
    assert logging.root.handlers, "configure_logging would install a handler for good"
    configure_logging("DEBUG")
    return caplog


async def test_no_secret_reaches_any_log_record(
    tmp_path: Path, logs_at_debug: pytest.LogCaptureFixture
) -> None:
    """A full flow logged at DEBUG: no bot token, API key, interaction token or webhook URL."""
    async with running_stack(tmp_path / "db.sqlite") as stack:
        interactions = [await stack.stems("vocals")]
        await stack.answer(interactions[0])
        stack.api.fail_next(Reply.nsfw())
        interactions.append(await stack.stems("all"))
        await stack.answer(interactions[1])
        interactions.append(await stack.stems("vocals", options={}))
        await stack.refusal(interactions[2])
        bot_token = stack.discord.token
    secrets = {"bot token": bot_token, "API key": API_KEY, "webhook URL": "/webhooks/"}
    secrets |= {f"interaction token {i.id}": i.token for i in interactions}
    # The stand-ins' own records are not the bot's.
    records = [r for r in logs_at_debug.records if not r.name.startswith("tests.")]
    assert {r.name.split(".")[0] for r in records if r.levelno == logging.DEBUG} >= {"discord"}
    assert any(r.name.startswith("stembot") for r in records)
    leaks = [
        (what, r.name, r.getMessage()[:200])
        for r in records
        for what, secret in secrets.items()
        if secret in r.getMessage()
    ]
    assert not leaks


# --- 9. the same interaction delivered twice --------------------------------------------------

ALREADY_ACKNOWLEDGED = 40060
UNKNOWN_INTERACTION = 10062


def callback_codes(interaction: InteractionRecord) -> list[int | None]:
    """Discord's answer to each acknowledgement attempt: None for accepted, else its code."""
    return [c.code for c in interaction.calls if c.route.endswith("/callback")]


async def test_an_interaction_delivered_twice_runs_and_charges_once(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """Discord's duplicate delivery: one API call, one charge, one answer, not logged as a bug."""
    stack.api.latency = 0.3
    interaction = await stack.stems("vocals")
    await stack.discord.redeliver(interaction)
    final = await stack.answer(interaction)
    await eventually(lambda: len(callback_codes(interaction)) >= 2)
    await asyncio.sleep(0.2)  # room for a wrongly accepted duplicate to show itself
    assert is_result(final)
    assert stack.api_calls() == 1
    assert used_today(stack) == 1
    assert stack.ledger().ledger.get_request(2) is None
    assert callback_codes(interaction) == [None, ALREADY_ACKNOWLEDGED]
    assert interaction.followups == []
    assert channel_posts(stack.discord, stack.channel) == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_an_interaction_redelivered_after_its_answer_changes_nothing(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A duplicate arriving after the result: no second call or charge; the answer stays."""
    interaction = await stack.stems("vocals")
    final = await stack.answer(interaction)
    await stack.discord.redeliver(interaction)
    await eventually(lambda: len(callback_codes(interaction)) >= 2)
    await asyncio.sleep(0.2)
    assert callback_codes(interaction) == [None, ALREADY_ACKNOWLEDGED]
    assert stack.api_calls() == 1
    assert used_today(stack) == 1
    assert interaction.view().original == final
    assert interaction.followups == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_an_interaction_that_expired_before_its_acknowledgement_is_not_answered_again(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """Past Discord's 3 s the token is dead: one refused acknowledgement, no doomed private
    reply after it, no incident logged, nothing called or charged."""
    interaction = await stack.stems("vocals", age_s=3.5)
    await eventually(lambda: callback_codes(interaction) != [])
    await asyncio.sleep(0.3)  # room for a second attempt to show itself
    assert callback_codes(interaction) == [UNKNOWN_INTERACTION]
    assert interaction.followups == []
    assert stack.api_calls() == 0
    assert used_today(stack) == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("expired before it was acknowledged" in r.getMessage() for r in caplog.records)


# --- 10. the OpenAPI check is on ----------------------------------------------------------------


async def test_the_openapi_check_is_active_in_these_runs(stack: Stack) -> None:
    """With ../shared/discord-openapi.json present, the emulator really validates bodies."""
    if not DEFAULT_SPEC_PATH.is_file():
        pytest.skip(f"Discord's OpenAPI description is absent ({DEFAULT_SPEC_PATH})")
    spec = stack.discord.spec
    assert spec is not None
    assert spec.check("POST", "/channels/{channel_id}/messages", {"embeds": "not a list"})
    assert not spec.check("POST", "/channels/{channel_id}/messages", {"content": "hello"})


async def test_a_bug_in_a_command_shows_only_an_incident_id_that_the_log_names(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A command that fails unexpectedly: the member sees the incident's own line, privately;
    the log has the same id with the traceback."""

    def broken(*args: object) -> None:
        raise RuntimeError("a bug with details")

    monkeypatch.setattr(stack.bot.service, "quota_status", broken)
    with caplog.at_level(logging.ERROR, logger="stembot"):
        text = await stack.refusal(await stack.discord.slash("stems quota", member=stack.member))
    assert "a bug" not in text
    (logged,) = [r for r in caplog.records if "incident" in r.getMessage()]
    assert logged.exc_info is not None
    incident_id = logged.getMessage().rsplit("incident ", 1)[1].rstrip(")")
    assert text == IncidentError(incident_id).user_message
