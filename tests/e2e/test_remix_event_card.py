"""Remix events from their card, end to end: the real bot over the loopback Discord (every body
checked against Discord's OpenAPI description when it is at hand) and the Soundverse stand-in.

`/stems-event start` posts one card; members' clicks are answered privately (never a public
message per member) for one paid call per mode charged to the server; the card's counts are
edited at most once every 10 s; the end disables the card and posts the summary; the
participation goes privately to whoever ended it. The "Submit your remix" button belongs to
the submissions (another module's tests): nothing here clicks it.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stembot.bot.remix_event_card_updates import CARD_EDIT_INTERVAL_S
from stembot.config import Settings, load_settings
from stembot.models import Mode
from tests.e2e.remix_event_cards import (
    ORGANISER,
    Event,
    card_text,
    cards_in,
    private,
    private_body,
    public_posts,
    start_event,
    take_id,
)
from tests.e2e.stack import (
    API_KEY,
    MEDIA_ENV,
    Stack,
    acked_in_time,
    bot_connected,
    eventually,
    running_stack,
    stack_env,
    used_today,
)
from tests.standins.discord import (
    BOT_DEFAULT,
    CREATE_EVENTS,
    MANAGE_GUILD,
    MEMBER_DEFAULT,
    PIN_MESSAGES,
    DiscordEmulator,
    InteractionRecord,
    Member,
    MessageRecord,
)
from tests.standins.soundverse import Reply, SoundverseStandin

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

EVERYTHING = BOT_DEFAULT | PIN_MESSAGES | CREATE_EVENTS
# The card is edited at most once per interval: a change shows within one, plus slack.
CARD_WAIT_S = CARD_EDIT_INTERVAL_S + 5
DISABLED_OR_LINK = ("disabled", "url")


# --- what a test reads --------------------------------------------------------------------


def card_buttons(card: MessageRecord) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}

    def walk(components: list[dict[str, Any]]) -> None:
        for component in components:
            if "custom_id" in component:
                found[component["custom_id"]] = component
            walk(list(component.get("components") or []))

    walk(card.components)
    return found


def has_stems(interaction: InteractionRecord) -> bool:
    return "download" in private_body(interaction) or "Full quality" in str(
        interaction.view().original
    )


def units_charged(stack: Stack) -> int:
    """Units the server was charged today."""
    return used_today(stack)


def member_used(stack: Stack, member: Member) -> int:
    """Units of the member's own daily allowance used today."""
    status = stack.ledger().quotas.quota_status(stack.guild.id, member.id, datetime.now(UTC))
    assert status.user_daily is not None
    return status.user_daily.used


async def start(stack: Stack, by: Member, **options: Any) -> Event:
    return await start_event(stack.discord, stack.guild, by, **options)


def organiser(stack: Stack, name: str = "organiser") -> Member:
    return stack.discord.add_member(stack.guild, name, permissions=ORGANISER)


async def click(stack: Stack, event: Event, mode: Mode, member: Member) -> InteractionRecord:
    return await stack.discord.click(event.card, take_id(event.id, mode), member=member)


# --- taking stems -------------------------------------------------------------------------


