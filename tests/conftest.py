"""Fixtures shared by the test files: a PostgreSQL database for the run (tests/postgres.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres import admin_url, fresh_database


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One database for the whole run, created from STEMBOT_TEST_POSTGRES_URL and dropped at
    the end; the test skips (saying why) when the variable is not set."""
    with fresh_database(admin_url()) as url:
        yield url
