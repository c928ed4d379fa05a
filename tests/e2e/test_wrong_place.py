"""Outside the servers that added it, stembot answers one private line and does nothing else.

The commands are registered guild-only, but Discord can still send an interaction from a DM
(an older registration) or from a server the bot is not in (the app installed to a member's
account): every command and component must refuse there at run time, fetch nothing, charge
nothing and raise no incident.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stembot.bot.guild_only import NOT_HERE
from stembot.bot.result_card import result_card
from stembot.models import Mode, Separation, Stem
from stembot.result_media import ResultMedia, StemMedia
from tests.e2e.stack import Stack, buttons, eventually, is_result, running_stack
from tests.standins.discord import (
    BOT_DM,
    EPHEMERAL,
    MANAGE_GUILD,
    MEMBER_DEFAULT,
    USER_APP,
    USER_APP_DM,
    InteractionRecord,
    Member,
)

ELSEWHERE = [BOT_DM, USER_APP, USER_APP_DM]
# A component sits on a message the bot sent in its server; from a user install in that server
# Discord would name the server's install too, so only the DM contexts are elsewhere.
ELSEWHERE_FOR_COMPONENTS = [BOT_DM, USER_APP_DM]


async def member_for(stack: Stack, context: str) -> Member:
    """Someone who can reach the app in ``context``: for USER_APP, in a server without the bot."""
    permissions = MEMBER_DEFAULT | MANAGE_GUILD
    if context == USER_APP:
        server = await stack.discord.add_guild("No bot here", bot_present=False)
        return stack.discord.add_member(server, "visitor", permissions=permissions)
    return stack.discord.add_member(stack.guild, "visitor", permissions=permissions)


async def only_the_private_line(stack: Stack, interaction: InteractionRecord) -> None:
    """Acknowledged in time with exactly NOT_HERE, privately, and nothing else said."""
    await eventually(lambda: interaction.original is not None and not interaction.original.loading)
    view = interaction.view()
    assert view.original is not None
    assert view.original["content"] == NOT_HERE
    assert view.original["flags"] & EPHEMERAL
    assert view.followups == []
    assert interaction.acked_at is not None and interaction.acked_at <= interaction.ack_deadline


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


def assert_nothing_done(
    stack: Stack, fetched_before: int, caplog: pytest.LogCaptureFixture
) -> None:
    assert stack.api_calls() == 0
    assert stack.discord.cdn_fetches == fetched_before
    assert stack.ledger().ledger.get_request(1) is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert "incident" not in caplog.text.lower()


@pytest.mark.parametrize("context", ELSEWHERE)
@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("stems vocals", "file"),
        ("stems all", "url"),
        ("stems quota", None),
        ("stems-admin usage", None),
        ("stems-admin limits", {"daily": 0}),
        ("stems-admin export", None),
        ("stems-admin refund", {"request_id": 1}),
    ],
)
async def test_every_command_outside_its_servers_answers_one_private_line(
    stack: Stack, context: str, command: str, options: Any, no_errors: pytest.LogCaptureFixture
) -> None:
    member = await member_for(stack, context)
    if options == "file":
        options = {"file": stack.upload()}
    elif options == "url":
        options = {"url": stack.upload()["url"]}
    fetched = stack.discord.cdn_fetches
    interaction = await stack.discord.slash(
        command, member=member, options=options, context=context
    )
    await only_the_private_line(stack, interaction)
    assert_nothing_done(stack, fetched, no_errors)
    default = stack.settings.quota.guild_daily_limit
    assert stack.ledger().guilds.guild_limits(member.guild_id).daily == default


@pytest.mark.parametrize("context", ELSEWHERE)
async def test_split_stems_outside_its_servers_answers_one_private_line(
    stack: Stack, context: str, no_errors: pytest.LogCaptureFixture
) -> None:
    member = await member_for(stack, context)
    channel = stack.discord.guilds[member.guild_id].default_channel
    post = await stack.discord.post_user_message(channel, member, attachments=[stack.upload()])
    fetched = stack.discord.cdn_fetches
    menu = await stack.discord.message_command(
        "Split stems", member=member, target=post, context=context
    )
    await only_the_private_line(stack, menu)
    assert_nothing_done(stack, fetched, no_errors)


@pytest.mark.parametrize("context", ELSEWHERE_FOR_COMPONENTS)
async def test_every_component_outside_its_servers_answers_one_private_line(
    stack: Stack, context: str, no_errors: pytest.LogCaptureFixture
) -> None:
    """The picker's buttons and select and the Cancel button, clicked from elsewhere."""
    two = [stack.upload("a.wav"), stack.upload("b.wav")]
    pickers = []
    for files in ([stack.upload()], two):
        post = await stack.discord.post_user_message(stack.channel, stack.member, attachments=files)
        menu = await stack.discord.message_command("Split stems", member=stack.member, target=post)
        await stack.discord.final_message(menu)
        assert menu.original is not None
        pickers.append(menu.original)
    single, multiple = pickers
    (select,) = buttons(multiple.data)
    clicks = [
        (single, buttons(single.data)[0]["custom_id"], None),
        (multiple, select["custom_id"], [select["options"][0]["value"]]),
    ]
    fetched = stack.discord.cdn_fetches
    for message, custom_id, values in clicks:
        click = await stack.discord.click(
            message, custom_id, member=stack.member, values=values, context=context
        )
        await only_the_private_line(stack, click)
    assert_nothing_done(stack, fetched, no_errors)