async def test_two_hundred_members_click_at_once(tmp_path: Path) -> None:
    """200 members click Vocals together: every click acknowledged privately within Discord's
    3 s, one API call charged once to the server (no member's allowance touched), 200 private
    answers with the stems, and in the channel nothing but the card, whose counts are edited
    at most once every 10 s."""
    async with running_stack(tmp_path / "db.sqlite", api_latency=0.5) as stack:
        event = await start(stack, organiser(stack), modes="vocals")
        crowd = [stack.discord.add_member(stack.guild, f"fan{n}") for n in range(200)]
        clicks = await asyncio.gather(*(click(stack, event, Mode.VOCALS, m) for m in crowd))
        await asyncio.gather(*(stack.discord.acknowledged(c) for c in clicks))
        assert all(acked_in_time(c) for c in clicks)
        delays = sorted(c.acked_at - c.created_at for c in clicks if c.acked_at is not None)
        print(
            f"\n200 clicks: ack p50 {statistics.median(delays) * 1000:.0f} ms, "
            f"p99 {delays[int(len(delays) * 0.99) - 1] * 1000:.0f} ms, "
            f"max {delays[-1] * 1000:.0f} ms"
        )
        await eventually(lambda: all(has_stems(c) for c in clicks), 60)
        assert stack.api_calls() == 1
        assert units_charged(stack) == Mode.VOCALS.default_cost
        assert all(member_used(stack, m) == 0 for m in crowd[:5])
        await eventually(lambda: "**200** members took stems" in card_text(event.card), CARD_WAIT_S)
        assert [p.id for p in public_posts(stack.discord, stack.channel.id)] == [event.card.id]
        edits = [at for at, _ in event.card.history]
        gaps = [later - earlier for earlier, later in itertools.pairwise(edits)]
        assert gaps and min(gaps) >= CARD_EDIT_INTERVAL_S - 0.05, gaps
        # A member who clicks again gets the stems at once, still free.
        again = await click(stack, event, Mode.VOCALS, crowd[0])
        await eventually(lambda: has_stems(again))
        assert stack.api_calls() == 1


async def test_prefetch_separates_every_offered_mode_at_start(stack: Stack) -> None:
    """prefetch:True runs each offered mode's call at once; a click then gets the stems in its
    first answer, and the card says they are ready."""
    event = await start(stack, organiser(stack), modes="vocals all", prefetch=True)
    assert "being separated now" in event.reply
    await eventually(lambda: stack.api_calls() == 2)
    await eventually(lambda: card_text(event.card).count("ready") == 2, CARD_WAIT_S)
    taken = await click(stack, event, Mode.ALL, stack.member)
    await eventually(lambda: has_stems(taken))
    assert "Separating" not in str(taken.original.history if taken.original else "")
    assert stack.api_calls() == 2
    assert units_charged(stack) == 3  # vocals 1 + all 2, the server's
    assert member_used(stack, stack.member) == 0


async def test_a_link_is_separated_at_start_because_it_cannot_be_read_again(
    stack: Stack,
) -> None:
    """A url: track cannot be read again later (signed links are never kept): every offered
    mode runs at once, and the organiser is told why."""
    upload = stack.upload("linked.wav")
    event = await start(stack, organiser(stack), url=upload["url"], modes="instruments")
    assert "can't be read again later" in event.reply
    await eventually(lambda: stack.api_calls() == 1)
    taken = await click(stack, event, Mode.INSTRUMENTS, stack.member)
    await eventually(lambda: has_stems(taken))
    assert stack.api_calls() == 1


async def test_a_track_from_a_message_with_two_files_is_picked_privately(stack: Stack) -> None:
    """message: a link to a post with two audio files: the organiser picks one, privately;
    the event's call reads that file from the post when a member clicks."""
    files = [stack.upload("intro.wav"), stack.upload("drop.wav")]
    post = await stack.discord.post_user_message(stack.channel, stack.member, attachments=files)
    link = f"https://discord.com/channels/{stack.guild.id}/{stack.channel.id}/{post.id}"
    org = organiser(stack)
    started = await stack.discord.slash(
        "stems-event start", member=org, options={"message": link, "modes": "vocals"}
    )
    await private(started, "Which is the track?")
    assert started.original is not None
    (picker_id,) = [i for i in started.original.custom_ids() if i.startswith("stems-event:track")]
    pick = await stack.discord.click(
        started.original, picker_id, member=org, values=[files[1]["id"]]
    )
    await stack.discord.acknowledged(pick)
    await private(started, "started")
    (card,) = cards_in(stack.discord, stack.channel.id)
    assert "drop.wav" in card_text(card) and "original post" in card_text(card)
    taken = await stack.discord.click(card, card.custom_ids()[0], member=stack.member)
    await eventually(lambda: has_stems(taken))
    assert stack.api_calls() == 1
    assert str(files[1]["id"]) in stack.api.requests[0].body.decode()


