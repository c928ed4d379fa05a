"""Read-only reports from the ledger, each on a read-only connection of its own: usage, spend
by day, the ledger as CSV. In WAL mode such a reader never blocks the bot's writer (nor waits
for it) and sees one consistent snapshot. The reports' shapes are plain values in
``stembot.reports`` and ``stembot.ledger_csv``.
"""

from __future__ import annotations

import sqlite3
from datetime import date, datetime
from typing import Any, TextIO

from stembot import reports
from stembot.ledger_csv import LedgerCount, write_ledger
from stembot.models import DailySpend, UsageReport
from stembot.store.connection import Connection
from stembot.windows import stamp, utc

_CHARGED = "CASE WHEN status IN ('queued', 'running', 'succeeded') THEN cost ELSE 0 END"
# A member's own share: not what the server alone carries for a handed-over call.
_MEMBER_CHARGED = (
    "CASE WHEN status IN ('queued', 'running', 'succeeded') AND member_pays = 1 "
    "THEN cost ELSE 0 END"
)
_REFUNDED = "CASE WHEN status IN ('failed', 'cancelled', 'interrupted') THEN 1 ELSE 0 END"

_EXPORT_PAGE_ROWS = 1000
# In the index's order (guild, time, then rowid), so no sort of the whole period is needed.
_SELECT_EXPORT = """
SELECT id, created_at, finished_at, guild_id, channel_id, user_id, interaction_id, mode,
       source_name, source_key, cost, status, error, request_count, member_pays, remix_event_id
FROM requests INDEXED BY requests_guild_time
WHERE guild_id = ? AND created_at >= ? AND created_at < ?
ORDER BY created_at, id
"""
# The remix events' calls, apart: charged to the server, never to the organiser's own figures.
# (status, cost and request_count are the requests' alone: remix_events has no such column.)
_SELECT_EVENTS = f"""
SELECT q.remix_event_id, coalesce(e.title, ''), sum(request_count),
       coalesce(sum({_CHARGED}), 0), coalesce(sum({_REFUNDED}), 0)
FROM requests AS q INDEXED BY requests_guild_time
LEFT JOIN remix_events AS e ON e.id = q.remix_event_id
WHERE q.guild_id = ? AND q.created_at >= ? AND q.created_at < ? AND q.remix_event_id IS NOT NULL
GROUP BY q.remix_event_id ORDER BY q.remix_event_id
"""  # noqa: S608 (constant)


class Reports:
    """Reads only; each report opens, reads and closes a connection of its own."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def usage_report(
        self, guild_id: int, since: datetime, until: datetime, *, top: int = 10
    ) -> UsageReport:
        """Requests made in ``[since, until)``: totals, by user, by mode, by UTC day, and the
        remix events' calls apart from members' (a member's figures never hold them)."""
        window = (guild_id, stamp(since), stamp(until))
        with self._conn.reader() as conn:
            grouped = (
                _grouped(conn, "user_id", window, charged=_MEMBER_CHARGED, members_only=True),
                _grouped(conn, "mode", window),
                _grouped(conn, "substr(created_at, 1, 10)", window),
            )
            events = conn.execute(_SELECT_EVENTS, window).fetchall()
        return reports.usage_report(guild_id, since, until, grouped, top=top, events=events)

    def spend_by_day(self, since: datetime, until: datetime) -> list[DailySpend]:
        """Paid API calls and units charged per UTC day and server in ``[since, until)``,
        across all servers: the operator's view of what the bot spends."""
        first, last = utc(since).date().isoformat(), utc(until).date().isoformat()
        with self._conn.reader() as conn:
            calls = conn.execute(
                "SELECT day, guild_id, count(*) FROM api_calls "
                "WHERE day >= ? AND day <= ? GROUP BY day, guild_id",
                (first, last),
            ).fetchall()
            units = conn.execute(
                f"SELECT substr(created_at, 1, 10) AS day, guild_id, sum({_CHARGED}) "  # noqa: S608
                "FROM requests WHERE created_at >= ? AND created_at < ? "
                "GROUP BY day, guild_id",
                (stamp(since), stamp(until)),
            ).fetchall()
        return reports.daily_spend(calls, units)

    def stream_ledger(
        self, guild_id: int, since: datetime, until: datetime, out: TextIO
    ) -> LedgerCount:
        """Write the guild's ledger rows in ``[since, until)`` as CSV, page by page: call it
        from a thread. A long export stalls nobody."""
        with self._conn.reader() as conn:
            cursor = conn.execute(_SELECT_EXPORT, (guild_id, stamp(since), stamp(until)))
            return write_ledger(iter(lambda: cursor.fetchmany(_EXPORT_PAGE_ROWS), []), out)

    def ledger_days(
        self, guild_id: int, since: datetime, until: datetime
    ) -> list[tuple[date, int]]:
        """How many rows the guild's ledger holds on each UTC day of ``[since, until)``.

        Like ``stream_ledger``: call it from a thread.
        """
        with self._conn.reader() as conn:
            rows = conn.execute(
                "SELECT substr(created_at, 1, 10) AS day, count(*) FROM requests "
                "WHERE guild_id = ? AND created_at >= ? AND created_at < ? "
                "GROUP BY day ORDER BY day",
                (guild_id, stamp(since), stamp(until)),
            ).fetchall()
        return [(date.fromisoformat(day), count) for day, count in rows]


def _grouped(
    conn: sqlite3.Connection,
    key: str,
    window: tuple[int, str, str],
    *,
    charged: str = _CHARGED,
    members_only: bool = False,
) -> list[Any]:
    # ``key`` and ``charged`` are constant expressions chosen above, never user input.
    members = " AND remix_event_id IS NULL" if members_only else ""
    sql = (
        f"SELECT {key} AS k, sum(request_count), coalesce(sum({charged}), 0), "  # noqa: S608
        f"coalesce(sum({_REFUNDED}), 0) FROM requests "
        f"WHERE guild_id = ? AND created_at >= ? AND created_at < ?{members} "
        "GROUP BY k ORDER BY k"
    )
    return conn.execute(sql, window).fetchall()
