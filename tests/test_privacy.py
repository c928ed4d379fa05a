"""Bounded growth and privacy in the ledger: free repeats share a row, links are kept only as
hashes, and exported ids survive spreadsheets. Real SQLite files throughout."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import re
import time
import tracemalloc
import zipfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from stembot.config import QuotaPolicy, load_settings
from stembot.errors import ConfigError, DuplicateRequestError
from stembot.models import Mode, NewRequest, Separation, Stem
from stembot.moderation import LedgerExport, ModerationService
from stembot.retention import Retention
from stembot.source_urls import source_key_for_url
from stembot.store import Store, migrations
from stembot.store.asynchronous import AsyncStore
from tests.ledger_reads import CSV_ID_COLUMNS

NOW = datetime(2026, 5, 14, 12, 0, tzinfo=UTC)
GUILD = 111
ALICE = 1001
BOB = 1002
# Real Discord ids are 19 digits: more than the 15 significant digits a spreadsheet keeps.
SNOWFLAKE = 1234567890123456789
_ids = itertools.count(10_000_000)


def new_request(
    user: int = ALICE,
    *,
    key: str = "attachment:42",
    channel: int = 555,
    interaction: int | None = None,
    name: str = "song.mp3",
    guild: int = GUILD,
) -> NewRequest:
    return NewRequest(
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
    return int(store.connection.db.execute("SELECT count(*) FROM requests").fetchone()[0])


def export_rows(store: Store, guild: int = GUILD) -> list[dict[str, str]]:
    out = io.StringIO()
    store.reports.stream_ledger(guild, NOW - timedelta(days=30), NOW + timedelta(days=1), out)
    return list(csv.DictReader(io.StringIO(out.getvalue())))


# --- 1. free repeats share a row ----------------------------------------------------------------


def test_500_free_repeats_make_one_row_and_count_500_requests(store: Store) -> None:
    """A member repeating a stored result 500 times adds one row; usage still counts 500."""
    paid = store.ledger.reserve(new_request(), NOW)
    store.ledger.settle(paid.id, STORED, paid.source_key, NOW)
    requests = [
        store.ledger.record_free(new_request(), STORED, NOW + timedelta(seconds=i))
        for i in range(500)
    ]
    assert ledger_rows(store) == 2
    assert {request.id for request in requests} == {requests[0].id}
    report = store.reports.usage_report(GUILD, NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    assert (report.total.requests, report.total.units) == (501, 1)
    (row,) = [r for r in export_rows(store) if r["cost"] == "0"]
    assert row["requests"] == "500"
    assert row["finished_at"] == "2026-05-14T12:08:19Z"  # the latest repeat


def test_a_repeated_interaction_is_still_refused_as_a_duplicate(store: Store) -> None:
    """An interaction folded into an earlier row is recognised when Discord delivers it again."""
    store.ledger.record_free(new_request(interaction=1), STORED, NOW)
    store.ledger.record_free(new_request(interaction=2), STORED, NOW)
    for interaction in (1, 2):
        with pytest.raises(DuplicateRequestError):
            store.ledger.record_free(new_request(interaction=interaction), STORED, NOW)
        with pytest.raises(DuplicateRequestError):
            store.ledger.reserve(new_request(interaction=interaction), NOW)
    assert export_rows(store)[0]["requests"] == "2"


def test_repeats_share_a_row_per_member_channel_and_day_only(store: Store) -> None:
    """Another member, channel, source or UTC day starts a row of its own."""
    store.ledger.record_free(new_request(), STORED, NOW)
    store.ledger.record_free(new_request(BOB), STORED, NOW)
    store.ledger.record_free(new_request(channel=556), STORED, NOW)
    store.ledger.record_free(new_request(key="attachment:43"), STORED, NOW)
    store.ledger.record_free(new_request(), STORED, NOW + timedelta(days=1))
    store.ledger.record_free(new_request(), STORED, NOW + timedelta(minutes=5))
    assert ledger_rows(store) == 5


# --- 4. links are kept only as hashes -----------------------------------------------------------

OLD_KEY = "https://files.example/a.mp3?X-Amz-Signature=SECRET"
OLD_NAME = "https://files.example/a.mp3?X-Amz-Signature=SECRET#t=1"


def old_database(path: Path) -> None:
    """A database as the code before 0005_privacy left it: links stored whole."""
    db = Database(path)
    earlier = Migrations("stembot")
    earlier(name="0001_ledger")(migrations._create_ledger)
    earlier(name="0002_command_digests")(migrations._create_command_digests)
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
        request = store.ledger.get_request(1)
        assert request is not None
        assert request.source_key == source_key_for_url(OLD_KEY)
        assert request.source_name == "https://files.example/a.mp3"
        reused = store.ledger.find_result(
            source_key_for_url(OLD_KEY), Mode.VOCALS, NOW - timedelta(1)
        )
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
    hostile = new_request(
        SNOWFLAKE,
        name="=HYPERLINK(evil)",
        guild=SNOWFLAKE,
        channel=SNOWFLAKE - 1,
        interaction=SNOWFLAKE - 2,
    )
    store.ledger.record_free(hostile, STORED, NOW)
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
    with store.connection.db.conn:
        store.connection.db.conn.executemany(
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
    """The export as moderators get it, through the asynchronous store on ``store``'s file."""
    folder.mkdir(exist_ok=True)
    return asyncio.run(_write_export(store, folder, max_bytes, since, until))


