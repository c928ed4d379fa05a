"""`stembot quota show|set` and `stembot usage`: operators' view of the ledger."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    """Filled in by the ledger work."""
