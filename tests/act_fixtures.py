"""The loopback Discord and the /act bot (tests/act_bot.py) as pytest fixtures, for a test
module to import: ``emulator``, ``probe``, ``bot`` (connected, /act synced) and ``guild``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from discord.ext import commands

from tests.act_bot import Probe, act_bot
from tests.discord_clients import emulated_discord
from tests.standins.discord import DiscordEmulator, Guild


@pytest.fixture(name="emulator")
async def emulator_fixture() -> AsyncIterator[DiscordEmulator]:
    async with emulated_discord() as emulator:
        yield emulator


@pytest.fixture(name="probe")
def probe_fixture() -> Probe:
    return Probe()


@pytest.fixture(name="bot")
async def bot_fixture(emulator: DiscordEmulator, probe: Probe) -> AsyncIterator[commands.Bot]:
    async with act_bot(emulator, probe) as bot:
        yield bot


@pytest.fixture(name="guild")
def guild_fixture(emulator: DiscordEmulator, bot: commands.Bot) -> Guild:
    return next(iter(emulator.guilds.values()))
