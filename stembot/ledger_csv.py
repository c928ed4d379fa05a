"""The ledger and the operator's spend as CSV that spreadsheets open safely. No database here:
the store reads the rows and hands them over page by page.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, TextIO

from stembot.models import DailySpend

CSV_COLUMNS = (
    "request_id",
    "created_at",
    "finished_at",
    "guild_id",
    "channel_id",
    "user_id",
    "interaction_id",
    "mode",
    "source",
    "source_key",
    "cost",
    "charged",
    "status",
    "error",
    "requests",
    # "server" when the server alone carries a handed-over charge (no member's own units);
    # "event" for a remix event's call (the server's too, apart from members' spend).
    "charged_to",
    # The remix event whose call the row is (empty for a member's request).
    "remix_event_id",
)
_CHARGED_STATUSES = frozenset(("queued", "running", "succeeded"))


class LedgerCount(NamedTuple):
    """What an export wrote: its rows, and the requests they stand for (free repeats share)."""

    rows: int
    requests: int


def write_ledger(pages: Iterable[Sequence[Sequence[Any]]], out: TextIO) -> LedgerCount:
    """The header, then every row of ``pages`` as CSV. A row holds the ledger's id,
    created_at, finished_at, guild_id, channel_id, user_id, interaction_id, mode, source_name,
    source_key, cost, status, error, request_count, member_pays and remix_event_id, in that
    order."""
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    rows = requests = 0
    for page in pages:
        writer.writerows(map(_csv_row, page))
        rows += len(page)
        requests += sum(row[13] for row in page)
    return LedgerCount(rows, requests)


def _csv_row(row: Sequence[Any]) -> list[object]:
    (request_id, created, finished, guild, channel, user, interaction, mode) = row[:8]
    (name, key, cost, status, error, count, member_pays, event_id) = row[8:]
    return [
        request_id,
        _stamp_seconds(created),
        _stamp_seconds(finished),
        spreadsheet_id(guild),
        spreadsheet_id(channel),
        spreadsheet_id(user),
        spreadsheet_id(interaction),
        mode,
        spreadsheet_safe(name),
        spreadsheet_safe(key),
        cost,
        cost if status in _CHARGED_STATUSES else 0,
        status,
        spreadsheet_safe(error),
        count,
        _charged_to(member_pays, event_id),
        "" if event_id is None else event_id,
    ]


def _charged_to(member_pays: int, event_id: int | None) -> str:
    if event_id is not None:
        return "event"
    return "member" if member_pays else "server"


def write_spend_csv(spend: Sequence[DailySpend], out: TextIO) -> None:
    """The operator's bot-wide view as CSV: one row per UTC day and server."""
    writer = csv.writer(out)
    writer.writerow(("day", "guild_id", "api_calls", "units"))
    writer.writerows(
        (line.day.isoformat(), spreadsheet_id(line.guild_id), line.calls, line.units)
        for line in spend
    )


def _stamp_seconds(stamp: str | None) -> str:
    """A stored stamp (fixed width, see windows.stamp) to whole seconds: 2026-05-01T09:00:00Z."""
    return "" if stamp is None else stamp[:19] + "Z"


def spreadsheet_safe(text: str | None) -> str:
    """User-supplied text that a spreadsheet will not run as a formula."""
    if not text:
        return ""
    return "'" + text if text[0] in "=+-@\t\r" else text


def spreadsheet_id(snowflake: int) -> str:
    """A Discord id as ``="123..."``: a spreadsheet shows the digits as text.

    Plain, a 19-digit id is read as a number and rounded to 15 significant digits (Excel,
    LibreOffice, Sheets). The formula is a constant made only of digits we wrote ourselves,
    never user text, so it cannot do what ``spreadsheet_safe`` guards against; a program
    reads the id back with ``int(value.strip('="'))`` (see the README).
    """
    return f'="{int(snowflake)}"'
