"""The vote of a remix event end to end: `/stems-event vote` posts a native poll of the
submissions in the event's channel (the organiser picks which when there are more than a poll
holds, or takes the first 10 with a note), members vote, and ``poll_result`` reads the counts
the end's summary shows. The loopback Discord checks every body against Discord's OpenAPI
description."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from stembot.bot.remix_event_vote import POSTING, poll_result
from tests.e2e.remix_event_rig import (
    EVENT_TITLE,
    EventRig,
    event_rig,
    private_answer,
    with_vote_command,
)
from tests.standins.discord import InteractionRecord, Member, MessageRecord

pytestmark = pytest.mark.slow


async def _submit_many(rig: EventRig, count: int) -> list[Member]:
    members = [rig.member(f"fan{n}") for n in range(1, count + 1)]
    for n, member in enumerate(members, start=1):
        answer = await rig.submit(member, f"Remix {n}")
        assert answer.startswith(f"Your remix **Remix {n}** is in")
    return members


async def _vote(rig: EventRig, member: Member, **options: Any) -> InteractionRecord:
    await with_vote_command(rig.stack.bot)
    return await rig.stack.discord.slash(
        "stems-event vote", member=member, channel=rig.stack.channel, options=options
    )


async def _posted(rig: EventRig, pick: InteractionRecord) -> str:
    """The organiser's private answer once the poll of their pick is posted (or refused)."""

    def answered(record: InteractionRecord) -> bool:
        shown = record.view().original or {}
        return not shown.get("components") and shown.get("content") not in (None, POSTING)

    await pick.wait_until(answered, 15)
    return await private_answer(rig.stack, pick)


def _polls(rig: EventRig) -> list[MessageRecord]:
    return [m for m in rig.posts() if m.poll is not None]


def _answers(poll_message: MessageRecord) -> list[str]:
    assert poll_message.poll is not None
    return [a["poll_media"]["text"] for a in poll_message.poll["answers"]]


async def test_twelve_submissions_the_organiser_picks_ten(tmp_path: Path) -> None:
    """More submissions than a poll holds: the organiser's private menu lists them all, the
    poll has the ten picked (title and member, in time order) for the hours asked, the event
    records it, members vote, and poll_result counts their votes."""
    async with event_rig(tmp_path / "db.sqlite") as rig:
        fans = await _submit_many(rig, 12)
        submissions = await rig.submissions()

        command = await _vote(rig, rig.organiser, hours=48)
        menu = await rig.stack.discord.final_message(command, 15)
        assert menu is not None and menu["flags"] & 64
        assert menu["content"].startswith("This event has 12 submissions, and a poll holds 10.")
        assert command.original is not None
        pick_id = f"stems-event:vote-pick:{rig.event.id}:48"
        assert command.original.custom_ids() == [
            pick_id,
            f"stems-event:vote-first:{rig.event.id}:48",
        ]
        (select,) = [c for row in menu["components"] for c in row["components"] if c["type"] == 3]
        assert [o["label"] for o in select["options"]] == [
            f"Remix {n} — fan{n}" for n in range(1, 13)
        ]
        assert (select["min_values"], select["max_values"]) == (2, 10)
        picked = [s for s in submissions if s.title not in ("Remix 2", "Remix 5")]
        assert not _polls(rig)

        pick = await rig.stack.discord.click(
            command.original,
            pick_id,
            member=rig.organiser,
            values=[str(s.id) for s in reversed(picked)],
        )
        answer = await _posted(rig, pick)

        (poll_message,) = _polls(rig)
        assert answer.startswith("The vote is up for 48 hours: ") and str(poll_message.id) in answer
        assert poll_message.poll is not None
        assert poll_message.poll["question"]["text"] == EVENT_TITLE
        assert _answers(poll_message) == [f"{s.title} — fan{s.title.split()[1]}" for s in picked]
        hours_left = (_expiry(poll_message) - time.time()) / 3600
        assert 47.9 < hours_left <= 48
        assert "The organiser picked 10 of the 12 submissions" in poll_message.content
        event = await rig.events.get(rig.event.id)
        assert event.poll_message_id == poll_message.id
        assert event.poll_submission_ids == tuple(s.id for s in picked)

        # fan1 and fan3 vote for the third answer (Remix 4), fan4 for the first (Remix 1)
        for fan, answer_id in ((fans[0], 3), (fans[2], 3), (fans[3], 1)):
            await rig.stack.discord.vote(poll_message, fan, answer_id)
        await rig.stack.discord.end_poll(poll_message)
        result = await poll_result(rig.stack.bot, event)
        assert [(s.title, votes) for s, votes in result][:3] == [
            ("Remix 4", 2),
            ("Remix 1", 1),
            ("Remix 3", 0),
        ]
        assert len(result) == 10 and sum(votes for _, votes in result) == 3


