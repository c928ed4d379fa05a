"""Retention's deletions: old ledger rows and stored results, in small batches on a
connection of their own, so the bot's writer never waits long. Called from a thread.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from stembot.windows import stamp

# Retention deletes this many rows per write transaction (a few ms), then lets others write.
PRUNE_BATCH_ROWS = 500
PRUNE_PAUSE_S = 0.005


def prune(
    file: Path,
    before: datetime,
    *,
    stop: Callable[[], bool],
    batch: int,
    pause_s: float,
    busy_timeout_s: float,
) -> Pruned:
    """Delete ledger rows and stored results older than ``before`` from the database ``file``.

    Never a request still queued or running. Each batch is its own short write transaction
    with a pause after it; ``stop`` is asked between batches.
    """
    cutoff = stamp(before)
    conn = sqlite3.connect(file, timeout=busy_timeout_s, isolation_level=None)
    try:
        # A deletion lost to a power cut is only done again next time: no fsync per batch.
        conn.execute("PRAGMA synchronous = NORMAL")
        rows = _prune_requests(conn, cutoff, stop, batch, pause_s)
        results = _prune_keyed(conn, _OLD_RESULTS, cutoff, stop, batch, pause_s)
        for table in _OLD_BOOKKEEPING:
            _prune_keyed(conn, table, cutoff, stop, batch, pause_s)
    finally:
        conn.close()
    return Pruned(rows, results)


class Pruned(NamedTuple):
    """What one pruning removed."""

    requests: int
    results: int


_PRUNABLE_REQUEST = "created_at < :cutoff AND status NOT IN ('queued', 'running')"
_ENDED_EVENTS = "SELECT id FROM remix_events WHERE ended_at < :cutoff"
# (table, key columns, the condition for an old row): tables that stay small, read whole.
_OLD_RESULTS = ("results", "source_key, mode", "issued_at < :cutoff")
_OLD_BOOKKEEPING = (
    ("quota_alerts", "guild_id, period, period_start", "period_start < :cutoff"),
    ("api_calls", "request_id", "day < substr(:cutoff, 1, 10)"),
    ("budget_notices", "day", "day < substr(:cutoff, 1, 10)"),
    # Remix events ended before the cutoff: their takes and submissions first.
    ("remix_event_takes", "event_id, mode, user_id", f"event_id IN ({_ENDED_EVENTS})"),
    ("remix_event_submissions", "id", f"event_id IN ({_ENDED_EVENTS})"),
    ("remix_events", "id", "ended_at < :cutoff"),
)


def _prune_requests(
    conn: sqlite3.Connection, cutoff: str, stop: Callable[[], bool], batch: int, pause_s: float
) -> int:
    """Old requests, found page by page in rowid order outside any lock, deleted by id."""
    removed, after = 0, 0
    while not stop():
        ids = [
            row[0]
            for row in conn.execute(
                f"SELECT id FROM requests WHERE id > :after AND {_PRUNABLE_REQUEST} "  # noqa: S608
                "ORDER BY id LIMIT :batch",
                {"after": after, "cutoff": cutoff, "batch": batch},
            )
        ]
        if not ids:
            break
        after = ids[-1]
        removed += _delete_batch(
            conn,
            f"DELETE FROM requests WHERE id IN (SELECT value FROM json_each(:keys)) "  # noqa: S608
            f"AND {_PRUNABLE_REQUEST}",
            {"keys": json.dumps(ids), "cutoff": cutoff},
        )
        time.sleep(pause_s)
    return removed


def _prune_keyed(
    conn: sqlite3.Connection,
    table: tuple[str, str, str],
    cutoff: str,
    stop: Callable[[], bool],
    batch: int,
    pause_s: float,
) -> int:
    name, keys, old = table
    removed = 0
    while not stop():
        # Constant table and column names from the tables above, never user input.
        deleted = _delete_batch(
            conn,
            f"DELETE FROM {name} WHERE ({keys}) IN "  # noqa: S608
            f"(SELECT {keys} FROM {name} WHERE {old} LIMIT :batch)",
            {"cutoff": cutoff, "batch": batch},
        )
        removed += deleted
        if deleted < batch:
            break
        time.sleep(pause_s)
    return removed


def _delete_batch(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        deleted = conn.execute(sql, params).rowcount
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return deleted
