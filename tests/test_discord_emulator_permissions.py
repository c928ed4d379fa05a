"""The loopback Discord's permissions: what the bot and a member may do per guild and per
channel reaches interactions (``app_permissions``, the member's ``permissions``) and
discord.py's own cache, and a REST call without the permission it needs is refused
(403 / 50013, or 50001 where the bot cannot see the channel)."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Awaitable, Callable

import discord
import pytest
from discord.ext import commands

from tests.act_bot import bot_channel, eventually, external_event
from tests.act_fixtures import bot_fixture, emulator_fixture, guild_fixture, probe_fixture  # noqa: F401
from tests.standins.discord import (
    ADMINISTRATOR,
    ATTACH_FILES,
    CREATE_EVENTS,
    CREATE_PUBLIC_THREADS,
    MANAGE_EVENTS,
    MANAGE_GUILD,
    MANAGE_MESSAGES,
    MEMBER_DEFAULT,
    PIN_MESSAGES,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    SEND_POLLS,
    VIEW_CHANNEL,
    Guild,
)
from tests.standins.discord.world import BOT_DEFAULT


async def test_interactions_carry_the_permissions_of_their_channel(emulator, bot, probe, guild):
    """A channel's overwrites change ``app_permissions`` and the member's ``permissions`` there
    and nowhere else; discord.py reads both as Discord sends them."""
    quiet = await emulator.add_channel(guild, "announcements")
    member = emulator.add_member(guild, "mod", permissions=MEMBER_DEFAULT | MANAGE_GUILD)
    await emulator.overwrite_permissions(quiet, deny=SEND_MESSAGES)
    await emulator.overwrite_permissions(quiet, member, allow=PIN_MESSAGES, deny=MANAGE_GUILD)

    async def seen(interaction: discord.Interaction) -> None:
        probe.seen.append((interaction.app_permissions.value, interaction.permissions.value))
        await interaction.response.send_message("ok", ephemeral=True)

    probe.action = seen
    for channel in (quiet, guild.default_channel):
        interaction = await emulator.slash("act", member=member, channel=channel)
        await emulator.final_message(interaction)
    assert probe.seen == [
        (BOT_DEFAULT & ~SEND_MESSAGES, MEMBER_DEFAULT | PIN_MESSAGES),
        (BOT_DEFAULT, MEMBER_DEFAULT | MANAGE_GUILD),
    ]
    assert emulator.bot_permissions_in(quiet) == BOT_DEFAULT & ~SEND_MESSAGES


async def test_discord_py_sees_the_bots_permissions_as_the_emulator_holds_them(
    emulator, bot, guild
):
    """GUILD_ROLE_UPDATE and CHANNEL_UPDATE keep discord.py's own permission view in step:
    a bot that asks ``permissions_for(guild.me)`` gets the emulator's answer."""
    await emulator.set_bot_permissions(guild, BOT_DEFAULT | PIN_MESSAGES | CREATE_EVENTS)
    await emulator.overwrite_permissions(guild.default_channel, allow=MANAGE_MESSAGES)
    server = bot.get_guild(guild.id)
    assert server is not None
    channel = bot_channel(bot, guild)
    expected = emulator.bot_permissions_in(guild.default_channel)
    await eventually(lambda: channel.permissions_for(server.me).value == expected)
    assert server.me.guild_permissions.value == BOT_DEFAULT | PIN_MESSAGES | CREATE_EVENTS
    assert expected & MANAGE_MESSAGES


async def test_an_administrator_keeps_everything_whatever_the_overwrites(emulator, bot, guild):
    await emulator.set_bot_permissions(guild, ADMINISTRATOR)
    await emulator.overwrite_permissions(guild.default_channel, deny=SEND_MESSAGES)
    message = await bot_channel(bot, guild).send("still allowed")
    await message.pin()
    assert emulator.pinned(guild.default_channel)[0].id == message.id


Act = Callable[[commands.Bot, Guild], Awaitable[object]]


async def _post(bot: commands.Bot, guild: Guild) -> object:
    return await bot_channel(bot, guild).send("hello")


async def _post_file(bot: commands.Bot, guild: Guild) -> object:
    return await bot_channel(bot, guild).send(file=discord.File(io.BytesIO(b"x"), "a.wav"))


async def _post_poll(bot: commands.Bot, guild: Guild) -> object:
    poll = discord.Poll("Best?", dt.timedelta(hours=1))
    poll.add_answer(text="a")
    return await bot_channel(bot, guild).send(poll=poll)


async def _pin(bot: commands.Bot, guild: Guild) -> object:
    message = await bot_channel(bot, guild).send("pin me")
    await message.pin()
    return message


async def _thread(bot: commands.Bot, guild: Guild) -> object:
    return await bot_channel(bot, guild).create_thread(
        name="t", type=discord.ChannelType.public_thread
    )


async def _post_in_thread(bot: commands.Bot, guild: Guild) -> object:
    (thread,) = bot_channel(bot, guild).threads
    return await thread.send("in the thread")


async def _event(bot: commands.Bot, guild: Guild) -> object:
    server = bot.get_guild(guild.id)
    assert server is not None
    return await external_event(server)


@pytest.mark.parametrize(
    ("act", "lacking", "code"),
    [
        (_post, SEND_MESSAGES, 50013),
        (_post, VIEW_CHANNEL, 50001),
        (_post_file, ATTACH_FILES, 50013),
        (_post_poll, SEND_POLLS, 50013),
        (_pin, PIN_MESSAGES, 50013),
        (_thread, CREATE_PUBLIC_THREADS, 50013),
        (_post_in_thread, SEND_MESSAGES_IN_THREADS, 50013),
        (_event, CREATE_EVENTS, 50013),
    ],
)
async def test_a_call_without_its_permission_is_refused(
    emulator, bot, guild, act: Act, lacking: int, code: int
):
    """Each call works with the permission and is refused without it; for pins and events
    the old MANAGE_MESSAGES and MANAGE_EVENTS are not enough."""
    everything = BOT_DEFAULT | PIN_MESSAGES | CREATE_EVENTS
    await emulator.set_bot_permissions(guild, everything)
    await _thread(bot, guild)
    await act(bot, guild)
    await emulator.set_bot_permissions(
        guild, (everything | MANAGE_MESSAGES | MANAGE_EVENTS) & ~lacking
    )
    with pytest.raises(discord.HTTPException) as refused:
        await act(bot, guild)
    assert (refused.value.status, refused.value.code) == (403, code)


async def test_a_channel_overwrite_refuses_there_only(emulator, bot, guild):
    """Denied SEND_MESSAGES in one channel: posts there are refused, elsewhere they land, and
    its threads take the channel's overwrites (but need SEND_MESSAGES_IN_THREADS, not
    SEND_MESSAGES)."""
    elsewhere = await emulator.add_channel(guild, "elsewhere")
    await _thread(bot, guild)
    await emulator.overwrite_permissions(
        guild.default_channel, deny=SEND_MESSAGES | SEND_MESSAGES_IN_THREADS
    )
    with pytest.raises(discord.Forbidden):
        await _post(bot, guild)
    with pytest.raises(discord.Forbidden):
        await _post_in_thread(bot, guild)
    other = bot.get_channel(elsewhere.id)
    assert isinstance(other, discord.TextChannel)
    await other.send("fine here")
    await emulator.overwrite_permissions(guild.default_channel, deny=SEND_MESSAGES)
    await _post_in_thread(bot, guild)
    assert [m.content for m in emulator.channel_messages(elsewhere)] == ["fine here"]
