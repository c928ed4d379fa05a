"""Read-only reports from the PostgreSQL ledger (see stembot/store/reporting.py): usage, spend
by day, the ledger as CSV. Each report runs in a thread of its own on a connection of its own,
in one read-only snapshot, so a long export never holds a connection the bot's requests need;
the export reads through a server-side cursor, page by page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

import psycopg

from stembot import reports
from stembot.ledger_csv import LedgerCount, write_ledger
from stembot.models import DailySpend, UsageReport
from stembot.store.postgres.connection import connection_options, errors_explained, unreachable
from stembot.windows import utc

T = TypeVar("T")

_EXPORT_PAGE_ROWS = 1000
_SELECT_EXPORT = """
SELECT id, to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       to_char(finished_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), guild_id, channel_id, user_id,
       interaction_id, mode, source_name, source_key, cost, status, error, request_count,
       member_pays, remix_event_id
FROM requests
WHERE guild_id = %s AND created_at >= %s AND created_at < %s
ORDER BY created_at, id
"""
# (key, charged): what each part of the usage report groups by and counts as charged.
_BY_USER = """
SELECT user_id, sum(request_count),
  coalesce(sum(cost) FILTER (
    WHERE status IN ('queued', 'running', 'succeeded') AND member_pays), 0),
  count(*) FILTER (WHERE status IN ('failed', 'cancelled', 'interrupted'))
FROM requests WHERE guild_id = %s AND created_at >= %s AND created_at < %s
  AND remix_event_id IS NULL
GROUP BY 1 ORDER BY 1
"""
_BY_MODE = """
SELECT mode, sum(request_count),
  coalesce(sum(cost) FILTER (WHERE status IN ('queued', 'running', 'succeeded')), 0),
  count(*) FILTER (WHERE status IN ('failed', 'cancelled', 'interrupted'))
FROM requests WHERE guild_id = %s AND created_at >= %s AND created_at < %s
GROUP BY 1 ORDER BY 1
"""
# The remix events' calls, apart: charged to the server, never to the organiser's own figures.
_BY_EVENT = """
SELECT q.remix_event_id, coalesce(min(e.title), ''), sum(q.request_count),
  coalesce(sum(q.cost) FILTER (WHERE q.status IN ('queued', 'running', 'succeeded')), 0),
  count(*) FILTER (WHERE q.status IN ('failed', 'cancelled', 'interrupted'))
FROM requests AS q LEFT JOIN remix_events AS e ON e.id = q.remix_event_id
WHERE q.guild_id = %s AND q.created_at >= %s AND q.created_at < %s
  AND q.remix_event_id IS NOT NULL
GROUP BY 1 ORDER BY 1
"""
_BY_DAY = """
SELECT to_char(created_at, 'YYYY-MM-DD'), sum(request_count),
  coalesce(sum(cost) FILTER (WHERE status IN ('queued', 'running', 'succeeded')), 0),
  count(*) FILTER (WHERE status IN ('failed', 'cancelled', 'interrupted'))
FROM requests WHERE guild_id = %s AND created_at >= %s AND created_at < %s
GROUP BY 1 ORDER BY 1
"""


class PostgresReports:
    """Reads only; each report opens, reads and closes a connection of its own."""

    def __init__(self, url: str, busy_timeout_s: float) -> None:
        self._url = url
        self._busy_timeout_s = busy_timeout_s

    async def usage_report(
        self, guild_id: int, since: datetime, until: datetime, *, top: int = 10
    ) -> UsageReport:
        """Requests made in ``[since, until)``: totals, by user, by mode, by UTC day, and the
        remix events' calls apart from members' (a member's figures never hold them)."""
        window = (guild_id, utc(since), utc(until))

        def read(cursor: psycopg.Cursor[Any]) -> list[list[Any]]:
            return [
                cursor.execute(sql, window).fetchall()
                for sql in (_BY_USER, _BY_MODE, _BY_DAY, _BY_EVENT)
            ]

        users, modes, days, events = await self._in_thread(read)
        return reports.usage_report(
            guild_id, since, until, (users, modes, days), top=top, events=events
        )

    async def spend_by_day(self, since: datetime, until: datetime) -> list[DailySpend]:
        """Paid API calls and units charged per UTC day and server in ``[since, until)``."""
        first, last = utc(since).date(), utc(until).date()

        def read(cursor: psycopg.Cursor[Any]) -> tuple[list[Any], list[Any]]:
            calls = cursor.execute(
                "SELECT to_char(day, 'YYYY-MM-DD'), guild_id, count(*) FROM api_calls "
                "WHERE day >= %s AND day <= %s GROUP BY 1, 2",
                (first, last),
            ).fetchall()
            units = cursor.execute(
                "SELECT to_char(created_at, 'YYYY-MM-DD'), guild_id, coalesce(sum(cost) "
                "FILTER (WHERE status IN ('queued', 'running', 'succeeded')), 0) "
                "FROM requests WHERE created_at >= %s AND created_at < %s GROUP BY 1, 2",
                (utc(since), utc(until)),
            ).fetchall()
            return calls, units

        calls, units = await self._in_thread(read)
        return reports.daily_spend(calls, units)

    async def stream_ledger(
        self, guild_id: int, since: datetime, until: datetime, out: TextIO
    ) -> LedgerCount:
        """Write the guild's ledger rows in ``[since, until)`` as CSV, page by page."""
        return await asyncio.to_thread(self._stream, guild_id, since, until, out)

    async def write_ledger_csv(
        self, guild_id: int, since: datetime, until: datetime, path: Path
    ) -> LedgerCount:
        """``stream_ledger`` into a new file at ``path``, opened and written on the thread."""

        def write() -> LedgerCount:
            with path.open("w", newline="", encoding="utf-8") as out:
                return self._stream(guild_id, since, until, out)

        return await asyncio.to_thread(write)

    async def ledger_days(
        self, guild_id: int, since: datetime, until: datetime
    ) -> list[tuple[date, int]]:
        """How many rows the guild's ledger holds on each UTC day of ``[since, until)``."""

        def read(cursor: psycopg.Cursor[Any]) -> list[Any]:
            return cursor.execute(
                "SELECT to_char(created_at, 'YYYY-MM-DD'), count(*) FROM requests "
                "WHERE guild_id = %s AND created_at >= %s AND created_at < %s "
                "GROUP BY 1 ORDER BY 1",
                (guild_id, utc(since), utc(until)),
            ).fetchall()

        days = await self._in_thread(read)
        return [(date.fromisoformat(day), count) for day, count in days]

    def _stream(self, guild_id: int, since: datetime, until: datetime, out: TextIO) -> LedgerCount:
        with self._snapshot() as conn, conn.cursor(name="stembot_export") as cursor:
            cursor.execute(_SELECT_EXPORT, (guild_id, utc(since), utc(until)))
            return write_ledger(iter(lambda: cursor.fetchmany(_EXPORT_PAGE_ROWS), []), out)

    async def _in_thread(self, read: Callable[[psycopg.Cursor[Any]], T]) -> T:
        def run() -> T:
            with self._snapshot() as conn, conn.cursor() as cursor:
                return read(cursor)

        return await asyncio.to_thread(run)

    @contextmanager
    def _snapshot(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of its own in one read-only snapshot; closed afterwards."""
        try:
            conn = psycopg.connect(self._url, **connection_options(self._busy_timeout_s))
        except psycopg.Error as error:
            raise unreachable(self._url, error) from error
        with conn, errors_explained(), conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield conn