async def test_stems_ready_after_the_clicks_15_minutes_go_by_dm(stack: Stack) -> None:
    """The click's private message can no longer be edited (Discord's 15 minutes are over):
    the stems go to the member by DM, never as a public post."""
    event = await start(stack, organiser(stack), modes="vocals")
    stack.api.hold()
    taken = await click(stack, event, Mode.VOCALS, stack.member)
    await private(taken, "Separating")
    stack.discord.age(taken, 16 * 60)
    stack.api.release()
    await eventually(lambda: stack.discord.dm_messages(stack.member))
    (dm,) = stack.discord.dm_messages(stack.member)
    assert "download" in dm.embeds[0]["description"]
    assert [p.id for p in public_posts(stack.discord, stack.channel.id)] == [event.card.id]


# --- refusals -----------------------------------------------------------------------------


async def test_members_without_the_permission_can_neither_start_nor_end(stack: Stack) -> None:
    """Starting needs Manage Events or Manage Server, checked when it runs: refused privately,
    nothing recorded or posted. Ending is the organiser's or a moderator's."""
    fan = stack.discord.add_member(stack.guild, "fan")
    refused = await stack.discord.slash(
        "stems-event start", member=fan, options={"file": stack.upload(), "title": "Mine"}
    )
    assert "Manage Events" in await stack.refusal(refused)
    assert cards_in(stack.discord, stack.channel.id) == []
    event = await start(stack, organiser(stack))
    ending = await stack.discord.slash("stems-event end", member=fan, options={})
    assert "organiser" in await stack.refusal(ending)
    mod = stack.discord.add_member(stack.guild, "mod", permissions=MEMBER_DEFAULT | MANAGE_GUILD)
    ended = await stack.discord.slash("stems-event end", member=mod, options={"event": event.id})
    assert "has ended" in await private(ended, "has ended")


async def test_bad_input_is_refused_privately_and_spends_nothing(stack: Stack) -> None:
    org = organiser(stack)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"file": stack.upload("notes.txt", "text/plain", b"hello")}, ""),
        ({"file": stack.upload(), "url": "https://example.com/a.mp3"}, "exactly one"),
        ({"file": stack.upload(), "ends": "yesterday"}, "ends:"),
        ({"file": stack.upload(), "modes": "drums"}, "modes:"),
        ({"message": "not a link"}, "Copy Message Link"),
    ]
    for options, says in cases:
        refused = await stack.discord.slash("stems-event start", member=org, options=options)
        assert says in await stack.refusal(refused)
    assert cards_in(stack.discord, stack.channel.id) == []
    assert stack.api_calls() == 0


async def test_a_channel_the_bot_cannot_post_in_starts_nothing(stack: Stack) -> None:
    stack.discord.refuse_channel(stack.channel)
    org = organiser(stack)
    refused = await stack.discord.slash(
        "stems-event start", member=org, options={"file": stack.upload(), "title": "Nowhere"}
    )
    assert "Send Messages" in await private(refused, "Send Messages")
    assert stack.ledger().events.open_events(stack.guild.id, datetime.now(UTC)) == []


async def test_a_server_runs_at_most_three_events_at_once(stack: Stack) -> None:
    org = organiser(stack)
    for _ in range(3):
        await start(stack, org)
    fourth = await stack.discord.slash(
        "stems-event start", member=org, options={"file": stack.upload(), "title": "Fourth"}
    )
    assert "already has 3 remix events" in await private(fourth, "remix events")
    assert len(cards_in(stack.discord, stack.channel.id)) == 3


