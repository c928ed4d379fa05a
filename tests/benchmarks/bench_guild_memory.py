"""What one server costs a bot process in memory: discord.py's cache of it, with stembot's
client options (the `guilds` intent only, no member cache, no message cache).

    python -m tests.benchmarks.bench_guild_memory [--guilds 1000] [--shape typical]

The loopback Discord sends the bot GUILD_CREATE for each server, shaped as ``--shape`` says
(channels and roles per server: small 5/3, typical 25/15, large 100/60; every shape all of
them, when not given). Counted: the memory allocated by discord.py's own code and still held
once every server has arrived (tracemalloc, frames in the discord package; the loopback
Discord runs in this process and is not counted), divided by the number of servers. Resident
memory is not a measure here: the loopback Discord's own copy of each server and tracemalloc's
bookkeeping grow with it. README "Running at scale" uses it for what 100,000 servers cost.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import discord

from tests.benchmarks.floor_bot import FloorBot
from tests.discord_clients import connected, emulated_discord
from tests.standins.discord.world import Channel, Role, snowflake


@dataclass(frozen=True)
class Shape:
    channels: int
    roles: int


SHAPES = {
    "small": Shape(channels=5, roles=3),
    "typical": Shape(channels=25, roles=15),
    "large": Shape(channels=100, roles=60),
}
_DISCORD = str(Path(discord.__file__).parent)


def _held_by_discord() -> int:
    if not tracemalloc.is_tracing():
        tracemalloc.start(30)  # deep enough to find discord.py's frame under the stdlib's
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, f"{_DISCORD}/*", all_frames=True)]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def held_per_server(guilds: int, shape: Shape) -> float:
    """Bytes held by discord.py per server."""
    async with emulated_discord(validate_spec=False) as emulator:
        bot = FloorBot()
        async with connected(bot, emulator):
            gc.collect()
            before = _held_by_discord()
            last = f"server {guilds - 1}"
            all_arrived = asyncio.ensure_future(
                bot.wait_for("guild_available", check=lambda g: g.name == last, timeout=120)
            )
            for n in range(guilds):
                # Not present yet: the one GUILD_CREATE below carries the whole server.
                guild = await emulator.add_guild(f"server {n}", bot_present=False)
                guild.bot_present = True
                for c in range(shape.channels - 1):
                    channel = Channel(snowflake(), f"channel-{c}", guild.id)
                    guild.channels[channel.id] = channel
                    emulator.add_channel_record(channel)
                for r in range(shape.roles):
                    guild.roles[snowflake()] = Role(snowflake(), f"role {r}", position=r + 1)
                await emulator.gateway.dispatch(
                    "GUILD_CREATE", guild.payload(emulator.bot_user), guild.id
                )
            await all_arrived
            gc.collect()
            held = _held_by_discord() - before
    return held / guilds


async def run(guilds: int, shapes: list[str]) -> None:
    print(f"{guilds} servers per shape; discord.py's cache per server (tracemalloc)")
    print(f"{'shape':>8} {'channels':>8} {'roles':>5} {'KiB/server':>10} {'GiB/100,000':>11}")
    for name in shapes:
        shape = SHAPES[name]
        per_guild = await held_per_server(guilds, shape)
        print(
            f"{name:>8} {shape.channels:>8} {shape.roles:>5} "
            f"{per_guild / 1024:>10.1f} {per_guild * 100_000 / 2**30:>11.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guilds", type=int, default=1000)
    parser.add_argument("--shape", choices=sorted(SHAPES), action="append")
    args = parser.parse_args(argv)
    asyncio.run(run(args.guilds, args.shape or list(SHAPES)))


if __name__ == "__main__":
    main()
