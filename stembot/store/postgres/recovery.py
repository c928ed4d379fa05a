"""What a stopped bot left owing, settled inside the ledger's write transaction (the
PostgreSQL form of stembot/store/recovery.py, with the same outcome).

With several processes on one ledger, only the requests of processes that are gone are
recovered: those whose lease (stembot/store/postgres/leases.py) ended or expired, and those
of a bot from before leases (``lease_id`` NULL). The process that recovers them takes them
over (their ``lease_id`` becomes its own), so no other process recovers them again and the
one it took them from can no longer change them; it tells their requesters, and makes the
queued calls whose source is sealed that never had their turn (``handed_over``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from stembot.models import HandedOverCall, Recovery
from stembot.store import rows
from stembot.store.postgres.connection import RECOVERY_LOCK, Conn, lock
from stembot.store.recovery import (
    HANDED_OVER,
    INTERRUPTED_ERROR,
    RIDERS,
    interrupted_request,
    sort_owed,
)
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
# Queued calls never given a turn (never at the API), their source sealed: taken over, with
# the requests waiting on them, to be made by the process recovering them.
_HANDED_OVER_CALLS = (
    f"SELECT {REQUEST_COLUMNS}, sealed_source FROM requests "  # noqa: S608 (constant)
    f"WHERE {HANDED_OVER} AND granted_at IS NULL AND {{whose}} ORDER BY id FOR UPDATE"
)
_THEIR_RIDERS = (
    f"SELECT {REQUEST_COLUMNS} FROM requests "  # noqa: S608 (constant)
    f"WHERE {RIDERS} AND {{whose}} AND (source_key, mode) IN "
    "(SELECT * FROM unnest(%(keys)s::text[], %(modes)s::text[])) ORDER BY id FOR UPDATE"
)
_TAKE_OVER = "UPDATE requests SET lease_id = %(me)s WHERE id = ANY(%(taken)s)"
_INTERRUPT = (
    "WITH ended AS (UPDATE requests SET status = 'interrupted', finished_at = %(now)s, "  # noqa: S608 (constant)
    "error = %(error)s, lease_id = %(me)s "
    "WHERE status IN ('queued', 'running') AND {whose} AND NOT (id = ANY(%(taken)s)) "
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
    handed_over = await _take_over_calls(conn, whose, params)
    taken = [request.id for call in handed_over for request in call.requests]
    cursor = await conn.execute(
        _INTERRUPT.format(whose=whose).encode(),
        {**params, "error": INTERRUPTED_ERROR, "taken": taken},
    )
    interrupted = [interrupted_request(row, params["now"]) for row in await cursor.fetchall()]
    cursor = await conn.execute(_TAKE_UNDELIVERED.format(whose=whose).encode(), params)
    undelivered, lost = sort_owed(await cursor.fetchall())
    interrupted.extend(interrupted_request(row, params["now"]) for row in lost)
    if lost:
        await conn.execute(_LOST, (params["now"], INTERRUPTED_ERROR, [row[0] for row in lost]))
    return Recovery(interrupted, undelivered, handed_over)


async def _take_over_calls(conn: Conn, whose: str, params: dict[str, Any]) -> list[HandedOverCall]:
    cursor = await conn.execute(_HANDED_OVER_CALLS.format(whose=whose).encode(), params)
    calls = [(rows.request(row), row[-1]) for row in await cursor.fetchall()]
    if not calls:
        return []
    keys = [payer.source_key for payer, _ in calls]
    modes = [payer.mode.value for payer, _ in calls]
    cursor = await conn.execute(
        _THEIR_RIDERS.format(whose=whose).encode(), {**params, "keys": keys, "modes": modes}
    )
    riders: dict[tuple[str, str], list[Any]] = {}
    for row in await cursor.fetchall():
        rider = rows.request(row)
        riders.setdefault((rider.source_key, rider.mode.value), []).append(rider)
    handed_over = [
        HandedOverCall(payer, sealed, tuple(riders.get((payer.source_key, payer.mode.value), [])))
        for payer, sealed in calls
    ]
    taken = [request.id for call in handed_over for request in call.requests]
    await conn.execute(_TAKE_OVER, {**params, "taken": taken})
    return handed_over
