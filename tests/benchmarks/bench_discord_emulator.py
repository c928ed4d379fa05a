"""Full slash flows per second through the loopback Discord and the real discord.py client.

One flow: the emulator dispatches INTERACTION_CREATE -> the bot defers -> the bot edits the
response with an embed -> the emulator sees the finished response. Bot and emulator share one
process and one event loop, so the figure is a floor for what either side costs.

    python -m tests.benchmarks.bench_discord_emulator [--flows 1000] [--in-flight 64]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

import discord
from discord.ext import commands

from tests.discord_clients import connected, emulated_discord
from tests.standins.discord import DiscordEmulator, Member


def build_bot() -> commands.Bot:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0)

    @bot.tree.command(name="bench", description="Defer, then edit with an embed")
    async def bench(interaction: discord.Interaction, text: str) -> None:
        await interaction.response.defer(thinking=True)
        embed = discord.Embed(title="Stems ready", description=text)
        embed.add_field(name="Mode", value="vocals").add_field(name="Cost", value="1 unit")
        await interaction.edit_original_response(embed=embed)

    async def setup_hook() -> None:
        await bot.tree.sync()

    bot.setup_hook = setup_hook  # type: ignore[method-assign]
    return bot


async def one_flow(emulator: DiscordEmulator, member: Member, n: int) -> None:
    interaction = await emulator.slash("bench", member=member, options={"text": f"flow {n}"})
    message = await emulator.final_message(interaction, timeout_s=30)
    assert message is not None and message["embeds"][0]["description"] == f"flow {n}"


async def run(flows: int, in_flight: int, validate: bool) -> tuple[float, float]:
    async with emulated_discord(validate_spec=validate) as emulator:
        guild = await emulator.add_guild()
        member = emulator.add_member(guild, "alice")
        bot = build_bot()
        async with connected(bot, emulator):
            return await measure(emulator, member, flows, in_flight)


async def measure(
    emulator: DiscordEmulator, member: Member, flows: int, in_flight: int
) -> tuple[float, float]:
    """Flows per second, one at a time and ``in_flight`` at once."""
    for n in range(20):  # warm-up: caches, validators, connection pool
        await one_flow(emulator, member, n)

    start = time.perf_counter()
    for n in range(flows // 4):
        await one_flow(emulator, member, n)
    sequential = (flows // 4) / (time.perf_counter() - start)

    gate = asyncio.Semaphore(in_flight)

    async def gated(n: int) -> None:
        async with gate:
            await one_flow(emulator, member, n)

    start = time.perf_counter()
    await asyncio.gather(*(gated(n) for n in range(flows)))
    concurrent = flows / (time.perf_counter() - start)
    failed = [i for i in emulator.interactions.values() if i.failed]
    assert not failed, f"{len(failed)} interactions were not acknowledged in 3 s"
    return sequential, concurrent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=1000, help="flows in the concurrent run")
    parser.add_argument("--in-flight", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"full slash flows/s (sequential: {args.flows // 4} flows; concurrent: {args.flows})")
    for validate in (False, True):
        sequential, concurrent = asyncio.run(run(args.flows, args.in_flight, validate))
        label = "OpenAPI check on " if validate else "OpenAPI check off"
        print(
            f"  {label}: sequential {sequential:7.0f}/s   "
            f"{args.in_flight} in flight {concurrent:7.0f}/s"
        )


if __name__ == "__main__":
    main()
