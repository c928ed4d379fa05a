"""The request ledger: one row of ``requests`` per request is both the ledger entry and the
request's state. Reserve (every limit checked inside the write transaction), run, settle or
refund once, hand a shared call's charge over, record free repeats and deliveries, recover what
a stopped bot left owing, and the stored results a settled request leaves for reuse. A remix
event's call is a row too, the server's alone (``reserve_for_event``).

Quota used in a window is derived from these rows (the cost of requests that were not
refunded), never kept as a separate counter, so the money and the requests cannot drift apart.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

from stembot import quota_rules
from stembot.errors import (
    CallInFlightError,
    DuplicateRequestError,
    RemixEventAlreadyPaidError,
    RemixEventBudgetSpentError,
    RemixEventNotFoundError,
)
from stembot.models import Mode, NewRequest, Recovery, Request, RequestStatus, Separation
from stembot.quota_rules import enforce
from stembot.store import recovery, remix_events, rows
from stembot.store.connection import Connection, busy_is_retryable
from stembot.store.quotas import Quotas
from stembot.windows import iso_seconds, stamp, utc, window_stamps

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 1000
_REFUND_STATUSES = (RequestStatus.FAILED, RequestStatus.CANCELLED, RequestStatus.INTERRUPTED)

_INSERT_REQUEST = """
INSERT INTO requests (guild_id, channel_id, user_id, interaction_id, mode, source_name,
                      source_key, cost, status, created_at, finished_at, member_pays,
                      remix_event_id, pays_call, sealed_source)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# An event's call comes from no interaction: it is numbered below every Discord id (> 0).
_NEXT_EVENT_INTERACTION = "SELECT min(coalesce(min(interaction_id), 0), 0) - 1 FROM requests"
# How SQLite names the partial unique index requests_one_call_in_flight when it refuses a
# second paid call of a source and mode while one is queued or running.
_CALL_IN_FLIGHT = "UNIQUE constraint failed: requests.source_key, requests.mode"

_SELECT_STORED_RESULT = (
    f"SELECT {rows.Q_REQUEST_COLUMNS}, r.stems, r.issued_at "  # noqa: S608 (constant)
    "FROM requests AS q JOIN results AS r ON r.source_key = q.source_key AND r.mode = q.mode "
    "WHERE q.id = ?"
)


