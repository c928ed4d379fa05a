"""What a server and a member have used against their limits, read from the PostgreSQL ledger
in one statement: the snapshot a reservation checks under the guild's lock, the quota status
a member sees, the read-only precheck, and the day's paid API calls (counted from their rows).
The rules themselves are the plain values of ``stembot.quota_rules``, as for SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from stembot import quota_rules
from stembot.config import QuotaPolicy
from stembot.models import QuotaStatus
from stembot.quota_rules import Snapshot, enforce
from stembot.store.postgres.connection import Conn, Database
from stembot.store.quotas import snapshot_of
from stembot.windows import day_window, month_window, utc

# Everything a reservation checks, in one statement (so one snapshot): whether the
# interaction is already in the ledger, the guild's overrides, the units used in each window,
# the member's units and active requests, the highest allowance among their roles, and (when
# asked) the paid calls of the day. The query is the function stembot_usage (migration 0007),
# which the reservation itself reads too (stembot_reserve, reserving.py).
_SNAPSHOT = (
    "SELECT * FROM stembot_usage(%(guild)s, %(user)s, %(interaction)s, %(roles)s::bigint[], "
    "%(day)s, %(day_end)s, %(month)s, %(month_end)s, %(today)s, %(count_calls)s)"
)

_CALLS_ON = "SELECT count(*) FROM api_calls WHERE day = %s"


@dataclass(frozen=True)
class Seen:
    """A snapshot, and the paid calls of the day when they were asked for."""

    snapshot: Snapshot
    calls_today: int | None


class PostgresQuotas:
    """Reads of the used units and calls; inside the caller's transaction or their own."""

    def __init__(self, db: Database, policy: QuotaPolicy) -> None:
        self._db = db
        self.policy = policy

    async def quota_status(
        self, guild_id: int, user_id: int | None, now: datetime, role_ids: Sequence[int] = ()
    ) -> QuotaStatus:
        """Used, limit, remaining and reset time of the guild's windows (and the user's)."""
        budget = self.policy.api_daily_budget
        seen = await self._db.read(
            lambda conn: self.snapshot(
                conn, guild_id, user_id, None, now, role_ids, count_calls=budget is not None
            ),
            one_snapshot=False,
        )
        budget_spent = budget is not None and (seen.calls_today or 0) >= budget
        return quota_rules.quota_status(
            seen.snapshot, with_member=user_id is not None, now=now, budget_spent=budget_spent
        )

    async def check_limits(
        self, guild_id: int, user_id: int, role_ids: Sequence[int], cost: int | None, now: datetime
    ) -> None:
        """Raise QuotaLimitReached if a request would be refused; reads only (a precheck:
        ``reserve`` decides). ``cost`` None: it would join a call or reuse a result."""
        budget = self.policy.api_daily_budget if cost is not None else None
        seen = await self._db.read(
            lambda conn: self.snapshot(
                conn, guild_id, user_id, None, now, role_ids, count_calls=budget is not None
            ),
            one_snapshot=False,
        )
        enforce(seen.snapshot, cost or 0, now)
        if budget is not None:
            quota_rules.enforce_budget(budget, seen.calls_today or 0, now)

    async def api_calls_today(self, now: datetime) -> int:
        """Paid API calls made or reserved on the UTC day of ``now``, across all servers."""
        day = utc(now).date()
        return await self._db.read(lambda conn: calls_on(conn, day), one_snapshot=False)

    async def snapshot(
        self,
        conn: Conn,
        guild_id: int,
        user_id: int | None,
        interaction_id: int | None,
        now: datetime,
        role_ids: Sequence[int] = (),
        *,
        count_calls: bool = False,
    ) -> Seen:
        cursor = await conn.execute(
            _SNAPSHOT,
            {
                "interaction": interaction_id,
                "guild": guild_id,
                "user": user_id,
                "roles": list(role_ids),
                "count_calls": count_calls,
                **window_bounds(now),
            },
        )
        row = await cursor.fetchone()
        assert row is not None  # an aggregate always gives one row
        return Seen(snapshot_of(self.policy, row), row[10])


def window_bounds(now: datetime) -> dict[str, Any]:
    """The moments bounding the UTC day and month of ``now``, and the day itself."""
    day, day_end = day_window(now)
    month, month_end = month_window(now)
    return {
        "day": day,
        "day_end": day_end,
        "month": month,
        "month_end": month_end,
        "today": day.date(),
    }


async def calls_on(conn: Conn, day: date) -> int:
    cursor = await conn.execute(_CALLS_ON, (day,))
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])
