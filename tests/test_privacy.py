"""Bounded growth and privacy in the ledger: free repeats share a row, links are kept only as
hashes, and exported ids survive spreadsheets. Real SQLite files throughout."""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from stembot import store as store_module
from stembot.config import QuotaPolicy
from stembot.errors import DuplicateRequestError
from stembot.models import JobRequest, Mode, Separation, Stem
from stembot.sources import source_key_for_url
from stembot.store import CSV_ID_COLUMNS, Store

NOW = datetime(2026, 5, 14, 12, 0, tzinfo=UTC)
GUILD = 111
ALICE = 1001
BOB = 1002
# Real Discord ids are 19 digits: more than the 15 significant digits a spreadsheet keeps.
SNOWFLAKE = 1234567890123456789
_ids = itertools.count(10_000_000)


def request(
    user: int = ALICE,
    *,
    key: str = "attachment:42",
    channel: int = 555,
    interaction: int | None = None,
    name: str = "song.mp3",
    guild: int = GUILD,
) -> JobRequest:
    return JobRequest(
        guild_id=guild,
        channel_id=channel,
        user_id=user,
        interaction_id=next(_ids) if interaction is None else interaction,
        mode=Mode.VOCALS,
        source_url="https://cdn.example/song.mp3?sig=abc",
        source_name=name,
        source_key=key,
    )


STORED = Separation(Mode.VOCALS, (Stem("vocals", "https://stems.example/v.mp3"),), NOW)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "ledger.db", QuotaPolicy(user_daily_limit=100))
    yield opened
    opened.close()


def ledger_rows(store: Store) -> int:
    return int(store._db.execute("SELECT count(*) FROM requests").fetchone()[0])


def export_rows(store: Store, guild: int = GUILD) -> list[dict[str, str]]:
    out = io.StringIO()
    store.export_csv(guild, NOW - timedelta(days=30), NOW + timedelta(days=1), out)
    return list(csv.DictReader(io.StringIO(out.getvalue())))


# --- 1. free repeats share a row ----------------------------------------------------------------


def test_500_free_repeats_make_one_row_and_count_500_requests(store: Store) -> None:
    """A member repeating a stored result 500 times adds one row; usage still counts 500."""
    paid = store.reserve(request(), NOW)
    store.settle(paid.id, STORED, paid.source_key, NOW)
    jobs = [store.record_free(request(), STORED, NOW + timedelta(seconds=i)) for i in range(500)]
    assert ledger_rows(store) == 2
    assert {job.id for job in jobs} == {jobs[0].id}
    report = store.usage_report(GUILD, NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    assert (report.total.requests, report.total.units) == (501, 1)
    (row,) = [r for r in export_rows(store) if r["cost"] == "0"]
    assert row["requests"] == "500"
    assert row["finished_at"] == "2026-05-14T12:08:19Z"  # the latest repeat


def test_a_repeated_interaction_is_still_refused_as_a_duplicate(store: Store) -> None:
    """An interaction folded into an earlier row is recognised when Discord delivers it again."""
    store.record_free(request(interaction=1), STORED, NOW)
    store.record_free(request(interaction=2), STORED, NOW)
    for interaction in (1, 2):
        with pytest.raises(DuplicateRequestError):
            store.record_free(request(interaction=interaction), STORED, NOW)
        with pytest.raises(DuplicateRequestError):
            store.reserve(request(interaction=interaction), NOW)
    assert export_rows(store)[0]["requests"] == "2"


def test_repeats_share_a_row_per_member_channel_and_day_only(store: Store) -> None:
    """Another member, channel, source or UTC day starts a row of its own."""
    store.record_free(request(), STORED, NOW)
    store.record_free(request(BOB), STORED, NOW)
    store.record_free(request(channel=556), STORED, NOW)
    store.record_free(request(key="attachment:43"), STORED, NOW)
    store.record_free(request(), STORED, NOW + timedelta(days=1))
    store.record_free(request(), STORED, NOW + timedelta(minutes=5))
    assert ledger_rows(store) == 5


# --- 4. links are kept only as hashes -----------------------------------------------------------

OLD_KEY = "https://files.example/a.mp3?X-Amz-Signature=SECRET"
OLD_NAME = "https://files.example/a.mp3?X-Amz-Signature=SECRET#t=1"


def old_database(path: Path) -> None:
    """A database as the code before 0005_privacy left it: links stored whole."""
    db = Database(path)
    earlier = Migrations("stembot")
    earlier(name="0001_ledger")(store_module._create_ledger)
    earlier(name="0002_command_digests")(store_module._create_command_digests)
    earlier.apply(db)
    db.execute(
        "INSERT INTO requests (interaction_id, guild_id, channel_id, user_id, mode, source_name, "
        "source_key, cost, status, created_at) VALUES (1, ?, 5, ?, 'vocals', ?, ?, 1, "
        "'succeeded', ?)",
        (GUILD, ALICE, OLD_NAME, OLD_KEY, NOW.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
    )
    db.execute(
        "INSERT INTO results (source_key, mode, stems, issued_at, job_id) "
        'VALUES (?, \'vocals\', \'[{"name": "vocals", "url": "https://s/v"}]\', ?, 1)',
        (OLD_KEY, NOW.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
    )
    db.conn.commit()
    db.close()


def test_migration_scrubs_links_stored_whole_and_keeps_results_reusable(tmp_path: Path) -> None:
    """0005_privacy: keys become the hash the new code computes, names lose the query."""
    path = tmp_path / "old.db"
    old_database(path)
    store = Store.open(path, QuotaPolicy())
    try:
        job = store.get_job(1)
        assert job is not None
        assert job.source_key == source_key_for_url(OLD_KEY)
        assert job.source_name == "https://files.example/a.mp3"
        reused = store.find_result(source_key_for_url(OLD_KEY), Mode.VOCALS, NOW - timedelta(1))
        assert reused is not None
    finally:
        store.close()
    assert b"SECRET" not in b"".join(p.read_bytes() for p in tmp_path.iterdir())


# --- 5. exported ids survive spreadsheets -------------------------------------------------------

# What a spreadsheet reads as a number when it opens a CSV (Excel, LibreOffice, Sheets).
_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")
# The one formula a spreadsheet evaluates to text: ="digits".
_TEXT_FORMULA = re.compile(r'="(\d+)"')


def test_discord_ids_in_the_export_are_not_read_as_numbers(store: Store) -> None:
    """Each 19-digit id is a text formula holding every digit; none parses as a number."""
    hostile = request(
        SNOWFLAKE,
        name="=HYPERLINK(evil)",
        guild=SNOWFLAKE,
        channel=SNOWFLAKE - 1,
        interaction=SNOWFLAKE - 2,
    )
    store.record_free(hostile, STORED, NOW)
    (row,) = export_rows(store, SNOWFLAKE)
    for column in CSV_ID_COLUMNS:
        assert not _NUMBER.fullmatch(row[column]), column
        match = _TEXT_FORMULA.fullmatch(row[column])
        assert match is not None, column
    assert [int(row[c].strip('="')) for c in CSV_ID_COLUMNS] == [
        SNOWFLAKE,
        SNOWFLAKE - 1,
        SNOWFLAKE,
        SNOWFLAKE - 2,
    ]
    assert row["source"] == "'=HYPERLINK(evil)"  # user text is still defused
