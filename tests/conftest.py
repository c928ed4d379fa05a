"""Fixtures shared by the test files: a PostgreSQL database for the run (tests/postgres.py),
and each ledger store in turn (tests/store_backends.py); Discord's OpenAPI description."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.postgres import admin_url, empty_tables, fresh_database
from tests.standins.discord.spec import OpenAPISpec
from tests.store_backends import KINDS, Backend


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One database for the whole run, created from STEMBOT_TEST_POSTGRES_URL and dropped at
    the end; the test skips (saying why) when the variable is not set."""
    with fresh_database(admin_url()) as url:
        yield url


@pytest.fixture(params=KINDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The SQLite store, then the PostgreSQL one (its tables emptied), opened with the tests'
    policy; closed afterwards."""
    if request.param == "sqlite":
        opened = Backend("sqlite", str(tmp_path / "ledger.db"))
        await opened.open()
    else:
        url = request.getfixturevalue("postgres_url")
        opened = Backend("postgres", url)
        await opened.open()  # migrates the run's database on first use
        empty_tables(url)
    yield opened
    await opened.close()


@pytest.fixture(scope="session")
def spec() -> OpenAPISpec:
    """Discord's OpenAPI description, to check what the bot would send (skips without it)."""
    loaded = OpenAPISpec.load()
    if loaded is None:
        pytest.skip("Discord's OpenAPI description (../shared/discord-openapi.json) is absent")
    return loaded
