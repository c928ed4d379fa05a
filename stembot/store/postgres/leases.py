"""Process leases on the PostgreSQL ledger: every bot process sharing it holds one.

A lease is a row of ``stembot_processes`` that its process renews every few seconds
(stembot/process_lease.py); every request records the lease of the process that holds it
(``requests.lease_id``). Time is the database server's (``clock_timestamp()``), never a
process's, so the processes' clocks need not agree.

- A lease that expired is dead for good: it is never renewed again, and its process can no
  longer record or change a request (the ledger fences its writes with it).
- Only the requests of dead leases are recovered, by a live process that takes them over;
  a live process's requests are never touched, however long its API calls take.
- A clean stop ends its lease at once, so the others recover what it left without waiting;
  its queued calls it hands over before that, as soon as it stops taking requests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from stembot.models import Recovery, RequestStatus
from stembot.store.postgres import recovery
from stembot.store.postgres.connection import CALLS_CHANNEL, Conn, Database
from stembot.store.postgres.dispatch import Word

log = logging.getLogger(__name__)

# A request written after its lease was found dead (a process frozen in the middle of a
# write) is recovered by the sweeps within this long of the find.
STRAGGLERS_S = 60.0

_REGISTER = """
INSERT INTO stembot_processes (pid, host, shards, started_at, renewed_at, expires_at)
VALUES (%(pid)s, %(host)s, %(shards)s, clock_timestamp(), clock_timestamp(),
        clock_timestamp() + make_interval(secs => %(lease_s)s))
