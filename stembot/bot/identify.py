"""When a shard may IDENTIFY: never so often that Discord resets the bot's token, never faster
than its max_concurrency allows.

Discord allows ``total`` (1,000) IDENTIFYs a day across all shards and resets the token past
them; GET /gateway/bot says how many remain and when they are full again. A process that
crash-loops identifies on every start, so the gate keeps a reserve (a tenth of the day's, and at
least one start of every shard) and, once only the reserve is left, waits for the reset instead
of identifying, and says so. Shards fall in buckets ``shard_id % max_concurrency``, each allowed
one IDENTIFY per 5 s (a faster one is answered with an invalid session).

StemBot asks ``IdentifyGate.wait_for_starts`` before it opens a shard's connection (a start,
where a crash loop would spend them), and ``before_identify`` from discord.py's
``before_identify_hook``, called before every IDENTIFY (a new session after an invalid one too:
there the starts are checked again, with the connection open). Processes sharing a token must
share the buckets' turns and the count of starts too: ``IdentifyPacer`` is that seam, this
process's own (``LocalIdentifyPacer``, one process on a SQLite ledger) or every process's, kept
in the shared PostgreSQL database (``SharedIdentifyPacer``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from stembot.errors import StoreBusyError, StoreFailedError

log = logging.getLogger(__name__)

IDENTIFY_INTERVAL_S = 5.0
# Across processes a turn is given by the database and the IDENTIFY sent from another host:
# the gap Discord sees may be shorter by the difference of their delays.
SHARED_IDENTIFY_INTERVAL_S = IDENTIFY_INTERVAL_S + 0.5
# Session starts kept back: this share of the day's, and at least one per shard.
RESERVE_SHARE = 0.10
# However soon Discord says the limit resets, ask again no sooner than this.
MIN_BUDGET_WAIT_S = 1.0
# A wait for the same reset (give or take this) is announced once: discord.py gives up on a
# re-IDENTIFY after 60 s and tries again, which asks the gate again.
SAME_RESET_S = 60.0


@dataclass(frozen=True)
class SessionStartLimit:
    """GET /gateway/bot's ``session_start_limit``, with ``reset_after`` in seconds."""

    total: int
    remaining: int
    reset_after_s: float
    max_concurrency: int

    @classmethod
    def from_discord(cls, data: Mapping[str, Any]) -> SessionStartLimit:
        return cls(
            total=int(data["total"]),
            remaining=int(data["remaining"]),
            reset_after_s=int(data["reset_after"]) / 1000,
            max_concurrency=max(1, int(data["max_concurrency"])),
        )

    def reserve(self, shard_count: int) -> int:
        """Starts never spent by identifying: a tenth of the day's and at least one full start
        of the bot, leaving at least one to spend."""
        kept = max(math.ceil(self.total * RESERVE_SHARE), shard_count)
        return min(kept, max(self.total - 1, 0))


class IdentifyPacer(Protocol):
    """Turns to IDENTIFY within one rate-limit bucket (``shard_id % max_concurrency``), and
    the session starts spent."""

    async def take_turn(self, bucket: int) -> None:
        """Return when an IDENTIFY in ``bucket`` may go now; the bucket's next turn comes 5 s
        later."""

    async def take_start(self, limit: SessionStartLimit, kept: int) -> int:
        """How many session starts are left (``limit``: what Discord said just now); one is
        counted as spent when more than ``kept`` are."""


class LocalIdentifyPacer:
    """The turns of this process's shards (``clock`` and ``sleep`` as time.monotonic and
    asyncio.sleep)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        interval_s: float = IDENTIFY_INTERVAL_S,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._interval_s = interval_s
        self._next_turn: dict[int, float] = {}
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def take_turn(self, bucket: int) -> None:
        async with self._locks[bucket]:
            next_turn = self._next_turn.get(bucket)
            if next_turn is not None and next_turn > self._clock():
                await self._sleep(next_turn - self._clock())
            self._next_turn[bucket] = self._clock() + self._interval_s

    async def take_start(self, limit: SessionStartLimit, kept: int) -> int:
        return limit.remaining


class IdentifyRecord(Protocol):
    """The IDENTIFYs of every process, kept in the shared database
    (stembot/store/postgres/identify_pacing.py)."""

    async def claim_turn(self, bucket: int, interval_s: float) -> float | None:
        """None: an IDENTIFY in ``bucket`` may go now; else the seconds to wait first."""

    async def claim_start(
        self, *, total: int, remaining: int, resets_in_s: float, kept: int
    ) -> int:
        """The starts left in Discord's window; one more counted when more than ``kept``."""


