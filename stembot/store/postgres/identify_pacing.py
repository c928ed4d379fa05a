"""IDENTIFY pacing shared by every bot process on one token (stembot/bot/identify.py asks).

- ``identify_turns``: a row per rate-limit bucket with the moment of its last IDENTIFY. A
  turn is claimed by one statement that moves the moment on only when the bucket's interval
  has passed; otherwise the caller is told how long to wait, sleeps without a connection and
  asks again. Nothing is held across the wait, so a process that dies holds no bucket: its
  claim just ages out.
- ``session_starts``: the starts counted in Discord's current window (until its reset), so
  that processes crash-looping together stop at the reserve together: every process reads
  the same remaining count from Discord, but not the starts the others are making at that
  very moment. A start is counted under the row's lock, and Discord's count is taken when it
  says more were spent (starts made before, or by something else).

Time is the database server's (``clock_timestamp()``), never a process's.
"""

from __future__ import annotations

from datetime import timedelta

from stembot.store.postgres.connection import Conn, Database

# A window Discord reports ending this much later than the one recorded is a new one (the
# recorded one was reset early: a new token). Discord's reset time is only known to the ms,
# read at slightly different moments by each process.
NEW_WINDOW_S = 60.0
# A turn found free by the claim but taken before its wait was read: ask again this soon.
RACED_WAIT_S = 0.05

_CLAIM_TURN = """
INSERT INTO identify_turns AS t (bucket, last_at) VALUES (%(bucket)s, clock_timestamp())
ON CONFLICT (bucket) DO UPDATE SET last_at = clock_timestamp()
WHERE t.last_at <= clock_timestamp() - make_interval(secs => %(interval)s)
RETURNING bucket
"""
_TURN_WAIT = """
SELECT extract(epoch FROM last_at - clock_timestamp()) + %(interval)s
FROM identify_turns WHERE bucket = %(bucket)s
"""
_STARTS = """
SELECT window_ends_at, spent, clock_timestamp() FROM session_starts WHERE id FOR UPDATE
"""


class PostgresIdentifyPacing:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim_turn(self, bucket: int, interval_s: float) -> float | None:
        """None: an IDENTIFY in ``bucket`` may go now (recorded as the bucket's last); else
        the seconds to wait before asking again."""

        async def work(conn: Conn) -> float | None:
            params = {"bucket": bucket, "interval": interval_s}
            cursor = await conn.execute(_CLAIM_TURN, params)
            if await cursor.fetchone() is not None:
                return None
            cursor = await conn.execute(_TURN_WAIT, params)
            row = await cursor.fetchone()
            wait = float(row[0]) if row is not None else 0.0
            return max(wait, RACED_WAIT_S)

        return await self._db.write(work, atomic=False)

    async def claim_start(
        self, *, total: int, remaining: int, resets_in_s: float, kept: int
    ) -> int:
        """How many of Discord's ``total`` starts are left in its window (the fewer of what
        Discord says, ``remaining``, and what the processes counted); one more is counted
        when more than ``kept`` are left, the caller's to spend."""

        async def work(conn: Conn) -> int:
            await conn.execute(
                "INSERT INTO session_starts (id, window_ends_at, spent) "
                "VALUES (true, 'epoch', 0) ON CONFLICT DO NOTHING"
            )
            cursor = await conn.execute(_STARTS)
            row = await cursor.fetchone()
            assert row is not None
            ends, spent, now = row
            discord_ends = now + timedelta(seconds=resets_in_s)
            if ends <= now or discord_ends > ends + timedelta(seconds=NEW_WINDOW_S):
                ends, spent = discord_ends, 0
            spent = max(int(spent), total - remaining)
            left = total - spent
            await conn.execute(
                "UPDATE session_starts SET window_ends_at = %s, spent = %s WHERE id",
                (ends, spent + 1 if left > kept else spent),
            )
            return left

        return await self._db.write(work)
