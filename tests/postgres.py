"""A PostgreSQL database of its own for a test run, from STEMBOT_TEST_POSTGRES_URL.

Without that variable the PostgreSQL tests skip, saying why (a new contributor's machine);
CI sets it (.ci/run), and there a server that cannot be reached fails the run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

URL_VARIABLE = "STEMBOT_TEST_POSTGRES_URL"
SKIP_REASON = (
    f"PostgreSQL tests need {URL_VARIABLE} (e.g. postgresql://postgres@127.0.0.1:5432/postgres; "
    "CI sets it)"
)
# Every table of the ledger, emptied between tests.
TABLES = (
    "requests",
    "results",
    "guild_settings",
    "quota_alerts",
    "command_digests",
    "role_allowances",
    "api_calls",
    "budget_notices",
    "remix_events",
    "remix_event_takes",
    "remix_event_submissions",
    "stembot_processes",
    "call_lanes",
    "identify_turns",
    "session_starts",
)


def admin_url() -> str:
    """The server to make test databases on; skips the test when none is configured."""
    url = os.environ.get(URL_VARIABLE, "")
    if not url:
        pytest.skip(SKIP_REASON)
    return url


def with_database(url: str, name: str) -> str:
    """``url`` naming the database ``name`` instead."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A new, empty database on the server of ``url``, dropped afterwards; yields its URL."""
    name = f"stembot_test_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def empty_tables(url: str) -> None:
    """Every ledger table emptied and its ids restarted (the schema stays)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY").format(
                sql.SQL(", ").join(map(sql.Identifier, TABLES))
            )
        )
        conn.execute("UPDATE call_turns SET serving_turn = 0, next_seq = 0")


def let_in(url: str, allowed: bool) -> None:
    """The database of ``url`` lets connections in, or refuses them and ends the open ones
    (as a server going away does to its clients); asked of the server ``admin_url()`` names."""
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.Literal(allowed)
            )
        )
        if not allowed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
