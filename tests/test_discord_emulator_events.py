"""The loopback Discord's polls, threads, pins and scheduled events, driven by real discord.py
and checked against Discord's OpenAPI description where it describes what is sent back."""

from __future__ import annotations

import datetime as dt
from typing import Any

import aiohttp
import discord
import pytest

from tests.act_bot import bot_channel, eventually, external_event
from tests.act_fixtures import bot_fixture, emulator_fixture, guild_fixture, probe_fixture  # noqa: F401
from tests.discord_clients import connected, emulated_discord
from tests.standins.discord import (
    CREATE_EVENTS,
    DEFAULT_SPEC_PATH,
    MANAGE_EVENTS,
    PIN_MESSAGES,
    OpenAPISpec,
    PollClosedError,
)
from tests.standins.discord.polls import POLL_RESULT
from tests.standins.discord.world import BOT_DEFAULT

has_spec = pytest.mark.skipif(
    not DEFAULT_SPEC_PATH.is_file(), reason=f"no OpenAPI description at {DEFAULT_SPEC_PATH}"
)


def schema_problems(name: str, payload: Any) -> list[str]:
    spec = OpenAPISpec.load()
    assert spec is not None
    return spec.check_schema(name, payload)


def remix_poll(*answers: str, multiple: bool = False) -> discord.Poll:
    poll = discord.Poll("Best remix?", dt.timedelta(hours=48), multiple=multiple)
    for answer in answers:
        poll.add_answer(text=answer)
    return poll


# ---- polls ---------------------------------------------------------------------------------


@has_spec
async def test_a_poll_is_voted_on_and_ended_by_its_author(emulator, bot, guild):
    """Members' votes reach the bot (MESSAGE_POLL_VOTE_ADD / _REMOVE) and the counts; ending
    it finalises the results and Discord posts the POLL_RESULT message naming the winner."""
    votes: list[tuple[str, int, int]] = []

    async def on_raw_poll_vote_add(event: discord.RawPollVoteActionEvent) -> None:
        votes.append(("add", event.user_id, event.answer_id))

    async def on_raw_poll_vote_remove(event: discord.RawPollVoteActionEvent) -> None:
        votes.append(("remove", event.user_id, event.answer_id))

    bot.add_listener(on_raw_poll_vote_add)
    bot.add_listener(on_raw_poll_vote_remove)
    channel = bot_channel(bot, guild)
    sent = await channel.send(poll=remix_poll("alice's", "bob's", "carol's"))
    record = emulator.messages[sent.id]
    assert record.poll is not None and schema_problems("PollResponse", record.poll) == []
    assert [a["answer_id"] for a in record.poll["answers"]] == [1, 2, 3]

    alice, bob, carol = (emulator.add_member(guild, name) for name in ("alice", "bob", "carol"))
    await emulator.vote(record, alice, 2)
    await emulator.vote(record, bob, 1)
    await emulator.vote(record, carol, 2)
    await emulator.vote(record, bob, 2)  # changes their mind
    await eventually(lambda: len(votes) == 5)
    assert votes[3:] == [("remove", bob.id, 1), ("add", bob.id, 2)]
    assert emulator.poll_counts(record) == {1: 0, 2: 3, 3: 0}
    voters = [user.id async for user in sent.poll.get_answer(2).voters()]  # type: ignore[union-attr]
    assert sorted(voters) == sorted([alice.id, bob.id, carol.id])

    ended = await sent.end_poll()
    assert ended.poll is not None and ended.poll.is_finalised()
    assert record.poll["results"] == {
        "answer_counts": [{"id": 2, "count": 3, "me_voted": False}],
        "is_finalized": True,
    }
    result = emulator.channel_messages(guild.default_channel)[-1]
    assert result.type == POLL_RESULT and result.system
    assert schema_problems("MessageResponse", result.data) == []
    fields = {f["name"]: f["value"] for f in result.embeds[0]["fields"]}
    assert fields["victor_answer_text"] == "bob's" and fields["total_votes"] == "3"
    with pytest.raises(PollClosedError):
        await emulator.vote(record, alice, 1)
    with pytest.raises(discord.HTTPException) as again:
        await sent.end_poll()
    assert again.value.code == 520001


