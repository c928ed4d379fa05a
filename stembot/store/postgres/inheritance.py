"""A call whose payer cancelled before it ran, taken on by a request riding on it from another
process (issue 14): that process has the source's URL in memory, so it can make the call.

The heir is chosen by the rule a cancelled payer's charge passes on by in one process
(``PostgresLedger.hand_over_charge``): the first rider with room in their own allowance, else
the first whose server alone can carry it (a remix event's row only so, within the event's
budget). Here the charge is a new one (the cancelled payer's was refunded), so the heir's
server limits and the bot-wide budget are checked too, under the servers' locks. The index
``requests_one_call_in_flight`` keeps it to one heir when several processes try at once: the
others get CallInFlightError and ride on the heir's call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from stembot import quota_rules
from stembot.errors import CallInFlightError, QuotaLimitReached
from stembot.models import Mode
from stembot.store.postgres import remix_events
from stembot.store.postgres.connection import BUDGET_LOCK, Conn, Database, lock, lock_guild
from stembot.store.postgres.quotas import PostgresQuotas
from stembot.windows import utc

# The riders still waiting, unpaid, for this source and mode.
_RIDERS = (
    "SELECT id, guild_id, user_id, remix_event_id FROM requests "
    "WHERE id = ANY(%(ids)s) AND source_key = %(key)s AND mode = %(mode)s "
    "AND status = 'queued' AND NOT pays_call"
)
_IN_FLIGHT = (
    "SELECT id, cost, member_pays FROM requests WHERE source_key = %(key)s AND mode = %(mode)s "
    "AND pays_call AND status IN ('queued', 'running')"
)
_PAYS = (
    "UPDATE requests SET cost = %(cost)s, member_pays = %(member_pays)s, pays_call = true "
    "WHERE id = %(id)s"
)
_CALL = (
    "INSERT INTO api_calls (request_id, guild_id, day, reserved_at) "
    "VALUES (%(id)s, %(guild)s, %(day)s, %(now)s)"
)


@dataclass(frozen=True, slots=True)
class Inherited:
    """The rider now paying for the call: ``cost`` units, its member's own or the server's."""

    request_id: int
    cost: int
    member_pays: bool


async def inherit(
    db: Database,
    quotas: PostgresQuotas,
    key: str,
    mode: Mode,
    heirs: Sequence[tuple[int, Sequence[int]]],
    now: datetime,
) -> Inherited | None:
    """Make the first of ``heirs`` (request id, the member's role ids) that may pay the payer
    of the call for ``key`` and ``mode``; None when none may (nothing changes). Raises
    CallInFlightError when a call for them is in flight again (another process's heir)."""
    try:
        return await db.write(lambda conn: _inherit(conn, quotas, key, mode, heirs, now))
    except psycopg.errors.UniqueViolation as error:
        raise CallInFlightError() from error


async def paying(db: Database, key: str, mode: Mode) -> Inherited | None:
    """The request paying for the call in flight for ``key`` and ``mode``, if any (whether an
    inheritance whose answer was lost with its connection went through)."""
    async with db.connection() as conn:
        cursor = await conn.execute(_IN_FLIGHT, {"key": key, "mode": mode.value})
        row = await cursor.fetchone()
    return None if row is None else Inherited(row[0], row[1], row[2])


async def _inherit(
    conn: Conn,
    quotas: PostgresQuotas,
    key: str,
    mode: Mode,
    heirs: Sequence[tuple[int, Sequence[int]]],
    now: datetime,
) -> Inherited | None:
    params = {"key": key, "mode": mode.value}
    roles = dict(heirs)
    riders = await _riders(conn, roles, params)
    # Each server's lock, in one order (no two inheritances wait on each other), then the
    # budget's, as a reservation takes them.
    for guild_id in sorted({row[1] for row in riders}):
        await lock_guild(conn, guild_id)
    cursor = await conn.execute(_IN_FLIGHT, params)
    if await cursor.fetchone() is not None:
        raise CallInFlightError()
    riders = await _riders(conn, roles, params)  # again, under the locks
    cost = quotas.policy.cost_of(mode)
    budget = quotas.policy.api_daily_budget
    if budget is not None:
        await lock(conn, BUDGET_LOCK)
    chosen = await _choose(conn, quotas, riders, roles, mode, budget is not None, now)
    if chosen is None:
        return None
    request_id, guild_id, member_pays = chosen
    await conn.execute(_PAYS, {"cost": cost, "member_pays": member_pays, "id": request_id})
    moment = utc(now)
    await conn.execute(
        _CALL, {"id": request_id, "guild": guild_id, "day": moment.date(), "now": moment}
    )
    return Inherited(request_id, cost, member_pays)


async def _riders(conn: Conn, roles: dict[int, Sequence[int]], params: dict[str, Any]) -> list[Any]:
    """(id, guild_id, user_id, remix_event_id) of the heirs still riding, in ``roles``' order."""
    cursor = await conn.execute(_RIDERS, {**params, "ids": list(roles)})
    found = {row[0]: row for row in await cursor.fetchall()}
    return [found[request_id] for request_id in roles if request_id in found]


async def _choose(
    conn: Conn,
    quotas: PostgresQuotas,
    riders: list[Any],
    roles: dict[int, Sequence[int]],
    mode: Mode,
    count_calls: bool,
    now: datetime,
) -> tuple[int, int, bool] | None:
    """(request id, guild id, whether its member pays) of the heir, or None."""
    cost = quotas.policy.cost_of(mode)
    server_alone: tuple[int, int, bool] | None = None
    for request_id, guild_id, user_id, event_id in riders:
        member = None if event_id is not None else user_id
        seen = await quotas.snapshot(
            conn, guild_id, member, None, now, roles[request_id], count_calls=count_calls
        )
        try:
            quota_rules.enforce_server(seen.snapshot, cost, now)
            quota_rules.enforce_budget(quotas.policy.api_daily_budget, seen.calls_today or 0, now)
        except QuotaLimitReached:
            continue
        if member is not None and quota_rules.member_has_room(seen.snapshot, cost):
            return request_id, guild_id, True
        if server_alone is None and await _event_may_pay(conn, event_id, mode, cost):
            server_alone = request_id, guild_id, False
    return server_alone


async def _event_may_pay(conn: Conn, event_id: int | None, mode: Mode, cost: int) -> bool:
    """A member's row may (its server carries it); a remix event's within its own budget, as
    ``reserve_for_event`` checks it."""
    if event_id is None:
        return True
    cursor = await conn.execute(remix_events.PAID_FOR_MODE, (event_id, mode.value))
    if await cursor.fetchone() is not None:
        return False
    cursor = await conn.execute("SELECT budget FROM remix_events WHERE id = %s", (event_id,))
    event = await cursor.fetchone()
    cursor = await conn.execute(remix_events.SPEND, (event_id,))
    spend = await cursor.fetchone()
    if event is None or spend is None:
        return False
    return event[0] is None or spend[1] + cost <= event[0]
