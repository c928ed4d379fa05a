"""The commands on a PostgreSQL ledger (STEMBOT_DATABASE_URL): the operator's commands read and
change it as they do the SQLite file; `stembot run` holds it alone, and a server that is down
at start-up is one line and a non-zero exit."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from stembot.cli import main
from stembot.models import Mode
from stembot.remix_event_models import EventSpec, SourceRef
from stembot.store.postgres import PostgresStore
from tests.postgres import empty_tables
from tests.test_store import GUILD, POLICY, new_request

DOWN = "postgresql://stembot:hunter2@127.0.0.1:9/ledger"


async def test_the_operators_commands_work_on_postgresql(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """quota set / show / reset, usage (an event's spend apart), usage --csv and --all: the
    same answers as on SQLite, read from the database the URL names (its password never
    shown)."""
    store = await PostgresStore.open(postgres_url, POLICY)
    empty_tables(postgres_url)
    now = datetime.now(UTC)
    try:
        await store.ledger.reserve(new_request(mode=Mode.ALL), now)
        spec = EventSpec("Spring remix", "song.wav", "event-song", SourceRef(5, 6, 7))
        event = await store.events.start(GUILD, 555, 1009, spec, now, max_open=3)
        await store.ledger.reserve_for_event(event.id, Mode.VOCALS, "song.wav", "event-song", now)
    finally:
        await store.close()
    env = {"STEMBOT_DATABASE_URL": postgres_url}

    async def run(*args: str) -> str:
        assert await asyncio.to_thread(main, list(args), env) == 0
        said = capsys.readouterr()
        assert "reading the database at postgresql://" in said.err
        return said.out

    assert "daily limit      7 units (set for this server)" in await run(
        "quota", "set", str(GUILD), "--daily", "7"
    )
    assert "today            3 used, 4 left of 7" in await run("quota", "show", str(GUILD))
    assert "(set for this server)" not in await run("quota", "reset", str(GUILD))
    report = await run("usage", str(GUILD))
    assert "Remix events (charged to the server, not to members):" in report
    assert f"event {event.id}" in report
    rows = list(csv.DictReader(io.StringIO(await run("usage", str(GUILD), "--csv"))))
    assert [(r["charged_to"], r["remix_event_id"]) for r in rows] == [
        ("member", ""),
        ("event", str(event.id)),
    ]
    since = (now - timedelta(days=1)).date().isoformat()
    assert f"{GUILD}" in await run("usage", "--all", "--since", since)


def test_a_database_that_is_down_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`stembot run` and the operator's commands: one line naming the server, never the
    password, exit status 1; nothing else started."""
    env = {
        "DISCORD_TOKEN": "token",
        "SOUNDVERSE_API_KEY": "key",
        "STEMBOT_DATABASE_URL": DOWN,
    }
    for command in (["run"], ["quota", "show", str(GUILD)]):
        assert main(command, env) == 1
        said = capsys.readouterr()
        lines = [line for line in said.err.splitlines() if line.strip()]
        assert lines[-1].startswith(
            "stembot: cannot use the PostgreSQL database at postgresql://127.0.0.1:9/ledger: "
        ), said.err
        assert "hunter2" not in said.err + said.out


def test_a_url_that_is_not_postgresql_is_refused_without_showing_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["quota", "show", str(GUILD)], {"STEMBOT_DATABASE_URL": "mysql://u:pw@h/db"}) == 2
    said = capsys.readouterr().err
    assert "STEMBOT_DATABASE_URL must be a postgresql://" in said and "pw@" not in said