async def test_twelve_submissions_the_first_ten_with_a_note(tmp_path: Path) -> None:
    """The organiser takes the first ten by time: the poll says so; 24 hours by default."""
    async with event_rig(tmp_path / "db.sqlite") as rig:
        await _submit_many(rig, 12)
        submissions = await rig.submissions()
        command = await _vote(rig, rig.organiser)
        await rig.stack.discord.final_message(command, 15)
        assert command.original is not None

        first = await rig.stack.discord.click(
            command.original, f"stems-event:vote-first:{rig.event.id}:24", member=rig.organiser
        )
        assert (await _posted(rig, first)).startswith("The vote is up for 24 hours")

        (poll_message,) = _polls(rig)
        assert _answers(poll_message) == [f"Remix {n} — fan{n}" for n in range(1, 11)]
        assert (
            "A poll holds 10 answers, so this one lists the first 10 of the 12 submissions, "
            "by the time they were made." in poll_message.content
        )
        assert 23.9 < (_expiry(poll_message) - time.time()) / 3600 <= 24
        event = await rig.events.get(rig.event.id)
        assert event.poll_submission_ids == tuple(s.id for s in submissions[:10])


async def test_who_may_start_the_vote_and_when(tmp_path: Path) -> None:
    """A member who is not the organiser (nor a moderator) is refused; with two submissions
    only, a vote is refused; with three, the organiser's vote is posted at once with all of
    them; a second vote while it runs is refused. Every refusal is private and posts nothing."""
    async with event_rig(tmp_path / "db.sqlite") as rig:
        carol = rig.member("carol")
        await _submit_many(rig, 1)
        assert await private_answer(rig.stack, await _vote(rig, rig.organiser)) == (
            "A vote needs at least two submissions; this event has 1."
        )
        await rig.submit(rig.member("fan2"), "Remix 2")
        await rig.submit(rig.member("fan3"), "A title long enough to be cut in the poll's answer")

        refused = await _vote(rig, carol)
        assert await private_answer(rig.stack, refused) == (
            "Only the event's organiser, or a member with Manage Events or Manage Server, can "
            "start its vote."
        )
        assert not _polls(rig)

        posted = await private_answer(rig.stack, await _vote(rig, rig.organiser, hours=1))
        assert posted.startswith("The vote is up for 1 hour: ")
        (poll_message,) = _polls(rig)
        texts = _answers(poll_message)
        assert texts[:2] == ["Remix 1 — fan1", "Remix 2 — fan2"]
        assert len(texts[2]) == 55 and texts[2].endswith("… — fan3")
        assert "Every submission is in the poll." in poll_message.content

        again = await private_answer(rig.stack, await _vote(rig, rig.organiser))
        assert again.startswith("This event's vote is still running: ")
        assert str(poll_message.id) in again
        assert len(_polls(rig)) == 1


def _expiry(poll_message: MessageRecord) -> float:
    assert poll_message.poll is not None
    return datetime.fromisoformat(poll_message.poll["expiry"]).timestamp()
