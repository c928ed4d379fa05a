"""Hostile text: names chosen to ping, spoof or flood reach no one and show defused.

Every flow runs with file names like ``@everyone <@&role> <@member>``; the loopback Discord
works out who each message body would ping, from its content and ``allowed_mentions``, as
Discord does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.stack import (
    Stack,
    buttons,
    channel_posts,
    eventually,
    is_result,
    running_stack,
)
from tests.standins.discord import MANAGE_GUILD, MEMBER_DEFAULT
from tests.standins.soundverse import Reply

BIDI_AND_ZERO_WIDTH = "\u202e\u2066\u200b\u200d\ufeff"
# What must never be shown: U+200B is left out, as Discord's own mention escape inserts it.
NEVER_SHOWN = set("\u202e\u2066\u200d\ufeff")


def hostile_name(stack: Stack, bystander_id: int, extension: str = "wav") -> str:
    """A file name that tries every ping, markdown, bidi and length trick at once."""
    return (
        f"@everyone @here <@&{stack.guild.id}> <@{bystander_id}> <@!{bystander_id}> "
        f"**bold** __u__ `code` [link](https://evil.example) {BIDI_AND_ZERO_WIDTH}gnp."
        f"{'x' * 300}.{extension}"
    )


async def test_no_message_pings_anyone_but_the_requester_where_intended(tmp_path: Path) -> None:
    """Results, failures, refusals, picker, admin, alerts, channel and DM fallback: every body
    sets allowed_mentions, and the only ping is the requester's, on a result posted in the
    channel."""
    env = {"STEMBOT_MAX_CONCURRENT_JOBS": "1"}
    async with running_stack(tmp_path / "db.sqlite", env) as stack:
        discord = stack.discord
        bob = discord.add_member(stack.guild, "bob")
        mod = discord.add_member(stack.guild, "mod", permissions=MEMBER_DEFAULT | MANAGE_GUILD)
        name = hostile_name(stack, bob.id)

        async def admin(command: str, options: dict[str, Any] | None = None) -> None:
            done = await discord.slash(
                f"stems-admin {command}", member=mod, channel=stack.channel, options=options
            )
            await eventually(lambda: done.original is not None and not done.original.loading)

        # Alerts: the 8 units used below pass 80% and 100% of a daily limit of 8.
        logs = await discord.add_channel(stack.guild, "mod-log")
        await admin("limits", {"daily": 8, "per_user": 8})
        await admin("log-channel", {"channel": logs})
        await admin("usage")
        await admin("export", {"since": f"@everyone <@&{stack.guild.id}>"})
        await admin("export")
        await admin("refund", {"request_id": 999})

        # A result, answered by editing the interaction.
        result = await stack.stems("vocals", options={"file": stack.upload(name)})
        assert is_result(await stack.answer(result))
        # A failure, with the API's message shown verbatim.
        stack.api.fail_next(Reply.json({"success": False, "message": f"no <@{bob.id}> @everyone"}))
        failed = await stack.stems("instruments", options={"file": stack.upload(name)})
        await stack.answer(failed)
        # Refusals: not audio, and a link that is a web page.
        text = stack.upload(name + ".txt", "text/plain", b"hello")
        refused = await stack.stems("vocals", options={"file": text})
        await stack.refusal(refused)
        page = stack.upload(name + ".html", "text/html", b"<!doctype html><html></html>")
        await stack.refusal(await stack.stems("vocals", options={"url": page["url"]}))
        # The picker, with one file (buttons) and with two (a select), then a pick.
        for files in ([stack.upload(name)], [stack.upload(name), stack.upload("b" + name)]):
            post = await discord.post_user_message(stack.channel, bob, attachments=files)
            menu = await discord.message_command("Split stems", member=stack.member, target=post)
            picker = await discord.final_message(menu)
            assert picker is not None and menu.original is not None
            (first, *_) = buttons(picker)
            value = [first["options"][0]["value"]] if first["type"] == 3 else None
            pick = await discord.click(
                menu.original, first["custom_id"], member=stack.member, values=value
            )
            await stack.answer(pick)
        # Cancel while queued (an edit of the status message), and /stems quota.
        stack.api.latency = 1.0
        running = await stack.stems("vocals", options={"file": stack.upload("e" + name)})
        queued = await stack.stems("vocals", member=bob, options={"file": stack.upload(name)})
        await eventually(lambda: queued.original is not None and queued.original.custom_ids())
        assert queued.original is not None
        (cancel,) = queued.original.custom_ids()
        await discord.acknowledged(await discord.click(queued.original, cancel, member=bob))
        await stack.answer(running)
        await discord.final_message(await discord.slash("stems quota", member=stack.member))
        # Token expired: posted in the channel with the requester's mention...
        stack.api.latency = 0.3
        # (the channel holds bob's two posts)
        late = await stack.stems("all", options={"file": stack.upload("c" + name)})
        await discord.acknowledged(late)
        discord.age(late, 16 * 60)
        await eventually(lambda: len(channel_posts(discord, stack.channel)) == len(files) + 1)
        # ...and by DM when the channel refuses.
        discord.refuse_channel(stack.channel)
        dm = await stack.stems("all", options={"file": stack.upload("d" + name)})
        await discord.acknowledged(dm)
        discord.age(dm, 16 * 60)
        await eventually(lambda: discord.dm_messages(stack.member))
        await eventually(lambda: len(channel_posts(discord, logs)) >= 2)  # hello, alerts

    bodies = discord.sent_bodies
    assert len(bodies) > 20
    missing = [(b.method, b.route, b.body) for b in bodies if not b.sets_allowed_mentions]
    assert missing == [], "bodies without allowed_mentions"
    pinging = [b for b in bodies if b.pings.anyone]
    posts = [b for b in bodies if b.route == "/channels/{channel_id}/messages"]
    (channel_result,) = [b for b in posts if b.channel_id == stack.channel.id]
    assert pinging == [channel_result]
    assert channel_result.pings.users == {stack.member.id}
    assert not channel_result.pings.roles and not channel_result.pings.everyone
    # Hostile text made it into messages (so the check above was not vacuous), defused.
    assert any("everyone" in str(b.body.get("content")) for b in bodies)


def shown_names(message: dict[str, Any]) -> list[str]:
    """The texts a picker shows: its content and every button or option label."""
    labels = [str(message.get("content") or "")]
    for component in buttons(message):
        labels.append(str(component.get("label") or ""))
        labels += [str(o["label"]) for o in component.get("options") or []]
    return labels


async def test_the_picker_shows_file_names_defused_and_capped(stack: Stack) -> None:
    """No raw mention, no markdown, no bidi override or zero-width character, no 300-character
    name: in the picker's text and in its select options, as in every other place."""
    bob = stack.discord.add_member(stack.guild, "bob")
    name = hostile_name(stack, bob.id)
    for files in ([stack.upload(name)], [stack.upload(name), stack.upload(name)]):
        post = await stack.discord.post_user_message(stack.channel, bob, attachments=files)
        menu = await stack.discord.message_command("Split stems", member=stack.member, target=post)
        picker = await stack.discord.final_message(menu)
        assert picker is not None
        texts = shown_names(picker)
        assert all(not NEVER_SHOWN & set(t) for t in texts)
        assert all("@everyone" not in t and "@here" not in t for t in texts)
        assert all(f"<@{bob.id}>" not in t and f"<@&{stack.guild.id}>" not in t for t in texts)
        assert all(len(t) <= 200 for t in texts), [len(t) for t in texts]
        if len(files) == 1:
            assert "\\<@" in texts[0] and "\\*\\*" in texts[0]  # escaped where markdown renders
        else:
            (select,) = [c for c in buttons(picker) if c["type"] == 3]
            assert all(len(o["label"]) <= 100 for o in select["options"])
            assert all(o["label"].endswith("…") for o in select["options"])
