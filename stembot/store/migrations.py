"""The ledger's schema: every migration, in order, applied by ``Store.open``.

Apart from the store's queries, as sqlite-utils keeps ``migrations.py`` apart from its table
API. A migration is never edited once released: a change is a new one at the end.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from stembot.source_urls import hashed_url_key, without_query

MIGRATIONS = Migrations("stembot")


@MIGRATIONS(name="0001_ledger")
def _create_ledger(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE guild_settings (
            guild_id INTEGER PRIMARY KEY,
            daily_limit INTEGER CHECK (daily_limit >= 0),
            monthly_limit INTEGER CHECK (monthly_limit >= 0),
            user_daily_limit INTEGER CHECK (user_daily_limit >= 0),
            user_active_jobs INTEGER CHECK (user_active_jobs >= 0),
            log_channel_id INTEGER
        ) STRICT;

        CREATE TABLE requests (
            id INTEGER PRIMARY KEY,
            interaction_id INTEGER NOT NULL UNIQUE,
            guild_id INTEGER NOT NULL,
            channel_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            mode TEXT NOT NULL,
            source_name TEXT NOT NULL,
            source_key TEXT NOT NULL,
            cost INTEGER NOT NULL CHECK (cost >= 0),
            status TEXT NOT NULL CHECK (status IN
                ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            error TEXT
        ) STRICT;
        -- Usage is summed from these partial covering indexes alone. They hold only rows
        -- that are charged, so a check reads at most as many entries as the limit has units.
        -- (status is a column only so that SQLite treats them as covering.)
        CREATE INDEX requests_charged ON requests (guild_id, created_at, cost, status)
            WHERE cost > 0 AND status IN ('queued', 'running', 'succeeded');
        CREATE INDEX requests_user_charged
            ON requests (guild_id, user_id, created_at, cost, status)
            WHERE cost > 0 AND status IN ('queued', 'running', 'succeeded');
        CREATE INDEX requests_active ON requests (guild_id, user_id)
            WHERE status IN ('queued', 'running');
        -- Reports and exports.
        CREATE INDEX requests_guild_time ON requests (guild_id, created_at);

        CREATE TABLE results (
            source_key TEXT NOT NULL,
            mode TEXT NOT NULL,
            stems TEXT NOT NULL,
            issued_at TEXT NOT NULL,
            job_id INTEGER NOT NULL,
            PRIMARY KEY (source_key, mode)
        ) STRICT, WITHOUT ROWID;

        CREATE TABLE quota_alerts (
            guild_id INTEGER NOT NULL,
            period TEXT NOT NULL CHECK (period IN ('day', 'month')),
            period_start TEXT NOT NULL,
            threshold INTEGER NOT NULL,
            sent_at TEXT NOT NULL,
            PRIMARY KEY (guild_id, period, period_start, threshold)
        ) STRICT, WITHOUT ROWID;
        """
    )


@MIGRATIONS(name="0002_command_digests")
def _create_command_digests(db: Database) -> None:
    db.execute("CREATE TABLE command_digests (scope TEXT PRIMARY KEY, digest TEXT NOT NULL) STRICT")


@MIGRATIONS(name="0003_deliveries")
def _record_deliveries(db: Database) -> None:
    """Where and when each request's answer reached Discord, so that a start-up after a crash
    knows which succeeded requests still owe their requester the result.

    ``delivered_via``: interaction, channel, dm, nowhere (every route refused; the result stays
    stored for a free repeat), or unrecorded (answered before this was kept).
    """
    db.execute("ALTER TABLE requests ADD COLUMN delivered_at TEXT")
    db.execute("ALTER TABLE requests ADD COLUMN delivered_via TEXT")
    db.execute(
        "UPDATE requests SET delivered_at = finished_at, delivered_via = 'unrecorded' "
        "WHERE status = 'succeeded'"
    )
    db.execute(
        "CREATE INDEX requests_undelivered ON requests (id) "
        "WHERE status = 'succeeded' AND delivered_at IS NULL"
    )


