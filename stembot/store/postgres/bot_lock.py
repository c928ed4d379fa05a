"""One bot per PostgreSQL database, until processes hold leases (issue 14): `stembot run`
holds a session-level advisory lock on a connection of its own for its whole life, as it
holds the SQLite file's lock (stembot/database_lock.py).

Start-up recovery ends every request still queued or running, which is right only when no
other bot is serving them: a second bot on the same database would refund the first one's
requests. The server releases a session lock when its connection ends, however the process
ended (a crash, SIGKILL), so the next bot takes over at once. The holder names itself in the
connection's ``application_name``, so a refused second bot can say who holds the database.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg

from stembot.errors import DatabaseInUseError
from stembot.source_urls import redact_url
from stembot.store.postgres.connection import (
    BOT_LOCK,
    CONNECT_TIMEOUT_S,
    LOCK_CLASS,
    unreachable,
)

# Who holds the two-key advisory lock (LOCK_CLASS, BOT_LOCK): its session's self-description.
_HOLDER = """
SELECT a.application_name FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s
  AND l.objsubid = 2
"""


@contextmanager
def hold_postgres(url: str) -> Iterator[None]:
    """Hold the database for this process until the block ends.

    DatabaseInUseError (naming the holder) when another bot holds it; StoreUnavailableError,
    one line without the password, when the server cannot be reached.
    """
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=_who_am_i(),
        )
    except psycopg.Error as error:
        raise unreachable(url, error) from error
    with conn:
        try:
            taken = conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, BOT_LOCK)
            ).fetchone()
            holder = (
                None
                if taken and taken[0]
                else conn.execute(_HOLDER, (LOCK_CLASS, BOT_LOCK)).fetchone()
            )
        except psycopg.Error as error:
            raise unreachable(url, error) from error
        if not (taken and taken[0]):
            raise DatabaseInUseError(
                redact_url(url), holder[0] if holder else "", "STEMBOT_DATABASE_URL"
            )
        yield


def _who_am_i() -> str:
    """This process as the lock's holder names itself (at most 63 bytes are kept)."""
    since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"stembot pid {os.getpid()} on {socket.gethostname()}, since {since}"[:63]
