"""What a stopped bot left owing, settled at start-up inside the ledger's write transaction
(the PostgreSQL form of stembot/store/recovery.py, with the same outcome)."""

from __future__ import annotations

from datetime import datetime

from stembot.models import Recovery
from stembot.store import rows
from stembot.store.postgres.connection import RECOVERY_LOCK, Conn, lock
from stembot.store.recovery import INTERRUPTED_ERROR, interrupted_request, sort_owed
from stembot.store.rows import REQUEST_COLUMNS

_SETTLED_BY_A_STORED_RESULT = """
UPDATE requests SET status = 'succeeded', finished_at = %s
WHERE status IN ('queued', 'running') AND EXISTS (SELECT 1 FROM results AS r
  WHERE r.source_key = requests.source_key AND r.mode = requests.mode
    AND r.issued_at >= requests.created_at)
"""
_SELECT_ACTIVE = (
    f"SELECT {REQUEST_COLUMNS} FROM requests "  # noqa: S608 (constant)
    "WHERE status IN ('queued', 'running') ORDER BY id FOR UPDATE"
).encode()
_INTERRUPT = (
    "UPDATE requests SET status = 'interrupted', finished_at = %s, error = %s "
    "WHERE status IN ('queued', 'running')"
)
# A remix event's call is answered to its members' takes, never to its row.
_SELECT_UNDELIVERED = (
    f"SELECT {rows.Q_REQUEST_COLUMNS}, r.stems, r.issued_at "  # noqa: S608 (constant)
    "FROM requests AS q LEFT JOIN results AS r "
    "ON r.source_key = q.source_key AND r.mode = q.mode "
    "WHERE q.status = 'succeeded' AND q.delivered_at IS NULL AND q.remix_event_id IS NULL "
    "ORDER BY q.id"
).encode()
_LOST = (
    "UPDATE requests SET status = 'interrupted', finished_at = %s, error = %s WHERE id = ANY(%s)"
)


async def recover(conn: Conn, now: datetime) -> Recovery:
    """See stembot/store/recovery.py: active requests whose call finished succeeded, the other
    active ones are interrupted and refunded, succeeded ones never delivered are returned with
    their stored result (or refunded when it is gone). One recovery at a time."""
    await lock(conn, RECOVERY_LOCK)
    await conn.execute(_SETTLED_BY_A_STORED_RESULT, (now,))
    cursor = await conn.execute(_SELECT_ACTIVE)
    active = await cursor.fetchall()
    await conn.execute(_INTERRUPT, (now, INTERRUPTED_ERROR))
    interrupted = [interrupted_request(row, now) for row in active]
    cursor = await conn.execute(_SELECT_UNDELIVERED)
    undelivered, lost = sort_owed(await cursor.fetchall())
    interrupted.extend(interrupted_request(row, now) for row in lost)
    if lost:
        await conn.execute(_LOST, (now, INTERRUPTED_ERROR, [row[0] for row in lost]))
    return Recovery(interrupted, undelivered)
