"""The request ledger on PostgreSQL: the same rows and promises as the SQLite ledger
(stembot/store/ledger.py), for several processes at once.

- Quotas never over-grant across processes: a reservation takes its guild's advisory lock
  (``lock_guild``) before it reads what was used, so the check and the insert are one step
  for every process; a paid one under a bot-wide budget also takes the budget's lock (always
  after the guild's, so no two wait on each other). A member's reservation does all of it in
  one statement on the server (reserving.py); the rarer ones in a transaction of their own.
- One paid call per (source, mode) in flight, whichever process asks: the partial unique
  index ``requests_one_call_in_flight`` refuses a second (CallInFlightError).
- Usage is derived from the rows, never kept as a counter.
- Moving a request on changes only rows still in the state it expects, in one statement, so
  a refund happens once whoever asks.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import psycopg

from stembot import quota_rules
from stembot.errors import (
    CallInFlightError,
    DuplicateRequestError,
    RemixEventAlreadyPaidError,
    RemixEventBudgetSpentError,
    RemixEventNotFoundError,
    StoreBusyError,
)
from stembot.keyed_locks import KeyedLocks
from stembot.models import Mode, NewRequest, Recovery, Request, RequestStatus, Separation
from stembot.store import rows
from stembot.store.ledger import RecentInteractions
from stembot.store.postgres import recovery, remix_events, reserving
from stembot.store.postgres.connection import BUDGET_LOCK, Conn, Database, lock, lock_guild
from stembot.store.postgres.heirs import choose_heir
from stembot.store.postgres.leases import FENCE
from stembot.store.postgres.quotas import PostgresQuotas
from stembot.windows import day_window, iso_seconds, stamp, utc

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 1000
_REFUND_STATUSES = (RequestStatus.FAILED, RequestStatus.CANCELLED, RequestStatus.INTERRUPTED)
# The constraint names the migration gives, and what each refusal means.
_ONE_CALL_IN_FLIGHT = "requests_one_call_in_flight"
_INTERACTION_ONCE = "requests_interaction_once"

# The request and, for a paid one, its API call, in one statement; nothing when the lease it
# would be held by is no longer alive (a process that lost its lease records nothing more).
_INSERT_REQUEST = """
WITH r AS (
  INSERT INTO requests (guild_id, channel_id, user_id, interaction_id, mode, source_name,
                        source_key, cost, status, created_at, finished_at, pays_call,
                        member_pays, remix_event_id, lease_id, sealed_source)
  SELECT %(guild)s::bigint, %(channel)s::bigint, %(user)s::bigint, %(interaction)s::bigint,
         %(mode)s::text, %(name)s::text, %(key)s::text, %(cost)s::integer, %(status)s::text,
         %(created)s::timestamptz, %(finished)s::timestamptz, %(paid)s::boolean,
         %(event)s::bigint IS NULL, %(event)s::bigint, %(lease)s::bigint, %(sealed)s::text
  WHERE %(lease)s::bigint IS NULL OR EXISTS (SELECT 1 FROM stembot_processes AS p
    WHERE p.id = %(lease)s::bigint AND p.ended_at IS NULL AND p.expires_at > clock_timestamp())
  RETURNING id
), call AS (
  INSERT INTO api_calls (request_id, guild_id, day, reserved_at)
  SELECT id, %(guild)s, %(day)s, %(created)s FROM r WHERE %(paid)s
)
SELECT id FROM r
"""
_ACTIVE = (
    "SELECT id, cost, guild_id, user_id, remix_event_id FROM requests "
    "WHERE id = ANY(%(ids)s) AND status IN ('queued', 'running')"
)
_SELECT_REQUEST = rows.SELECT_REQUEST.replace("?", "%s").encode()
# A row this process wrote at ``now`` (its write's answer lost), found by what names it.
_SELECT_WRITTEN = (
    f"SELECT {rows.REQUEST_COLUMNS} FROM requests "  # noqa: S608 (constant)
    "WHERE created_at = %(now)s AND lease_id IS NOT DISTINCT FROM %(lease)s AND "
)
_BY_INTERACTION = "interaction_id = %(interaction)s"
_BY_EVENT = "remix_event_id = %(event)s AND mode = %(mode)s AND pays_call"
_SELECT_STORED_RESULT = (
    f"SELECT {rows.Q_REQUEST_COLUMNS}, r.stems, r.issued_at "  # noqa: S608 (constant)
    "FROM requests AS q JOIN results AS r ON r.source_key = q.source_key AND r.mode = q.mode "
    "WHERE q.id = %s"
).encode()
_TODAYS_FREE_ROW = """
SELECT id FROM requests
WHERE guild_id = %(guild)s AND user_id = %(user)s AND channel_id = %(channel)s
  AND source_key = %(key)s AND mode = %(mode)s AND created_at >= %(day)s
  AND created_at < %(day_end)s AND cost = 0 AND status = 'succeeded'
