"""The memory-per-server benchmark (tests/benchmarks/bench_guild_memory.py) measures
discord.py's cache: what it counts grows with what a server holds."""

from __future__ import annotations

import tracemalloc

from tests.benchmarks.bench_guild_memory import SHAPES, held_per_server


async def test_a_server_with_more_channels_and_roles_costs_more() -> None:
    try:
        small = await held_per_server(5, SHAPES["small"])
        large = await held_per_server(5, SHAPES["large"])
    finally:
        tracemalloc.stop()
    assert 1024 < small < large