async def test_a_track_the_api_refuses_is_said_on_the_card_and_charges_nobody(
    stack: Stack,
) -> None:
    """The separation service refuses the track: the member who clicked is told privately,
    the card says why there are no stems, the call is refunded (nobody charged)."""
    event = await start(stack, organiser(stack), modes="vocals")
    stack.api.fail_next(Reply.nsfw())
    taken = await click(stack, event, Mode.VOCALS, stack.member)
    answer = await private(taken, "not charged")
    assert "Click **Vocals** on the event's card" in answer
    await eventually(lambda: "Nobody was charged" in card_text(event.card), CARD_WAIT_S)
    assert units_charged(stack) == 0
    assert [p.id for p in public_posts(stack.discord, stack.channel.id)] == [event.card.id]


async def test_a_spent_budget_is_said_on_the_card(stack: Stack) -> None:
    """budget:1 pays for Vocals (1 unit) but not All stems (2): that button is refused and
    then disabled, and the card says the budget is spent."""
    event = await start(stack, organiser(stack), modes="vocals all", budget=1)
    first = await click(stack, event, Mode.VOCALS, stack.member)
    await eventually(lambda: has_stems(first))
    refused = await click(stack, event, Mode.ALL, stack.member)
    assert "budget" in (await private(refused, "budget")).lower()
    await eventually(lambda: "budget spent" in card_text(event.card), CARD_WAIT_S)
    assert card_buttons(event.card)[take_id(event.id, Mode.ALL)].get("disabled")
    assert stack.api_calls() == 1


# --- pins, scheduled events, threads ------------------------------------------------------


async def test_without_pin_and_event_permissions_the_card_is_still_posted(stack: Stack) -> None:
    """The bot may not pin nor create events (a new server's defaults): the organiser is told
    it could not pin; the scheduled event is skipped quietly."""
    event = await start(stack, organiser(stack))
    assert "Pin Messages" in event.reply
    assert "event" not in event.reply.split("\n", 1)[-1].lower().replace("remix event", "")
    assert stack.discord.pinned(stack.channel) == []
    assert stack.discord.scheduled_events(stack.guild) == []


async def test_with_the_permissions_the_card_is_pinned_and_scheduled(stack: Stack) -> None:
    await stack.discord.set_bot_permissions(stack.guild, EVERYTHING)
    event = await start(stack, organiser(stack), ends="2d")
    assert "Pin Messages" not in event.reply
    assert [m.id for m in stack.discord.pinned(stack.channel)] == [event.card.id]
    (scheduled,) = stack.discord.scheduled_events(stack.guild)
    assert scheduled["name"] == "Spring remix"
    assert str(event.card.id) in scheduled["entity_metadata"]["location"]
    assert [p.id for p in public_posts(stack.discord, stack.channel.id)] == [event.card.id]


async def test_thread_true_posts_the_card_in_a_new_thread(stack: Stack) -> None:
    event = await start(stack, organiser(stack), thread=True, modes="vocals")
    (thread,) = stack.discord.threads(stack.channel)
    assert event.card.channel_id == thread.id
    taken = await click(stack, event, Mode.VOCALS, stack.member)
    await eventually(lambda: has_stems(taken))


# --- the end ------------------------------------------------------------------------------


