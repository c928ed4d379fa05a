"""The bot's shards as plain values, read when asked (a metrics scrape, a health check)."""

from __future__ import annotations

import collections
import math

import discord

from stembot.shards import Shards, ShardState


class BotShards:
    def __init__(self, bot: discord.AutoShardedClient) -> None:
        self._bot = bot

    @property
    def count(self) -> int | None:
        """The whole bot's shard count; None until it is known (Discord's recommendation is
        asked when the bot connects)."""
        return self._bot.shard_count

    def read(self) -> Shards:
        """Every shard this process runs, connected or not (a shard not launched yet is not)."""
        bot = self._bot
        count = bot.shard_count
        ids = bot.shard_ids if bot.shard_ids is not None else range(count or 0)
        guilds = collections.Counter(guild.shard_id for guild in bot.guilds)
        states = []
        for shard_id in sorted(ids):
            info = bot.get_shard(shard_id)
            connected = info is not None and not info.is_closed()
            latency = info.latency if info is not None and connected else math.inf
            shown = latency if math.isfinite(latency) else None
            states.append(ShardState(shard_id, connected, shown, guilds[shard_id]))
        return Shards(count, tuple(states))
