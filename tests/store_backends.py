"""Each ledger store under one roof for the tests that hold both to one contract: SQLite (a
file in the test's folder) and PostgreSQL (the run's database, emptied for each test; skipped,
saying why, without STEMBOT_TEST_POSTGRES_URL). The ``backend`` fixture (tests/conftest.py)
gives one of each."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from stembot.config import QuotaPolicy
from stembot.store.asynchronous import AsyncStore
from stembot.store.interface import LedgerStore
from stembot.store.postgres import PostgresStore
from stembot.windows import stamp
from tests.test_store import POLICY

KINDS = ("sqlite", "postgres")


class Backend:
    """The store under test, a way to open it again (with another policy, as a restart
    would), and its rows as a separate connection sees them."""

    def __init__(self, kind: str, where: str) -> None:
        self.kind = kind
        self._where = where
        self._store: LedgerStore | None = None

    @property
    def store(self) -> LedgerStore:
        assert self._store is not None
        return self._store

    @property
    def where(self) -> str:
        """The SQLite file's path or the PostgreSQL database's URL."""
        return self._where

    async def open(self, policy: QuotaPolicy = POLICY) -> LedgerStore:
        await self.close()
        if self.kind == "sqlite":
            self._store = await AsyncStore.open(Path(self._where), policy)
        else:
            self._store = await PostgresStore.open(self._where, policy)
        return self._store

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run ``sql`` (``?`` placeholders) on a connection of its own, committed."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self._where, isolation_level=None)
            try:
                return conn.execute(sql, params).fetchall()
            finally:
                conn.close()
        with psycopg.connect(self._where, autocommit=True) as pg:
            cursor = pg.execute(sql.replace("?", "%s").encode(), params)
            return cursor.fetchall() if cursor.description else []

    def moment(self, when: datetime) -> str | datetime:
        """``when`` as a parameter of ``rows``: SQLite keeps stamps, PostgreSQL timestamptz."""
        return stamp(when) if self.kind == "sqlite" else when