class Ledger:
    """The requests' rows; each method one transaction on the shared writer connection."""

    def __init__(self, connection: Connection, quotas: Quotas) -> None:
        self._conn = connection
        self._db = connection.db
        self._quotas = quotas
        self._repeats = RecentInteractions()

    def reserve(self, asked: NewRequest, now: datetime) -> Request:
        """Check every limit and record the queued request, in one write transaction.

        Raises DuplicateRequestError for an interaction id already in the ledger,
        QuotaLimitReached (a QuotaExceededError) naming the binding limit, CallInFlightError
        while another request's paid call for the same source and mode is queued or running,
        StoreBusyError.
        """
        return self._reserve(asked, now, paid=True, status=RequestStatus.QUEUED)

    def reserve_joined(self, asked: NewRequest, now: datetime, *, running: bool) -> Request:
        """Record a request that joins an identical one already queued or ``running``: cost 0.

        The limits that do not depend on cost still hold (a switched-off server, the member's
        cap on active requests); the first requester pays for the shared call.
        """
        status = RequestStatus.RUNNING if running else RequestStatus.QUEUED
        return self._reserve(asked, now, paid=False, status=status)

    def _reserve(
        self, asked: NewRequest, now: datetime, *, paid: bool, status: RequestStatus
    ) -> Request:
        """``reserve`` (``paid``: its cost, the daily budget, an API call) or ``reserve_joined``."""
        cost = self._quotas.policy.cost_of(asked.mode) if paid else 0
        with self._conn.write():
            seen = self._quotas.snapshot(
                asked.guild_id, asked.user_id, asked.interaction_id, now, asked.role_ids
            )
            if seen.duplicate or asked.interaction_id in self._repeats:
                raise DuplicateRequestError()
            enforce(seen, cost, now)
            if paid:
                self._quotas.enforce_budget(now)
            request = self._insert_paying(asked, cost, status, now, pays_call=paid)
            if paid:
                self._record_call(request, now)
            return request

    def _record_call(self, request: Request, now: datetime) -> None:
        """The paid API call the request reserved (the bot-wide daily budget counts it)."""
        self._db.execute(
            "INSERT INTO api_calls (request_id, guild_id, day, reserved_at) VALUES (?, ?, ?, ?)",
            (request.id, request.guild_id, utc(now).date().isoformat(), stamp(now)),
        )

    def reserve_for_event(
        self,
        event_id: int,
        mode: Mode,
        source_name: str,
        source_key: str,
        now: datetime,
        *,
        joined: bool = False,
        running: bool = False,
    ) -> Request:
        """Record a remix event's call of ``mode``, charged to the server alone, in one write
        transaction: the row names the event and its organiser, ``member_pays`` = 0.

        Checked against the server's monthly and daily limits, the bot-wide daily budget and
        the event's own budget (its paid rows not refunded), never a member's allowance.
        ``joined``: the event rides on an identical call already queued (or ``running``) at
        no cost, so only a switched-off server refuses it. Raises QuotaLimitReached,
        RemixEventBudgetSpentError, RemixEventAlreadyPaidError (a call of the event for this
        mode is running or succeeded: it never pays twice), CallInFlightError (a paid call of
        the source and mode is queued or running, whoever's: one at a time, as for members),
        RemixEventNotFoundError.
        """
        cost = 0 if joined else self._quotas.policy.cost_of(mode)
        with self._conn.write():
            event = self._conn.one(
                "SELECT guild_id, channel_id, organiser_id, budget FROM remix_events WHERE id = ?",
                (event_id,),
            )
            if event is None:
                raise RemixEventNotFoundError()
            guild_id, channel_id, organiser_id, budget = event
            quota_rules.enforce_server(self._quotas.snapshot(guild_id, None, None, now), cost, now)
            if not joined:
                self._quotas.enforce_budget(now)
                self._enforce_event_budget(event_id, mode, budget, cost)
            (interaction_id,) = self._conn.one(_NEXT_EVENT_INTERACTION, ())
            asked = NewRequest(
                guild_id,
                channel_id,
                organiser_id,
                interaction_id,
                mode,
                "",
                source_name,
                source_key,
            )
            status = RequestStatus.RUNNING if running else RequestStatus.QUEUED
            request = self._insert_paying(
                asked, cost, status, now, event_id=event_id, pays_call=not joined
            )
            if not joined:
                self._record_call(request, now)
            return request

    def _enforce_event_budget(
        self, event_id: int, mode: Mode, budget: int | None, cost: int
    ) -> None:
        if self._conn.one(remix_events.PAID_FOR_MODE, (event_id, mode.value)) is not None:
            raise RemixEventAlreadyPaidError()
        _, spent = self._conn.one(remix_events.SPEND, (event_id,))
        if budget is not None and spent + cost > budget:
            raise RemixEventBudgetSpentError(budget, spent, cost, mode.label)

    def hand_over_charge(
        self, payer_id: int, heirs: Sequence[tuple[int, Sequence[int]]], now: datetime
    ) -> tuple[int, bool] | None:
        """The payer of a shared call cancels: refund it and pass its charge on, in one
        transaction, so the shared call is paid for exactly once whatever happens.

        ``heirs`` are the other requests of the call, in the order they asked, each with its
        member's role ids. The first whose member has room for the cost in their own daily
        allowance takes the charge. If none has, the first takes it on the server's account
        alone (``member_pays`` = 0): it counts against the server's limits but no member's.
        A remix event's row is never charged to a member (its user is the organiser, who did
        not ask): it can only be that first heir. An heir of another server (the same link
        asked for in two servers) is one only if its server's limits take the cost (its
        server had not paid it; a remix event's row of another server never is).
        Returns (the heir's request id, whether its member pays), or None (nothing changed) unless
        the payer and an heir are still active.
        """
        active = (
            "SELECT cost, guild_id, user_id, remix_event_id FROM requests "
            "WHERE id = ? AND status IN ('queued', 'running')"
        )
        with self._conn.write():
            payer = self._conn.one(active, (payer_id,))
            if payer is None:
                return None
            cost, guild_id = payer[0], payer[1]
            chosen: tuple[int, bool] | None = None
            for heir_id, roles in heirs:
                row = self._conn.one(active, (heir_id,))
                if row is None:
                    continue
                heir_guild, user_id, for_event = row[1], row[2], row[3] is not None
                if for_event:
                    if heir_guild == guild_id and chosen is None:
                        chosen = heir_id, False
                    continue
                seen = self._quotas.snapshot(heir_guild, user_id, None, now, roles)
                if heir_guild != guild_id and not quota_rules.server_has_room(seen, cost):
                    continue
                if quota_rules.member_has_room(seen, cost):
                    chosen = heir_id, True
                    break
                if chosen is None:
                    chosen = heir_id, False
            if chosen is None:
                return None
            chosen_id, member_pays = chosen
            # The heir takes the sealed source with the call (read first: the payer's row
            # loses it as it ends, by the trigger of 0011_sealed_sources).
            sealed = self._conn.one("SELECT sealed_source FROM requests WHERE id = ?", (payer_id,))
            # The call moves first: cancelling a queued payer drops its row (the trigger).
            self._db.execute(
                "UPDATE api_calls SET request_id = ? WHERE request_id = ?", (chosen_id, payer_id)
            )
            # The payer leaves the call before the heir takes it: one payer in flight.
            self._db.execute(
                "UPDATE requests SET status = 'cancelled', finished_at = ?, error = ?, "
                "pays_call = 0 WHERE id = ?",
                (stamp(now), "cancelled by the requester", payer_id),
            )
            self._db.execute(
                "UPDATE requests SET cost = ?, member_pays = ?, pays_call = 1, sealed_source = ? "
                "WHERE id = ?",
                (cost, int(member_pays), sealed[0] if sealed else None, chosen_id),
            )
        return chosen

    def record_free(self, asked: NewRequest, separation: Separation, now: datetime) -> Request:
        """Record a request answered from a stored or shared result: cost 0, succeeded.

        A member's free repeats of one source and mode in one channel share one row per UTC
        day (its ``request_count`` goes up, its finish time is the latest), so repeating a
        stored result cannot grow the ledger without bound. Their interaction ids are
        remembered for as long as Discord can deliver one again, so a duplicate is still
        refused.
        """
        if separation.mode is not asked.mode:
            raise ValueError("the separation's mode does not match the request's")
        with self._conn.write():
            self._refuse_duplicate(asked.interaction_id)
            earlier = _todays_free_row(self._conn, asked, now)
            if earlier is None:
                return self._insert(asked, 0, RequestStatus.SUCCEEDED, now)
            self._db.execute(
                "UPDATE requests SET request_count = request_count + 1, finished_at = ? "
                "WHERE id = ?",
                (stamp(now), earlier),
            )
            self._repeats.remember(asked.interaction_id, now)
            return rows.request(self._conn.one(rows.SELECT_REQUEST, (earlier,)))

    def mark_all_running(self, request_ids: Sequence[int], now: datetime) -> int:
        """queued -> running for every request sharing one call; how many changed.

        The call counts against the budget of the day it is made.
        """
        ids = json.dumps(list(request_ids))
        with self._conn.write():
            cursor = self._db.execute(
                "UPDATE requests SET status = 'running', started_at = ? "
                "WHERE status = 'queued' AND id IN (SELECT value FROM json_each(?))",
                (stamp(now), ids),
            )
            changed = cursor.rowcount
            self._db.execute(
                "UPDATE api_calls SET made_at = ?, day = ? "
                "WHERE made_at IS NULL AND request_id IN (SELECT value FROM json_each(?))",
                (stamp(now), utc(now).date().isoformat(), ids),
            )
        return changed

    def settle_joined(self, request_ids: Sequence[int], now: datetime) -> int:
        """Mark requests that shared a settled call succeeded (they cost nothing)."""
        if not request_ids:
            return 0
        with self._conn.write():
            cursor = self._db.execute(
                "UPDATE requests SET status = 'succeeded', finished_at = ? "
                "WHERE status IN ('queued', 'running') AND id IN (SELECT value FROM json_each(?))",
                (stamp(now), json.dumps(list(request_ids))),
            )
        return cursor.rowcount

    def refund_all(
        self, request_ids: Sequence[int], status: RequestStatus, error: str, now: datetime
    ) -> int:
        """End active requests as failed/cancelled/interrupted, freeing their units, in one
        transaction; how many it ended. A request already ended (or unknown) changes nothing, so
        each is refunded once."""
        if status not in _REFUND_STATUSES:
            raise ValueError(
                f"a refund ends a request as failed, cancelled or interrupted, not {status}"
            )
        if not request_ids:
            return 0
        with self._conn.write():
            cursor = self._db.execute(
                "UPDATE requests SET status = ?, finished_at = ?, error = ? "
                "WHERE status IN ('queued', 'running') AND id IN (SELECT value FROM json_each(?))",
                (status.value, stamp(now), error[:_MAX_ERROR_CHARS], json.dumps(list(request_ids))),
            )
        return cursor.rowcount

    def settle(
        self, request_id: int, separation: Separation, source_key: str, now: datetime
    ) -> bool:
        """Mark the request succeeded (its charge stands) and store the result for reuse.

        Returns False, storing the result all the same, when the request was no longer active
        (already refunded: it stays refunded) or is unknown.
        """
        stems = rows.stems(separation)
        with self._conn.write():
            cursor = self._db.execute(
                "UPDATE requests SET status = 'succeeded', finished_at = ? "
                "WHERE id = ? AND status IN ('queued', 'running')",
                (stamp(now), request_id),
            )
            self._db.execute(
                "INSERT INTO results (source_key, mode, stems, issued_at, request_id) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (source_key, mode) DO UPDATE SET "
                "stems = excluded.stems, issued_at = excluded.issued_at, "
                "request_id = excluded.request_id",
                (source_key, separation.mode.value, stems, stamp(separation.issued_at), request_id),
            )
        if cursor.rowcount != 1:
            log.warning(
                "request %s settled but was not active; its ledger row is unchanged", request_id
            )
        return cursor.rowcount == 1

    def refund_by_moderator(self, request_id: int, guild_id: int, now: datetime) -> bool:
        """Give back the units of a finished, charged request of this guild (bad stems, say).

        The row becomes 'cancelled' with the refund noted in its error column; its finish time
        stays. True only for the call that refunded it: a second call, a request of another
        guild, an active, free or already refunded one change nothing. The stored result of
        that request is forgotten too, so the next request for the source calls the API again
        instead of handing out the same refunded stems for free.
        """
        note = f"refunded by a moderator at {iso_seconds(stamp(now))}"
        with self._conn.write():
            cursor = self._db.execute(
                "UPDATE requests SET status = 'cancelled', error = ?, refunded_by_moderator = 1 "
                "WHERE id = ? AND guild_id = ? AND status = 'succeeded' AND cost > 0",
                (note, request_id, guild_id),
            )
            if cursor.rowcount == 1:
                self._db.execute("DELETE FROM results WHERE request_id = ?", (request_id,))
        return cursor.rowcount == 1

    def record_deliveries(self, deliveries: Sequence[tuple[int, str]], now: datetime) -> int:
        """Note where each request's answer went (see 0003_deliveries); the first note stands."""
        if not deliveries:
            return 0
        delivered = stamp(now)
        with self._conn.write():
            cursor = self._db.conn.executemany(
                "UPDATE requests SET delivered_at = ?, delivered_via = ? "
                "WHERE id = ? AND delivered_at IS NULL",
                [(delivered, via, request_id) for request_id, via in deliveries],
            )
        return cursor.rowcount

    def recover(self, now: datetime) -> Recovery:
        """What a stopped bot left owing, settled in one transaction at start-up (recovery.py)."""
        with self._conn.write():
            return recovery.recover(self._db, now)

    def get_request(self, request_id: int) -> Request | None:
        with busy_is_retryable():
            row = self._conn.one(rows.SELECT_REQUEST, (request_id,))
        return None if row is None else rows.request(row)

    def find_result(self, source_key: str, mode: Mode, issued_after: datetime) -> Separation | None:
        """The stored result for this source and mode, if issued after ``issued_after``."""
        with busy_is_retryable():
            row = self._conn.one(
                "SELECT stems, issued_at FROM results "
                "WHERE source_key = ? AND mode = ? AND issued_at > ?",
                (source_key, mode.value, stamp(issued_after)),
            )
        return None if row is None else rows.separation(mode, row[0], row[1])

    def stored_result(self, request_id: int) -> tuple[Request, Separation] | None:
        """The request and the result stored for its source and mode, whenever it was issued
        (a later call for them replaces it); None when either is no longer kept."""
        with busy_is_retryable():
            row = self._conn.one(_SELECT_STORED_RESULT, (request_id,))
        if row is None:
            return None
        request = rows.request(row)
        return request, rows.separation(request.mode, row[-2], row[-1])

    def _refuse_duplicate(self, interaction_id: int) -> None:
        if interaction_id in self._repeats or self._conn.one(
            "SELECT 1 FROM requests WHERE interaction_id = ?", (interaction_id,)
        ):
            raise DuplicateRequestError()

    def _insert_paying(
        self,
        asked: NewRequest,
        cost: int,
        status: RequestStatus,
        now: datetime,
        *,
        event_id: int | None = None,
        pays_call: bool,
    ) -> Request:
        """``_insert``, refused with CallInFlightError when it would be a second paid call of
        its source and mode in flight (a member's or an event's)."""
        try:
            return self._insert(asked, cost, status, now, event_id=event_id, pays_call=pays_call)
        except sqlite3.IntegrityError as error:
            # The index decides, as on PostgreSQL; the group's other writes stand.
            if str(error) == _CALL_IN_FLIGHT:
                raise CallInFlightError() from error
            raise

    def _insert(
        self,
        asked: NewRequest,
        cost: int,
        status: RequestStatus,
        now: datetime,
        *,
        event_id: int | None = None,
        pays_call: bool = False,
    ) -> Request:
        """A new row; a remix event's (``event_id``) is the server's alone (member_pays 0)."""
        created = stamp(now)
        finished = None if status.is_active else created
        values = (
            asked.guild_id,
            asked.channel_id,
            asked.user_id,
            asked.interaction_id,
            asked.mode.value,
            asked.source_name,
            asked.source_key,
        )
        member_pays = int(event_id is None)
        # Only a queued paid call keeps its source, sealed, for a later start to make it.
        sealed = asked.sealed_source if pays_call and status is RequestStatus.QUEUED else None
        cursor = self._db.execute(
            _INSERT_REQUEST,
            (
                *values,
                *(cost, status.value, created, finished, member_pays, event_id, int(pays_call)),
                sealed,
            ),
        )
        request_id = cursor.lastrowid
        assert request_id is not None
        return rows.new_request(request_id, asked, cost, status, created, finished)