async def test_the_end_disables_the_card_posts_the_summary_and_sends_the_csv(
    stack: Stack,
) -> None:
    await stack.discord.set_bot_permissions(stack.guild, EVERYTHING)
    org = organiser(stack)
    event = await start(stack, org, modes="vocals all", ends="3d")
    fans = [stack.discord.add_member(stack.guild, f"fan{n}") for n in range(3)]
    takes = [await click(stack, event, Mode.VOCALS, fan) for fan in fans]
    takes.append(await click(stack, event, Mode.ALL, fans[0]))
    await eventually(lambda: all(has_stems(t) for t in takes))
    ended = await stack.discord.slash("stems-event end", member=org, options={})
    reply = await private(ended, "has ended")
    assert ended.original is not None
    csv = ended.original.file(f"remix-event-{event.id}-participation.csv").decode()
    rows = csv.strip().splitlines()
    assert rows[0].startswith("user_id,modes") and len(rows) == 1 + len(fans)
    assert "vocals all" in csv
    assert "summary is posted" in reply
    posts = public_posts(stack.discord, stack.channel.id)
    assert [p.id for p in posts[:1]] == [event.card.id] and len(posts) == 2
    summary = posts[1].embeds[0]["description"]
    assert "**3** members took stems" in summary
    assert "- Vocals: 3 members" in summary and "- All stems: 1 member" in summary
    assert "Paid calls: **2** (3 units" in summary
    (scheduled,) = stack.discord.scheduled_events(stack.guild)
    assert scheduled["status"] == 4  # cancelled before its start
    await eventually(lambda: "has ended" in card_text(event.card), CARD_WAIT_S)
    buttons = card_buttons(event.card)
    assert all(b.get("disabled") for i, b in buttons.items() if ":take:" in i or ":submit:" in i)
    late = await click(stack, event, Mode.VOCALS, stack.member)
    assert "ended" in await private(late, "ended")
    again = await stack.discord.slash("stems-event end", member=org, options={"event": event.id})
    assert "already ended" in await private(again, "already ended")


async def test_remixes_submitted_from_the_card_a_vote_and_the_end(stack: Stack) -> None:
    """Members submit remixes from the card's button (the card counts them), the organiser
    starts the vote, the end closes the running poll and the summary ranks the remixes with
    their members."""
    org = organiser(stack)
    event = await start(stack, org, modes="vocals")
    makers = [stack.discord.add_member(stack.guild, name) for name in ("ann", "ben")]
    for maker, title in zip(makers, ("Dub mix", "Night edit"), strict=True):
        opened = await stack.discord.click(
            event.card, f"stems-event:submit:{event.id}", member=maker
        )
        assert await stack.discord.acknowledged(opened) == 9  # the modal
        remix = stack.upload(f"{title}.wav")
        sent = await stack.discord.submit_modal(opened, {"title": title, "remix": [remix]})
        assert "is in" in await private(sent, "is in")
    await eventually(lambda: "**2** remixes submitted" in card_text(event.card), CARD_WAIT_S)
    vote = await stack.discord.slash("stems-event vote", member=org, options={})
    await private(vote, "")
    await eventually(lambda: any(p.poll for p in public_posts(stack.discord, stack.channel.id)))
    (record,) = [p for p in public_posts(stack.discord, stack.channel.id) if p.poll]
    voters = [stack.discord.add_member(stack.guild, f"voter{n}") for n in range(3)]
    for n, voter in enumerate(voters):
        await stack.discord.vote(record, voter, 2 if n else 1)
    ended = await stack.discord.slash("stems-event end", member=org, options={})
    await private(ended, "has ended")
    assert record.poll is not None and record.poll["results"]["is_finalized"]
    summaries = [p for p in public_posts(stack.discord, stack.channel.id) if p.embeds]
    text = summaries[-1].embeds[0]["description"]
    assert "**2** remixes submitted" in text
    assert f"1. **Night edit** by <@{makers[1].id}>: 2 votes" in text
    assert f"2. **Dub mix** by <@{makers[0].id}>: 1 vote" in text


async def test_an_event_closes_itself_at_its_end(stack: Stack) -> None:
    """ends: 2 seconds from now: the event closes by itself, posts its summary, and the
    organiser gets the participation by DM."""
    org = organiser(stack)
    event = await start(stack, org, ends="2s", modes="vocals")
    await eventually(lambda: len(public_posts(stack.discord, stack.channel.id)) == 2, 15)
    summary = public_posts(stack.discord, stack.channel.id)[1].embeds[0]["description"]
    assert "closed at its end" in summary and "**0** members took stems" in summary
    await eventually(lambda: stack.discord.dm_messages(org))
    (dm,) = stack.discord.dm_messages(org)
    assert dm.attachments[0]["filename"] == f"remix-event-{event.id}-participation.csv"
    late = await click(stack, event, Mode.VOCALS, stack.member)
    assert "ended" in await private(late, "ended")


