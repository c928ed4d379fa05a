"""Remix event submissions end to end: "Submit your remix" on the card opens the modal, the
member's file is checked and posted in the event's channel crediting them, one per member,
removable by the organiser or a moderator, none after the end; every refusal private and
free. The loopback Discord checks every body against Discord's OpenAPI description."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from stembot.config import load_settings
from tests.e2e.remix_event_rig import event_rig, opened_event, private_answer, remix_events
from tests.e2e.stack import API_KEY, WAV, Stack, bot_connected, stack_env, used_today
from tests.standins.discord import MANAGE_EVENTS, MEMBER_DEFAULT, DiscordEmulator
from tests.standins.soundverse import SoundverseStandin

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


def _embed(post_data: dict[str, Any]) -> dict[str, Any]:
    embeds: list[dict[str, Any]] = post_data["embeds"]
    (embed,) = embeds
    return embed


async def test_a_member_submits_a_remix_through_the_modal(tmp_path: Path) -> None:
    """The modal (a title and a File Upload) is answered privately; the post in the event's
    channel carries the file, credits the member by name and mention without pinging them,
    and has a Remove button; nothing is spent."""
    async with event_rig(tmp_path / "db.sqlite") as rig:
        bob = rig.member("bob")
        opened = await rig.open_modal(bob)
        assert opened.modal is not None
        assert opened.modal["custom_id"] == f"stems-event:submission:{rig.event.id}"
        labels = opened.modal["components"]
        assert [(c["type"], c["component"]["type"]) for c in labels] == [(18, 4), (18, 19)]

        answer = await rig.submit(bob, "Night mix", opened=opened)

        (submission,) = await rig.submissions()
        post = rig.post(submission)
        assert answer.startswith("Your remix **Night mix** is in: ")
        assert str(post.id) in answer
        assert (submission.user_id, submission.title, submission.filename) == (
            bob.id,
            "Night mix",
            "remix.wav",
        )
        assert post.attached() == {"remix.wav": WAV}
        embed = _embed(post.data)
        assert embed["title"] == "Night mix"
        assert embed["author"]["name"] == "bob"
        assert f"<@{bob.id}>" in str(embed["description"])
        assert post.custom_ids() == [f"stems-event:remove:{submission.id}"]
        assert rig.posts() == [post]
        bodies = [b for b in rig.stack.discord.sent_bodies if b.message_id == post.id]
        assert bodies and all(not b.pings.anyone for b in bodies)
        (created,) = [b for b in bodies if b.method == "POST"]
        assert created.body["allowed_mentions"]["parse"] == []
        assert rig.stack.api_calls() == 0
        assert used_today(rig.stack) == 0
        assert rig.stack.ledger().ledger.get_request(1) is None


async def test_bad_submissions_are_refused_privately_and_post_nothing(tmp_path: Path) -> None:
    """Not audio by its name, not audio by its bytes, too large, an empty title: each is
    refused with what was wrong; nothing is posted or recorded."""
    async with event_rig(tmp_path / "db.sqlite", {"STEMBOT_MAX_INPUT_MB": "1"}) as rig:
        bob = rig.member("bob")
        image = rig.upload(PNG, "cover.png", "image/png")
        disguised = rig.upload(PNG, "remix.mp3", "audio/mpeg")
        huge = rig.upload(WAV[:44] + bytes(1_600_000), "long.wav", "audio/wav")

        assert (await rig.submit(bob, "Mine", image)).startswith("That file is a PNG image;")
        assert await rig.submit(bob, "Mine", disguised) == (
            "Your file **remix.mp3** is a PNG image, not audio. Submit the audio file of your "
            "remix (mp3, wav, flac, ogg/opus, m4a/aac)."
        )
        assert (await rig.submit(bob, "Mine", huge)).startswith(
            "That file is 1.6 MB; the limit is 1 MB."
        )
        assert await rig.submit(bob, "   ") == "Give your remix a title of 1 to 100 characters."

        assert rig.posts() == []
        assert await rig.submissions() == []
        assert rig.stack.api_calls() == 0


async def test_a_second_submission_replaces_the_first(tmp_path: Path) -> None:
    """One submission per member: the new one is posted, the old post is edited to say it was
    replaced (and loses its file and button)."""
    async with event_rig(tmp_path / "db.sqlite") as rig:
        bob = rig.member("bob")
        await rig.submit(bob, "First take")
        (first,) = await rig.submissions()

        answer = await rig.submit(bob, "Second take")

        (second,) = await rig.submissions()
        assert second.title == "Second take" and second.id != first.id
        assert "It replaces your earlier submission" in answer
        old = rig.post(first)
        embed = _embed(old.data)
        assert str(embed["description"]).startswith(
            f"Replaced by a newer submission of <@{bob.id}>: "
        )
        assert str(second.message_id) in str(embed["description"])
        assert embed["title"] == "First take"
        assert old.attachments == [] and old.custom_ids() == []
        assert rig.post(second).attached() == {"remix.wav": WAV}


async def test_no_submissions_after_the_end(tmp_path: Path) -> None:
    """A modal opened before the end and submitted after it is refused, as is the button."""
    async with event_rig(tmp_path / "db.sqlite") as rig:
        bob = rig.member("bob")
        opened = await rig.open_modal(bob)
        await rig.events.end(rig.event.id, by_user_id=rig.organiser.id)

        late = await rig.submit(bob, "Too late", opened=opened)
        click = await rig.stack.discord.click(
            rig.card, f"stems-event:submit:{rig.event.id}", member=bob
        )

        assert late == "This remix event has ended, so it takes no more submissions."
        assert await private_answer(rig.stack, click) == late
        assert click.modal is None
        assert rig.posts() == [] and await rig.submissions() == []


async def test_an_event_without_submissions_opens_no_modal(tmp_path: Path) -> None:
    async with event_rig(tmp_path / "db.sqlite", submissions=False) as rig:
        click = await rig.stack.discord.click(
            rig.card, f"stems-event:submit:{rig.event.id}", member=rig.member("bob")
        )
        assert await private_answer(rig.stack, click) == (
            "This remix event doesn't take submissions."
        )
        assert click.modal is None


async def test_removal_by_the_organiser_or_a_moderator_not_another_member(tmp_path: Path) -> None:
    """Another member's Remove is refused privately and changes nothing; the organiser's and a
    moderator's take the submission out and leave a line in place of the post."""
    async with event_rig(tmp_path / "db.sqlite") as rig:
        bob, dan = rig.member("bob"), rig.member("dan")
        carol = rig.member("carol")
        mod = rig.member("mod", permissions=MEMBER_DEFAULT | MANAGE_EVENTS)
        await rig.submit(bob, "Bob's mix")
        await rig.submit(dan, "Dan's mix")
        bobs, dans = await rig.submissions()

        refused = await rig.stack.discord.click(
            rig.post(bobs), f"stems-event:remove:{bobs.id}", member=carol
        )
        assert await private_answer(rig.stack, refused) == (
            "Only its member, the event's organiser or a moderator can remove a submission."
        )
        assert rig.post(bobs).attached() == {"remix.wav": WAV}

        for submission, remover, who in (
            (bobs, rig.organiser, "the event's organiser"),
            (dans, mod, "a moderator"),
        ):
            click = await rig.stack.discord.click(
                rig.post(submission), f"stems-event:remove:{submission.id}", member=remover
            )
            assert await rig.stack.discord.acknowledged(click) == 7
            post = rig.post(submission)
            assert _embed(post.data)["description"] == (
                f"This submission by <@{submission.user_id}> was removed by {who}."
            )
            assert post.attachments == [] and post.custom_ids() == []
        assert await rig.submissions() == []