class SharedIdentifyPacer:
    """The turns and the session starts of every process on the bot's token: a bucket's
    IDENTIFYs at least ``interval_s`` apart whichever processes send them, and the starts
    counted together, so that processes crash-looping at once stop at the reserve at once.

    Each turn is one short statement; a turn taken is waited for without a connection, then
    asked again. While the database cannot be asked, this process paces alone (at worst an
    invalid session, tried again) rather than keep a shard offline.
    """

    def __init__(
        self,
        record: IdentifyRecord,
        *,
        interval_s: float = SHARED_IDENTIFY_INTERVAL_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._record = record
        self._interval_s = interval_s
        self._sleep = sleep
        self._alone = LocalIdentifyPacer(sleep=sleep, interval_s=interval_s)

    async def take_turn(self, bucket: int) -> None:
        while True:
            try:
                wait_s = await self._record.claim_turn(bucket, self._interval_s)
            except (StoreBusyError, StoreFailedError):
                log.warning("the database did not answer: this process paces its own IDENTIFYs")
                await self._alone.take_turn(bucket)
                return
            if wait_s is None:
                return
            await self._sleep(wait_s)

    async def take_start(self, limit: SessionStartLimit, kept: int) -> int:
        try:
            return await self._record.claim_start(
                total=limit.total,
                remaining=limit.remaining,
                resets_in_s=limit.reset_after_s,
                kept=kept,
            )
        except (StoreBusyError, StoreFailedError):
            log.warning("the database did not answer: session starts counted by Discord only")
            return limit.remaining


class IdentifyGate:
    """Wait while only the reserve of session starts is left, then for the bucket's turn."""

    def __init__(
        self,
        fetch_limit: Callable[[], Awaitable[SessionStartLimit]],
        shard_count: Callable[[], int],
        pacer: IdentifyPacer,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._fetch_limit = fetch_limit
        self._shard_count = shard_count
        self._pacer = pacer
        self._sleep = sleep
        # Shards whose starts were just checked, with what Discord said: their IDENTIFY follows.
        self._checked: dict[int, SessionStartLimit] = {}
        self._announced: datetime | None = None

    async def wait_for_starts(self, shard_id: int) -> None:
        """Return once a start above the reserve is left for ``shard_id``."""
        while True:
            told = await self._fetch_limit()
            kept = told.reserve(self._shard_count())
            limit = replace(told, remaining=await self._pacer.take_start(told, kept))
            if limit.remaining > kept:
                self._checked[shard_id] = limit
                return
            wait_s = max(limit.reset_after_s, MIN_BUDGET_WAIT_S)
            self._announce_wait(limit, kept, shard_id, wait_s)
            await self._sleep(wait_s)

    async def before_identify(self, shard_id: int) -> None:
        if shard_id not in self._checked:
            await self.wait_for_starts(shard_id)
        limit = self._checked.pop(shard_id)
        await self._pacer.take_turn(shard_id % limit.max_concurrency)
        log.info(
            "shard %d identifying (%d of %d session starts left today)",
            shard_id,
            limit.remaining,
            limit.total,
        )

    def _announce_wait(
        self, limit: SessionStartLimit, kept: int, shard_id: int, wait_s: float
    ) -> None:
        until = datetime.now(UTC) + timedelta(seconds=wait_s)
        known = self._announced is not None and abs(until - self._announced) < timedelta(
            seconds=SAME_RESET_S
        )
        self._announced = until
        log.log(
            logging.DEBUG if known else logging.WARNING,
            "Discord's session start limit is nearly spent (%d of %d left today, %d kept in "
            "reserve so that Discord never resets the token): shard %d waits %s, until "
            "%s UTC, for the limit to reset instead of identifying",
            limit.remaining,
            limit.total,
            kept,
            shard_id,
            spoken_duration(wait_s),
            until.strftime("%Y-%m-%d %H:%M:%S"),
        )


def spoken_duration(seconds: float) -> str:
    """``1.5 s``, ``12 min``, ``20 h 05 min``."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"
