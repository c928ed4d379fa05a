"""The "Split stems" picker keeps its files to itself: its server, its member, its choices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stembot.bot.split import EXPIRED, NOT_OFFERED, NOT_YOURS
from stembot.config import load_settings
from tests.e2e.stack import (
    API_KEY,
    Stack,
    bot_connected,
    buttons,
    is_result,
    stack_env,
    used_today,
)
from tests.standins.discord import DiscordEmulator, InteractionRecord, Member
from tests.standins.soundverse import SoundverseStandin


async def open_picker(
    stack: Stack,
    member: Member,
    files: list[dict[str, Any]],
    discord: DiscordEmulator | None = None,
) -> tuple[InteractionRecord, dict[str, Any]]:
    """``member`` posts ``files`` in their server's first channel and opens the picker on it."""
    discord = discord or stack.discord
    channel = discord.guilds[member.guild_id].default_channel
    post = await discord.post_user_message(channel, member, attachments=files)
    menu = await discord.message_command("Split stems", member=member, target=post)
    picker = await discord.final_message(menu)
    assert picker is not None and menu.original is not None
    return menu, picker


def select_of(picker: dict[str, Any]) -> dict[str, Any]:
    (select,) = [c for c in buttons(picker) if c["type"] == 3]
    return select


async def test_a_select_value_the_picker_did_not_offer_is_refused(stack: Stack) -> None:
    """A modified client picks, in its own picker, a file offered in another server's picker,
    or something no picker offered: refused privately, nothing fetched, nothing spent."""
    other_guild = await stack.discord.add_guild("Elsewhere")
    mallory = stack.discord.add_member(other_guild, "mallory")
    # alice's picker, in her server, offers her file X.
    _, alices = await open_picker(stack, stack.member, [stack.upload("secret.wav")])
    attachment_x = buttons(alices)[0]["custom_id"].rsplit(":", 1)[1]
    # mallory's own picker in her server offers two files of hers.
    files = [stack.upload("a.wav"), stack.upload("b.wav")]
    menu, hers = await open_picker(stack, mallory, files)
    assert menu.original is not None
    select = select_of(hers)
    fetched = stack.discord.cdn_fetches
    for value in (f"vocals:{attachment_x}", "vocals:1", "karaoke:" + files[0]["id"], ""):
        click = await stack.discord.click(
            menu.original, select["custom_id"], member=mallory, values=[value]
        )
        assert await stack.refusal(click) == NOT_OFFERED
    assert stack.api_calls() == 0
    assert stack.discord.cdn_fetches == fetched
    assert used_today(stack) == 0


async def test_another_members_click_on_a_picker_is_refused(stack: Stack) -> None:
    """The picker is private, so Discord shows it to no one else; should another member's
    click reach the bot all the same (a modified client), it runs nothing."""
    bob = stack.discord.add_member(stack.guild, "bob")
    menu, picker = await open_picker(stack, stack.member, [stack.upload("hers.wav")])
    assert menu.original is not None
    vocals = buttons(picker)[0]["custom_id"]
    click = await stack.discord.click(menu.original, vocals, member=bob)
    assert await stack.refusal(click) == NOT_YOURS
    assert stack.api_calls() == 0
    own = await stack.discord.click(menu.original, vocals, member=stack.member)
    assert is_result(await stack.answer(own))


async def test_a_picker_from_before_a_restart_says_it_expired(tmp_path: Path) -> None:
    """The picker's files are not kept across a restart: a click says so, nothing is guessed."""
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY) as api:
        guild = await discord.add_guild()
        alice = discord.add_member(guild, "alice")
        env = stack_env(discord, api, tmp_path / "stembot.db")
        settings = load_settings(env, need_discord=True, need_soundverse=True)
        track = discord.upload_attachment(b"RIFF" + bytes(64), "song.wav", "audio/wav")
        async with bot_connected(discord, settings):
            post = await discord.post_user_message(
                guild.default_channel, alice, attachments=[track]
            )
            menu = await discord.message_command("Split stems", member=alice, target=post)
            picker = await discord.final_message(menu)
        assert picker is not None and menu.original is not None
        async with bot_connected(discord, settings):
            click = await discord.click(
                menu.original, buttons(picker)[0]["custom_id"], member=alice
            )
            answer = await discord.final_message(click)
        assert answer is not None and answer["content"] == EXPIRED
        assert answer["flags"] & 64
        assert api.requests == []


async def test_ten_files_are_offered_then_the_picked_files_modes(stack: Stack) -> None:
    """Ten files (the most one message holds) by three modes would not fit in one select: the
    picker offers every file, and a pick turns it into that file's mode buttons. Every step
    stays private and within Discord's 25 options (the loopback Discord refuses more)."""
    files = [stack.upload(f"take{i}.wav") for i in range(10)]
    menu, picker = await open_picker(stack, stack.member, files)
    assert menu.original is not None
    assert picker["content"] == "This message has 10 audio files. Pick one, then what to split:"
    select = select_of(picker)
    assert [o["label"] for o in select["options"]] == [f"take{i}.wav" for i in range(10)]
    fetched = stack.discord.cdn_fetches
    for value in ("1", "vocals:" + files[7]["id"], ""):
        click = await stack.discord.click(
            menu.original, select["custom_id"], member=stack.member, values=[value]
        )
        assert await stack.refusal(click) == NOT_OFFERED
    pick_file = await stack.discord.click(
        menu.original, select["custom_id"], member=stack.member, values=[files[7]["id"]]
    )
    await stack.discord.acknowledged(pick_file)
    shown = menu.original.data
    assert shown["content"] == "Split **take7.wav** into…" and shown["flags"] & 64
    assert [b["label"] for b in buttons(shown)] == ["Vocals", "Instruments", "All stems"]
    assert stack.discord.cdn_fetches == fetched and stack.api_calls() == 0
    instruments = buttons(shown)[1]["custom_id"]
    answer = await stack.answer(
        await stack.discord.click(menu.original, instruments, member=stack.member)
    )
    assert answer["embeds"][0]["title"] == "Instruments · take7.wav"
    assert stack.api.requests[0].json() == {"audioUrl": files[7]["url"]}


async def test_the_file_select_refuses_another_members_pick(stack: Stack) -> None:
    """The file step keeps the picker's rules: only the member it was shown to picks."""
    bob = stack.discord.add_member(stack.guild, "bob")
    files = [stack.upload(f"take{i}.wav") for i in range(9)]
    menu, picker = await open_picker(stack, stack.member, files)
    assert menu.original is not None
    select = select_of(picker)
    click = await stack.discord.click(
        menu.original, select["custom_id"], member=bob, values=[files[0]["id"]]
    )
    assert await stack.refusal(click) == NOT_YOURS
    assert select_of(menu.original.data) == select
