"""Discord's sharding rules for the loopback gateway (Discord's gateway documentation, Sharding).

- A guild's events go to shard ``(guild_id >> 22) % num_shards``; events without a guild (DMs)
  to shard 0. Each session is identified with ``shard: [shard_id, num_shards]`` (none: [0, 1]);
  sessions of different ``num_shards`` may live side by side, and each gets its own share.
- A shard may hold at most 2,500 guilds: past that the IDENTIFY is closed with 4011
  (``max_guilds_per_shard`` lowers it for tests).
- ``GET /gateway/bot`` tells the recommended shard count and the session start limit: ``total``
  IDENTIFYs per window, ``remaining``, ``reset_after`` (milliseconds) and ``max_concurrency``.
  Every accepted IDENTIFY takes one; past the last one Discord resets the bot's token.
- IDENTIFY pacing: shards fall in buckets ``shard_id % max_concurrency`` and each bucket may
  IDENTIFY once per 5 s; "If you hit this limit, the Gateway will respond with an Invalid
  Session (opcode 9)". The emulator enforces it only when asked (``identify_window_s``), so
  that tests about other things may reconnect at once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from .world import snowflake

SHARDING_REQUIRED = 4011
INVALID_SHARD = 4010
MAX_GUILDS_PER_SHARD = 2500
IDENTIFY_WINDOW_S = 5.0
DAY_S = 86_400.0
# Discord's recommendation in GET /gateway/bot: about one shard per 1,000 guilds.
GUILDS_PER_RECOMMENDED_SHARD = 1000

Shard = tuple[int, int]  # (shard_id, num_shards)


def shard_of(guild_id: int, num_shards: int) -> int:
    return (guild_id >> 22) % num_shards


def guild_id_on(shard: Shard) -> int:
    """A fresh guild id that shard ``shard`` serves (its timestamp moved up to a few ms on)."""
    shard_id, num_shards = shard
    fresh = snowflake()
    step = (shard_id - shard_of(fresh, num_shards)) % num_shards
    return fresh + (step << 22)


def parse_shard(data: dict[str, Any]) -> Shard | None:
    """The ``shard`` an IDENTIFY asks for ([0, 1] without one); None if it is no valid pair."""
    raw = data.get("shard", [0, 1])
    if not (isinstance(raw, list) and len(raw) == 2 and all(isinstance(n, int) for n in raw)):
        return None
    shard_id, num_shards = raw
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        return None
    return shard_id, num_shards


@dataclass
class SessionStartLimit:
    """The bot's IDENTIFY budget: ``remaining`` of ``total`` until ``reset_after_s`` from now,
    then ``total`` again for another day."""

    total: int = 1000
    remaining: int | None = None
    reset_after_s: float = DAY_S
    max_concurrency: int = 1
    _resets_at: float = field(init=False)

    def __post_init__(self) -> None:
        if self.remaining is None:
            self.remaining = self.total
        self._resets_at = time.monotonic() + self.reset_after_s

    @property
    def resets_at(self) -> float:
        """When the budget is full again (``time.monotonic()``)."""
        self._roll()
        return self._resets_at

    def left(self) -> int:
        self._roll()
        assert self.remaining is not None
        return self.remaining

    def take(self) -> bool:
        """Spend one IDENTIFY; False when none is left."""
        if self.left() == 0:
            return False
        assert self.remaining is not None
        self.remaining -= 1
        return True

    def reset_now(self) -> None:
        """The window ends now (a test's day passing): the next look finds ``total`` again."""
        self._resets_at = time.monotonic()

    def payload(self) -> dict[str, int]:
        left = self.left()
        reset_after_ms = max(0, math.ceil((self._resets_at - time.monotonic()) * 1000))
        return {
            "total": self.total,
            "remaining": left,
            "reset_after": reset_after_ms,
            "max_concurrency": self.max_concurrency,
        }

    def _roll(self) -> None:
        now = time.monotonic()
        if now >= self._resets_at:
            self.remaining = self.total
            self._resets_at = now + DAY_S


@dataclass
class IdentifyPacing:
    """One IDENTIFY per bucket (``shard_id % max_concurrency``) per ``window_s``; None lets
    every IDENTIFY through."""

    window_s: float | None = None
    _last: dict[int, float] = field(default_factory=dict)

    def admit(self, shard_id: int, max_concurrency: int) -> bool:
        if self.window_s is None:
            return True
        bucket = shard_id % max_concurrency
        now = time.monotonic()
        last = self._last.get(bucket)
        if last is not None and now - last < self.window_s:
            return False
        self._last[bucket] = now
        return True


def recommended_shards(guild_count: int) -> int:
    return max(1, math.ceil(guild_count / GUILDS_PER_RECOMMENDED_SHARD))
