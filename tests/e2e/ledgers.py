"""Where an end-to-end test's bot keeps its ledger: the SQLite file beside the test, or a fresh
PostgreSQL database of its own (STEMBOT_DATABASE_URL), and a way to read what the bot wrote,
whichever it is (the ``bot_ledger`` fixture of tests/e2e/conftest.py gives each in turn)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from stembot.cli.ledger import open_ledger
from stembot.config import load_settings
from stembot.store.interface import LedgerStore


@dataclass(frozen=True)
class BotLedger:
    kind: str
    db_path: Path
    # What the bot's environment adds to select the store (empty for the SQLite file).
    env: dict[str, str] = field(default_factory=dict)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[LedgerStore]:
        """The bot's ledger, opened beside it (or after it) as the operator's commands open
        it; closed when the block ends."""
        settings = load_settings({"STEMBOT_DB_PATH": str(self.db_path), **self.env})
        store = await open_ledger(settings)
        try:
            yield store
        finally:
            await store.close()