@MIGRATIONS(name="0004_spend")
def _create_spend(db: Database) -> None:
    db.executescript(
        """
        -- 0 when the server alone carries a request's charge (a shared call handed over to a
        -- requester with no room left): the member's own daily sum leaves it out.
        ALTER TABLE requests ADD COLUMN member_pays INTEGER NOT NULL DEFAULT 1
            CHECK (member_pays IN (0, 1));

        CREATE TABLE role_allowances (
            guild_id INTEGER NOT NULL,
            role_id INTEGER NOT NULL,
            per_user INTEGER NOT NULL CHECK (per_user >= 0),
            PRIMARY KEY (guild_id, role_id)
        ) STRICT, WITHOUT ROWID;

        -- One row per paid API call, from its reservation: the bot-wide daily budget counts
        -- them. made_at is set when the call goes out (and day becomes that day); one that
        -- never did (cancelled or interrupted while still queued) is deleted by a trigger,
        -- whichever code ends the request.
        CREATE TABLE api_calls (
            job_id INTEGER PRIMARY KEY,
            guild_id INTEGER NOT NULL,
            day TEXT NOT NULL,
            reserved_at TEXT NOT NULL,
            made_at TEXT
        ) STRICT;
        CREATE INDEX api_calls_day ON api_calls (day, guild_id);
        CREATE TRIGGER api_calls_never_made AFTER UPDATE OF status ON requests
            WHEN OLD.status = 'queued' AND NEW.status IN ('cancelled', 'interrupted')
        BEGIN
            DELETE FROM api_calls WHERE job_id = NEW.id AND made_at IS NULL;
        END;

        -- The calls of each day, kept by triggers: a reservation reads one row, not a count.
        CREATE TABLE api_call_days (day TEXT PRIMARY KEY, calls INTEGER NOT NULL) STRICT;
        CREATE TRIGGER api_call_counted AFTER INSERT ON api_calls BEGIN
            INSERT INTO api_call_days (day, calls) VALUES (NEW.day, 1)
                ON CONFLICT (day) DO UPDATE SET calls = calls + 1;
        END;
        CREATE TRIGGER api_call_uncounted AFTER DELETE ON api_calls BEGIN
            UPDATE api_call_days SET calls = calls - 1 WHERE day = OLD.day;
        END;
        CREATE TRIGGER api_call_moved AFTER UPDATE OF day ON api_calls
            WHEN OLD.day <> NEW.day
        BEGIN
            UPDATE api_call_days SET calls = calls - 1 WHERE day = OLD.day;
            INSERT INTO api_call_days (day, calls) VALUES (NEW.day, 1)
                ON CONFLICT (day) DO UPDATE SET calls = calls + 1;
        END;

        -- The day the operator's log was told the budget is spent, once a day.
        CREATE TABLE budget_notices (day TEXT PRIMARY KEY, sent_at TEXT NOT NULL) STRICT;
        """
    )


@MIGRATIONS(name="0005_privacy")
def _privacy(db: Database) -> None:
    """Free repeats share a row (``request_count``); links are kept only as hashes.

    Keys written before were the normalised URL, query included (signed links are
    credentials): each becomes the hash the new code computes for that URL, so stored results
    stay reusable. Names that are links lose their query and fragment.
    """
    db.conn.create_function("stembot_url_key", 1, hashed_url_key, deterministic=True)
    db.conn.create_function("stembot_without_query", 1, without_query, deterministic=True)
    db.executescript(
        """
        ALTER TABLE requests ADD COLUMN request_count INTEGER NOT NULL DEFAULT 1
            CHECK (request_count >= 1);
        CREATE INDEX requests_free_repeats
            ON requests (guild_id, user_id, channel_id, source_key, mode, created_at)
            WHERE cost = 0 AND status = 'succeeded';
        UPDATE requests SET source_key = stembot_url_key(source_key)
            WHERE source_key GLOB 'http*://*';
        UPDATE results SET source_key = stembot_url_key(source_key)
            WHERE source_key GLOB 'http*://*';
        UPDATE requests SET source_name = stembot_without_query(source_name)
            WHERE source_name GLOB '*://*' AND (source_name GLOB '*[?#]*');
        """
    )


