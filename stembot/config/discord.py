"""Settings of the Discord side: the token, where Discord is, the shards this process runs."""

from __future__ import annotations

from dataclasses import dataclass

from stembot.config import kinds
from stembot.config.declaring import name_of, setting
from stembot.config.kinds import Kind
from stembot.config.values import Secret

_DISCORD = "Discord"

# fmt: off
# (One setting to a few lines: name, default, kind and section, then its help.)


@dataclass(frozen=True)
class DiscordSettings:
    """Discord: the bot's token, Discord's addresses, the shards."""

    discord_token: Secret | None = setting(
        "DISCORD_TOKEN", None, kinds.secret("your bot's token from the Discord Developer Portal"),
        _DISCORD, "Your bot's token (Developer Portal -> your application -> Bot -> Reset Token).",
        secret=True, required="discord",
    )
    discord_api_base: str = setting(
        "DISCORD_API_BASE", "https://discord.com/api/v10", kinds.HTTP_URL, _DISCORD,
        "Discord's REST API base; change only for a REST proxy or local testing.",
    )
    discord_gateway_url: str = setting(
        "DISCORD_GATEWAY_URL", "wss://gateway.discord.gg",
        kinds.url(("ws", "wss"), "a ws:// or wss:// URL without a query"), _DISCORD,
        "Discord's gateway websocket URL (no query); change only for a gateway proxy or local "
        "testing.",
    )
    dev_guild_id: int | None = setting(
        "STEMBOT_DEV_GUILD_ID", None, Kind(kinds.snowflake, "a Discord server id (digits)"),
        _DISCORD,
        "Register commands in this one server only (instant updates while developing); "
        "empty = globally.",
    )
    shard_count: int | None = setting(
        "STEMBOT_SHARD_COUNT", None, kinds.AT_LEAST_1, _DISCORD,
        "Gateway shards of the whole bot (every process the same); empty = Discord's "
        "recommendation. Discord needs one per 2,500 servers.",
    )
    shard_ids: tuple[int, ...] | None = setting(
        "STEMBOT_SHARD_IDS", None,
        Kind(
            kinds.shard_id_list,
            "shard ids such as 0-3 or 0,2,5 (from 0, below STEMBOT_SHARD_COUNT)",
        ),
        _DISCORD,
        "The shards this process runs, e.g. 0-3 or 0,2,5 (needs STEMBOT_SHARD_COUNT); "
        "empty = all of them.",
    )

# fmt: on


def shards_outside_the_count(settings: DiscordSettings) -> list[str]:
    """Every process must agree on the count, so a range needs it said, and within it."""
    ids, count = settings.shard_ids, settings.shard_count
    ids_name = name_of(DiscordSettings, "shard_ids")
    count_name = name_of(DiscordSettings, "shard_count")
    if ids is None:
        return []
    if count is None:
        return [f"{ids_name} needs {count_name}: set the bot's total number of shards too"]
    outside = [shard for shard in ids if shard >= count]
    if outside:
        listed = ", ".join(map(str, outside))
        return [
            f"{ids_name} names shard(s) {listed}, but {count_name} is {count}: "
            f"shard ids go from 0 to {count - 1}"
        ]
    return []