async def test_the_mix_menu_outside_its_servers_answers_one_private_line(
    stack: Stack, no_errors: pytest.LogCaptureFixture
) -> None:
    """The free-mix menu of a result card, picked through the app on a member's account in a
    DM: nothing looked up or made. (In the bot's own DM the menu answers the requester of a
    result delivered there: tests/e2e/test_mixes.py.)"""
    stems = tuple(Stem(name, f"https://stems.example/{name}.wav") for name in ("vocals", "Drums"))
    separation = Separation(Mode.ALL, stems, datetime.now(UTC))
    media = ResultMedia(tuple(StemMedia(stem.name) for stem in stems))
    card = result_card("song.wav", separation, media, None, 1)
    await stack.bot.get_partial_messageable(stack.channel.id).send(view=card)
    message = stack.discord.channel_messages(stack.channel)[-1]
    fetched = stack.discord.cdn_fetches
    click = await stack.discord.click(
        message, "stems:mix:1", member=stack.member, values=["instrumental"], context=USER_APP_DM
    )
    await only_the_private_line(stack, click)
    assert_nothing_done(stack, fetched, no_errors)


@pytest.mark.parametrize("context", ELSEWHERE_FOR_COMPONENTS)
async def test_cancel_outside_its_servers_answers_one_private_line(
    tmp_path: Path, context: str, no_errors: pytest.LogCaptureFixture
) -> None:
    """The Cancel button of a queued request, clicked from elsewhere: the request stays."""
    env = {"STEMBOT_MAX_CONCURRENT_JOBS": "1"}
    async with running_stack(tmp_path / "db.sqlite", env, api_latency=1.0) as stack:
        await stack.stems("vocals")  # occupies the only slot
        bob = stack.discord.add_member(stack.guild, "bob")
        queued = await stack.stems("instruments", member=bob)
        await eventually(lambda: queued.original is not None and queued.original.custom_ids())
        assert queued.original is not None
        (cancel,) = queued.original.custom_ids()
        click = await stack.discord.click(queued.original, cancel, member=bob, context=context)
        await only_the_private_line(stack, click)
        assert is_result(await stack.answer(queued))
        assert stack.api_calls() == 2
    assert [r for r in no_errors.records if r.levelno >= logging.ERROR] == []