async def test_a_file_too_large_for_the_channel_is_linked(tmp_path: Path) -> None:
    """Within STEMBOT_MAX_INPUT_MB but over what the channel takes (a member may upload more
    than the server's limit): the post links to the member's upload and says why."""
    async with event_rig(tmp_path / "db.sqlite") as rig:
        rig.stack.guild.upload_limit = 100_000
        bob = rig.member("bob")
        big = rig.upload(WAV[:44] + bytes(150_000), "big.wav", "audio/wav")

        answer = await rig.submit(bob, "Big mix", big, check=False)

        (submission,) = await rig.submissions()
        post = rig.post(submission)
        assert post.attachments == []
        description = str(_embed(post.data)["description"])
        assert "too large to attach in this channel (146.6 KB; the limit here is 97.65 KB)" in (
            description
        )
        assert "[download it](" in description
        assert "so the post links to your upload" in answer


async def test_the_buttons_and_an_open_modal_answer_after_a_restart(tmp_path: Path) -> None:
    """Nothing of a submission lives in the bot's memory: a modal opened before a restart is
    taken after it, and the Remove button of a post from before it still works."""
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY) as api:
        guild = await discord.add_guild("Remix club")
        alice, bob, carol = (discord.add_member(guild, n) for n in ("alice", "bob", "carol"))
        settings = load_settings(
            stack_env(discord, api, tmp_path / "db.sqlite"), need_discord=True, need_soundverse=True
        )
        async with bot_connected(discord, settings) as bot:
            stack = Stack(discord, api, bot, settings, guild, guild.default_channel, alice)
            async with opened_event(stack) as before:
                await before.submit(bob, "Bob's mix")
                opened = await before.open_modal(carol)
        async with bot_connected(discord, settings) as bot:
            stack = replace(stack, bot=bot)
            async with remix_events(stack) as events:
                after = replace(before, stack=stack, events=events)
                answer = await after.submit(carol, "Carol's mix", opened=opened)
                assert answer.startswith("Your remix **Carol's mix** is in: ")
                bobs, carols = await after.submissions()
                click = await discord.click(
                    after.post(bobs), f"stems-event:remove:{bobs.id}", member=alice
                )
                assert await discord.acknowledged(click) == 7
                assert await after.submissions() == [carols]
                assert after.post(carols).attached() == {"remix.wav": WAV}
