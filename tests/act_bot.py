"""A plain discord.py bot with one command, /act, that runs whatever a test hands it: how the
loopback Discord's tests drive the real client through a REST route at a time."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from tests.discord_clients import connected
from tests.standins.discord import DiscordEmulator, Guild, InteractionRecord, Member

Action = Callable[[discord.Interaction], Awaitable[None]]


class Probe:
    """The action /act runs, what went wrong in it, and what the test wants to see."""

    def __init__(self) -> None:
        self.action: Action | None = None
        self.errors: list[Exception] = []
        self.seen: list[Any] = []
        self.done = asyncio.Event()


@contextlib.asynccontextmanager
async def act_bot(
    emulator: DiscordEmulator, probe: Probe, guild_name: str = "Test server"
) -> AsyncIterator[commands.Bot]:
    """A guild, then the bot connected and its /act synced, for the block."""
    await emulator.add_guild(guild_name)
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0)

    @app_commands.command(name="act", description="Run the test's action")
    async def act(interaction: discord.Interaction) -> None:
        try:
            assert probe.action is not None
            await probe.action(interaction)
        except Exception as error:  # the test reads it
            probe.errors.append(error)
        finally:
            probe.done.set()

    async def setup_hook() -> None:
        bot.tree.add_command(act)
        await bot.tree.sync()

    bot.setup_hook = setup_hook  # type: ignore[method-assign]
    async with connected(bot, emulator):
        yield bot


async def run(
    emulator: DiscordEmulator,
    probe: Probe,
    guild: Guild,
    action: Action,
    member: Member | None = None,
) -> InteractionRecord:
    """Run ``action`` in the bot as the handler of /act (by ``member``, default a new one)."""
    probe.action = action
    probe.done.clear()
    interaction = await emulator.slash("act", member=member or emulator.add_member(guild, "alice"))
    async with asyncio.timeout(10):
        await probe.done.wait()
    return interaction


def files(*named: tuple[str, bytes]) -> list[discord.File]:
    return [discord.File(io.BytesIO(data), name) for name, data in named]


def bot_channel(bot: commands.Bot, guild: Guild) -> discord.TextChannel:
    channel = bot.get_channel(guild.default_channel.id)
    assert isinstance(channel, discord.TextChannel)
    return channel


async def eventually(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Wait until ``condition()`` holds: state the bot keeps (its cache after a gateway
    event), which nothing here can await."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - the state lives in the bot
            await asyncio.sleep(0.005)


async def external_event(
    server: discord.Guild, start_in_s: float = 3600, name: str = "Remix event"
) -> discord.ScheduledEvent:
    """A scheduled event somewhere outside a voice channel, starting in ``start_in_s`` and
    lasting three days, created by the bot through discord.py."""
    start = discord.utils.utcnow() + dt.timedelta(seconds=start_in_s)
    return await server.create_scheduled_event(
        name=name,
        start_time=start,
        end_time=start + dt.timedelta(days=3),
        entity_type=discord.EntityType.external,
        location="#remix-event",
        privacy_level=discord.PrivacyLevel.guild_only,
        description="One track, everyone's stems",
    )
