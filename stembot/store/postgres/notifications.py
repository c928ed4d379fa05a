"""What the processes sharing a PostgreSQL ledger tell each other about its API calls: one
connection of its own LISTENs on ``CALLS_CHANNEL`` for the process's whole life (a pool's
connections cannot: LISTEN belongs to a session, which is also why a PgBouncer in
transaction mode cannot stand between stembot and PostgreSQL).

Waiting processes are woken by these words, never by polling. A connection that drops is
opened again; since the words said meanwhile are lost, ``caught_up`` runs after each
(re)connection, for the listener to read what it may have missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import psycopg
from psycopg import sql

from stembot.store.postgres.connection import CALLS_CHANNEL, connection_options
from stembot.store.postgres.dispatch import Word

log = logging.getLogger(__name__)

# Between two attempts to connect again, at most.
_RETRY_PAUSES_S = (0.1, 0.5, 1.0, 2.0, 5.0)


class Listening:
    """Hands every word said on the channel to ``heard`` (synchronously: it must not block);
    ``run`` until cancelled."""

    def __init__(
        self,
        url: str,
        busy_timeout_s: float,
        heard: Callable[[Word], None],
        caught_up: Callable[[], Awaitable[None]],
    ) -> None:
        self._url = url
        self._options = connection_options(busy_timeout_s)
        self._heard = heard
        self._caught_up = caught_up
        self.listening = asyncio.Event()
        self._failures = 0

    async def run(self) -> None:
        self._failures = 0
        while True:
            try:
                await self._listen()
            except Exception as error:
                self.listening.clear()
                pause = _RETRY_PAUSES_S[min(self._failures, len(_RETRY_PAUSES_S) - 1)]
                self._failures += 1
                log.warning(
                    "listening for the other processes' calls failed (%s); again in %.1f s",
                    type(error).__name__,
                    pause,
                )
                await asyncio.sleep(pause)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._url, **self._options) as conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CALLS_CHANNEL)))
            self.listening.set()
            self._failures = 0
            await self._caught_up()
            async for notice in conn.notifies():
                word = Word.parse(notice.payload)
                if word is not None:
                    self._heard(word)