async def _write_export(
    store: Store, folder: Path, max_bytes: int, since: str | None, until: str | None
) -> LedgerExport:
    beside = await AsyncStore.open(store.connection.file, store.policy)
    try:
        moderation = ModerationService(beside, lambda: NOW)
        start, end = moderation.export_period(since, until)
        return await moderation.write_export(GUILD, start, end, max_bytes=max_bytes, folder=folder)
    finally:
        await beside.close()


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


# --- 2. retention -------------------------------------------------------------------------------


def at(day: str) -> str:
    return f"{day}T10:00:00.000000Z"


def add_row(
    store: Store, created: str, status: str = "succeeded", delivered: str | None = "yes", cost=1
) -> int:
    """A ledger row as the bot leaves it; ``delivered`` None: a result still owed."""
    cursor = store.connection.db.conn.execute(
        "INSERT INTO requests (interaction_id, guild_id, channel_id, user_id, mode, source_name, "
        "source_key, cost, status, created_at, finished_at, delivered_at) "
        "VALUES (?, ?, 5, ?, 'vocals', 'song.mp3', ?, ?, ?, ?, ?, ?)",
        (
            next(_ids),
            GUILD,
            ALICE,
            f"attachment:{next(_ids)}",
            cost,
            status,
            at(created),
            None if status in ("queued", "running") else at(created),
            None if delivered is None else at(created),
        ),
    )
    store.connection.db.conn.commit()
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def add_result(store: Store, request_id: int, issued: str) -> None:
    key = store.connection.db.execute(
        "SELECT source_key FROM requests WHERE id = ?", (request_id,)
    ).fetchone()
    store.connection.db.conn.execute(
        "INSERT INTO results (source_key, mode, stems, issued_at, request_id) "
        "VALUES (?, 'vocals', '[]', ?, ?)",
        (key[0], at(issued), request_id),
    )
    store.connection.db.conn.commit()


def ids_left(store: Store) -> set[int]:
    return {row[0] for row in store.connection.db.execute("SELECT id FROM requests")}


def results_left(store: Store) -> set[int]:
    return {row[0] for row in store.connection.db.execute("SELECT request_id FROM results")}


@asynccontextmanager
async def beside(store: Store) -> AsyncIterator[AsyncStore]:
    """The asynchronous store the bot uses, on ``store``'s file."""
    opened = await AsyncStore.open(store.connection.file, store.policy)
    try:
        yield opened
    finally:
        await opened.close()


def prune(store: Store, days: int, now: datetime = NOW) -> None:
    async def once() -> None:
        async with beside(store) as bot_store:
            await Retention(bot_store, days, lambda: now).prune_now()

    asyncio.run(once())


def test_retention_removes_old_rows_but_not_active_ones(store: Store) -> None:
    """Older than 30 days goes, whether delivered or not; a queued request stays."""
    old = add_row(store, "2026-01-10")
    old_active = add_row(store, "2026-01-10", status="queued")
    old_owed = add_row(store, "2026-01-10", delivered=None)
    recent = add_row(store, "2026-04-20")
    this_month = add_row(store, "2026-05-02")
    for request_id in (old, old_owed, recent):
        add_result(
            store,
            request_id,
            store.connection.db.execute(
                "SELECT substr(created_at, 1, 10) FROM requests WHERE id = ?", (request_id,)
            ).fetchone()[0],
        )
    store.guilds.claim_alert(GUILD, "month", datetime(2026, 1, 1, tzinfo=UTC), 80, NOW)
    prune(store, 30)
    assert ids_left(store) == {old_active, recent, this_month}
    assert results_left(store) == {recent}
    assert store.connection.db.execute("SELECT count(*) FROM quota_alerts").fetchone()[0] == 0


def test_retention_never_reaches_into_the_current_month(store: Store) -> None:
    """With 1 day kept, everything since the 1st stays: the monthly quota is summed from it."""
    add_row(store, "2026-04-30")
    kept = {add_row(store, f"2026-05-{day:02d}") for day in (1, 2, 13)}
    used = store.quotas.quota_status(GUILD, None, NOW).guild_monthly.used
    prune(store, 1)
    assert ids_left(store) == kept
    assert store.quotas.quota_status(GUILD, None, NOW).guild_monthly.used == used == 3