ORDER BY created_at LIMIT 1
"""


class PostgresLedger:
    """The requests' rows; each method one transaction (or one statement)."""

    def __init__(self, db: Database, quotas: PostgresQuotas) -> None:
        self._db = db
        self._quotas = quotas
        self._repeats = RecentInteractions()
        self._lease: int | None = None
        # A burst in one server waits for its lock here, one connection at a time, rather
        # than on the pool's connections (each held while it waits for the server's lock).
        self._guilds = KeyedLocks()

    def hold_with(self, lease_id: int | None) -> None:
        """Record every new request as held by the lease ``lease_id`` (this process's), and
        move on only requests that lease holds, while it is alive (leases.py); a write it
        fences out changes nothing, as for a request no longer active. A process that lost
        its lease records nothing more (ShuttingDownError). None: no fence (a bot alone)."""
        self._lease = lease_id

    def _fence(self) -> str:
        """The condition a request change adds: the row is held by this process's live lease."""
        return "" if self._lease is None else FENCE

    async def reserve(self, asked: NewRequest, now: datetime) -> Request:
        """Check every limit and record the queued request, under the guild's lock.

        Raises DuplicateRequestError, QuotaLimitReached naming the binding limit,
        CallInFlightError, StoreBusyError.
        """
        return await self._reserve(asked, now, paid=True, status=RequestStatus.QUEUED)

    async def reserve_joined(self, asked: NewRequest, now: datetime, *, running: bool) -> Request:
        """Record a request that joins an identical one already queued or ``running``: cost 0."""
        status = RequestStatus.RUNNING if running else RequestStatus.QUEUED
        return await self._reserve(asked, now, paid=False, status=status)

    async def _reserve(
        self, asked: NewRequest, now: datetime, *, paid: bool, status: RequestStatus
    ) -> Request:
        cost = self._quotas.policy.cost_of(asked.mode) if paid else 0
        created = utc(now)  # a naive moment is a bug: refused before anything is written
        if asked.interaction_id in self._repeats:
            raise DuplicateRequestError()

        async def work(conn: Conn) -> Request:
            return await reserving.reserve(
                conn,
                self._quotas.policy,
                asked,
                cost,
                status,
                created,
                paid=paid,
                lease=self._lease,
            )

        async with self._guilds.alone(asked.guild_id):
            return await self._new_row(
                work, _BY_INTERACTION, {"interaction": asked.interaction_id}, now, atomic=False
            )

    async def reserve_for_event(
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
        """Record a remix event's call of ``mode``, charged to the server alone, under the
        guild's lock (see ``Ledger.reserve_for_event``): the server's limits, the bot-wide
        budget and the event's own budget, never a member's allowance; its paid call is the
        source and mode's one call in flight (CallInFlightError), as a member's is."""
        cost = 0 if joined else self._quotas.policy.cost_of(mode)
        budget = None if joined else self._quotas.policy.api_daily_budget
        status = RequestStatus.RUNNING if running else RequestStatus.QUEUED
        utc(now)

        async def work(conn: Conn) -> Request:
            cursor = await conn.execute(
                "SELECT guild_id, channel_id, organiser_id, budget FROM remix_events WHERE id = %s",
                (event_id,),
            )
            event = await cursor.fetchone()
            if event is None:
                raise RemixEventNotFoundError()
            guild_id, channel_id, organiser_id, event_budget = event
            await lock_guild(conn, guild_id)
            if budget is not None:
                await lock(conn, BUDGET_LOCK)
            seen = await self._quotas.snapshot(
                conn, guild_id, None, None, now, count_calls=budget is not None
            )
            quota_rules.enforce_server(seen.snapshot, cost, now)
            if budget is not None:
                quota_rules.enforce_budget(budget, seen.calls_today or 0, now)
            if not joined:
                await _enforce_event_budget(conn, event_id, mode, event_budget, cost)
            cursor = await conn.execute("SELECT nextval('remix_event_interactions')")
            interaction = await cursor.fetchone()
            assert interaction is not None
            organiser = (guild_id, channel_id, organiser_id, interaction[0])
            asked = NewRequest(*organiser, mode, "", source_name, source_key)
            return await _insert(
                conn, asked, cost, status, now, paid=not joined, event=event_id, lease=self._lease
            )

        return await self._new_row(work, _BY_EVENT, {"event": event_id, "mode": mode.value}, now)

    async def hand_over_charge(
        self, payer_id: int, heirs: Sequence[tuple[int, Sequence[int]]], now: datetime
    ) -> tuple[int, bool] | None:
        """The payer of a shared call cancels: refund it and pass its charge on, in one
        transaction under the guilds' locks (see ``Ledger.hand_over_charge``); a remix event's
        row is never charged to a member (its organiser did not ask), and an heir of another
        server only if that server's limits take the cost."""
        roles = dict(heirs)

        async def work(conn: Conn) -> tuple[int, bool] | None:
            first = await self._active(conn, [payer_id, *roles])
            if payer_id not in {row[0] for row in first}:
                return None
            # Every guild's lock in one order (the inheritance of a call takes them so too).
            for guild_id in sorted({row[2] for row in first}):
                await lock_guild(conn, guild_id)
            payer = await self._active(conn, [payer_id])  # again, under the locks
            if not payer:
                return None
            cost, guild_id = payer[0][1], payer[0][2]
            found = {row[0]: row for row in await self._active(conn, list(roles))}
            riders = [(i, *found[i][2:5]) for i in roles if i in found]
            chosen = await choose_heir(
                conn, self._quotas, riders, roles, cost, now, counted_in=guild_id
            )
            if chosen is not None:
                await _pass_charge(conn, payer_id, chosen[0], cost, chosen[1], now)
            return chosen

        return await self._db.write(work)

    async def record_free(
        self, asked: NewRequest, separation: Separation, now: datetime
    ) -> Request:
        """Record a request answered from a stored or shared result: cost 0, succeeded; a
        member's repeats of one source and mode in one channel share a row per UTC day."""
        if separation.mode is not asked.mode:
            raise ValueError("the separation's mode does not match the request's")
        day, day_end = day_window(now)

        async def work(conn: Conn) -> Request:
            await lock_guild(conn, asked.guild_id)
            cursor = await conn.execute(
                "SELECT 1 FROM requests WHERE interaction_id = %s", (asked.interaction_id,)
            )
            if asked.interaction_id in self._repeats or await cursor.fetchone():
                raise DuplicateRequestError()
            cursor = await conn.execute(
                _TODAYS_FREE_ROW,
                {
                    "guild": asked.guild_id,
                    "user": asked.user_id,
                    "channel": asked.channel_id,
                    "key": asked.source_key,
                    "mode": asked.mode.value,
                    "day": day,
                    "day_end": day_end,
                },
            )
            earlier = await cursor.fetchone()
            if earlier is None:
                return await _insert(
                    conn, asked, 0, RequestStatus.SUCCEEDED, now, paid=False, lease=self._lease
                )
            await conn.execute(
                "UPDATE requests SET request_count = request_count + 1, finished_at = %s "
                "WHERE id = %s",
                (now, earlier[0]),
            )
            self._repeats.remember(asked.interaction_id, now)
            found = await _get(conn, earlier[0])
            assert found is not None
            return found

        async with self._guilds.alone(asked.guild_id):
            return await self._new_row(
                work, _BY_INTERACTION, {"interaction": asked.interaction_id}, now
            )

    async def mark_all_running(self, request_ids: Sequence[int], now: datetime) -> int:
        """queued -> running for every request sharing one call; how many changed. The call
        counts against the budget of the day it is made."""
        return await self._changed(
            "WITH moved AS (UPDATE requests SET status = 'running', started_at = %(now)s "  # noqa: S608 (constant fence)
            f"WHERE status = 'queued' AND id = ANY(%(ids)s){self._fence()} RETURNING id), "
            "made AS (UPDATE api_calls SET made_at = %(now)s, day = %(day)s "
            "WHERE made_at IS NULL AND request_id IN (SELECT id FROM moved)) "
            "SELECT count(*) FROM moved",
            {"now": now, "day": utc(now).date(), "ids": list(request_ids), "lease": self._lease},
        )

    async def settle_joined(self, request_ids: Sequence[int], now: datetime) -> int:
        """Mark requests that shared a settled call succeeded (they cost nothing)."""
        if not request_ids:
            return 0
        return await self._changed(
            "WITH done AS (UPDATE requests SET status = 'succeeded', finished_at = %(now)s "  # noqa: S608 (constant fence)
            "WHERE status IN ('queued', 'running') AND id = ANY(%(ids)s)"
            f"{self._fence()} RETURNING id) "
            "SELECT count(*) FROM done",
            {"now": utc(now), "ids": list(request_ids), "lease": self._lease},
        )

    async def refund_all(
        self, request_ids: Sequence[int], status: RequestStatus, error: str, now: datetime
    ) -> int:
        """End active requests as failed/cancelled/interrupted, freeing their units; how many
        it ended (each is refunded once)."""
        if status not in _REFUND_STATUSES:
            raise ValueError(
                f"a refund ends a request as failed, cancelled or interrupted, not {status}"
            )
        if not request_ids:
            return 0
        return await self._changed(
            "WITH ended AS (UPDATE requests "  # noqa: S608 (constant fence)
            "SET status = %(status)s, finished_at = %(now)s, error = %(error)s "
            "WHERE status IN ('queued', 'running') AND id = ANY(%(ids)s)"
            f"{self._fence()} RETURNING id) "
            "SELECT count(*) FROM ended",
            {
                "status": status.value,
                "now": utc(now),
                "error": error[:_MAX_ERROR_CHARS],
                "ids": list(request_ids),
                "lease": self._lease,
            },
        )

    async def settle(
        self, request_id: int, separation: Separation, source_key: str, now: datetime
    ) -> bool:
        """Mark the request succeeded (its charge stands) and store the result for reuse;
        False, storing the result all the same, when it was no longer active."""
        changed = await self._changed(
            "WITH settled AS (UPDATE requests SET status = 'succeeded', finished_at = %(now)s "  # noqa: S608 (constant fence)
            f"WHERE id = %(id)s AND status IN ('queued', 'running'){self._fence()} "
            "RETURNING id), "
            "stored AS (INSERT INTO results (source_key, mode, stems, issued_at, request_id) "
            "VALUES (%(key)s, %(mode)s, %(stems)s, %(issued)s, %(id)s) "
            "ON CONFLICT (source_key, mode) DO UPDATE SET stems = excluded.stems, "
            "issued_at = excluded.issued_at, request_id = excluded.request_id) "
            "SELECT count(*) FROM settled",
            {
                "now": utc(now),
                "id": request_id,
                "key": source_key,
                "mode": separation.mode.value,
                "stems": rows.stems(separation),
                "issued": utc(separation.issued_at),
                "lease": self._lease,
            },
        )
        if changed != 1:
            log.warning(
                "request %s settled but was not active; its ledger row is unchanged", request_id
            )
        return changed == 1

    async def refund_by_moderator(self, request_id: int, guild_id: int, now: datetime) -> bool:
        """Give back the units of a finished, charged request of this guild, once; its stored
        result is forgotten too (see ``Ledger.refund_by_moderator``)."""
        note = f"refunded by a moderator at {iso_seconds(stamp(now))}"
        changed = await self._changed(
            "WITH refunded AS (UPDATE requests SET status = 'cancelled', error = %s, "
            "refunded_by_moderator = true "
            "WHERE id = %s AND guild_id = %s AND status = 'succeeded' AND cost > 0 "
            "RETURNING id), "
            "forgotten AS (DELETE FROM results WHERE request_id IN (SELECT id FROM refunded)) "
            "SELECT count(*) FROM refunded",
            (note, request_id, guild_id),
        )
        return changed == 1

    async def record_deliveries(self, deliveries: Sequence[tuple[int, str]], now: datetime) -> int:
        """Note where each request's answer went; the first note stands."""
        first: dict[int, str] = {}
        for request_id, via in deliveries:
            first.setdefault(request_id, via)
        if not first:
            return 0
        return await self._changed(
            "WITH noted AS (UPDATE requests AS q SET delivered_at = %s, delivered_via = d.via "
            "FROM unnest(%s::bigint[], %s::text[]) AS d (id, via) "
            "WHERE q.id = d.id AND q.delivered_at IS NULL RETURNING q.id) "
            "SELECT count(*) FROM noted",
            (utc(now), list(first), list(first.values())),
        )

    async def recover(self, now: datetime) -> Recovery:
        """What a stopped bot left owing, settled in one transaction (recovery.py)."""
        return await self._db.write(lambda conn: recovery.recover(conn, utc(now)))

    async def get_request(self, request_id: int) -> Request | None:
        return await self._db.read(lambda conn: _get(conn, request_id), one_snapshot=False)

    async def stored_result(self, request_id: int) -> tuple[Request, Separation] | None:
        """The request and the result stored for its source and mode, whenever it was issued
        (a later call for them replaces it); None when either is no longer kept."""
        row = await self._db.fetch_one(_SELECT_STORED_RESULT, (request_id,))
        if row is None:
            return None
        request = rows.request(row)
        return request, rows.separation(request.mode, row[-2], row[-1])

    async def find_result(
        self, source_key: str, mode: Mode, issued_after: datetime
    ) -> Separation | None:
        """The stored result for this source and mode, if issued after ``issued_after``."""
        row = await self._db.fetch_one(
            "SELECT stems, issued_at FROM results "
            "WHERE source_key = %s AND mode = %s AND issued_at > %s",
            (source_key, mode.value, utc(issued_after)),
        )
        return None if row is None else rows.separation(mode, row[0], row[1])

    async def _new_row(
        self,
        work: Callable[[Conn], Awaitable[Request]],
        which: str,
        params: dict[str, Any],
        now: datetime,
        *,
        atomic: bool = True,
    ) -> Request:
        """``work`` (which records a new request; in a transaction of its own when
        ``atomic``, else one statement), with the unique indexes' refusals made the
        request's. A connection that breaks may take the commit's answer with it, the row
        being written all the same: then that row (``which``, made now, held by this
        process) is the outcome; left untold, it would stay charged and in progress. The
        server may still be running the statement the broken connection sent (waiting for
        the guild's lock, say), so its server process is ended first: then the row is
        there or never will be."""
        sent_on: list[tuple[Conn, int]] = []

        async def tracked(conn: Conn) -> Request:
            sent_on.append((conn, conn.info.backend_pid))
            return await work(conn)

        try:
            return await self._db.write(tracked, atomic=atomic)
        except psycopg.errors.UniqueViolation as error:
            raise _refusal(error) from error
        except StoreBusyError:
            try:
                if sent_on and sent_on[-1][0].closed:
                    await self._db.outlive(sent_on[-1][1])
                written = await self._written(which, {**params, "now": utc(now)})
            except StoreBusyError:
                written = None
            if written is None:
                raise
            log.warning("request %s: recorded, though the database's answer was lost", written.id)
            return written

    async def _written(self, which: str, params: dict[str, Any]) -> Request | None:
        row = await self._db.fetch_one(
            (_SELECT_WRITTEN + which).encode(), {**params, "lease": self._lease}
        )
        return None if row is None else rows.request(row)

    async def _active(self, conn: Conn, request_ids: list[int]) -> list[Any]:
        """(id, cost, guild_id, user_id, remix_event_id) of those requests still queued or
        running (and held by this process, when it holds a lease)."""
        cursor = await conn.execute(
            (_ACTIVE + self._fence()).encode(), {"ids": request_ids, "lease": self._lease}
        )
        return await cursor.fetchall()

    async def _changed(self, sql: Any, params: Any) -> int:
        """One statement that ends with ``SELECT count(*)`` of the rows it changed."""

        async def work(conn: Conn) -> int:
            cursor = await conn.execute(sql, params)
            row = await cursor.fetchone()
            assert row is not None
            return int(row[0])

        return await self._db.write(work, atomic=False)


async def _enforce_event_budget(
    conn: Conn, event_id: int, mode: Mode, budget: int | None, cost: int
) -> None:
    cursor = await conn.execute(remix_events.PAID_FOR_MODE, (event_id, mode.value))
    if await cursor.fetchone() is not None:
        raise RemixEventAlreadyPaidError()
    cursor = await conn.execute(remix_events.SPEND, (event_id,))
    row = await cursor.fetchone()
    assert row is not None
    if budget is not None and row[1] + cost > budget:
        raise RemixEventBudgetSpentError(budget, row[1], cost, mode.label)


async def _insert(
    conn: Conn,
    asked: NewRequest,
    cost: int,
    status: RequestStatus,
    now: datetime,
    *,
    paid: bool,
    event: int | None = None,
    lease: int | None = None,
) -> Request:
    """A new row (a paid one with its API call); a remix ``event``'s is the server's alone;
    held by ``lease`` (ShuttingDownError once that lease is dead)."""
    created = utc(now)
    cursor = await conn.execute(
        _INSERT_REQUEST,
        {
            **reserving.row_values(asked, cost, status, created, paid=paid, lease=lease),
            "event": event,
            "day": created.date(),
        },
    )
    row = await cursor.fetchone()
    return reserving.recorded(None if row is None else row[0], asked, cost, status, created, lease)


async def _pass_charge(
    conn: Conn, payer_id: int, heir_id: int, cost: int, member_pays: bool, now: datetime
) -> None:
    # The call moves first: cancelling a queued payer drops its row (the trigger). The payer
    # leaves the call before the heir takes it: one payer in flight. The heir takes the
    # sealed source too (read first: the payer's row loses it as it ends).
    cursor = await conn.execute("SELECT sealed_source FROM requests WHERE id = %s", (payer_id,))
    sealed = await cursor.fetchone()
    await conn.execute(
        "UPDATE api_calls SET request_id = %s WHERE request_id = %s", (heir_id, payer_id)
    )
    await conn.execute(
        "UPDATE requests SET status = 'cancelled', finished_at = %s, error = %s, "
        "pays_call = false WHERE id = %s",
        (utc(now), "cancelled by the requester", payer_id),
    )
    await conn.execute(
        "UPDATE requests SET cost = %s, member_pays = %s, pays_call = true, sealed_source = %s "
        "WHERE id = %s",
        (cost, member_pays, sealed[0] if sealed else None, heir_id),
    )


async def _get(conn: Conn, request_id: int) -> Request | None:
    cursor = await conn.execute(_SELECT_REQUEST, (request_id,))
    row = await cursor.fetchone()
    return None if row is None else rows.request(row)


def _refusal(error: psycopg.errors.UniqueViolation) -> Exception:
    """What a unique index's refusal means for the request: a duplicate or a call in flight."""
    constraint = error.diag.constraint_name
    if constraint == _ONE_CALL_IN_FLIGHT:
        return CallInFlightError()
    if constraint == _INTERACTION_ONCE:
        return DuplicateRequestError()
    return error
