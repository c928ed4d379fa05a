"""Reads of the ledger that only tests need, straight from the store's connection."""

from __future__ import annotations

from stembot.store import Store


def delivered_via(store: Store, request_id: int) -> str | None:
    """Where the request's answer went, or None while it is undelivered (or unknown)."""
    row = store.connection.db.execute(
        "SELECT delivered_via FROM requests WHERE id = ?", (request_id,)
    ).fetchone()
    via: str | None = None if row is None else row[0]
    return via
