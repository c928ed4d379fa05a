"""The gateway shards a process runs, as plain values (the Discord layer reads them from the
bot: stembot/bot/shard_states.py), and which shard Discord routes a server to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard Discord sends ``guild_id``'s events to."""
    return (guild_id >> 22) % shard_count


@dataclass(frozen=True, slots=True)
class ShardState:
    id: int
    connected: bool
    # Between a heartbeat and Discord's acknowledgement; None before the first.
    latency_s: float | None
    guilds: int


@dataclass(frozen=True, slots=True)
class Shards:
    """This process's shards, by id; ``count`` is the whole bot's (None until it is known)."""

    count: int | None
    states: tuple[ShardState, ...]

    @property
    def expected(self) -> tuple[int, ...]:
        return tuple(state.id for state in self.states)

    @property
    def connected(self) -> tuple[int, ...]:
        return tuple(state.id for state in self.states if state.connected)

    @property
    def all_connected(self) -> bool:
        return bool(self.states) and all(state.connected for state in self.states)


class ShardSource(Protocol):
    """The bot's shards, read when asked (stembot/bot/shard_states.py)."""

    @property
    def count(self) -> int | None: ...

    def read(self) -> Shards: ...
