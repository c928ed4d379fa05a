"""Copy a SQLite ledger into an empty PostgreSQL one (``stembot copy-ledger``): every table
the SQLite store keeps, row for row, in one transaction, through COPY. The request ids stay
(and the id sequence goes on after them), so the export, the moderators' refunds and the
stored results keep pointing at the same requests. The day's paid calls are counted from
``api_calls`` on PostgreSQL, so SQLite's counter table is not copied.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from stembot.errors import StoreUnavailableError
from stembot.source_urls import redact_url
from stembot.store.postgres import migrations
from stembot.store.postgres.connection import connection_options, unreachable

# Each table and the columns both schemas share, parents first.
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "guild_settings",
        (
            "guild_id",
            "daily_limit",
            "monthly_limit",
            "user_daily_limit",
            "user_active_requests",
            "log_channel_id",
        ),
    ),
    (
        "requests",
        (
            "id",
            "interaction_id",
            "guild_id",
            "channel_id",
            "user_id",
            "mode",
            "source_name",
            "source_key",
            "cost",
            "status",
            "created_at",
            "started_at",
            "finished_at",
            "error",
            "delivered_at",
            "delivered_via",
            "member_pays",
            "request_count",
            "refunded_by_moderator",
            "pays_call",
        ),
    ),
    ("results", ("source_key", "mode", "stems", "issued_at", "request_id")),
    ("quota_alerts", ("guild_id", "period", "period_start", "threshold", "sent_at")),
    ("command_digests", ("scope", "digest")),
    ("role_allowances", ("guild_id", "role_id", "per_user")),
    ("api_calls", ("request_id", "guild_id", "day", "reserved_at", "made_at")),
    ("budget_notices", ("day", "sent_at")),
)
_PAGE_ROWS = 5000


class TargetNotEmptyError(StoreUnavailableError):
    """The PostgreSQL ledger already holds requests: a copy never merges two ledgers."""


class RemixEventsNotCopiedError(StoreUnavailableError):
    """The SQLite ledger holds remix events, which the PostgreSQL store does not keep yet."""


def copy_ledger(source: Path, url: str) -> dict[str, int]:
    """Copy the SQLite ledger at ``source`` (at the current schema: open it with ``Store``
    first) into the PostgreSQL database at ``url``, migrated here and empty; rows per table.
    Synchronous, like the command that runs it."""
    reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        _refuse_remix_events(reader)
        return asyncio.run(_copy_all(reader, url))
    finally:
        reader.close()


async def _copy_all(reader: sqlite3.Connection, url: str) -> dict[str, int]:
    try:
        target = await psycopg.AsyncConnection.connect(url, **connection_options(30))
    except psycopg.Error as error:
        raise unreachable(url, error) from error
    async with target:
        await migrations.apply(target)
        async with target.transaction():
            await _refuse_a_used_ledger(target, url)
            copied = {name: await _copy(reader, target, name, columns) for name, columns in TABLES}
            await target.execute(
                "SELECT setval(pg_get_serial_sequence('requests', 'id'), "
                "coalesce(max(id), 0) + 1, false) FROM requests"
            )
    return copied


def _refuse_remix_events(reader: sqlite3.Connection) -> None:
    (events,) = reader.execute("SELECT count(*) FROM remix_events").fetchone()
    if events:
        raise RemixEventsNotCopiedError(
            f"the SQLite ledger holds {events} remix event(s), which the PostgreSQL store does "
            "not keep yet; nothing was copied"
        )


async def _refuse_a_used_ledger(target: psycopg.AsyncConnection[Any], url: str) -> None:
    cursor = await target.execute("SELECT count(*) FROM requests")
    row = await cursor.fetchone()
    if row is not None and row[0]:
        raise TargetNotEmptyError(
            f"the PostgreSQL ledger at {redact_url(url)} already holds {row[0]} requests; "
            "copy into an empty database"
        )


async def _copy(
    reader: sqlite3.Connection,
    target: psycopg.AsyncConnection[Any],
    table: str,
    columns: tuple[str, ...],
) -> int:
    names = ", ".join(columns)
    # Table and column names come from TABLES above, never from input.
    rows = reader.execute(f"SELECT {names} FROM {table}")  # noqa: S608
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    count = 0
    async with target.cursor() as cursor, cursor.copy(statement) as copy:
        while page := rows.fetchmany(_PAGE_ROWS):
            for row in page:
                await copy.write_row(row)
            count += len(page)
    return count