async def test_a_single_choice_poll_takes_one_answer_and_a_vote_can_be_withdrawn(
    emulator, bot, guild
):
    sent = await bot_channel(bot, guild).send(poll=remix_poll("a", "b"))
    record = emulator.messages[sent.id]
    member = emulator.add_member(guild, "dana")
    with pytest.raises(ValueError, match="one answer"):
        await emulator.vote(record, member, 1, 2)
    with pytest.raises(LookupError):
        await emulator.vote(record, member, 3)
    await emulator.vote(record, member, 1)
    await emulator.vote(record, member)
    assert emulator.poll_counts(record) == {1: 0, 2: 0}


async def test_the_end_of_the_polls_time_is_the_same_end(emulator, bot, guild):
    """end_poll stands for the duration running out: final results and the result message,
    no winner named on a tie."""
    sent = await bot_channel(bot, guild).send(poll=remix_poll("a", "b", multiple=True))
    record = emulator.messages[sent.id]
    await emulator.vote(record, emulator.add_member(guild, "erin"), 1, 2)
    result = await emulator.end_poll(record)
    assert record.poll is not None and record.poll["results"]["is_finalized"]
    assert result.data["message_reference"]["message_id"] == str(record.id)
    names = [f["name"] for f in result.embeds[0]["fields"]]
    assert "victor_answer_id" not in names and "total_votes" in names


def _poll_body(answers: int = 2, duration: int = 24, answer: str = "a", question: str = "q"):
    return {
        "poll": {
            "question": {"text": question},
            "answers": [{"poll_media": {"text": answer}} for _ in range(answers)],
            "duration": duration,
        }
    }


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (_poll_body(answers=10, duration=768, answer="a" * 55, question="q" * 300), 200),
        (_poll_body(answers=11), 400),
        (_poll_body(duration=769), 400),
        (_poll_body(answer="a" * 56), 400),
        (_poll_body(question="q" * 301), 400),
    ],
)
async def test_poll_limits_hold_without_the_openapi_description(body, status):
    """Up to 10 answers of 55 characters, a question of 300, 1 to 768 hours."""
    async with emulated_discord(validate_spec=False) as emulator:
        guild = await emulator.add_guild()
        url = f"{emulator.api_base}/channels/{guild.default_channel.id}/messages"
        headers = {"Authorization": f"Bot {emulator.token}"}
        async with aiohttp.ClientSession(headers=headers) as http, http.post(url, json=body) as got:
            assert got.status == status


async def test_a_poll_message_cannot_be_edited_and_only_a_poll_expires(emulator, bot, guild):
    channel = bot_channel(bot, guild)
    sent = await channel.send(poll=remix_poll("a", "b"))
    with pytest.raises(discord.HTTPException) as edited:
        await sent.edit(content="closing soon")
    plain = await channel.send("no poll here")
    with pytest.raises(discord.HTTPException) as expired:
        await bot.http.end_poll(channel.id, plain.id)
    assert (edited.value.code, expired.value.code) == (520003, 520006)


# ---- threads -------------------------------------------------------------------------------


@has_spec
async def test_a_thread_from_a_message_takes_its_id_and_receives_messages(emulator, bot, guild):
    """The thread is the message's (same id, HAS_THREAD, ``thread``), opens with a starter
    message pointing back, counts its messages, and the bot's cache has it (THREAD_CREATE)."""
    channel = bot_channel(bot, guild)
    card = await channel.send("Remix event")
    thread = await card.create_thread(name="Remixes")
    assert thread.id == card.id and bot.get_channel(thread.id) is not None
    await thread.send("first remix")

    (emulated_thread,) = emulator.threads(guild.default_channel)
    assert schema_problems("ThreadResponse", emulated_thread.payload()) == []
    starter, posted = emulator.channel_messages(emulated_thread)
    assert starter.system and starter.data["message_reference"]["message_id"] == str(card.id)
    assert posted.content == "first remix" and emulated_thread.message_count == 2
    source = emulator.messages[card.id]
    assert source.data["thread"]["id"] == str(thread.id) and source.flags & (1 << 5)
    with pytest.raises(discord.HTTPException) as again:
        await card.create_thread(name="Again")
    assert again.value.code == 160004