def test_retention_zero_keeps_everything(store: Store) -> None:
    """STEMBOT_RETENTION_DAYS=0: nothing is ever pruned."""
    old = add_row(store, "2020-01-10")

    async def run_briefly() -> None:
        async with beside(store) as bot_store, Retention(bot_store, 0, lambda: NOW).running():
            await asyncio.sleep(0.05)

    asyncio.run(run_briefly())
    assert ids_left(store) == {old}


def test_retention_runs_again_every_period(store: Store) -> None:
    """After the start-up pruning, rows that age past the limit go at the next round."""
    first = add_row(store, "2026-01-10")
    later = add_row(store, "2026-04-20")
    clock = {"now": NOW}

    async def two_rounds() -> None:
        async with (
            beside(store) as bot_store,
            Retention(bot_store, 30, lambda: clock["now"], every_s=0.05).running(),
        ):
            await asyncio.sleep(0.03)
            assert ids_left(store) == {later}
            clock["now"] = NOW + timedelta(days=30)
            await asyncio.sleep(0.1)

    asyncio.run(two_rounds())
    assert first not in ids_left(store) and ids_left(store) == set()


OLD_ROWS = 100_000


@pytest.mark.slow
def test_pruning_holds_neither_the_event_loop_nor_the_bots_writes(
    store: Store, tmp_path: Path
) -> None:
    """Pruning 100,000 old rows: the loop keeps ticking and the bot's writes go through."""
    old = datetime(2026, 1, 10, tzinfo=UTC)
    with store.connection.db.conn:
        store.connection.db.conn.executemany(
            "INSERT INTO requests (interaction_id, guild_id, channel_id, user_id, mode, "
            "source_name, source_key, cost, status, created_at, finished_at, delivered_at) "
            "VALUES (?, ?, 5, 7, 'vocals', 'song.mp3', 'attachment:1', 1, 'succeeded', ?, ?, ?)",
            ((i, GUILD, s, s, s) for i in range(OLD_ROWS) if (s := at(str(old.date())))),
        )

    async def prune_while_working() -> tuple[float, float, int]:
        async with beside(store) as bot_store:
            return await prune_and_write(bot_store)

    async def prune_and_write(bot_store: AsyncStore) -> tuple[float, float, int]:
        retention = Retention(bot_store, 30, lambda: NOW)
        pruning = asyncio.create_task(retention.prune_now())
        longest_gap = longest_write = 0.0
        writes = 0
        last = time.monotonic()
        while not pruning.done():
            await asyncio.sleep(0.005)
            started = time.monotonic()
            longest_gap = max(longest_gap, started - last)
            await bot_store.ledger.record_free(new_request(), STORED, NOW)  # the bot writing
            last = time.monotonic()
            longest_write = max(longest_write, last - started)
            writes += 1
        await pruning
        return longest_gap, longest_write, writes

    gap, write, writes = asyncio.run(prune_while_working())
    print(
        f"pruning {OLD_ROWS:,} rows: {writes} writes meanwhile, "
        f"longest loop gap {gap:.3f} s, longest write {write:.3f} s"
    )
    assert store.connection.db.execute("SELECT count(*) FROM requests").fetchone()[0] == 1
    assert writes > 10
    assert gap < 0.3 and write < 0.3


def test_retention_days_setting() -> None:
    """90 days unless set; 0 keeps everything; a negative or fractional value is refused."""
    assert load_settings({}).retention_days == 90
    assert load_settings({"STEMBOT_RETENTION_DAYS": "0"}).retention_days == 0
    for wrong in ("-1", "1.5", "soon"):
        with pytest.raises(ConfigError, match="STEMBOT_RETENTION_DAYS"):
            load_settings({"STEMBOT_RETENTION_DAYS": wrong})


def test_the_first_pruning_waits_for_the_start_up_recovery(store: Store) -> None:
    """Nothing goes before ``after`` returns (the bot ready, its recovery done)."""
    january = datetime(2026, 1, 10, tzinfo=UTC)
    old = store.ledger.reserve(new_request(), january)
    store.ledger.settle(
        old.id, Separation(Mode.VOCALS, STORED.stems, january), old.source_key, january
    )

    async def held_then_released() -> None:
        ready = asyncio.Event()
        async with (
            beside(store) as bot_store,
            Retention(bot_store, 30, lambda: NOW).running(after=ready.wait),
        ):
            await asyncio.sleep(0.05)
            assert ids_left(store) == {old.id}
            assert results_left(store) == {old.id}
            ready.set()
            await asyncio.sleep(0.1)
        assert ids_left(store) == set() and results_left(store) == set()

    asyncio.run(held_then_released())
