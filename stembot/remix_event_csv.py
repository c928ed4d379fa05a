"""An event's participation as CSV for its moderators: one row per member who took stems or
submitted a remix. Plain values in (``Participation``), spreadsheet-safe text out, as the
ledger's export (ledger_csv.py)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import datetime
from typing import TextIO

from stembot.ledger_csv import spreadsheet_id, spreadsheet_safe
from stembot.remix_event_models import Participation

PARTICIPATION_COLUMNS = (
    "user_id",
    # The modes the member took, in the event's order, space-separated ("vocals all").
    "modes",
    "first_taken_at",
    "submission_title",
    "submission_file",
    "submitted_at",
)


def write_participation(rows: Iterable[Participation], out: TextIO) -> int:
    """The header, then one row per member; returns how many members."""
    writer = csv.writer(out)
    writer.writerow(PARTICIPATION_COLUMNS)
    count = 0
    for row in rows:
        submission = row.submission
        writer.writerow(
            (
                spreadsheet_id(row.user_id),
                " ".join(mode.value for mode in row.modes),
                _seconds(row.first_taken_at),
                spreadsheet_safe(None if submission is None else submission.title),
                spreadsheet_safe(None if submission is None else submission.filename),
                _seconds(None if submission is None else submission.submitted_at),
            )
        )
        count += 1
    return count


def _seconds(moment: datetime | None) -> str:
    return "" if moment is None else f"{moment:%Y-%m-%dT%H:%M:%S}Z"
