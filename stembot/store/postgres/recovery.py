"""What a stopped bot left owing, settled inside the ledger's write transaction (the
PostgreSQL form of stembot/store/recovery.py, with the same outcome).

With several processes on one ledger, only the requests of processes that are gone are
recovered: those whose lease (stembot/store/postgres/leases.py) ended or expired, and those
of a bot from before leases (``lease_id`` NULL). The process that recovers them takes them
over (their ``lease_id`` becomes its own), so no other process recovers them again and the
one it took them from can no longer change them; it tells their requesters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from stembot.models import Recovery
from stembot.store import rows
from stembot.store.postgres.connection import RECOVERY_LOCK, Conn, lock
from stembot.store.recovery import INTERRUPTED_ERROR, interrupted_request, sort_owed
from stembot.store.rows import REQUEST_COLUMNS

# Whose requests a recovery takes: everyone's (a bot alone, from before leases), or those of
# the leases in %(dead)s and, at a process's start, of no lease at all.
_EVERYONE = "true"
_THE_DEAD = "(lease_id = ANY(%(dead)s) OR (%(unowned)s AND lease_id IS NULL))"

_SETTLED_BY_A_STORED_RESULT = """
UPDATE requests SET status = 'succeeded', finished_at = %(now)s
WHERE status IN ('queued', 'running') AND {whose} AND EXISTS (SELECT 1 FROM results AS r
  WHERE r.source_key = requests.source_key AND r.mode = requests.mode
    AND r.issued_at >= requests.created_at)
"""
_INTERRUPT = (
    "WITH ended AS (UPDATE requests SET status = 'interrupted', finished_at = %(now)s, "  # noqa: S608 (constant)
    "error = %(error)s, lease_id = %(me)s "
    "WHERE status IN ('queued', 'running') AND {whose} "
    f"RETURNING {REQUEST_COLUMNS}) "
    "SELECT * FROM ended ORDER BY id"
)
# A remix event's call is answered to its members' takes, never to its row.
_TAKE_UNDELIVERED = (
    "WITH taken AS (UPDATE requests SET lease_id = %(me)s "  # noqa: S608 (constant)
    "WHERE status = 'succeeded' AND delivered_at IS NULL AND remix_event_id IS NULL "
    "AND {whose} RETURNING id) "
    f"SELECT {rows.Q_REQUEST_COLUMNS}, r.stems, r.issued_at "
    "FROM requests AS q JOIN taken AS t ON t.id = q.id LEFT JOIN results AS r "
    "ON r.source_key = q.source_key AND r.mode = q.mode ORDER BY q.id"
)
_LOST = (
    "UPDATE requests SET status = 'interrupted', finished_at = %s, error = %s WHERE id = ANY(%s)"
)


async def recover(conn: Conn, now: datetime) -> Recovery:
    """See stembot/store/recovery.py: active requests whose call finished succeeded, the other
    active ones are interrupted and refunded, succeeded ones never delivered are returned with
    their stored result (or refunded when it is gone). One recovery at a time. Every request
    is taken (a bot alone on the ledger)."""
    return await _recover(conn, _EVERYONE, {"now": now, "me": None})


async def recover_dead(
    conn: Conn, now: datetime, me: int, dead: list[int], *, unowned: bool
) -> Recovery:
    """The same for the requests of the leases ``dead`` (and, with ``unowned``, those of no
    lease), taken over by the lease ``me``."""
    params = {"now": now, "me": me, "dead": dead, "unowned": unowned}
    return await _recover(conn, _THE_DEAD, params)


async def _recover(conn: Conn, whose: str, params: dict[str, Any]) -> Recovery:
    await lock(conn, RECOVERY_LOCK)
    await conn.execute(_SETTLED_BY_A_STORED_RESULT.format(whose=whose).encode(), params)
    cursor = await conn.execute(
        _INTERRUPT.format(whose=whose).encode(), {**params, "error": INTERRUPTED_ERROR}
    )
    interrupted = [interrupted_request(row, params["now"]) for row in await cursor.fetchall()]
    cursor = await conn.execute(_TAKE_UNDELIVERED.format(whose=whose).encode(), params)
    undelivered, lost = sort_owed(await cursor.fetchall())
    interrupted.extend(interrupted_request(row, params["now"]) for row in lost)
    if lost:
        await conn.execute(_LOST, (params["now"], INTERRUPTED_ERROR, [row[0] for row in lost]))
    return Recovery(interrupted, undelivered)
