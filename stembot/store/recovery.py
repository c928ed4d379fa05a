"""What a stopped bot left owing, settled at start-up inside the ledger's write transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from stembot.models import HandedOverCall, Recovery, Request, RequestStatus, Separation
from stembot.store import rows
from stembot.store.rows import REQUEST_COLUMNS
from stembot.windows import stamp

INTERRUPTED_ERROR = "stembot stopped while this request was in progress"

_SELECT_ACTIVE = (
    f"SELECT {REQUEST_COLUMNS} FROM requests INDEXED BY requests_active "  # noqa: S608 (constant)
    "WHERE status IN ('queued', 'running') ORDER BY id"
)
# Paid calls still queued whose source is sealed (a member's: an event's call is made again
# for its waiting takes), and the requests waiting on each.
HANDED_OVER = (
    "pays_call AND status = 'queued' AND sealed_source IS NOT NULL AND remix_event_id IS NULL"
)
RIDERS = "NOT pays_call AND status = 'queued' AND remix_event_id IS NULL"
_SELECT_HANDED_OVER = (
    f"SELECT {REQUEST_COLUMNS}, sealed_source FROM requests INDEXED BY requests_active "  # noqa: S608 (constant)
    f"WHERE status IN ('queued', 'running') AND {HANDED_OVER} ORDER BY id"
)
_SELECT_RIDERS = (
    f"SELECT {REQUEST_COLUMNS} FROM requests INDEXED BY requests_active "  # noqa: S608 (constant)
    f"WHERE status IN ('queued', 'running') AND {RIDERS} AND source_key = ? AND mode = ? "
    "ORDER BY id"
)
# Succeeded requests whose answer never reached Discord, with their stored result if any. A
# remix event's call is answered to its members' takes (remix_event_takes), never to its row.
_SELECT_UNDELIVERED = (
    f"SELECT {rows.Q_REQUEST_COLUMNS}, r.stems, r.issued_at "  # noqa: S608 (constant)
    "FROM requests AS q INDEXED BY requests_undelivered LEFT JOIN results AS r "
    "ON r.source_key = q.source_key AND r.mode = q.mode "
    "WHERE q.status = 'succeeded' AND q.delivered_at IS NULL AND q.remix_event_id IS NULL "
    "ORDER BY q.id"
)


def recover(db: Database, now: datetime) -> Recovery:
    """What a stopped bot left owing, settled inside the caller's write transaction.

    A request still queued or running whose call finished (a result for its source and
    mode issued after it was made: it shared a call that was settled) succeeded. A paid
    call still queued whose source is sealed is handed over, with the requests waiting on it,
    to be made now (it never reached the API). Every other queued or running one is
    interrupted and refunded. Every succeeded request
    whose answer never reached Discord is returned with its stored result, to be delivered
    (it stays charged); one whose result is no longer stored is refunded as interrupted.
    """
    finished = stamp(now)
    db.execute(
        "UPDATE requests SET status = 'succeeded', finished_at = ? "
        "WHERE status IN ('queued', 'running') AND EXISTS (SELECT 1 FROM results AS r "
        "WHERE r.source_key = requests.source_key AND r.mode = requests.mode "
        "AND r.issued_at >= requests.created_at)",
        (finished,),
    )
    handed_over = _handed_over(db)
    kept = {request.id for call in handed_over for request in call.requests}
    interrupted = _interrupt_active(db, finished, kept)
    undelivered, lost = sort_owed(db.execute(_SELECT_UNDELIVERED).fetchall())
    interrupted.extend(interrupted_request(row, finished) for row in lost)
    db.conn.executemany(
        "UPDATE requests SET status = 'interrupted', finished_at = ?, error = ? WHERE id = ?",
        [(finished, INTERRUPTED_ERROR, row[0]) for row in lost],
    )
    return Recovery(interrupted, undelivered, handed_over)


def _handed_over(db: Database) -> list[HandedOverCall]:
    calls = []
    for row in db.execute(_SELECT_HANDED_OVER).fetchall():
        payer = rows.request(row)
        riders = db.execute(_SELECT_RIDERS, (payer.source_key, payer.mode.value)).fetchall()
        calls.append(HandedOverCall(payer, row[-1], tuple(map(rows.request, riders))))
    return calls


def _interrupt_active(db: Database, finished: str, kept: set[int]) -> list[Request]:
    active = [row for row in db.execute(_SELECT_ACTIVE).fetchall() if row[0] not in kept]
    db.conn.executemany(
        "UPDATE requests SET status = 'interrupted', finished_at = ?, error = ? WHERE id = ?",
        [(finished, INTERRUPTED_ERROR, row[0]) for row in active],
    )
    return [interrupted_request(row, finished) for row in active]


def sort_owed(
    owed: Sequence[Sequence[Any]],
) -> tuple[list[tuple[Request, Separation]], list[Sequence[Any]]]:
    """Succeeded, undelivered requests (their columns, then the stored stems and issue time)
    sorted: those to deliver with their result, and the rows of those whose result is gone."""
    undelivered: list[tuple[Request, Separation]] = []
    lost: list[Sequence[Any]] = []
    for row in owed:
        if row[-2] is None:
            lost.append(row)
        else:
            request = rows.request(row)
            undelivered.append((request, rows.separation(request.mode, row[-2], row[-1])))
    return undelivered, lost


def interrupted_request(row: Sequence[Any], finished: str | datetime) -> Request:
    """The request of ``row`` as the start-up left it: interrupted, refunded."""
    interrupted = (RequestStatus.INTERRUPTED.value, *row[10:12], finished, INTERRUPTED_ERROR)
    return rows.request((*row[:9], *interrupted, row[14]))
