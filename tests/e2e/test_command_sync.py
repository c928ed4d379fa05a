"""Slash commands are registered only when they changed, or when an operator forces it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stembot.bot.endpoints import current_discord_endpoints, use_discord_endpoints
from stembot.cli.run import run_bot
from stembot.config import Settings, load_settings
from tests.e2e.stack import API_KEY, WAV, bot_connected, run_stembot, stack_env
from tests.standins.discord import DiscordEmulator
from tests.standins.soundverse import SoundverseStandin


@dataclass
class Outside:
    """Discord and the API, which outlive the bots started against them in one test."""

    discord: DiscordEmulator
    api: SoundverseStandin

    def settings(self, db_path: Path, **env: str) -> Settings:
        values = {**stack_env(self.discord, self.api, db_path), **env}
        return load_settings(values, need_discord=True, need_soundverse=True)

    def sync_scopes(self) -> list[int | None]:
        return [scope for _, scope in self.discord.command_syncs]


@pytest.fixture
async def outside() -> AsyncIterator[Outside]:
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY) as api:
        yield Outside(discord, api)


async def test_a_restart_on_the_same_database_does_not_sync(
    outside: Outside, tmp_path: Path
) -> None:
    """First start syncs the global commands once; a second start with the same ones does not."""
    settings = outside.settings(tmp_path / "stembot.db")
    async with bot_connected(outside.discord, settings):
        assert outside.sync_scopes() == [None]
    async with bot_connected(outside.discord, settings):
        pass
    assert outside.sync_scopes() == [None]


async def test_a_fresh_database_syncs_even_if_discord_has_the_commands(
    outside: Outside, tmp_path: Path
) -> None:
    """A new database has no record of a sync, so it syncs once."""
    async with bot_connected(outside.discord, outside.settings(tmp_path / "first.db")):
        pass
    async with bot_connected(outside.discord, outside.settings(tmp_path / "second.db")):
        pass
    assert outside.sync_scopes() == [None, None]


async def test_a_dev_guild_gets_the_commands_and_nothing_global(
    outside: Outside, tmp_path: Path
) -> None:
    """STEMBOT_DEV_GUILD_ID: only that guild is synced, and /stems works there."""
    guild = await outside.discord.add_guild("Dev server")
    member = outside.discord.add_member(guild, "dev")
    settings = outside.settings(tmp_path / "stembot.db", STEMBOT_DEV_GUILD_ID=str(guild.id))
    async with bot_connected(outside.discord, settings):
        attachment = outside.discord.upload_attachment(WAV, "song.wav", "audio/wav")
        interaction = await outside.discord.slash(
            "stems vocals", member=member, options={"file": attachment}
        )
        await outside.discord.acknowledged(interaction)
    assert outside.sync_scopes() == [guild.id]
    assert not outside.discord.commands.get(None)
    assert interaction.payload["data"]["guild_id"] == str(guild.id)


async def test_forced_sync_runs_even_when_nothing_changed(outside: Outside, tmp_path: Path) -> None:
    """`stembot sync` (run_bot with force_sync) syncs although the commands are unchanged."""
    settings = outside.settings(tmp_path / "stembot.db")
    async with bot_connected(outside.discord, settings):
        pass
    session = outside.discord.gateway.current
    previous = current_discord_endpoints()
    try:
        await run_bot(settings, force_sync=True, stay=False)
    finally:
        use_discord_endpoints(*previous)
    assert outside.sync_scopes() == [None, None]
    assert outside.discord.gateway.current is session  # it synced without connecting


@pytest.mark.slow
async def test_the_sync_command_line_syncs_and_exits(outside: Outside, tmp_path: Path) -> None:
    """`python -m stembot sync` as an operator runs it: one forced sync, exit status 0."""
    db = tmp_path / "stembot.db"
    async with bot_connected(outside.discord, outside.settings(db)):
        pass
    session = outside.discord.gateway.current
    env = stack_env(outside.discord, outside.api, db)
    status, output = await run_stembot(env, "sync", timeout_s=30)
    assert status == 0, output
    assert outside.sync_scopes() == [None, None]
    assert outside.discord.gateway.current is session  # it synced without connecting


@pytest.mark.slow
async def test_the_sync_command_needs_no_soundverse_key(outside: Outside, tmp_path: Path) -> None:
    """`stembot sync` talks to Discord only: without SOUNDVERSE_API_KEY it still syncs."""
    env = stack_env(outside.discord, outside.api, tmp_path / "stembot.db")
    del env["SOUNDVERSE_API_KEY"], env["SOUNDVERSE_API_BASE"]
    status, output = await run_stembot(env, "sync", timeout_s=30)
    assert status == 0, output
    assert outside.sync_scopes() == [None]
    assert outside.api.requests == []
