"""Copy a SQLite ledger into an empty PostgreSQL one (``stembot copy-ledger``): every table
the SQLite store keeps, row for row, in one transaction, through COPY. The request ids stay
(and the id sequence goes on after them), so the export, the moderators' refunds and the
stored results keep pointing at the same requests; so do the remix events' (with their takes
and submissions). The day's paid calls are counted from ``api_calls`` on PostgreSQL, so
SQLite's counter table is not copied.
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
            "remix_event_id",
            # Copied: the queued calls it seals are run by the first bot on PostgreSQL
            # (the same API key opens them), not refunded.
            "sealed_source",
        ),
    ),
    ("results", ("source_key", "mode", "stems", "issued_at", "request_id")),
    ("quota_alerts", ("guild_id", "period", "period_start", "threshold", "sent_at")),
    ("command_digests", ("scope", "digest")),
    ("role_allowances", ("guild_id", "role_id", "per_user")),
    ("api_calls", ("request_id", "guild_id", "day", "reserved_at", "made_at")),
    ("budget_notices", ("day", "sent_at")),
    (
        "remix_events",
        (
            "id",
            "guild_id",
            "channel_id",
            "organiser_id",
            "title",
            "source_name",
            "source_key",
            "source_channel_id",
            "source_message_id",
            "source_attachment_id",
            "modes",
            "submissions",
            "budget",
            "prefetch",
            "created_at",
            "ends_at",
            "ended_at",
            "ended_by",
            "card_channel_id",
            "card_message_id",
            "pinned",
            "scheduled_event_id",
            "poll_message_id",
            "poll_submission_ids",
        ),
    ),
    ("remix_event_takes", ("event_id", "mode", "user_id", "status", "taken_at", "answered_at")),
    (
        "remix_event_submissions",
        (
            "id",
            "event_id",
            "user_id",
            "title",
            "filename",
            "message_id",
            "submitted_at",
            "replaced_at",
            "removed_at",
            "removed_by",
        ),
    ),
)
# After the copy, each id goes on after the rows copied; a remix event's next call is numbered
# below every interaction id copied (they count down from -1).
_SEQUENCES_AFTER_COPY = """
SELECT setval(pg_get_serial_sequence('requests', 'id'),
              (SELECT coalesce(max(id), 0) + 1 FROM requests), false),
       setval(pg_get_serial_sequence('remix_events', 'id'),
              (SELECT coalesce(max(id), 0) + 1 FROM remix_events), false),
       setval(pg_get_serial_sequence('remix_event_submissions', 'id'),
              (SELECT coalesce(max(id), 0) + 1 FROM remix_event_submissions), false),
       setval('remix_event_interactions',
              (SELECT least(coalesce(min(interaction_id), 0), 0) - 1 FROM requests), false)
"""
_PAGE_ROWS = 5000


class TargetNotEmptyError(StoreUnavailableError):
    """The PostgreSQL ledger already holds requests: a copy never merges two ledgers."""


def copy_ledger(source: Path, url: str) -> dict[str, int]:
    """Copy the SQLite ledger at ``source`` (at the current schema: open it with ``Store``
    first) into the PostgreSQL database at ``url``, migrated here and empty; rows per table.
    Synchronous, like the command that runs it."""
    reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
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
            await target.execute(_SEQUENCES_AFTER_COPY)
    return copied


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
