"""Bounded growth and privacy, end to end: the real bot over the loopback Discord."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import sqlite3
import time
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from aiohttp import web
from psycopg import sql

from stembot.config import QuotaPolicy
from stembot.logs import TOKEN_CARRYING_LOGGERS, configure_logging
from stembot.store import Store
from stembot.windows import month_window, stamp
from tests.e2e.ledgers import BotLedger
from tests.e2e.stack import WAV, Stack, acked_in_time, eventually, is_result, running_stack
from tests.e2e.test_admin import admin, download, moderator, text_of
from tests.ledger_reads import CSV_ID_COLUMNS
from tests.standins.discord import LOADING, InteractionRecord
from tests.standins.local_http import serving

SIGNATURE = "X-Amz-Signature=0123456789abcdefSECRET"


def files_under(folder: Path) -> bytes:
    """Every byte the bot left in ``folder``: the database, its WAL, anything else."""
    return b"".join(p.read_bytes() for p in folder.iterdir() if p.is_file())


def ledger_rows(stack: Stack) -> int:
    return ledger_rows_in(stack.settings.db_path)


# --- 1. free repeats ------------------------------------------------------------------------------


@pytest.mark.slow
async def test_repeating_a_stored_result_gets_stems_but_adds_no_rows(stack: Stack) -> None:
    """Every repeat is answered with the stems; the ledger keeps one row for all of them and
    the moderators' usage still counts each request."""
    attachment = stack.upload()
    first = await stack.answer(await stack.stems(options={"file": attachment}))
    assert is_result(first)
    repeats = 500
    for _ in range(repeats):
        answer = await stack.answer(await stack.stems(options={"file": attachment}))
        assert is_result(answer)
    assert stack.api_calls() == 1
    assert ledger_rows(stack) == 2
    usage = text_of(await admin(stack, "usage", moderator(stack)))
    assert f"{repeats + 1} requests made" in usage


# --- 4. signed links ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def audio_server() -> AsyncIterator[str]:
    """A local host serving a WAV file at /song.wav, whatever the query; yields its base URL."""

    async def song(request: web.Request) -> web.Response:
        return web.Response(body=WAV, content_type="audio/wav")

    app = web.Application()
    app.router.add_get("/song.wav", song)
    async with serving(app) as base:
        yield base


@pytest.fixture
def every_log_line(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG, then the bot's own set-up for STEMBOT_LOG_LEVEL=DEBUG on top."""
    caplog.set_level(logging.DEBUG)
    for name in {*logging.root.manager.loggerDict, *TOKEN_CARRYING_LOGGERS}:
        if not name.startswith(tuple(f"{noisy}." for noisy in TOKEN_CARRYING_LOGGERS)):
            caplog.set_level(logging.DEBUG, logger=name)
    configure_logging("DEBUG")
    return caplog


async def test_a_signed_link_reaches_the_api_whole_and_nothing_else(
    tmp_path: Path, every_log_line: pytest.LogCaptureFixture
) -> None:
    """The API gets the full signed URL; the ledger, the export, the messages and the logs
    never hold its query. Two links differing only by their signature stay two sources."""
    async with audio_server() as base, running_stack(tmp_path / "stembot.db") as stack:
        signed = f"{base}/song.wav?{SIGNATURE}#t=1"
        answer = await stack.answer(await stack.stems(options={"url": signed}))
        assert is_result(answer)
        assert stack.api.requests[0].json() == {"audioUrl": signed}
        again = await stack.answer(await stack.stems(options={"url": signed}))
        assert is_result(again) and stack.api_calls() == 1  # the same link is reused
        other = f"{base}/song.wav?X-Amz-Signature=another"
        await stack.answer(await stack.stems("vocals", options={"url": other}))
        assert stack.api_calls() == 2  # a different link is a different source
        export = await admin(stack, "export", moderator(stack))
        (attachment,) = export["attachments"]
        exported = (await download(attachment["url"])).decode()
        shown = [text_of(answer), text_of(again), text_of(export)]
    assert "SECRET" not in exported
    assert all("SECRET" not in text for text in shown)
    assert b"SECRET" not in files_under(tmp_path)
    leaks = [r.getMessage() for r in every_log_line.records if "SECRET" in r.getMessage()]
    assert not leaks


def database_text(bot_ledger: BotLedger) -> bytes:
    """Every byte of the bot's ledger: the SQLite file and its WAL, or every row of every
    table of the PostgreSQL database as text."""
    if bot_ledger.kind == "sqlite":
        return files_under(bot_ledger.db_path.parent)
    url = bot_ledger.env["STEMBOT_DATABASE_URL"]
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
        dumped = [
            conn.execute(
                sql.SQL("SELECT row_to_json(t)::text FROM {} AS t").format(sql.Identifier(name))
            ).fetchall()
            for (name,) in tables
        ]
    return "\n".join(str(row) for rows in dumped for row in rows).encode()


def sealed_rows(bot_ledger: BotLedger) -> int:
    """Requests whose source is sealed in the ledger now."""
    query = "SELECT count(*) FROM requests WHERE sealed_source IS NOT NULL"
    if bot_ledger.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(bot_ledger.db_path)) as conn:
            return int(conn.execute(query).fetchone()[0])
    with psycopg.connect(bot_ledger.env["STEMBOT_DATABASE_URL"]) as pg:
        row = pg.execute(query).fetchone()
        assert row is not None
        return int(row[0])


