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