async def test_threads_without_a_message_are_private_unless_asked(emulator, bot, guild):
    """A public thread is announced in the channel (THREAD_CREATED); Discord's default type is
    still private; a thread cannot hold threads (400 / 50024)."""
    channel = bot_channel(bot, guild)
    public = await channel.create_thread(name="Votes", type=discord.ChannelType.public_thread)
    route = discord.http.Route("POST", "/channels/{channel_id}/threads", channel_id=channel.id)
    private = await bot.http.request(route, json={"name": "Organisers"})
    assert (public.type, private["type"]) == (discord.ChannelType.public_thread, 12)
    announced = emulator.channel_messages(guild.default_channel)[-1]
    assert announced.type == 18 and announced.content == "Votes"
    assert announced.data["message_reference"]["channel_id"] == str(public.id)
    nested = discord.http.Route("POST", "/channels/{channel_id}/threads", channel_id=public.id)
    with pytest.raises(discord.HTTPException) as refused:
        await bot.http.request(nested, json={"name": "x", "type": 11})
    assert refused.value.code == 50024


async def test_a_command_run_in_a_thread_comes_from_the_thread(emulator, bot, probe, guild):
    thread = await bot_channel(bot, guild).create_thread(
        name="Event", type=discord.ChannelType.public_thread
    )
    (emulated_thread,) = emulator.threads(guild.default_channel)

    async def where(interaction: discord.Interaction) -> None:
        probe.seen.append(interaction.channel_id)
        await interaction.response.send_message("here")

    probe.action = where
    interaction = await emulator.slash(
        "act", member=emulator.add_member(guild, "fay"), channel=emulated_thread
    )
    await emulator.final_message(interaction)
    assert probe.seen == [thread.id] and interaction.payload["channel"]["type"] == 11
    assert interaction.original is not None
    assert interaction.original.channel_id == thread.id


# ---- pins ----------------------------------------------------------------------------------


@has_spec
async def test_pins_are_set_listed_and_removed(emulator, bot, guild):
    """With PIN_MESSAGES: the message is marked pinned, Discord posts a pin notice, and both
    list routes show it newest first (as Discord's description says); an unpin takes it off."""
    await emulator.set_bot_permissions(guild, BOT_DEFAULT | PIN_MESSAGES)
    channel = bot_channel(bot, guild)
    first, second = await channel.send("first"), await channel.send("second")
    await first.pin()
    await second.pin()
    await second.pin()  # again: nothing changes
    assert [m.id for m in emulator.pinned(guild.default_channel)] == [second.id, first.id]
    assert [m.id async for m in channel.pins()] == [second.id, first.id]
    notices = [m for m in emulator.channel_messages(guild.default_channel) if m.system]
    assert [m.type for m in notices] == [6, 6]
    assert schema_problems("MessageResponse", notices[0].data) == []
    listed = await bot.http.pins_from(channel.id, limit=1)
    assert schema_problems("PinnedMessagesResponse", listed) == [] and listed["has_more"]
    assert emulator.messages[first.id].data["pinned"] is True
    deprecated = discord.http.Route("GET", "/channels/{channel_id}/pins", channel_id=channel.id)
    assert [m["id"] for m in await bot.http.request(deprecated)] == [str(second.id), str(first.id)]

    await second.unpin()
    assert emulator.pinned(guild.default_channel) == [emulator.messages[first.id]]
    assert emulator.messages[second.id].data["pinned"] is False


async def test_a_channel_holds_250_pins(emulator, bot, guild):
    await emulator.set_bot_permissions(guild, BOT_DEFAULT | PIN_MESSAGES)
    channel = bot_channel(bot, guild)
    for _ in range(250):
        message = await emulator.post_user_message(
            guild.default_channel, emulator.add_member(guild, "poster")
        )
        await bot.http.pin_message(channel.id, message.id)
    extra = await channel.send("one more")
    with pytest.raises(discord.HTTPException) as refused:
        await extra.pin()
    assert refused.value.code == 30003


# ---- scheduled events ----------------------------------------------------------------------


@has_spec
async def test_a_scheduled_event_runs_from_creation_to_deletion(emulator, bot, guild):
    """Created with CREATE_EVENTS, started, completed, then frozen (400 / 180000), deleted;
    the bot's cache follows each step."""
    await emulator.set_bot_permissions(guild, BOT_DEFAULT | CREATE_EVENTS)
    server = bot.get_guild(guild.id)
    assert server is not None
    event = await external_event(server)
    (stored,) = emulator.scheduled_events(guild)
    assert schema_problems("ExternalScheduledEventResponse", stored) == []
    assert stored["entity_metadata"] == {"location": "#remix-event"} and stored["status"] == 1
    assert server.get_scheduled_event(event.id) is not None

    event = await event.start()
    assert event.status is discord.EventStatus.active
    event = await event.end()
    assert stored["status"] == 3
    with pytest.raises(discord.HTTPException) as frozen:
        await event.edit(name="Later")
    assert frozen.value.code == 180000
    await event.delete()
    assert emulator.scheduled_events(guild) == []
    await eventually(lambda: server.get_scheduled_event(event.id) is None)


