"""The floor: a minimal discord.py bot that only defers `/stems vocals` and then edits the
reply with a link button. What any discord.py bot pays on this machine for the same burst.

`bench_event --floor` starts it as its own OS process exactly as it starts stembot (same
environment, same loopback Discord, same gateway and interaction path, the same client options
as StemBot), so the difference between the two is the bot's own work:

    python -m tests.benchmarks.floor_bot [ignored arguments]

It reads DISCORD_TOKEN, DISCORD_API_BASE and DISCORD_GATEWAY_URL (and, as stembot does,
STEMBOT_SHARD_COUNT with STEMBOT_SHARD_IDS naming one shard: bench_processes runs one floor
bot per shard); the arguments stembot's entry point takes (``--env-file ... run``) are
accepted and ignored. No logging is set up:
discord.py's own loggers stay silent, as a minimal bot's do.
"""

from __future__ import annotations

import asyncio
import os
import signal

import discord
from discord import app_commands

from stembot.bot.endpoints import use_discord_endpoints

RESULT_URL = "https://example.invalid/stems/vocals.wav"


class FloorBot(discord.Client):
    def __init__(self, shard_id: int | None = None, shard_count: int | None = None) -> None:
        super().__init__(  # StemBot's options: what the gateway path costs is the same
            shard_id=shard_id,
            shard_count=shard_count,
            intents=discord.Intents(guilds=True),
            guild_ready_timeout=0,
            chunk_guilds_at_startup=False,
            member_cache_flags=discord.MemberCacheFlags.none(),
            max_messages=None,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.tree = app_commands.CommandTree(self)
        stems = app_commands.Group(name="stems", description="Split a song", guild_only=True)

        @stems.command(name="vocals", description="Defer, then edit with a link button")
        async def vocals(
            interaction: discord.Interaction,
            file: discord.Attachment | None = None,
            url: str | None = None,
        ) -> None:
            await interaction.response.defer(thinking=True)
            view = discord.ui.View()
            view.add_item(discord.ui.Button(label="Vocals", url=RESULT_URL))
            name = file.filename if file is not None else "a link"
            await interaction.edit_original_response(content=name, view=view)

        self.tree.add_command(stems)

    async def setup_hook(self) -> None:
        await self.tree.sync()


async def run() -> None:
    use_discord_endpoints(os.environ["DISCORD_API_BASE"], os.environ["DISCORD_GATEWAY_URL"])
    count, ids = os.environ.get("STEMBOT_SHARD_COUNT"), os.environ.get("STEMBOT_SHARD_IDS")
    shard = (int(ids), int(count)) if count and ids else (None, None)
    async with FloorBot(*shard) as bot:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(bot.close()))
        await bot.start(os.environ["DISCORD_TOKEN"])


if __name__ == "__main__":
    asyncio.run(run())