@MIGRATIONS(name="0006_moderator_refunds")
def _moderator_refunds(db: Database) -> None:
    """Whether a moderator refunded a request is a fact in its row, not read back from the
    note in its error column (which stays, for the export)."""
    db.execute(
        "ALTER TABLE requests ADD COLUMN refunded_by_moderator INTEGER NOT NULL DEFAULT 0 "
        "CHECK (refunded_by_moderator IN (0, 1))"
    )
    db.execute(
        "UPDATE requests SET refunded_by_moderator = 1 "
        "WHERE status = 'cancelled' AND error GLOB 'refunded by a moderator*'"
    )


@MIGRATIONS(name="0007_request_noun")
def _request_noun(db: Database) -> None:
    """One noun for one thing: the columns that said "job" say "request", as the code does.

    RENAME COLUMN rewrites the trigger and the primary key that name them; the rows stay.
    """
    db.executescript(
        """
        ALTER TABLE api_calls RENAME COLUMN job_id TO request_id;
        ALTER TABLE results RENAME COLUMN job_id TO request_id;
        ALTER TABLE guild_settings RENAME COLUMN user_active_jobs TO user_active_requests;
        """
    )


@MIGRATIONS(name="0008_remix_events")
def _remix_events(db: Database) -> None:
    """Remix events (see stembot.remix_event_models): the event, members' takes of its stems,
    their submissions, and ``requests.remix_event_id`` on the event's own calls.

    An event's call is a ``requests`` row charged to the server alone (``member_pays`` = 0,
    ``user_id`` the organiser, a negative ``interaction_id``: it comes from no interaction);
    what an event spent is summed from those rows, as every other usage is. A take is no
    ledger row: members' allowances never see it. Modes and poll answers are JSON arrays.
    """
    db.executescript(
        """
        CREATE TABLE remix_events (
            id INTEGER PRIMARY KEY,
            guild_id INTEGER NOT NULL,
            channel_id INTEGER NOT NULL,
            organiser_id INTEGER NOT NULL,
            title TEXT NOT NULL,
            source_name TEXT NOT NULL,
            source_key TEXT NOT NULL,
            source_channel_id INTEGER,
            source_message_id INTEGER,
            source_attachment_id INTEGER,
            modes TEXT NOT NULL,
            submissions INTEGER NOT NULL CHECK (submissions IN (0, 1)),
            budget INTEGER CHECK (budget >= 0),
            prefetch INTEGER NOT NULL CHECK (prefetch IN (0, 1)),
            created_at TEXT NOT NULL,
            ends_at TEXT,
            ended_at TEXT,
            ended_by INTEGER,
            card_channel_id INTEGER,
            card_message_id INTEGER,
            pinned INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
            scheduled_event_id INTEGER,
            poll_message_id INTEGER,
            poll_submission_ids TEXT NOT NULL DEFAULT '[]'
        ) STRICT;
        CREATE INDEX remix_events_open ON remix_events (guild_id, ends_at)
            WHERE ended_at IS NULL;
        CREATE INDEX remix_events_due ON remix_events (ends_at)
            WHERE ended_at IS NULL AND ends_at IS NOT NULL;

        CREATE TABLE remix_event_takes (
            event_id INTEGER NOT NULL,
            mode TEXT NOT NULL,
            user_id INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('waiting', 'answered', 'failed')),
            taken_at TEXT NOT NULL,
            answered_at TEXT,
            PRIMARY KEY (event_id, mode, user_id)
        ) STRICT, WITHOUT ROWID;
        -- What a start-up still owes (takes whose call a restart cut short).
        CREATE INDEX remix_event_takes_waiting ON remix_event_takes (event_id, mode)
            WHERE status = 'waiting';

        CREATE TABLE remix_event_submissions (
            id INTEGER PRIMARY KEY,
            event_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            title TEXT NOT NULL,
            filename TEXT NOT NULL,
            message_id INTEGER NOT NULL,
            submitted_at TEXT NOT NULL,
            replaced_at TEXT,
            removed_at TEXT,
            removed_by INTEGER
        ) STRICT;
        CREATE INDEX remix_event_submissions_event ON remix_event_submissions (event_id, id);
        -- One current submission per member and event.
        CREATE UNIQUE INDEX remix_event_submissions_current
            ON remix_event_submissions (event_id, user_id)
            WHERE replaced_at IS NULL AND removed_at IS NULL;

        ALTER TABLE requests ADD COLUMN remix_event_id INTEGER;
        -- An event's spend and its one call per mode, summed from its rows alone.
        CREATE INDEX requests_remix_event ON requests (remix_event_id, mode, cost, status)
            WHERE remix_event_id IS NOT NULL;
        """
    )