async def test_an_event_cannot_start_in_the_past(emulator, bot, guild):
    await emulator.set_bot_permissions(guild, BOT_DEFAULT | CREATE_EVENTS)
    server = bot.get_guild(guild.id)
    assert server is not None
    with pytest.raises(discord.HTTPException) as refused:
        await external_event(server, start_in_s=-60)
    assert (refused.value.status, refused.value.code) == (400, 50035)


async def test_a_scheduled_event_cannot_jump_to_completed(emulator, bot, guild):
    """SCHEDULED -> ACTIVE -> COMPLETED, or SCHEDULED -> CANCELED: nothing else."""
    await emulator.set_bot_permissions(guild, BOT_DEFAULT | CREATE_EVENTS)
    server = bot.get_guild(guild.id)
    assert server is not None
    event = await external_event(server)
    with pytest.raises(discord.HTTPException) as refused:
        await bot.http.edit_scheduled_event(guild.id, event.id, status=3)
    assert (refused.value.status, refused.value.code) == (400, 50035)
    cancelled = await event.cancel()
    assert cancelled.status is discord.EventStatus.cancelled


async def test_discords_clock_starts_and_completes_external_events(emulator, bot, guild):
    await emulator.set_bot_permissions(guild, BOT_DEFAULT | CREATE_EVENTS)
    server = bot.get_guild(guild.id)
    assert server is not None
    event = await external_event(server, start_in_s=60)
    await emulator.run_event_schedule(guild, now=event.start_time.timestamp() + 1)
    (stored,) = emulator.scheduled_events(guild)
    assert stored["status"] == 2
    assert event.end_time is not None
    await emulator.run_event_schedule(guild, now=event.end_time.timestamp())
    assert stored["status"] == 3
    await eventually(
        lambda: server.get_scheduled_event(event.id).status is discord.EventStatus.completed
    )


@pytest.mark.parametrize(
    ("granted", "allowed"),
    [(CREATE_EVENTS, True), (MANAGE_EVENTS, False), (CREATE_EVENTS | MANAGE_EVENTS, True)],
)
async def test_creating_an_event_needs_create_events(emulator, bot, guild, granted, allowed):
    """MANAGE_EVENTS alone no longer creates events (since 23 February 2026)."""
    await emulator.set_bot_permissions(guild, BOT_DEFAULT | granted)
    server = bot.get_guild(guild.id)
    assert server is not None
    try:
        await external_event(server)
    except discord.Forbidden as error:
        assert error.code == 50013 and not allowed
    else:
        assert allowed


async def test_an_event_of_someone_else_needs_manage_events(emulator, bot, guild):
    """Changing or deleting an event the bot did not create needs MANAGE_EVENTS."""
    await emulator.set_bot_permissions(guild, BOT_DEFAULT | CREATE_EVENTS)
    server = bot.get_guild(guild.id)
    assert server is not None
    event = await external_event(server)
    guild.scheduled_events[event.id]["creator_id"] = emulator.owner["id"]
    with pytest.raises(discord.Forbidden):
        await event.delete()
    await emulator.set_bot_permissions(guild, BOT_DEFAULT | MANAGE_EVENTS)
    await event.delete()
    assert emulator.scheduled_events(guild) == []


async def test_a_bot_started_again_finds_its_threads_and_events(emulator, bot, guild):
    """GUILD_CREATE lists the active threads and the scheduled events, so a bot started again
    mid-event finds them in its cache."""
    await emulator.set_bot_permissions(guild, BOT_DEFAULT | CREATE_EVENTS)
    server = bot.get_guild(guild.id)
    assert server is not None
    event = await external_event(server)
    thread = await (await bot_channel(bot, guild).send("Remix event")).create_thread(name="R")
    again = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0)
    async with connected(again, emulator):
        restarted = again.get_guild(guild.id)
        assert restarted is not None
        assert restarted.get_thread(thread.id) is not None
        assert restarted.get_scheduled_event(event.id) is not None
