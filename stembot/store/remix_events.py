"""Remix events in the ledger's file: the events, members' takes of their stems, submissions,
and what an event spent (summed from its own ``requests`` rows, never kept as a counter).

Each write method is one ``write()`` transaction whose checks and writes cannot be told apart
from outside (the cap of open events, an event still open, one current submission per
member). The event's paid calls are the ledger's (``Ledger.reserve_for_event``): this part
only reads them.
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
from stembot.store.connection import Connection, busy_is_retryable
from stembot.windows import parse_stamp, stamp

EVENT_COLUMNS = (
    "id, guild_id, channel_id, organiser_id, title, source_name, source_key, "
    "source_channel_id, source_message_id, source_attachment_id, modes, submissions, budget, "
    "prefetch, created_at, ends_at, ended_at, ended_by, card_channel_id, card_message_id, "
    "pinned, scheduled_event_id, poll_message_id, poll_submission_ids"
)
_SELECT_EVENT = f"SELECT {EVENT_COLUMNS} FROM remix_events"  # noqa: S608 (constant)
_OPEN = "ended_at IS NULL AND (ends_at IS NULL OR ends_at > :now)"

SUBMISSION_COLUMNS = (
    "id, event_id, user_id, title, filename, message_id, submitted_at, replaced_at, removed_at, "
    "removed_by"
)
_SELECT_SUBMISSION = f"SELECT {SUBMISSION_COLUMNS} FROM remix_event_submissions"  # noqa: S608
CURRENT = "replaced_at IS NULL AND removed_at IS NULL"

# The event's paid calls not refunded, and their units: its spend against its own budget.
SPEND = (
    "SELECT count(*), coalesce(sum(cost), 0) FROM requests INDEXED BY requests_remix_event "
    "WHERE remix_event_id = ? AND cost > 0 AND status IN ('queued', 'running', 'succeeded')"
)
# A call of the event for this mode that is still running or succeeded (it pays no second).
PAID_FOR_MODE = (
    "SELECT 1 FROM requests INDEXED BY requests_remix_event "
    "WHERE remix_event_id = ? AND mode = ? AND cost > 0 "
    "AND status IN ('queued', 'running', 'succeeded') LIMIT 1"
)
# The stored result for the event's track and mode: one the event's own call left, however
# old (the event paid for it), or any other still within the reuse window.
_RESULT = """
SELECT r.stems, r.issued_at FROM remix_events AS e
JOIN results AS r ON r.source_key = e.source_key AND r.mode = :mode
WHERE e.id = :event AND (r.issued_at > :fresh_after OR EXISTS (
    SELECT 1 FROM requests INDEXED BY requests_remix_event
    WHERE remix_event_id = e.id AND mode = :mode AND status = 'succeeded'))
