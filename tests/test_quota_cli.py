"""`stembot quota show|set` and `stembot usage`, run end to end as a subprocess."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stembot.cli import main
from stembot.config import QuotaPolicy
from stembot.models import Mode, NewRequest, RequestStatus, Separation, Stem
from stembot.remix_event_models import EventSpec
from stembot.store import Store

GUILD = "123456789012345678"
REPO = Path(__file__).resolve().parents[1]


def stembot(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m stembot`` with only the database path set, from an empty directory."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "STEMBOT_DB_PATH": str(tmp_path / "ledger.db"),
    }
    return subprocess.run(
        [sys.executable, "-m", "stembot", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def fill_ledger(db_path: Path, now: datetime) -> None:
    """Two requests from user 7 (one settled, one failed) and one queued from user 8."""
    store = Store.open(db_path, QuotaPolicy())
    try:
        store.guilds.set_limits(int(GUILD), active_requests=5)
        requests = []
        for interaction, user, mode in ((1, 7, Mode.ALL), (2, 7, Mode.VOCALS), (3, 8, Mode.ALL)):
            asked = NewRequest(
                guild_id=int(GUILD),
                channel_id=9,
                user_id=user,
                interaction_id=interaction,
                mode=mode,
                source_url="https://cdn.example/a.mp3",
                source_name='a, "quoted" name.mp3',
                source_key=f"attachment:{interaction}",
            )
            requests.append(store.ledger.reserve(asked, now))
        separation = Separation(Mode.ALL, (Stem("vocals", "https://stems.example/v"),), now)
        store.ledger.settle(requests[0].id, separation, "attachment:1", now)
        store.ledger.refund_all([requests[1].id], RequestStatus.FAILED, "the API failed", now)
    finally:
        store.close()


def new_ledger(db_path: Path) -> None:
    """An empty database, as `stembot run` leaves it (the operator commands never create one)."""
    Store.open(db_path, QuotaPolicy()).close()


def fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_set_then_show_reports_limits_and_usage(tmp_path: Path) -> None:
    """Limits set from the CLI show up, marked as set, next to today's and the month's usage."""
    fill_ledger(tmp_path / "ledger.db", datetime.now(UTC))
    done = stembot(tmp_path, "quota", "set", GUILD, "--daily", "20", "--per-user", "4")
    assert done.returncode == 0, done.stderr
    assert "daily limit      20 units (set for this server)" in done.stdout

    shown = stembot(tmp_path, "quota", "show", GUILD)
    assert shown.returncode == 0, shown.stderr
    assert "per member       4 units a day (set for this server)" in shown.stdout
    assert "monthly limit    500 units (default)" in shown.stdout
    assert "today            4 used, 16 left of 20" in shown.stdout


@pytest.mark.slow
def test_usage_prints_a_readable_report(tmp_path: Path) -> None:
    """The report totals the month so far and names the top users."""
    fill_ledger(tmp_path / "ledger.db", datetime.now(UTC))
    done = stembot(tmp_path, "usage", GUILD)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"Usage of server {GUILD} from ")
    assert lines[1].split() == ["total", "3", "requests", "4", "units", "1", "refunded"]
    assert "Top users:" in lines
    assert any(line.split()[:2] == ["user", "7"] for line in lines)


@pytest.mark.slow
def test_usage_csv_parses_back_with_a_csv_reader(tmp_path: Path) -> None:
    """--csv writes one row per request, ISO-8601 UTC times, that a CSV reader reads back."""
    now = datetime.now(UTC)
    fill_ledger(tmp_path / "ledger.db", now)
    since = (now - timedelta(days=1)).date().isoformat()
    done = stembot(tmp_path, "usage", GUILD, "--since", since, "--csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [(r["user_id"], r["mode"], r["status"], r["charged"]) for r in rows] == [
        ('="7"', "all", "succeeded", "2"),
        ('="7"', "vocals", "failed", "0"),
        ('="8"', "all", "queued", "2"),
    ]
    assert rows[0]["source"] == 'a, "quoted" name.mp3'
    created = datetime.fromisoformat(rows[0]["created_at"])
    assert created.utcoffset() == timedelta(0)
    assert abs(created - now) < timedelta(seconds=2)


@pytest.mark.slow
def test_usage_since_excludes_earlier_days(tmp_path: Path) -> None:
    """Requests before --since are left out of the export."""
    fill_ledger(tmp_path / "ledger.db", datetime.now(UTC) - timedelta(days=3))
    since = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    done = stembot(tmp_path, "usage", GUILD, "--since", since, "--csv")
    assert done.returncode == 0, done.stderr
    assert list(csv.DictReader(io.StringIO(done.stdout))) == []


BAD_ARGUMENTS = [
    pytest.param(("quota", "show", "abc"), "GUILD must be a Discord server id", id="letters"),
    pytest.param(("quota", "show", "0"), "GUILD must be a Discord server id", id="zero"),
    pytest.param(("quota", "show", "-5"), "GUILD must be a Discord server id", id="negative-id"),
    pytest.param(
        ("quota", "show", "99999999999999999999"), "GUILD must be a Discord server id", id="huge"
    ),
    pytest.param(("quota", "set", GUILD, "--daily", "-1"), "--daily must be", id="negative"),
    pytest.param(("quota", "set", GUILD, "--monthly=-3"), "--monthly must be", id="neg-equals"),
    pytest.param(("quota", "set", GUILD, "--per-user", "ten"), "--per-user must be", id="word"),
    pytest.param(("quota", "set", GUILD, "--daily", "2.5"), "--daily must be", id="fraction"),
    pytest.param(("quota", "set", GUILD, "--active", "1e3"), "--active must be", id="exponent"),
    pytest.param(
        ("quota", "set", GUILD, "--daily", "5", "--monthly", "x"), "--monthly must be", id="mixed"
    ),
    pytest.param(("quota", "set", GUILD), "nothing to set", id="no-limits"),
    pytest.param(("usage", GUILD, "--since", "2026-13-01"), "--since must be", id="bad-date"),
    pytest.param(("usage", GUILD, "--since", "yesterday"), "--since must be", id="word-date"),
    pytest.param(("usage", GUILD, "--since", "2999-01-01"), "in the future", id="future"),
]


@pytest.mark.parametrize(("args", "says"), BAD_ARGUMENTS)
def test_bad_arguments_fail_cleanly_without_touching_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], says: str
) -> None:
    """One clear line on stderr, exit status 2, the database file unchanged (in process)."""
    db_path = tmp_path / "ledger.db"
    fill_ledger(db_path, datetime.now(UTC))
    before = fingerprint(db_path)
    status = main(list(args), env={"STEMBOT_DB_PATH": str(db_path)})
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert says in err
    assert fingerprint(db_path) == before


@pytest.mark.slow
def test_bad_arguments_exit_2_and_create_no_database(tmp_path: Path) -> None:
    """As a real process: exit status 2, one line, and no empty database file left behind."""
    done = stembot(tmp_path, "quota", "set", GUILD, "--daily", "-1")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "stembot: --daily must be a whole number from 0 to 1000000000, not '-1'"
    ]
    assert not (tmp_path / "ledger.db").exists()


def test_an_unusable_database_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database path that cannot be opened (a folder) is reported in one line, not a traceback."""
    (tmp_path / "ledger.db").mkdir()
    env = {"STEMBOT_DB_PATH": str(tmp_path / "ledger.db")}
    assert main(["quota", "show", GUILD], env=env) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "cannot use the database at" in err


