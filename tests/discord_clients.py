"""A discord.py client run against the loopback Discord (tests/standins/discord)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import discord

from stembot.bot.endpoints import use_discord_endpoints
from tests.standins.discord import DiscordEmulator


@contextlib.asynccontextmanager
async def emulated_discord(*, validate_spec: bool | None = None) -> AsyncIterator[DiscordEmulator]:
    """A running loopback Discord, and discord.py's REST base and gateway pointed at it for the
    block (then as before). ``validate_spec`` as DiscordEmulator takes it."""
    async with DiscordEmulator(validate_spec=validate_spec) as emulator:
        previous = use_discord_endpoints(emulator.api_base, emulator.gateway_url)
        try:
            yield emulator
        finally:
            use_discord_endpoints(*previous)


@contextlib.asynccontextmanager
async def connected(client: discord.Client, emulator: DiscordEmulator) -> AsyncIterator[None]:
    """``client`` logged in to ``emulator`` and ready for the block, then closed."""
    await client.login(emulator.token)
    running = asyncio.create_task(client.connect())
    try:
        await asyncio.wait_for(client.wait_until_ready(), 10)
        yield
    finally:
        await client.close()
        await running
