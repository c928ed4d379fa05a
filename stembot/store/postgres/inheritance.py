"""A call whose payer cancelled before it ran, taken on by a request riding on it from another
process (issue 14): that process has the source's URL in memory, so it can make the call.

The heir is chosen by the rule a cancelled payer's charge passes on by in one process
(heirs.py): the first rider with room in their own allowance, else the first whose server
alone can carry it. Here the charge is a new one (the cancelled payer's was refunded), so the
heir's server limits and the bot-wide budget are checked, under the servers' locks. The index
``requests_one_call_in_flight`` keeps it to one heir when several processes try at once: the
others get CallInFlightError and ride on the heir's call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from stembot.errors import CallInFlightError
from stembot.models import Mode
from stembot.store.postgres.connection import BUDGET_LOCK, Conn, Database, lock, lock_guild
from stembot.store.postgres.heirs import Rider, choose_heir
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
    if not riders or await _budget_spent(conn, quotas, riders[0][1], now):
        return None
    cost = quotas.policy.cost_of(mode)
    chosen = await choose_heir(conn, quotas, riders, roles, cost, now)
    if chosen is None:
        return None
    request_id, member_pays = chosen
    guild_id = next(rider[1] for rider in riders if rider[0] == request_id)
    await conn.execute(_PAYS, {"cost": cost, "member_pays": member_pays, "id": request_id})
    moment = utc(now)
    await conn.execute(
        _CALL, {"id": request_id, "guild": guild_id, "day": moment.date(), "now": moment}
    )
    return Inherited(request_id, cost, member_pays)


async def _riders(
    conn: Conn, roles: dict[int, Sequence[int]], params: dict[str, Any]
) -> list[Rider]:
    """(id, guild_id, user_id, remix_event_id) of the heirs still riding, in ``roles``' order."""
    cursor = await conn.execute(_RIDERS, {**params, "ids": list(roles)})
    found = {row[0]: row for row in await cursor.fetchall()}
    return [found[request_id] for request_id in roles if request_id in found]


async def _budget_spent(conn: Conn, quotas: PostgresQuotas, guild_id: int, now: datetime) -> bool:
    """The bot-wide budget of paid calls is spent today: a new call is not made (its lock is
    taken after the servers', as a reservation takes it)."""
    budget = quotas.policy.api_daily_budget
    if budget is None:
        return False
    await lock(conn, BUDGET_LOCK)
    seen = await quotas.snapshot(conn, guild_id, None, None, now, count_calls=True)
    return (seen.calls_today or 0) >= budget
