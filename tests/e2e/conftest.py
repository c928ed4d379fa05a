from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.e2e.ledgers import BotLedger
from tests.e2e.stack import Stack, running_stack
from tests.postgres import admin_url, fresh_database
from tests.store_backends import KINDS


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path / "stembot.db") as running:
        yield running


@pytest.fixture(params=KINDS)
def bot_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BotLedger]:
    """The bot's ledger on each store in turn: the SQLite file, then a fresh PostgreSQL
    database of its own (dropped afterwards; skipped, saying why, without one)."""
    db_path = tmp_path / "stembot.db"
    if request.param == "sqlite":
        yield BotLedger("sqlite", db_path)
        return
    with fresh_database(admin_url()) as url:
        # A killed bot's lease runs out in seconds here, not the default half a minute: the
        # next bot takes its requests over then (tests/e2e/test_processes.py tests leases).
        env = {"STEMBOT_DATABASE_URL": url, "STEMBOT_LEASE_S": "2", "STEMBOT_HEARTBEAT_S": "0.5"}
        yield BotLedger("postgres", db_path, env)


@pytest.fixture
async def stack_on_each_store(bot_ledger: BotLedger) -> AsyncIterator[Stack]:
    """The running stack, its ledger on each store in turn (``bot_ledger``)."""
    async with running_stack(bot_ledger.db_path, bot_ledger.env) as running:
        yield running