@pytest.mark.slow
async def test_a_queued_calls_sealed_link_is_nowhere_in_the_ledger_or_its_export(
    bot_ledger: BotLedger,
) -> None:
    """A signed link's call waits in the queue (the cap held by another call), its source
    sealed in its row so that another start could make it: the whole database and the export
    hold neither the link nor its signature; once the cap is free the call is made with the
    link whole, and nothing of it stays either."""
    env = {**bot_ledger.env, "STEMBOT_MAX_CONCURRENT_JOBS": "1", "STEMBOT_API_TIMEOUT_S": "60"}
    async with audio_server() as base, running_stack(bot_ledger.db_path, env) as stack:
        stack.api.hold()
        first = await stack.stems()
        await eventually(lambda: stack.api_calls() == 1)
        signed = f"{base}/song.wav?{SIGNATURE}"
        bob = stack.discord.add_member(stack.guild, "bob")
        queued = await stack.stems(member=bob, options={"url": signed})
        await eventually(lambda: sealed_rows(bot_ledger) == 1)
        held = database_text(bot_ledger)
        export = await admin(stack, "export", moderator(stack))
        (attachment,) = export["attachments"]
        exported = (await download(attachment["url"])).decode()
        stack.api.release()
        assert is_result(await stack.answer(first)) and is_result(await stack.answer(queued))
        assert stack.api.requests[1].json() == {"audioUrl": signed}
    for text in (held, exported.encode(), database_text(bot_ledger)):
        assert b"SECRET" not in text and signed.encode() not in text
    assert sealed_rows(bot_ledger) == 0


# --- 5. ids in the export -------------------------------------------------------------------------


async def test_exported_ids_are_text_to_a_spreadsheet(stack: Stack) -> None:
    """Every id column of the attached CSV is ="digits", which spreadsheets keep as text."""
    await stack.answer(await stack.stems())
    export = await admin(stack, "export", moderator(stack))
    (attachment,) = export["attachments"]
    (row,) = csv.DictReader(io.StringIO((await download(attachment["url"])).decode()))
    ids = {column: row[column] for column in CSV_ID_COLUMNS}
    assert ids == {
        "guild_id": f'="{stack.guild.id}"',
        "channel_id": f'="{stack.channel.id}"',
        "user_id": f'="{stack.member.id}"',
        "interaction_id": row["interaction_id"],
    }
    assert row["interaction_id"].startswith('="') and row["interaction_id"][2:-1].isdigit()


# --- 3. a big export stalls nobody -----------------------------------------------------------

BIG_LEDGER_ROWS = 400_000


def fill_ledger(stack: Stack, rows: int) -> None:
    """``rows`` free requests of this month (the quota stays open) in one transaction."""
    now = datetime.now(UTC)
    month = month_window(now)[0]
    step = (now - month) / rows
    guild_id = stack.guild.id
    path = stack.settings.db_path
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO requests (interaction_id, guild_id, channel_id, user_id, mode, "
            "source_name, source_key, cost, status, created_at, finished_at) "
            "VALUES (?, ?, 1234567890123456789, ?, 'vocals', 'song.mp3', ?, 0, 'succeeded', ?, ?)",
            (
                (
                    10**18 + i,
                    guild_id,
                    10**18 + i % 5000,
                    f"attachment:{10**18 + i}",
                    stamp := (month + step * i).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    stamp,
                )
                for i in range(rows)
            ),
        )
    conn.close()