"""
# A take counts once its member was not told a failure (waiting or answered).
TOOK = "status <> 'failed'"


class RemixEvents:
    """The events' rows; each method one transaction on the shared connection (or one read)."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._db = connection.db

    # --- the event ----------------------------------------------------------------------

    def start(
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
        (TooManyRemixEventsError); an event past its end no longer counts."""
        ref = spec.source_ref
        with self._conn.write():
            (open_now,) = self._conn.one(
                f"SELECT count(*) FROM remix_events INDEXED BY remix_events_open "  # noqa: S608
                f"WHERE guild_id = :guild AND {_OPEN}",
                {"guild": guild_id, "now": stamp(now)},
            )
            if open_now >= max_open:
                raise TooManyRemixEventsError(max_open)
            cursor = self._db.execute(
                "INSERT INTO remix_events (guild_id, channel_id, organiser_id, title, "
                "source_name, source_key, source_channel_id, source_message_id, "
                "source_attachment_id, modes, submissions, budget, prefetch, created_at, ends_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
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
                    int(spec.submissions),
                    spec.budget,
                    int(spec.prefetch),
                    stamp(now),
                    None if spec.ends_at is None else stamp(spec.ends_at),
                ),
            )
            assert cursor.lastrowid is not None
            return self._event(cursor.lastrowid)

    def card_posted(
        self,
        event_id: int,
        card_channel_id: int,
        card_message_id: int,
        *,
        pinned: bool,
        scheduled_event_id: int | None,
        source_ref: SourceRef | None = None,
    ) -> RemixEvent:
        """Where the card went; ``source_ref``, when given, replaces the event's (a file the bot
        re-uploaded onto the card is read from there)."""
        with self._conn.write():
            self._db.execute(
                "UPDATE remix_events SET card_channel_id = ?, card_message_id = ?, pinned = ?, "
                "scheduled_event_id = ?, "
                "source_channel_id = coalesce(?, source_channel_id), "
                "source_message_id = coalesce(?, source_message_id), "
                "source_attachment_id = coalesce(?, source_attachment_id) WHERE id = ?",
                (
                    card_channel_id,
                    card_message_id,
                    int(pinned),
                    scheduled_event_id,
                    None if source_ref is None else source_ref.channel_id,
                    None if source_ref is None else source_ref.message_id,
                    None if source_ref is None else source_ref.attachment_id,
                    event_id,
                ),
            )
            return self._event(event_id)

    def poll_posted(
        self, event_id: int, poll_message_id: int, submission_ids: Sequence[int]
    ) -> RemixEvent:
        """The vote's poll message and the submissions of its answers, in answer order."""
        with self._conn.write():
            self._db.execute(
                "UPDATE remix_events SET poll_message_id = ?, poll_submission_ids = ? WHERE id = ?",
                (poll_message_id, json.dumps(list(submission_ids)), event_id),
            )
            return self._event(event_id)

    def end(self, event_id: int, now: datetime, by_user_id: int | None) -> RemixEvent:
        """Close the event once: RemixEventEndedError when it already was (whoever ended it)."""
        with self._conn.write():
            cursor = self._db.execute(
                "UPDATE remix_events SET ended_at = ?, ended_by = ? "
                "WHERE id = ? AND ended_at IS NULL",
                (stamp(now), by_user_id, event_id),
            )
            event = self._event(event_id)
            if cursor.rowcount == 0:
                raise RemixEventEndedError()
            return event

    def get(self, event_id: int) -> RemixEvent | None:
        with busy_is_retryable():
            row = self._conn.one(f"{_SELECT_EVENT} WHERE id = ?", (event_id,))
        return None if row is None else event_of(row)

    def open_events(self, guild_id: int, now: datetime) -> list[RemixEvent]:
        """The server's open events, oldest first."""
        with busy_is_retryable():
            found = self._conn.all(
                f"{_SELECT_EVENT} INDEXED BY remix_events_open "
                f"WHERE guild_id = :guild AND {_OPEN} ORDER BY id",
                {"guild": guild_id, "now": stamp(now)},
            )
        return [event_of(row) for row in found]

    def due(self, now: datetime) -> list[RemixEvent]:
        """Events past their end and not yet closed (every server's), soonest first."""
        with busy_is_retryable():
            found = self._conn.all(
                f"{_SELECT_EVENT} INDEXED BY remix_events_due "
                "WHERE ended_at IS NULL AND ends_at IS NOT NULL AND ends_at <= ? "
                "ORDER BY ends_at, id",
                (stamp(now),),
            )
        return [event_of(row) for row in found]

    # --- takes --------------------------------------------------------------------------

    def record_take(
        self, event_id: int, mode: Mode, user_id: int, now: datetime, *, answered: bool
    ) -> None:
        """The member took the mode's stems: answered at once, or waiting for the call. Once
        per event, mode and member; a later take moves the same row (its first time stays)."""
        status = TakeStatus.ANSWERED if answered else TakeStatus.WAITING
        at = stamp(now)
        with self._conn.write():
            self._db.execute(
                "INSERT INTO remix_event_takes (event_id, mode, user_id, status, taken_at, "
                "answered_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (event_id, mode, user_id) DO UPDATE SET "
                "status = excluded.status, "
                "answered_at = coalesce(excluded.answered_at, answered_at)",
                (event_id, mode.value, user_id, status.value, at, at if answered else None),
            )

    def settle_takes(
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
        with self._conn.write():
            cursor = self._db.execute(
                "UPDATE remix_event_takes SET status = ?, answered_at = CASE WHEN ? = 'answered' "
                "THEN ? ELSE answered_at END WHERE event_id = ? AND mode = ? AND status = "
                "'waiting' AND user_id IN (SELECT value FROM json_each(?))",
                (
                    status.value,
                    status.value,
                    stamp(now),
                    event_id,
                    mode.value,
                    json.dumps(list(user_ids)),
                ),
            )
        return cursor.rowcount

    def waiting_takes(self) -> list[Take]:
        """Every take still waiting for its call (a restart cut it short), in order taken."""
        with busy_is_retryable():
            found = self._conn.all(
                "SELECT event_id, mode, user_id, status, taken_at, answered_at "
                "FROM remix_event_takes INDEXED BY remix_event_takes_waiting "
                "WHERE status = 'waiting' ORDER BY event_id, mode, taken_at, user_id"
            )
        return [take_of(row) for row in found]

    def takes(self, event_id: int) -> list[Take]:
        with busy_is_retryable():
            found = self._conn.all(
                "SELECT event_id, mode, user_id, status, taken_at, answered_at "
                "FROM remix_event_takes WHERE event_id = ? ORDER BY taken_at, user_id, mode",
                (event_id,),
            )
        return [take_of(row) for row in found]

    def result(self, event_id: int, mode: Mode, fresh_after: datetime) -> Separation | None:
        """The stems the event can hand out for ``mode`` (see _RESULT), or None."""
        with busy_is_retryable():
            row = self._conn.one(
                _RESULT, {"event": event_id, "mode": mode.value, "fresh_after": stamp(fresh_after)}
            )
        return None if row is None else rows.separation(mode, row[0], row[1])

    # --- submissions --------------------------------------------------------------------

    def submit(
        self,
        event_id: int,
        user_id: int,
        title: str,
        filename: str,
        message_id: int,
        now: datetime,
    ) -> tuple[Submission, Submission | None]:
        """Record the member's remix, replacing their current one (returned, so its post can
        say so). Refused (nothing written) once the event ended or without submissions."""
        at = stamp(now)
        with self._conn.write():
            event = self._event(event_id)
            if not event.is_open(now):
                raise RemixEventEndedError(
                    "This remix event has ended, so it takes no more submissions."
                )
            if not event.submissions:
                raise SubmissionRefusedError("This remix event doesn't take submissions.")
            old = self._conn.one(
                f"{_SELECT_SUBMISSION} WHERE event_id = ? AND user_id = ? AND {CURRENT}",
                (event_id, user_id),
            )
            if old is not None:
                self._db.execute(
                    "UPDATE remix_event_submissions SET replaced_at = ? WHERE id = ?", (at, old[0])
                )
            cursor = self._db.execute(
                "INSERT INTO remix_event_submissions (event_id, user_id, title, filename, "
                "message_id, submitted_at) VALUES (?, ?, ?, ?, ?, ?)",
                (event_id, user_id, title, filename, message_id, at),
            )
            new = self._conn.one(f"{_SELECT_SUBMISSION} WHERE id = ?", (cursor.lastrowid,))
        replaced = None if old is None else submission_of((*old[:7], at, *old[8:]))
        return submission_of(new), replaced

    def remove_submission(
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
        with self._conn.write():
            event = self._event(event_id)
            row = self._conn.one(
                f"{_SELECT_SUBMISSION} WHERE id = ? AND event_id = ?", (submission_id, event_id)
            )
            if row is None or not submission_of(row).current:
                raise SubmissionRefusedError("That submission was already removed or replaced.")
            if not (moderator or by_user_id in (row[2], event.organiser_id)):
                raise SubmissionRefusedError(
                    "Only its member, the event's organiser or a moderator can remove a submission."
                )
            self._db.execute(
                "UPDATE remix_event_submissions SET removed_at = ?, removed_by = ? WHERE id = ?",
                (stamp(now), by_user_id, submission_id),
            )
            return submission_of(
                self._conn.one(f"{_SELECT_SUBMISSION} WHERE id = ?", (submission_id,))
            )

    def submission(self, submission_id: int) -> Submission | None:
        """One submission, current or not (a post's Remove button, the vote's answers)."""
        with busy_is_retryable():
            row = self._conn.one(f"{_SELECT_SUBMISSION} WHERE id = ?", (submission_id,))
        return None if row is None else submission_of(row)

    def submissions(self, event_id: int) -> list[Submission]:
        """The current submissions, in the order they were made."""
        with busy_is_retryable():
            found = self._conn.all(
                f"{_SELECT_SUBMISSION} WHERE event_id = ? AND {CURRENT} ORDER BY id", (event_id,)
            )
        return [submission_of(row) for row in found]

    # --- figures ------------------------------------------------------------------------

    def spend(self, event_id: int) -> EventSpend:
        with busy_is_retryable():
            calls, units = self._conn.one(SPEND, (event_id,))
        return EventSpend(calls, units)

    def counts(self, event_id: int) -> EventCounts:
        """The live card's figures, in one snapshot."""
        with self._conn.read():
            event = self._event(event_id)
            return EventCounts(
                members=self._members(event_id),
                submissions=self._current_submissions(event_id),
                spend=EventSpend(*self._conn.one(SPEND, (event_id,))),
                budget=event.budget,
            )

    def summary(self, event_id: int) -> EventSummary:
        """What the event came to, in one snapshot: takes per offered mode, members, current
        submissions, paid calls and units."""
        with self._conn.read():
            event = self._event(event_id)
            per_mode = dict(
                self._conn.all(
                    f"SELECT mode, count(*) FROM remix_event_takes "  # noqa: S608
                    f"WHERE event_id = ? AND {TOOK} GROUP BY mode",
                    (event_id,),
                )
            )
            return EventSummary(
                event=event,
                takes_by_mode=tuple((mode, per_mode.get(mode.value, 0)) for mode in event.modes),
                members=self._members(event_id),
                submissions=self._current_submissions(event_id),
                spend=EventSpend(*self._conn.one(SPEND, (event_id,))),
            )

    def participation(self, event_id: int) -> list[Participation]:
        """Each member who took stems or submitted: their modes (in the event's order), first
        take, current submission. Takers in the order of their first take, then members who only
        submitted."""
        with self._conn.read():
            event = self._event(event_id)
            takes = self._conn.all(
                f"SELECT user_id, mode, taken_at FROM remix_event_takes "  # noqa: S608
                f"WHERE event_id = ? AND {TOOK} ORDER BY taken_at, mode",
                (event_id,),
            )
            current = self._conn.all(
                f"{_SELECT_SUBMISSION} WHERE event_id = ? AND {CURRENT} ORDER BY id", (event_id,)
            )
        return participation_of(event, takes, [submission_of(row) for row in current])

    def _members(self, event_id: int) -> int:
        return int(
            self._conn.one(
                f"SELECT count(DISTINCT user_id) FROM remix_event_takes "  # noqa: S608
                f"WHERE event_id = ? AND {TOOK}",
                (event_id,),
            )[0]
        )

    def _current_submissions(self, event_id: int) -> int:
        return int(
            self._conn.one(
                f"SELECT count(*) FROM remix_event_submissions "  # noqa: S608
                f"WHERE event_id = ? AND {CURRENT}",
                (event_id,),
            )[0]
        )

    def _event(self, event_id: int) -> RemixEvent:
        row = self._conn.one(f"{_SELECT_EVENT} WHERE id = ?", (event_id,))
        if row is None:
            raise RemixEventNotFoundError()
        return event_of(row)


def event_of(row: Sequence[Any]) -> RemixEvent:
    created_at = parse_stamp(row[14])
    assert created_at is not None
    ref = None if row[7] is None else SourceRef(row[7], row[8], row[9])
    return RemixEvent(
        id=row[0],
        guild_id=row[1],
        channel_id=row[2],
        organiser_id=row[3],
        title=row[4],
        source_name=row[5],
        source_key=row[6],
        source_ref=ref,
        modes=tuple(Mode(mode) for mode in json.loads(row[10])),
        submissions=bool(row[11]),
        budget=row[12],
        prefetch=bool(row[13]),
        created_at=created_at,
        ends_at=parse_stamp(row[15]),
        ended_at=parse_stamp(row[16]),
        ended_by=row[17],
        card_channel_id=row[18],
        card_message_id=row[19],
        pinned=bool(row[20]),
        scheduled_event_id=row[21],
        poll_message_id=row[22],
        poll_submission_ids=tuple(json.loads(row[23])),
    )


def take_of(row: Sequence[Any]) -> Take:
    taken_at = parse_stamp(row[4])
    assert taken_at is not None
    return Take(row[0], Mode(row[1]), row[2], TakeStatus(row[3]), taken_at, parse_stamp(row[5]))


def submission_of(row: Sequence[Any]) -> Submission:
    submitted_at = parse_stamp(row[6])
    assert submitted_at is not None
    return Submission(
        id=row[0],
        event_id=row[1],
        user_id=row[2],
        title=row[3],
        filename=row[4],
        message_id=row[5],
        submitted_at=submitted_at,
        replaced_at=parse_stamp(row[7]),
        removed_at=parse_stamp(row[8]),
        removed_by=row[9],
    )


def participation_of(
    event: RemixEvent, takes: Sequence[Sequence[Any]], current: Sequence[Submission]
) -> list[Participation]:
    modes: dict[int, list[Mode]] = {}
    first: dict[int, datetime | None] = {}
    for user_id, mode, taken_at in takes:
        modes.setdefault(user_id, []).append(Mode(mode))
        first.setdefault(user_id, parse_stamp(taken_at))
    submitted = {submission.user_id: submission for submission in current}
    for user_id in submitted:
        first.setdefault(user_id, None)
    offered = {mode: place for place, mode in enumerate(event.modes)}
    return [
        Participation(
            user_id,
            tuple(sorted(modes.get(user_id, ()), key=lambda mode: offered.get(mode, len(offered)))),
            taken,
            submitted.get(user_id),
        )
        for user_id, taken in first.items()
    ]
