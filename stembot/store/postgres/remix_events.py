"""Remix events in the PostgreSQL ledger (see stembot/store/remix_events.py): the events,
members' takes, submissions, and what an event spent (summed from its own ``requests`` rows).

The same rows and promises as on SQLite, for several processes at once: the cap of open
events is checked under the guild's lock, a submission under the event's row lock (one
current submission per member, none once the event ended), and the ending is one statement
that only one process can make. The event's paid calls are the ledger's
(``PostgresLedger.reserve_for_event``); this part only reads them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from stembot.errors import (
    RemixEventEndedError,
    RemixEventNotFoundError,
    SubmissionRefusedError,
    TooManyRemixEventsError,
)
from stembot.models import Mode, Separation
from stembot.remix_event_models import (
    EventCounts,
    EventSpec,
    EventSpend,
    EventSummary,
    Participation,
    RemixEvent,
    SourceRef,
    Submission,
    Take,
    TakeStatus,
)
from stembot.store import rows
from stembot.store.postgres.connection import Conn, Database, lock_guild
from stembot.store.remix_events import (
    CURRENT,
    EVENT_COLUMNS,
    SUBMISSION_COLUMNS,
    TOOK,
    event_of,
    participation_of,
    submission_of,
    take_of,
)
from stembot.windows import utc

_SELECT_EVENT = f"SELECT {EVENT_COLUMNS} FROM remix_events"  # noqa: S608 (constant)
_OPEN = "ended_at IS NULL AND (ends_at IS NULL OR ends_at > %(now)s)"
_INSERT_EVENT = f"""
INSERT INTO remix_events (guild_id, channel_id, organiser_id, title, source_name, source_key,
  source_channel_id, source_message_id, source_attachment_id, modes, submissions, budget,
  prefetch, created_at, ends_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
RETURNING {EVENT_COLUMNS}
"""  # noqa: S608 (constant)
_CARD_POSTED = f"""
UPDATE remix_events SET card_channel_id = %s, card_message_id = %s, pinned = %s,
  scheduled_event_id = %s,
  source_channel_id = coalesce(%s, source_channel_id),
  source_message_id = coalesce(%s, source_message_id),
  source_attachment_id = coalesce(%s, source_attachment_id)
WHERE id = %s RETURNING {EVENT_COLUMNS}
"""  # noqa: S608 (constant)

_SELECT_SUBMISSION = f"SELECT {SUBMISSION_COLUMNS} FROM remix_event_submissions"  # noqa: S608
_INSERT_SUBMISSION = (
    "INSERT INTO remix_event_submissions (event_id, user_id, title, filename, "  # noqa: S608
    f"message_id, submitted_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING {SUBMISSION_COLUMNS}"
)
_REMOVE_SUBMISSION = (
    "UPDATE remix_event_submissions SET removed_at = %s, removed_by = %s "  # noqa: S608
    f"WHERE id = %s RETURNING {SUBMISSION_COLUMNS}"
)
_TAKE_COLUMNS = "event_id, mode, user_id, status, taken_at, answered_at"
_TAKE_OVER_WAITING = (
    "WITH taken AS (UPDATE remix_event_takes SET lease_id = %(me)s "  # noqa: S608 (constant)
    "WHERE status = 'waiting' AND (lease_id IS NULL OR lease_id IN "
    "(SELECT id FROM stembot_processes WHERE ended_at IS NOT NULL)) "
    f"RETURNING {_TAKE_COLUMNS}) "
    "SELECT * FROM taken ORDER BY event_id, mode, taken_at, user_id"
)

# The event's paid calls not refunded, and their units: its spend against its own budget.
SPEND = (
    "SELECT count(*), coalesce(sum(cost), 0) FROM requests "
    "WHERE remix_event_id = %s AND cost > 0 AND status IN ('queued', 'running', 'succeeded')"
)
# A call of the event for this mode that is still running or succeeded (it pays no second).
PAID_FOR_MODE = (
    "SELECT 1 FROM requests WHERE remix_event_id = %s AND mode = %s AND cost > 0 "
    "AND status IN ('queued', 'running', 'succeeded') LIMIT 1"
)
# The stored result for the event's track and mode: one the event's own call left, however
# old (the event paid for it), or any other still within the reuse window.
_RESULT = """
SELECT r.stems, r.issued_at FROM remix_events AS e
JOIN results AS r ON r.source_key = e.source_key AND r.mode = %(mode)s
WHERE e.id = %(event)s AND (r.issued_at > %(fresh_after)s OR EXISTS (
    SELECT 1 FROM requests
    WHERE remix_event_id = e.id AND mode = %(mode)s AND status = 'succeeded'))
"""


class PostgresRemixEvents:
    """The events' rows; each write one transaction (or one statement), each read one
    snapshot."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lease: int | None = None

    def hold_with(self, lease_id: int | None) -> None:
        """Record every take as this process's (its lease), to answer; resume only the
        waiting takes of processes that are gone (see ``waiting_takes``)."""
        self._lease = lease_id

    # --- the event ----------------------------------------------------------------------

    async def start(
        self,
        guild_id: int,
        channel_id: int,
        organiser_id: int,
        spec: EventSpec,
        now: datetime,
        *,
        max_open: int,
    ) -> RemixEvent:
        """Record a new event unless the server already has ``max_open`` open ones
        (TooManyRemixEventsError), counted under the guild's lock."""
        ref = spec.source_ref
        values = (
            guild_id,
            channel_id,
            organiser_id,
            spec.title,
            spec.source_name,
            spec.source_key,
            None if ref is None else ref.channel_id,
            None if ref is None else ref.message_id,
            None if ref is None else ref.attachment_id,
            json.dumps([mode.value for mode in spec.modes]),
            spec.submissions,
            spec.budget,
            spec.prefetch,
            utc(now),
            None if spec.ends_at is None else utc(spec.ends_at),
        )

        async def work(conn: Conn) -> RemixEvent:
            await lock_guild(conn, guild_id)
            (open_now,) = await _one(
                conn,
                f"SELECT count(*) FROM remix_events WHERE guild_id = %(guild)s AND {_OPEN}",  # noqa: S608
                {"guild": guild_id, "now": utc(now)},
            )
            if open_now >= max_open:
                raise TooManyRemixEventsError(max_open)
            return event_of(await _one(conn, _INSERT_EVENT, values))

        return await self._db.write(work)

    async def card_posted(
        self,
        event_id: int,
        card_channel_id: int,
        card_message_id: int,
        *,
        pinned: bool,
        scheduled_event_id: int | None,
        source_ref: SourceRef | None = None,
    ) -> RemixEvent:
        """Where the card went; ``source_ref``, when given, replaces the event's."""
        values = (
            card_channel_id,
            card_message_id,
            pinned,
            scheduled_event_id,
            None if source_ref is None else source_ref.channel_id,
            None if source_ref is None else source_ref.message_id,
            None if source_ref is None else source_ref.attachment_id,
            event_id,
        )
        return await self._changed_event(_CARD_POSTED, values)

    async def poll_posted(
        self, event_id: int, poll_message_id: int, submission_ids: Sequence[int]
    ) -> RemixEvent:
        """The vote's poll message and the submissions of its answers, in answer order."""
        return await self._changed_event(
            f"UPDATE remix_events SET poll_message_id = %s, poll_submission_ids = %s "  # noqa: S608
            f"WHERE id = %s RETURNING {EVENT_COLUMNS}",
            (poll_message_id, json.dumps(list(submission_ids)), event_id),
        )

    async def end(self, event_id: int, now: datetime, by_user_id: int | None) -> RemixEvent:
        """Close the event once: RemixEventEndedError when it already was (whoever ended it,
        in whichever process)."""

        async def work(conn: Conn) -> RemixEvent:
            cursor = await conn.execute(
                "UPDATE remix_events SET ended_at = %s, ended_by = %s "
                "WHERE id = %s AND ended_at IS NULL",
                (utc(now), by_user_id, event_id),
            )
            event = await _event(conn, event_id)
            if cursor.rowcount == 0:
                raise RemixEventEndedError()
            return event

        return await self._db.write(work)

    async def get(self, event_id: int) -> RemixEvent | None:
        row = await self._db.fetch_one(f"{_SELECT_EVENT} WHERE id = %s".encode(), (event_id,))
        return None if row is None else event_of(row)

    async def open_events(self, guild_id: int, now: datetime) -> list[RemixEvent]:
        """The server's open events, oldest first."""
        found = await self._all(
            f"{_SELECT_EVENT} WHERE guild_id = %(guild)s AND {_OPEN} ORDER BY id",
            {"guild": guild_id, "now": utc(now)},
        )
        return [event_of(row) for row in found]

    async def due(self, now: datetime) -> list[RemixEvent]:
        """Events past their end and not yet closed (every server's), soonest first."""
        found = await self._all(
            f"{_SELECT_EVENT} WHERE ended_at IS NULL AND ends_at IS NOT NULL "
            "AND ends_at <= %s ORDER BY ends_at, id",
            (utc(now),),
        )
        return [event_of(row) for row in found]

    # --- takes --------------------------------------------------------------------------

    async def record_take(
        self, event_id: int, mode: Mode, user_id: int, now: datetime, *, answered: bool
    ) -> None:
        """The member took the mode's stems: answered at once, or waiting for the call. Once
        per event, mode and member; a later take moves the same row (its first time stays)."""
        status = TakeStatus.ANSWERED if answered else TakeStatus.WAITING
        at = utc(now)
        await self._db.write(
            lambda conn: conn.execute(
                "INSERT INTO remix_event_takes (event_id, mode, user_id, status, taken_at, "
                "answered_at, lease_id) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (event_id, mode, user_id) DO UPDATE SET "
                "status = excluded.status, lease_id = excluded.lease_id, "
                "answered_at = coalesce(excluded.answered_at, remix_event_takes.answered_at)",
                (
                    event_id,
                    mode.value,
                    user_id,
                    status.value,
                    at,
                    at if answered else None,
                    self._lease,
                ),
            ),
            atomic=False,
        )

    async def settle_takes(
        self,
        event_id: int,
        mode: Mode,
        user_ids: Sequence[int],
        status: TakeStatus,
        now: datetime,
    ) -> int:
        """Waiting takes answered (or failed) by the call of their mode; how many changed."""
        if status is TakeStatus.WAITING:
            raise ValueError("a take is settled as answered or failed")

        async def work(conn: Conn) -> int:
            cursor = await conn.execute(
                "UPDATE remix_event_takes SET status = %(status)s, answered_at = CASE "
                "WHEN %(status)s = 'answered' THEN %(now)s ELSE answered_at END "
                "WHERE event_id = %(event)s AND mode = %(mode)s AND status = 'waiting' "
                "AND user_id = ANY(%(users)s::bigint[])",
                {
                    "status": status.value,
                    "now": utc(now),
                    "event": event_id,
                    "mode": mode.value,
                    "users": list(user_ids),
                },
            )
            return cursor.rowcount

        return await self._db.write(work, atomic=False)

    async def waiting_takes(self) -> list[Take]:
        """Every take still waiting for its call (a restart cut it short), in order taken.
        Held by a lease: only those of processes found gone (their lease ended: their
        requests were recovered first) or of none, taken over; never a live process's."""
        if self._lease is None:
            found = await self._all(
                f"SELECT {_TAKE_COLUMNS} FROM remix_event_takes "  # noqa: S608 (constant)
                "WHERE status = 'waiting' ORDER BY event_id, mode, taken_at, user_id"
            )
        else:
            found = await self._db.write(
                lambda conn: _fetch_all(conn, _TAKE_OVER_WAITING, {"me": self._lease})
            )
        return [take_of(row) for row in found]

    async def takes(self, event_id: int) -> list[Take]:
        found = await self._all(
            f"SELECT {_TAKE_COLUMNS} FROM remix_event_takes "  # noqa: S608 (constant)
            "WHERE event_id = %s ORDER BY taken_at, user_id, mode",
            (event_id,),
        )
        return [take_of(row) for row in found]

    async def result(self, event_id: int, mode: Mode, fresh_after: datetime) -> Separation | None:
        """The stems the event can hand out for ``mode`` (see _RESULT), or None."""
        found = await self._all(
            _RESULT, {"event": event_id, "mode": mode.value, "fresh_after": utc(fresh_after)}
        )
        return None if not found else rows.separation(mode, found[0][0], found[0][1])

    # --- submissions --------------------------------------------------------------------

    async def submit(
        self,
        event_id: int,
        user_id: int,
        title: str,
        filename: str,
        message_id: int,
        now: datetime,
    ) -> tuple[Submission, Submission | None]:
        """Record the member's remix, replacing their current one (returned, so its post can
        say so). Refused (nothing written) once the event ended or without submissions. The
        event's row stays locked meanwhile: an ending or a second submission waits."""
        at = utc(now)

        async def work(conn: Conn) -> tuple[Submission, Submission | None]:
            event = await _event(conn, event_id, lock=True)
            if not event.is_open(now):
                raise RemixEventEndedError(
                    "This remix event has ended, so it takes no more submissions."
                )
            if not event.submissions:
                raise SubmissionRefusedError("This remix event doesn't take submissions.")
            cursor = await conn.execute(
                f"UPDATE remix_event_submissions SET replaced_at = %s "  # noqa: S608
                f"WHERE event_id = %s AND user_id = %s AND {CURRENT} "
                f"RETURNING {SUBMISSION_COLUMNS}",
                (at, event_id, user_id),
            )
            old = await cursor.fetchone()
            new = await _one(
                conn,
                _INSERT_SUBMISSION,
                (event_id, user_id, title, filename, message_id, at),
            )
            return submission_of(new), None if old is None else submission_of(old)

        return await self._db.write(work)

    async def remove_submission(
        self,
        event_id: int,
        submission_id: int,
        by_user_id: int,
        now: datetime,
        *,
        moderator: bool,
    ) -> Submission:
        """Take a current submission out: its member, the organiser or a ``moderator`` may.
        SubmissionRefusedError (nothing written) otherwise, or when it is no longer current."""

        async def work(conn: Conn) -> Submission:
            event = await _event(conn, event_id)
            cursor = await conn.execute(
                f"{_SELECT_SUBMISSION} WHERE id = %s AND event_id = %s FOR UPDATE",
                (submission_id, event_id),
            )
            row = await cursor.fetchone()
            if row is None or not submission_of(row).current:
                raise SubmissionRefusedError("That submission was already removed or replaced.")
            if not (moderator or by_user_id in (row[2], event.organiser_id)):
                raise SubmissionRefusedError(
                    "Only its member, the event's organiser or a moderator can remove a submission."
                )
            return submission_of(
                await _one(
                    conn,
                    _REMOVE_SUBMISSION,
                    (utc(now), by_user_id, submission_id),
                )
            )

        return await self._db.write(work)

    async def submission(self, submission_id: int) -> Submission | None:
        """One submission, current or not (a post's Remove button, the vote's answers)."""
        found = await self._all(f"{_SELECT_SUBMISSION} WHERE id = %s", (submission_id,))
        return None if not found else submission_of(found[0])

    async def submissions(self, event_id: int) -> list[Submission]:
        """The current submissions, in the order they were made."""
        found = await self._all(
            f"{_SELECT_SUBMISSION} WHERE event_id = %s AND {CURRENT} ORDER BY id", (event_id,)
        )
        return [submission_of(row) for row in found]

    # --- figures ------------------------------------------------------------------------

    async def spend(self, event_id: int) -> EventSpend:
        found = await self._all(SPEND, (event_id,))
        return EventSpend(found[0][0], found[0][1])

    async def counts(self, event_id: int) -> EventCounts:
        """The live card's figures, in one snapshot."""

        async def read(conn: Conn) -> EventCounts:
            event = await _event(conn, event_id)
            return EventCounts(
                members=await _members(conn, event_id),
                submissions=await _current_submissions(conn, event_id),
                spend=EventSpend(*await _one(conn, SPEND, (event_id,))),
                budget=event.budget,
            )

        return await self._db.read(read)

    async def summary(self, event_id: int) -> EventSummary:
        """What the event came to, in one snapshot: takes per offered mode, members, current
        submissions, paid calls and units."""

        async def read(conn: Conn) -> EventSummary:
            event = await _event(conn, event_id)
            cursor = await conn.execute(
                f"SELECT mode, count(*) FROM remix_event_takes "  # noqa: S608
                f"WHERE event_id = %s AND {TOOK} GROUP BY mode",
                (event_id,),
            )
            per_mode = {mode: count for mode, count in await cursor.fetchall()}
            return EventSummary(
                event=event,
                takes_by_mode=tuple((mode, per_mode.get(mode.value, 0)) for mode in event.modes),
                members=await _members(conn, event_id),
                submissions=await _current_submissions(conn, event_id),
                spend=EventSpend(*await _one(conn, SPEND, (event_id,))),
            )

        return await self._db.read(read)

    async def participation(self, event_id: int) -> list[Participation]:
        """Each member who took stems or submitted (see ``RemixEvents.participation``)."""

        async def read(conn: Conn) -> list[Participation]:
            event = await _event(conn, event_id)
            cursor = await conn.execute(
                f"SELECT user_id, mode, taken_at FROM remix_event_takes "  # noqa: S608
                f"WHERE event_id = %s AND {TOOK} ORDER BY taken_at, mode",
                (event_id,),
            )
            takes = await cursor.fetchall()
            cursor = await conn.execute(
                f"{_SELECT_SUBMISSION} WHERE event_id = %s AND {CURRENT} ORDER BY id",
                (event_id,),
            )
            current = [submission_of(row) for row in await cursor.fetchall()]
            return participation_of(event, takes, current)

        return await self._db.read(read)

    async def _changed_event(self, sql: str, params: Sequence[Any]) -> RemixEvent:
        async def work(conn: Conn) -> RemixEvent:
            cursor = await conn.execute(sql.encode(), params)
            row = await cursor.fetchone()
            if row is None:
                raise RemixEventNotFoundError()
            return event_of(row)

        return await self._db.write(work, atomic=False)

    async def _all(self, sql: str, params: Any = None) -> list[Any]:
        return await self._db.fetch_all(sql.encode(), params)


async def _fetch_all(conn: Conn, sql: str, params: Any) -> list[Any]:
    cursor = await conn.execute(sql.encode(), params)
    return await cursor.fetchall()


async def _event(conn: Conn, event_id: int, *, lock: bool = False) -> RemixEvent:
    sql = f"{_SELECT_EVENT} WHERE id = %s" + (" FOR NO KEY UPDATE" if lock else "")
    cursor = await conn.execute(sql.encode(), (event_id,))
    row = await cursor.fetchone()
    if row is None:
        raise RemixEventNotFoundError()
    return event_of(row)


async def _one(conn: Conn, sql: str, params: Any) -> Any:
    cursor = await conn.execute(sql.encode(), params)
    row = await cursor.fetchone()
    assert row is not None
    return row


async def _members(conn: Conn, event_id: int) -> int:
    """Members who took stems (a take told a failure does not count)."""
    sql = f"SELECT count(DISTINCT user_id) FROM remix_event_takes WHERE event_id = %s AND {TOOK}"  # noqa: S608
    return int((await _one(conn, sql, (event_id,)))[0])


async def _current_submissions(conn: Conn, event_id: int) -> int:
    sql = f"SELECT count(*) FROM remix_event_submissions WHERE event_id = %s AND {CURRENT}"  # noqa: S608
    return int((await _one(conn, sql, (event_id,)))[0])