async def test_an_export_above_the_upload_limit_arrives_zipped(stack: Stack) -> None:
    """A CSV larger than the channel's upload limit is attached as a .zip holding all of it,
    and the moderator is told why."""
    fill_ledger(stack, 3000)
    stack.discord.upload_limit = 200_000  # the CSV is about 600 kB
    message = await admin(stack, "export", moderator(stack))
    (attachment,) = message["attachments"]
    assert attachment["filename"].endswith(".zip")
    data = await download(attachment["url"])
    assert len(data) <= 200_000
    rows = list(csv.DictReader(io.StringIO(unzipped(attachment["filename"], data).decode())))
    assert len(rows) == 3000
    assert "so it is zipped" in message["content"]


@pytest.mark.slow
async def test_a_big_export_is_streamed_while_members_are_answered(tmp_path: Path) -> None:
    """A 400,000-row export runs while a member's /stems is acknowledged within 3 s and
    answered; the file that arrives holds every row."""
    async with running_stack(tmp_path / "stembot.db") as stack:
        await asyncio.to_thread(fill_ledger, stack, BIG_LEDGER_ROWS)
        started = time.monotonic()
        export = await stack.discord.slash(
            "stems-admin export", member=moderator(stack), channel=stack.channel
        )
        await asyncio.sleep(0.3)  # the export is under way
        member = await stack.stems()
        answer = await stack.answer(member, timeout_s=30)
        member_done = time.monotonic() - started
        await eventually(lambda: settled(export), timeout_s=100)
        elapsed = time.monotonic() - started
        message = export.view().original
        assert message is not None
        (attachment,) = message["attachments"]
        data = await download(attachment["url"])
    assert acked_in_time(member) and is_result(answer)
    assert member_done < elapsed  # answered while the export was still being made
    print(f"export of {BIG_LEDGER_ROWS:,} rows: {elapsed:.1f} s, {len(data):,} bytes attached")
    text = io.TextIOWrapper(io.BytesIO(unzipped(attachment["filename"], data)), encoding="utf-8")
    assert sum(1 for _ in csv.reader(text)) - 1 >= BIG_LEDGER_ROWS


def settled(interaction: InteractionRecord) -> bool:
    original = interaction.view().original
    return original is not None and not original.get("flags", 0) & LOADING


def unzipped(filename: str, data: bytes) -> bytes:
    if not filename.endswith(".zip"):
        return data
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        (name,) = archive.namelist()
        return archive.read(name)


# --- 2. retention ---------------------------------------------------------------------------------


async def test_old_ledger_rows_are_pruned_at_start_up(tmp_path: Path) -> None:
    """Started with STEMBOT_RETENTION_DAYS=30, the bot removes last year's rows and keeps this
    month's; a moderator's export of the old period comes back empty."""
    db_path = tmp_path / "stembot.db"
    Store.open(db_path, QuotaPolicy()).close()
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=200), month_window(now)[0]
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.executemany(
            "INSERT INTO requests (interaction_id, guild_id, channel_id, user_id, mode, "
            "source_name, source_key, cost, status, created_at, finished_at, delivered_at) "
            "VALUES (?, 1, 5, 7, 'vocals', 'song.mp3', 'attachment:1', 1, 'succeeded', ?, ?, ?)",
            [(i, *[stamp(old)] * 3) for i in range(1000)] + [(1000, *[stamp(recent)] * 3)],
        )
    env = {"STEMBOT_RETENTION_DAYS": "30"}
    async with running_stack(db_path, env) as stack:
        await eventually(lambda: ledger_rows(stack) == 1)
        day = f"{old:%Y-%m-%d}"
        export = await admin(stack, "export", moderator(stack), {"since": day, "until": day})
        assert "0 requests" in text_of(export)
        assert is_result(await stack.answer(await stack.stems()))
    assert ledger_rows_in(db_path) == 2


def ledger_rows_in(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])
