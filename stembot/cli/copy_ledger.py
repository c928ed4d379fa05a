"""`stembot copy-ledger --to postgresql://...`: move an existing SQLite ledger into PostgreSQL.

Run it with the bot stopped (it holds the SQLite file as `stembot run` does, so it refuses
while a bot runs on it), then set STEMBOT_DATABASE_URL and start the bot again.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from stembot.config import load_settings
from stembot.database_lock import hold_database
from stembot.source_urls import redact_url
from stembot.store import Store
from stembot.store.postgres.copying import copy_ledger

EXIT_USAGE = 2


def register(subparsers: Any) -> None:
    copy = subparsers.add_parser(
        "copy-ledger",
        help="copy the SQLite ledger into an empty PostgreSQL database",
        description=(
            "Copy the SQLite ledger (STEMBOT_DB_PATH) into an empty PostgreSQL database, row "
            "for row; stop the bot first, then set STEMBOT_DATABASE_URL to the same URL."
        ),
    )
    copy.add_argument(
        "--to", required=True, metavar="URL", help="postgresql://user:password@host:port/database"
    )
    copy.set_defaults(handler=handle_copy_ledger)


def handle_copy_ledger(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    settings = load_settings(env)
    if urlsplit(args.to).scheme not in ("postgresql", "postgres"):
        print(
            "stembot: --to must be a postgresql://user:password@host:port/database URL",
            file=sys.stderr,
        )
        return EXIT_USAGE
    path = settings.db_path
    if not path.exists():
        print(f"stembot: no SQLite ledger at {path.absolute()} (STEMBOT_DB_PATH)", file=sys.stderr)
        return 1
    with hold_database(path):
        # Brings an older file to the current schema before it is read.
        Store.open(path, settings.quota).close()
        copied = copy_ledger(path, args.to)
    counts = ", ".join(f"{rows} {table}" for table, rows in copied.items())
    print(f"copied {path.absolute()} into {redact_url(args.to)}: {counts}")
    return 0
