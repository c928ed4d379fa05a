"""Retention's deletions from the PostgreSQL ledger (see stembot/store/pruning.py): old rows
and stored results in small batches, each its own short statement with a pause after it, so
the bot's reservations never wait long behind them. Never a request still queued or running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from stembot.store.postgres.connection import Conn, Database
from stembot.store.pruning import PRUNE_BATCH_ROWS, PRUNE_PAUSE_S, Pruned
from stembot.windows import utc

# Each deletes at most %(batch)s old rows of one table and says how many it deleted.
_OLD_REQUESTS = """
WITH gone AS (DELETE FROM requests WHERE id IN (
  SELECT id FROM requests
  WHERE created_at < %(cutoff)s AND status NOT IN ('queued', 'running')
  ORDER BY id LIMIT %(batch)s) RETURNING 1)
SELECT count(*) FROM gone
"""
_OLD_RESULTS = """
WITH gone AS (DELETE FROM results WHERE (source_key, mode) IN (
  SELECT source_key, mode FROM results WHERE issued_at < %(cutoff)s LIMIT %(batch)s)
  RETURNING 1)
SELECT count(*) FROM gone
"""
_OLD_BOOKKEEPING = (
    """
    WITH gone AS (DELETE FROM quota_alerts WHERE (guild_id, period, period_start) IN (
      SELECT guild_id, period, period_start FROM quota_alerts
      WHERE period_start < %(cutoff)s LIMIT %(batch)s) RETURNING 1)
    SELECT count(*) FROM gone
    """,
    """
    WITH gone AS (DELETE FROM api_calls WHERE request_id IN (
      SELECT request_id FROM api_calls WHERE day < %(cutoff_day)s LIMIT %(batch)s)
      RETURNING 1)
    SELECT count(*) FROM gone
    """,
    """
    WITH gone AS (DELETE FROM budget_notices WHERE day IN (
      SELECT day FROM budget_notices WHERE day < %(cutoff_day)s LIMIT %(batch)s)
      RETURNING 1)
    SELECT count(*) FROM gone
    """,
    # Remix events ended before the cutoff: their takes and submissions first.
    """
    WITH gone AS (DELETE FROM remix_event_takes WHERE (event_id, mode, user_id) IN (
      SELECT event_id, mode, user_id FROM remix_event_takes WHERE event_id IN (
        SELECT id FROM remix_events WHERE ended_at < %(cutoff)s)
      LIMIT %(batch)s) RETURNING 1)
    SELECT count(*) FROM gone
    """,
    """
    WITH gone AS (DELETE FROM remix_event_submissions WHERE id IN (
      SELECT id FROM remix_event_submissions WHERE event_id IN (
        SELECT id FROM remix_events WHERE ended_at < %(cutoff)s)
      LIMIT %(batch)s) RETURNING 1)
    SELECT count(*) FROM gone
    """,
    """
    WITH gone AS (DELETE FROM remix_events WHERE id IN (
      SELECT id FROM remix_events WHERE ended_at < %(cutoff)s LIMIT %(batch)s) RETURNING 1)
    SELECT count(*) FROM gone
    """,
    # Processes gone and taken over long ago (their requests were long since moved on).
    """
    WITH gone AS (DELETE FROM stembot_processes WHERE id IN (
      SELECT id FROM stembot_processes WHERE recovered_at < %(cutoff)s LIMIT %(batch)s)
      RETURNING 1)
    SELECT count(*) FROM gone
    """,
)


async def prune(
    db: Database,
    before: datetime,
    *,
    stop: Callable[[], bool],
    batch: int = PRUNE_BATCH_ROWS,
    pause_s: float = PRUNE_PAUSE_S,
) -> Pruned:
    """Delete ledger rows and stored results older than ``before``; ``stop`` is asked between
    batches."""
    cutoff = utc(before)
    params = {"cutoff": cutoff, "cutoff_day": cutoff.date(), "batch": batch}

    async def batches(sql: str) -> int:
        removed = 0
        while not stop():
            deleted = await db.write(lambda conn: _count(conn, sql, params), atomic=False)
            removed += deleted
            if deleted < batch:
                break
            await asyncio.sleep(pause_s)
        return removed

    requests = await batches(_OLD_REQUESTS)
    results = await batches(_OLD_RESULTS)
    for sql in _OLD_BOOKKEEPING:
        await batches(sql)
    return Pruned(requests, results)


async def _count(conn: Conn, sql: str, params: dict[str, object]) -> int:
    cursor = await conn.execute(sql.encode(), params)
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])