# --- a restart ----------------------------------------------------------------------------


@asynccontextmanager
async def world(
    tmp_path: Path, **env: str
) -> AsyncIterator[tuple[DiscordEmulator, SoundverseStandin, Settings]]:
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY) as api:
        base = stack_env(discord, api, tmp_path / "stembot.db")
        settings = load_settings({**base, **env}, need_discord=True, need_soundverse=True)
        yield discord, api, settings


async def test_a_restart_mid_event_keeps_the_buttons_and_delivers_pending_stems(
    tmp_path: Path,
) -> None:
    """A member's stems are being separated when the bot restarts: the new bot separates them
    again (the interrupted call refunded, so the event still pays once) and sends them by DM;
    the card's buttons answer after the restart."""
    async with world(tmp_path, STEMBOT_SHUTDOWN_GRACE_S="0.2") as (discord, api, settings):
        guild = await discord.add_guild("Remix club")
        org = discord.add_member(guild, "organiser", permissions=ORGANISER)
        early, late = discord.add_member(guild, "early"), discord.add_member(guild, "late")
        api.hold()
        async with bot_connected(discord, settings):
            event = await start_event(discord, guild, org, modes="vocals")
            first = await discord.click(event.card, take_id(event.id, Mode.VOCALS), member=early)
            await private(first, "Separating")
            await eventually(lambda: len(api.requests) == 1)
        async with bot_connected(discord, settings):
            second = await discord.click(event.card, take_id(event.id, Mode.VOCALS), member=late)
            await private(second, "Separating")
            api.release()
            await eventually(lambda: has_stems(second))
            await eventually(lambda: discord.dm_messages(early))
            (dm,) = discord.dm_messages(early)
            assert "download" in dm.embeds[0]["description"]
        assert len(api.requests) == 2
        assert [p.id for p in public_posts(discord, guild.default_channel.id)] == [event.card.id]


async def test_an_event_that_ended_while_the_bot_was_stopped_closes_at_start_up(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as (discord, _, settings):
        guild = await discord.add_guild("Remix club")
        org = discord.add_member(guild, "organiser", permissions=ORGANISER)
        async with bot_connected(discord, settings):
            event = await start_event(discord, guild, org, ends="3s")
        posts = public_posts(discord, guild.default_channel.id)
        assert [p.id for p in posts] == [event.card.id]
        await asyncio.sleep(3.1)
        restarted = datetime.now(UTC).timestamp()
        async with bot_connected(discord, settings):
            await eventually(lambda: len(public_posts(discord, guild.default_channel.id)) == 2)
        summary = public_posts(discord, guild.default_channel.id)[1]
        assert summary.created_at > restarted
        assert summary.embeds[0]["footer"]["text"] == f"Remix event {event.id}"


# --- the stems' files and free mixes ------------------------------------------------------


async def test_a_take_gains_its_files_and_the_cards_mixes_are_private(tmp_path: Path) -> None:
    """With the stems' files on: the private answer becomes the result card with the files,
    and a pick in the event card's mix menu sends the mix privately, free."""
    async with running_stack(tmp_path / "db.sqlite", MEDIA_ENV) as stack:
        event = await start(stack, organiser(stack), modes="all", prefetch=True)
        mix_id = f"stems-event:mix:{event.id}:all"
        await eventually(lambda: mix_id in event.card.custom_ids(), CARD_WAIT_S)
        taken = await click(stack, event, Mode.ALL, stack.member)
        await eventually(lambda: taken.original is not None and taken.original.attachments, 30)
        assert taken.original is not None and taken.original.ephemeral
        pick = await stack.discord.click(
            event.card, mix_id, member=stack.member, values=["instrumental"]
        )
        await eventually(lambda: any(m.attachments for m in pick.followups), 30)
        (sent,) = pick.followups
        assert sent.ephemeral and "Instrumental" in sent.content
        assert stack.api_calls() == 1
