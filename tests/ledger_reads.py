"""Reads of the ledger that only tests need, straight from the store's connection."""

from __future__ import annotations

from stembot.models import Request, RequestStatus
from stembot.store import Store

# The export's columns holding Discord ids (snowflakes, up to 19 digits), which it writes so
# that spreadsheets keep them.
CSV_ID_COLUMNS = ("guild_id", "channel_id", "user_id", "interaction_id")


def delivered_via(store: Store, request_id: int) -> str | None:
    """Where the request's answer went, or None while it is undelivered (or unknown)."""
    row = store.connection.db.execute(
        "SELECT delivered_via FROM requests WHERE id = ?", (request_id,)
    ).fetchone()
    via: str | None = None if row is None else row[0]
    return via


_REFUNDED = frozenset({RequestStatus.FAILED, RequestStatus.CANCELLED, RequestStatus.INTERRUPTED})


def charged(request: Request) -> int:
    """Units the request counts against quotas: nothing once it was refunded."""
    return 0 if request.status in _REFUNDED else request.cost


def request_of_interaction(store: Store, interaction_id: int) -> int | None:
    """The id of the request an interaction made, or None while it has made none."""
    row = store.connection.db.execute(
        "SELECT id FROM requests WHERE interaction_id = ?", (interaction_id,)
    ).fetchone()
    return None if row is None else int(row[0])


def totals(store: Store) -> tuple[int, int, int]:
    """Rows, requests they count, and units charged (refunded ones left out): what a free
    action must leave as it found it."""
    rows, requests, units = store.connection.db.execute(
        "SELECT count(*), coalesce(sum(request_count), 0), coalesce(sum(CASE WHEN status IN "
        "('failed', 'cancelled', 'interrupted') THEN 0 ELSE cost END), 0) FROM requests"
    ).fetchone()
    return int(rows), int(requests), int(units)
