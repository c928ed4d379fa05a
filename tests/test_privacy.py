"""Bounded growth and privacy in the ledger: free repeats share a row, links are kept only as
hashes, and exported ids survive spreadsheets. Real SQLite files throughout."""

from __future__ import annotations

import csv
import io
import itertools
import re
import tracemalloc
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from stembot import store as store_module
from stembot.config import QuotaPolicy
from stembot.errors import DuplicateRequestError
from stembot.models import JobRequest, Mode, Separation, Stem
from stembot.moderation import LedgerExport, ModerationService
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


# --- 3. the export: streamed, zipped when too large, else split -----------------------------------


def fill(store: Store, rows: int, days: int = 1) -> None:
    """``rows`` free requests spread over ``days`` days ending today, in one transaction."""
    first = NOW.replace(hour=0) - timedelta(days=days - 1)
    step = timedelta(days=days) / rows
    with store._db.conn:
        store._db.conn.executemany(
            "INSERT INTO requests (interaction_id, guild_id, channel_id, user_id, mode, "
            "source_name, source_key, cost, status, created_at) VALUES "
            "(?, ?, ?, ?, 'vocals', 'song.mp3', ?, 0, 'succeeded', ?)",
            (
                (
                    SNOWFLAKE + i,
                    GUILD,
                    SNOWFLAKE,
                    SNOWFLAKE + i % 997,
                    f"attachment:{SNOWFLAKE + i}",
                    (first + step * i).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                )
                for i in range(rows)
            ),
        )


def write_export(
    store: Store, folder: Path, max_bytes: int, since: str | None = None, until: str | None = None
) -> LedgerExport:
    folder.mkdir(exist_ok=True)
    moderation = ModerationService(store, lambda: NOW)
    start, end = moderation.export_period(since, until)
    return moderation.write_export(GUILD, start, end, max_bytes=max_bytes, folder=folder)


def test_the_export_is_written_page_by_page_not_held_in_memory(
    store: Store, tmp_path: Path
) -> None:
    """Exporting 50,000 rows never holds more than a small part of the CSV in memory."""
    fill(store, 50_000)
    tracemalloc.start()
    try:
        export = write_export(store, tmp_path, max_bytes=10**9)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert export.rows == 50_000 and export.path is not None
    assert export.csv_size > 5_000_000
    assert peak < export.csv_size / 4, f"peak {peak:,} bytes for a {export.csv_size:,}-byte CSV"


def test_an_export_larger_than_the_upload_limit_is_zipped(store: Store, tmp_path: Path) -> None:
    """Above the limit the CSV goes in a .zip that fits; it unzips to the whole CSV."""
    fill(store, 5_000)
    whole = write_export(store, tmp_path / "plain", max_bytes=10**9)
    assert whole.path is not None and not whole.zipped
    limit = whole.csv_size // 2
    export = write_export(store, tmp_path / "zipped", max_bytes=limit)
    assert export.zipped and export.path is not None
    assert export.size <= limit and export.filename == whole.filename[:-4] + ".zip"
    with zipfile.ZipFile(export.path) as archive:
        assert archive.namelist() == [whole.filename]
        assert archive.read(whole.filename) == whole.path.read_bytes()
    assert [p.name for p in (tmp_path / "zipped").iterdir()] == [export.filename]


def test_an_export_too_large_even_zipped_names_periods_that_each_fit(
    store: Store, tmp_path: Path
) -> None:
    """The moderator is told consecutive periods covering the month that each export fits."""
    fill(store, 20_000, days=10)
    zipped = write_export(store, tmp_path / "all", max_bytes=10**5)
    limit = zipped.size // 3
    export = write_export(store, tmp_path / "too-big", max_bytes=limit)
    assert export.path is None and not list((tmp_path / "too-big").iterdir())
    parts = export.parts
    assert len(parts) >= 3
    assert parts[0][0] == date(2026, 5, 1) and parts[-1][1] == date(2026, 5, 14)
    assert all(b[0] == a[1] + timedelta(days=1) for a, b in itertools.pairwise(parts))
    for first, last in parts:
        part = write_export(store, tmp_path / f"{first}", limit, f"{first}", f"{last}")
        assert part.path is not None, (first, last, part.size, limit)
