"""Remix events: shared calls, free repeats, cancel, and "Split stems" on a posted track."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from stembot.models import RequestStatus
from tests.e2e.stack import WAV, Stack, buttons, eventually, is_result, running_stack, used_today


async def test_twenty_requests_for_one_track_make_one_call_and_one_charge(tmp_path: Path) -> None:
    """20 members split the same posted file at once: one API call, 20 results, 1 unit."""
    async with running_stack(tmp_path / "db.sqlite", api_latency=0.3) as stack:
        track = stack.upload("event-track.wav")
        members = [stack.discord.add_member(stack.guild, f"fan{n}") for n in range(20)]
        interactions = await asyncio.gather(
            *(stack.stems("vocals", member=m, options={"file": track}) for m in members)
        )
        answers = await asyncio.gather(*(stack.answer(i) for i in interactions))
        assert all(is_result(a) for a in answers)
        assert stack.api_calls() == 1
        assert used_today(stack) == 1


async def test_a_repeat_after_completion_is_answered_from_the_store(stack: Stack) -> None:
    """Asking again for the same file and mode is answered at once, free, without a call."""
    track = stack.upload()
    await stack.answer(await stack.stems("all", options={"file": track}))
    again = await stack.stems("all", options={"file": track})
    answer = await stack.answer(again)
    assert is_result(answer)
    assert stack.api_calls() == 1
    assert used_today(stack) == 2  # one "all" request charged, the repeat free


async def test_the_requester_can_cancel_while_queued_and_is_refunded(tmp_path: Path) -> None:
    """A queued request shows a Cancel button; the requester's click refunds it."""
    env = {"STEMBOT_MAX_CONCURRENT_JOBS": "1"}
    async with running_stack(tmp_path / "db.sqlite", env, api_latency=1.0) as stack:
        await stack.stems("vocals")  # occupies the only slot
        bob = stack.discord.add_member(stack.guild, "bob")
        queued = await stack.stems("vocals", member=bob)
        await eventually(lambda: _cancel_button(queued) is not None)
        assert queued.original is not None
        click = await stack.discord.click(queued.original, _cancel_id(queued), member=bob)
        await stack.discord.acknowledged(click)
        await eventually(lambda: "cancelled" in str(queued.view().original).lower())
        assert _cancel_button(queued) is None
        request = stack.ledger().ledger.get_request(2)
        assert request is not None and request.status is RequestStatus.CANCELLED
        assert stack.api_calls() == 1


async def test_someone_else_cannot_cancel_a_request(tmp_path: Path) -> None:
    """Another member's click on Cancel is refused privately; the request stays queued."""
    env = {"STEMBOT_MAX_CONCURRENT_JOBS": "1"}
    async with running_stack(tmp_path / "db.sqlite", env, api_latency=0.5) as stack:
        await stack.stems("vocals")
        bob, mallory = (stack.discord.add_member(stack.guild, n) for n in ("bob", "mallory"))
        queued = await stack.stems("vocals", member=bob)
        await eventually(lambda: _cancel_button(queued) is not None)
        assert queued.original is not None
        click = await stack.discord.click(queued.original, _cancel_id(queued), member=mallory)
        assert "Only the person who asked" in await stack.refusal(click)
        assert is_result(await stack.answer(queued))
        assert stack.api_calls() == 2


async def test_split_stems_on_a_message_with_two_audio_files(stack: Stack) -> None:
    """The context menu offers each file and mode; the pick runs the normal flow."""
    files = [stack.upload("intro.wav"), stack.upload("drop.wav")]
    cover = stack.upload("cover.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(32))
    post = await stack.discord.post_user_message(
        stack.channel, stack.member, "tonight's track", attachments=[*files, cover]
    )
    menu = await stack.discord.message_command("Split stems", member=stack.member, target=post)
    picker = await stack.discord.final_message(menu)
    assert picker is not None and picker["flags"] & 64  # only the user sees the picker
    (select,) = [c for c in buttons(picker) if c["type"] == 3]
    labels = [o["label"] for o in select["options"]]
    assert labels == [
        "Vocals · intro.wav",
        "Instruments · intro.wav",
        "All stems · intro.wav",
        "Vocals · drop.wav",
        "Instruments · drop.wav",
        "All stems · drop.wav",
    ]
    pick = select["options"][4]["value"]  # instruments of drop.wav
    assert menu.original is not None
    chosen = await stack.discord.click(
        menu.original, select["custom_id"], member=stack.member, values=[pick]
    )
    answer = await stack.answer(chosen)
    assert "drop.wav" in answer["embeds"][0]["title"]
    assert stack.api.requests[0].json() == {"audioUrl": files[1]["url"]}


async def test_split_stems_on_a_message_without_audio_is_refused(stack: Stack) -> None:
    """A message with only an image gets a private explanation and costs nothing."""
    cover = stack.upload("cover.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(32))
    post = await stack.discord.post_user_message(stack.channel, stack.member, attachments=[cover])
    menu = await stack.discord.message_command("Split stems", member=stack.member, target=post)
    assert "no audio file" in await stack.refusal(menu)
    assert stack.api_calls() == 0


async def test_split_stems_with_one_file_offers_one_button_per_mode(stack: Stack) -> None:
    """One audio file: three buttons; a click on Vocals splits the vocals."""
    post = await stack.discord.post_user_message(
        stack.channel, stack.member, attachments=[stack.upload("solo.wav", data=WAV)]
    )
    menu = await stack.discord.message_command("Split stems", member=stack.member, target=post)
    picker = await stack.discord.final_message(menu)
    assert picker is not None
    assert [b["label"] for b in buttons(picker)] == ["Vocals", "Instruments", "All stems"]
    assert menu.original is not None
    chosen = await stack.discord.click(
        menu.original, buttons(picker)[0]["custom_id"], member=stack.member
    )
    answer = await stack.answer(chosen)
    assert answer["embeds"][0]["title"].startswith("Vocals")


def _cancel_button(interaction: Any) -> str | None:
    original = interaction.view().original
    for button in buttons(original or {}):
        if button.get("label") == "Cancel":
            return str(button["custom_id"])
    return None


def _cancel_id(interaction: Any) -> str:
    custom_id = _cancel_button(interaction)
    assert custom_id is not None
    return custom_id