RETURNING id
"""
_RENEW = """
UPDATE stembot_processes
SET renewed_at = clock_timestamp(), expires_at = clock_timestamp() + make_interval(secs => %s)
WHERE id = %s AND ended_at IS NULL AND expires_at > clock_timestamp()
"""
_END = (
    "UPDATE stembot_processes SET ended_at = clock_timestamp() WHERE id = %s AND ended_at IS NULL"
)
# Leases found dead now, and those found so recently that a request may still trail them.
_DEAD = """
WITH found AS (
  UPDATE stembot_processes AS p
  SET ended_at = coalesce(p.ended_at, c.now), recovered_at = c.now, recovered_by = %(me)s
  FROM (SELECT clock_timestamp() AS now) AS c
  WHERE p.recovered_at IS NULL AND p.id <> %(me)s
    AND (p.ended_at IS NOT NULL OR p.expires_at <= c.now)
  RETURNING p.id, p.pid, p.host, p.ended_at = c.now AS expired
)
SELECT id, pid, host, expired, true FROM found
UNION ALL
SELECT id, pid, host, false, false FROM stembot_processes
WHERE recovered_at > clock_timestamp() - make_interval(secs => %(stragglers)s)
"""
_TELL_ENDED = (
    "SELECT pg_notify(%s, 'ended ' || mode || ' ' || source_key) FROM requests "
    "WHERE id = ANY(%s) AND pays_call"
)
# A stopping process's queued requests, moved to a lease ended at once (its pid and host, for
# the log): the live processes take them over at their next sweep, woken by the word "gone".
_HAND_OVER = """
WITH mine AS (SELECT pid, host, shards FROM stembot_processes WHERE id = %(lease)s),
handed AS (
  INSERT INTO stembot_processes (pid, host, shards, started_at, renewed_at, expires_at, ended_at)
  SELECT pid, host, shards, c.now, c.now, c.now, c.now
  FROM mine, (SELECT clock_timestamp() AS now) AS c
  RETURNING id
), moved AS (
  UPDATE requests SET lease_id = (SELECT id FROM handed)
  WHERE id = ANY(%(ids)s) AND lease_id = %(lease)s AND status = 'queued'
  RETURNING id
)
SELECT (SELECT id FROM handed), (SELECT count(*) FROM moved)
"""
# A fence on a request change: the row is held by the lease, and the lease is alive.
FENCE = (
    " AND lease_id = %(lease)s AND EXISTS (SELECT 1 FROM stembot_processes AS p "
    "WHERE p.id = %(lease)s AND p.ended_at IS NULL AND p.expires_at > clock_timestamp())"
)


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """Who holds (or held) a lease, as the log names a process."""

    lease_id: int
    pid: int
    host: str

    def __str__(self) -> str:
        return f"process {self.pid} on {self.host} (lease {self.lease_id})"


class PostgresLeases:
    """The leases' rows; each method one statement or one short transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def register(self, pid: int, host: str, shards: str, lease_s: float) -> int:
        """A new lease for this process, alive for ``lease_s`` seconds; its id."""

        async def work(conn: Conn) -> int:
            cursor = await conn.execute(
                _REGISTER, {"pid": pid, "host": host, "shards": shards, "lease_s": lease_s}
            )
            row = await cursor.fetchone()
            assert row is not None
            return int(row[0])

        return await self._db.write(work, atomic=False)

    async def renew(self, lease_id: int, lease_s: float) -> bool:
        """Alive for ``lease_s`` seconds more; False once it expired or ended (for good)."""

        async def work(conn: Conn) -> bool:
            cursor = await conn.execute(_RENEW, (lease_s, lease_id))
            return cursor.rowcount == 1

        return await self._db.write(work, atomic=False)

    async def end(self, lease_id: int) -> None:
        """A clean stop: the others may recover what it left at once."""

        async def work(conn: Conn) -> None:
            await conn.execute(_END, (lease_id,))

        await self._db.write(work, atomic=False)

    async def hand_over(self, lease_id: int, request_ids: Sequence[int]) -> int:
        """A clean stop of ``lease_id``'s process: its queued requests ``request_ids`` go to
        the live processes at once (see _HAND_OVER), told on the channel; how many moved."""

        async def work(conn: Conn) -> int:
            cursor = await conn.execute(_HAND_OVER.encode(), {"lease": lease_id, "ids": ids})
            row = await cursor.fetchone()
            assert row is not None
            handed, moved = row
            if handed is not None and moved:
                word = Word("gone", lease_id=handed).payload()
                await conn.execute("SELECT pg_notify(%s, %s)", (CALLS_CHANNEL, word))
            return int(moved)

        ids = list(request_ids)
        return await self._db.write(work) if ids else 0

    async def held(
        self, lease_id: int, request_ids: Sequence[int], status: RequestStatus
    ) -> set[int]:
        """Which of these requests are in ``status`` and held by ``lease_id``: those whose
        outcome its process wrote (not a process that took them over since)."""
        found = await self._db.fetch_all(
            "SELECT id FROM requests WHERE id = ANY(%s) AND lease_id = %s AND status = %s",
            (list(request_ids), lease_id, status.value),
        )
        return {row[0] for row in found}

    async def recover_dead(self, me: int, now: datetime, *, unowned: bool = False) -> Recovery:
        """Take over the requests of every dead lease (and, with ``unowned``, of no lease:
        a bot from before leases), in one transaction: see recovery.py."""

        async def work(conn: Conn) -> Recovery:
            cursor = await conn.execute(_DEAD.encode(), {"me": me, "stragglers": STRAGGLERS_S})
            found = await cursor.fetchall()
            for lease_id, pid, host, expired, now_found in found:
                holder = LeaseHolder(lease_id, pid, host)
                if expired:
                    log.warning("%s stopped renewing its lease; taking over its requests", holder)
                elif now_found:
                    log.info("%s stopped; taking over what it left", holder)
            dead = [row[0] for row in found]
            if not dead and not unowned:
                return Recovery([], [])
            recovered = await recovery.recover_dead(conn, now, me, dead, unowned=unowned)
            ended = [r.id for r in recovered.interrupted] + [r.id for r, _ in recovered.undelivered]
            # Requests riding on those calls in other processes hear they ended (on commit).
            await conn.execute(_TELL_ENDED, (CALLS_CHANNEL, ended))
            return recovered

        return await self._db.write(work)