@MIGRATIONS(name="0009_one_call_in_flight")
def _one_call_in_flight(db: Database) -> None:
    """The database holds one paid call per (source, mode) in flight: ``pays_call`` marks the
    request that reserved (or was handed) the call, and a partial unique index allows one
    such request queued or running per source and mode. Where an older ledger has more than
    one (a refund that never landed), the earliest keeps the mark; the start-up recovery ends
    them all anyway.
    """
    db.executescript(
        """
        ALTER TABLE requests ADD COLUMN pays_call INTEGER NOT NULL DEFAULT 0
            CHECK (pays_call IN (0, 1));
        UPDATE requests SET pays_call = 1 WHERE id IN (SELECT request_id FROM api_calls);
        UPDATE requests SET pays_call = 0
            WHERE pays_call = 1 AND status IN ('queued', 'running') AND EXISTS (
                SELECT 1 FROM requests AS earlier
                WHERE earlier.pays_call = 1 AND earlier.status IN ('queued', 'running')
                  AND earlier.source_key = requests.source_key AND earlier.mode = requests.mode
                  AND earlier.id < requests.id);
        CREATE UNIQUE INDEX requests_one_call_in_flight ON requests (source_key, mode)
            WHERE pays_call = 1 AND status IN ('queued', 'running');
        """
    )


@MIGRATIONS(name="0010_event_calls_in_flight")
def _event_calls_in_flight(db: Database) -> None:
    """A remix event's paid call holds its source and mode's one call in flight as a member's
    does: ``pays_call`` on the event's rows that reserved a call. Only on those already
    finished: one still active may share its source and mode with a member's paid call, and
    the start-up recovery that follows the migration ends every active request anyway.
    """
    db.execute(
        "UPDATE requests SET pays_call = 1 WHERE remix_event_id IS NOT NULL "
        "AND status NOT IN ('queued', 'running') "
        "AND id IN (SELECT request_id FROM api_calls)"
    )


@MIGRATIONS(name="0011_sealed_sources")
def _sealed_sources(db: Database) -> None:
    """A queued paid call keeps its source link sealed (stembot/sealed_sources.py: encrypted
    with a key derived from the API key, never the link in the clear), so that the next start
    runs the call instead of refunding it. Only while it is queued: the trigger clears it as
    the request moves on (running: the API has it; or ended), whichever code moves it.
    """
    db.executescript(
        """
        ALTER TABLE requests ADD COLUMN sealed_source TEXT;
        CREATE TRIGGER requests_unsealed AFTER UPDATE OF status ON requests
            WHEN NEW.status <> 'queued' AND NEW.sealed_source IS NOT NULL
        BEGIN
            UPDATE requests SET sealed_source = NULL WHERE id = NEW.id;
        END;
        """
    )
