"""`stembot separate MODE URL`: the Soundverse client from a terminal."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    """Filled in by the Soundverse client work."""
