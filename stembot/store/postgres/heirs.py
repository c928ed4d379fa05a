"""Who pays for a shared call when its payer leaves before it runs: one rule for a cancelled
payer's charge passed on in its process (``PostgresLedger.hand_over_charge``) and for a call
taken on by a rider in another process (inheritance.py).

The first rider with room in their own daily allowance pays; if none has, the first the server
alone may carry (it counts against the server's limits and no member's). A rider of the server
the charge is already counted in (the cancelled payer's, on a hand-over) needs no more room
there; any other needs its server's limits to take the cost. A remix event's row is never a
member's charge (its organiser did not ask), and takes one only where it is already counted:
the event's budget is not spent on a call the event did not reserve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from stembot import quota_rules
from stembot.store.postgres.connection import Conn
from stembot.store.postgres.quotas import PostgresQuotas

# (request id, guild id, user id, remix event id), in the order the riders asked.
Rider = tuple[int, int, int, int | None]


async def choose_heir(
    conn: Conn,
    quotas: PostgresQuotas,
    riders: Sequence[Rider],
    roles: Mapping[int, Sequence[int]],
    cost: int,
    now: datetime,
    *,
    counted_in: int | None = None,
) -> tuple[int, bool] | None:
    """(the heir's request id, whether its member pays), or None when no rider may pay.
    ``counted_in``: the server whose limits already count the charge. Run under the riders'
    servers' locks."""
    server_alone: tuple[int, bool] | None = None
    for request_id, guild_id, user_id, event_id in riders:
        counted = guild_id == counted_in
        if event_id is not None:
            if counted and server_alone is None:
                server_alone = request_id, False
            continue
        seen = await quotas.snapshot(conn, guild_id, user_id, None, now, roles[request_id])
        if not counted and not quota_rules.server_has_room(seen.snapshot, cost):
            continue
        if quota_rules.member_has_room(seen.snapshot, cost):
            return request_id, True
        if server_alone is None:
            server_alone = request_id, False
    return server_alone