def _other_server_request(db_path: Path, now: datetime, policy: QuotaPolicy) -> None:
    store = Store.open(db_path, policy)
    try:
        asked = NewRequest(
            guild_id=42,
            channel_id=9,
            user_id=7,
            interaction_id=99,
            mode=Mode.VOCALS,
            source_url="https://cdn.example/b.mp3",
            source_name="b.mp3",
            source_key="attachment:99",
        )
        request = store.ledger.reserve(asked, now)
        separation = Separation(Mode.VOCALS, (Stem("vocals", "https://stems.example/v"),), now)
        store.ledger.settle(request.id, separation, "attachment:99", now)
    finally:
        store.close()


def test_usage_all_shows_calls_and_units_per_day_and_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stembot usage --all`: the bot-wide view, against the API daily budget; --csv too."""
    now = datetime.now(UTC)
    db_path = tmp_path / "ledger.db"
    fill_ledger(db_path, now)
    _other_server_request(db_path, now, QuotaPolicy())
    env = {"STEMBOT_DB_PATH": str(db_path), "STEMBOT_API_DAILY_BUDGET": "10"}
    assert main(["usage", "--all"], env=env) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Bot-wide usage from ")
    assert lines[1].split() == [
        "API",
        "calls",
        "today",
        "4",
        "of",
        "10",
        "(STEMBOT_API_DAILY_BUDGET)",
    ]
    today = now.date().isoformat()
    assert [today, "4", "5", "2"] in [line.split() for line in lines]
    assert [today, GUILD, "3", "4"] in [line.split() for line in lines]
    assert [today, "42", "1", "1"] in [line.split() for line in lines]
    assert main(["usage", "--all", "--csv"], env=env) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["day"], r["guild_id"], r["api_calls"], r["units"]) for r in rows] == [
        (today, '="42"', "1", "1"),
        (today, f'="{GUILD}"', "3", "4"),
    ]
    assert main(["usage", GUILD, "--all"], env=env) == 2
    assert "either GUILD or --all" in capsys.readouterr().err
    assert main(["usage"], env=env) == 2
    assert "or --all for every server" in capsys.readouterr().err


def test_usage_lists_remix_events_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A remix event's call: in the total, listed under the events, not under a user."""
    now = datetime.now(UTC)
    db_path = tmp_path / "ledger.db"
    fill_ledger(db_path, now)
    store = Store.open(db_path, QuotaPolicy())
    try:
        spec = EventSpec("Jam", "a.mp3", "attachment:50", None)
        event = store.events.start(int(GUILD), 9, 500, spec, now, max_open=3)
        store.ledger.reserve_for_event(event.id, Mode.ALL, "a.mp3", "attachment:50", now)
    finally:
        store.close()
    assert main(["usage", GUILD], env={"STEMBOT_DB_PATH": str(db_path)}) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["total", "4", "requests", "6", "units", "1", "refunded"]
    events = lines.index("Remix events (charged to the server, not to members):")
    assert lines[events + 1].split() == [
        "event",
        str(event.id),
        "1",
        "requests",
        "2",
        "units",
        "0",
        "refunded",
    ]
    assert not any(line.split()[:2] == ["user", "500"] for line in lines)


def test_quota_reset_gives_back_the_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`quota reset GUILD --daily` drops one override; without flags, all of them."""
    env = {"STEMBOT_DB_PATH": str(tmp_path / "ledger.db")}
    new_ledger(tmp_path / "ledger.db")
    assert main(["quota", "set", GUILD, "--daily", "3", "--monthly", "30"], env=env) == 0
    assert main(["quota", "reset", GUILD, "--daily"], env=env) == 0
    out = capsys.readouterr().out
    assert "daily limit      50 units (default)" in out
    assert "monthly limit    30 units (set for this server)" in out
    assert main(["quota", "reset", GUILD], env=env) == 0
    assert "monthly limit    500 units (default)" in capsys.readouterr().out


def test_the_ceilings_bind_the_operators_changes_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One rule for every server: `quota set` above a ceiling is refused, nothing written."""
    db_path = tmp_path / "ledger.db"
    env = {"STEMBOT_DB_PATH": str(db_path), "STEMBOT_MAX_GUILD_DAILY_LIMIT": "100"}
    assert main(["quota", "set", GUILD, "--daily", "5000"], env=env) == 2
    assert capsys.readouterr().err == (
        "stembot: --daily 5000 is above STEMBOT_MAX_GUILD_DAILY_LIMIT (100); "
        "raise that setting first\n"
    )
    assert not db_path.exists()
    new_ledger(db_path)
    assert main(["quota", "set", GUILD, "--daily", "100"], env=env) == 0


def test_quota_set_waits_only_the_busy_timeout_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database held by another process: `quota set` gives up after STEMBOT_DB_BUSY_TIMEOUT_S
    (not the store's own longer default), says "busy", and changes nothing."""
    db_path = tmp_path / "ledger.db"
    new_ledger(db_path)
    env = {"STEMBOT_DB_PATH": str(db_path), "STEMBOT_DB_BUSY_TIMEOUT_S": "0.05"}
    holder = sqlite3.connect(db_path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        status = main(["quota", "set", GUILD, "--daily", "3"], env=env)
        waited = time.monotonic() - started
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert status == 1
    assert "busy" in capsys.readouterr().err
    # The store's own default is 5 s; 2.5 s leaves room for a slow machine.
    assert waited < 2.5
    assert main(["quota", "show", GUILD], env=env) == 0
    assert "daily limit      50 units (default)" in capsys.readouterr().out


def test_quota_show_lists_role_allowances(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Roles with their own daily allowance are listed with the server's limits."""
    db_path = tmp_path / "ledger.db"
    store = Store.open(db_path, QuotaPolicy())
    store.guilds.set_role_allowance(int(GUILD), 4242, 7)
    store.close()
    assert main(["quota", "show", GUILD], env={"STEMBOT_DB_PATH": str(db_path)}) == 0
    assert "  role 4242                7 units a day per member" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        ("quota", "show", GUILD),
        ("quota", "set", GUILD, "--daily", "5"),
        ("usage", GUILD),
        ("usage", GUILD, "--csv"),
    ],
)
def test_operator_commands_never_create_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    """A wrong STEMBOT_DB_PATH is named, not answered from a new empty ledger (which would
    report zero usage and leave a stray file)."""
    path = tmp_path / "typo" / "stembot.db"
    path.parent.mkdir()
    assert main(list(args), env={"STEMBOT_DB_PATH": str(path)}) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"stembot: no database at {path}; check STEMBOT_DB_PATH"]
    assert list(path.parent.iterdir()) == []


@pytest.mark.slow
def test_usage_says_which_database_it_read_on_stderr(tmp_path: Path) -> None:
    """The database read is named on stderr (resolved from a relative path); the CSV on stdout
    is only CSV."""
    fill_ledger(tmp_path / "ledger.db", datetime.now(UTC))
    done = stembot(tmp_path, "usage", GUILD, "--csv", "--since", "2000-01-01")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"stembot: reading the database at {tmp_path / 'ledger.db'}"
    ]
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert len(rows) == 4  # the header and three requests

    relative = dict(os.environ, STEMBOT_DB_PATH="ledger.db", PYTHONPATH=str(REPO))
    shown = subprocess.run(
        [sys.executable, "-m", "stembot", "quota", "show", GUILD],
        cwd=tmp_path,
        env=relative,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"reading the database at {tmp_path / 'ledger.db'}" in shown.stderr