def _todays_free_row(conn: Connection, asked: NewRequest, now: datetime) -> int | None:
    day, day_end, _, _ = window_stamps(utc(now).date())
    row = conn.one(
        "SELECT id FROM requests INDEXED BY requests_free_repeats "
        "WHERE guild_id = ? AND user_id = ? AND channel_id = ? AND source_key = ? "
        "AND mode = ? AND created_at >= ? AND created_at < ? "
        "AND cost = 0 AND status = 'succeeded' ORDER BY created_at LIMIT 1",
        (
            asked.guild_id,
            asked.user_id,
            asked.channel_id,
            asked.source_key,
            asked.mode.value,
            day,
            day_end,
        ),
    )
    return None if row is None else int(row[0])


class RecentInteractions:
    """Interaction ids of free repeats that share an earlier row, for as long as Discord may
    deliver one again (its token lives 15 minutes); older ones are forgotten."""

    _KEEP = timedelta(minutes=20)

    def __init__(self) -> None:
        self._seen: dict[int, datetime] = {}

    def remember(self, interaction_id: int, now: datetime) -> None:
        horizon = now - self._KEEP
        # Insertion order is time order: the oldest come first.
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if at >= horizon:
                break
            del self._seen[oldest]
        self._seen[interaction_id] = now

    def __contains__(self, interaction_id: object) -> bool:
        return interaction_id in self._seen
