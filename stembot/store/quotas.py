"""What a server and a member have used against their limits, read from the ledger in one
statement: the snapshot a reservation checks inside its transaction, the quota status a member
sees, the read-only precheck, and the day's paid API calls. The rules themselves (which limit
binds, the refusal text) are plain values in ``stembot.quota_rules``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from stembot import quota_rules
from stembot.config import QuotaPolicy
from stembot.models import QuotaStatus
from stembot.quota_rules import Snapshot, enforce
from stembot.store.connection import Connection, busy_is_retryable
from stembot.windows import utc, window_stamps

# Everything a reservation checks, read in one statement: whether the interaction is already
# in the ledger, the guild's overrides, the units used in each window (one scan of the month
# gives the day too), and the highest allowance among the member's roles. A member's own
# figures leave out what the server alone carries (member_pays = 0) and a remix event's calls
# (their organiser's row, not their own request).
_SNAPSHOT = """
SELECT
  (SELECT count(*) FROM requests WHERE interaction_id = :interaction),
  g.daily_limit, g.monthly_limit, g.user_daily_limit, g.user_active_requests,
  m.today, m.month,
  (SELECT coalesce(sum(cost), 0) FROM requests INDEXED BY requests_user_charged
    WHERE guild_id = :guild AND user_id = :user AND created_at >= :day AND created_at < :day_end
      AND cost > 0 AND status IN ('queued', 'running', 'succeeded') AND member_pays = 1),
  (SELECT count(*) FROM requests INDEXED BY requests_active
    WHERE guild_id = :guild AND user_id = :user AND status IN ('queued', 'running')
      AND remix_event_id IS NULL),
  (SELECT max(per_user) FROM role_allowances
    WHERE guild_id = :guild AND role_id IN (SELECT value FROM json_each(:roles)))
FROM (
  SELECT
    coalesce(sum(CASE WHEN created_at >= :day AND created_at < :day_end THEN cost END), 0)
      AS today,
    coalesce(sum(cost), 0) AS month
  FROM requests INDEXED BY requests_charged
  WHERE guild_id = :guild AND created_at >= :month AND created_at < :month_end
    AND cost > 0 AND status IN ('queued', 'running', 'succeeded')
) AS m
LEFT JOIN guild_settings AS g ON g.guild_id = :guild
"""


class Quotas:
    """Reads of the used units and calls; inside the caller's transaction or their own."""

    def __init__(self, connection: Connection, policy: QuotaPolicy) -> None:
        self._conn = connection
        self.policy = policy

    def quota_status(
        self,
        guild_id: int,
        user_id: int | None,
        now: datetime,
        role_ids: Sequence[int] = (),
    ) -> QuotaStatus:
        """Used, limit, remaining and reset time of the guild's windows (and the user's)."""
        budget = self.policy.api_daily_budget
        with self._conn.read():
            seen = self.snapshot(guild_id, user_id, None, now, role_ids)
            budget_spent = budget is not None and self.calls_on(utc(now).date()) >= budget
        return quota_rules.quota_status(
            seen, with_member=user_id is not None, now=now, budget_spent=budget_spent
        )

    def check_limits(
        self,
        guild_id: int,
        user_id: int,
        role_ids: Sequence[int],
        cost: int | None,
        now: datetime,
    ) -> None:
        """Raise QuotaLimitReached if a request would be refused; reads only, writes nothing.

        ``cost`` None: the request would join a call or reuse a result (no units, no API call),
        so only the limits that do not depend on cost apply. A precheck: ``reserve`` decides.
        """
        with self._conn.read():
            seen = self.snapshot(guild_id, user_id, None, now, role_ids)
            enforce(seen, cost or 0, now)
            if cost is not None:
                self.enforce_budget(now)

    def api_calls_today(self, now: datetime) -> int:
        """Paid API calls made or reserved on the UTC day of ``now``, across all servers."""
        with busy_is_retryable():
            return self.calls_on(utc(now).date())

    # --- inside a caller's transaction --------------------------------------------------

    def enforce_budget(self, now: datetime) -> None:
        budget = self.policy.api_daily_budget
        if budget is not None:
            quota_rules.enforce_budget(budget, self.calls_on(utc(now).date()), now)

    def calls_on(self, day: date) -> int:
        return int(
            self._conn.one(
                "SELECT coalesce(sum(calls), 0) FROM api_call_days WHERE day = ?",
                (day.isoformat(),),
            )[0]
        )

    def snapshot(
        self,
        guild_id: int,
        user_id: int | None,
        interaction_id: int | None,
        now: datetime,
        role_ids: Sequence[int] = (),
    ) -> Snapshot:
        day, day_end, month, month_end = window_stamps(utc(now).date())
        row = self._conn.one(
            _SNAPSHOT,
            {
                "interaction": interaction_id,
                "guild": guild_id,
                "user": user_id,
                "day": day,
                "day_end": day_end,
                "month": month,
                "month_end": month_end,
                "roles": json.dumps(list(role_ids)),
            },
        )
        return snapshot_of(self.policy, row)


def snapshot_of(policy: QuotaPolicy, row: Sequence[Any]) -> Snapshot:
    """The snapshot a reservation checks, from the row its query reads (either engine's):
    duplicate, the four overrides, today, month, the member's units today, their active
    requests, and their roles' highest allowance."""
    limits = quota_rules.effective_limits(policy, row[1:5])
    role_allowance = row[9]
    return Snapshot(
        duplicate=bool(row[0]),
        limits=limits,
        today=row[5],
        month=row[6],
        user_today=row[7],
        user_active=row[8],
        member_limit=quota_rules.member_limit(limits, role_allowance),
        limit_from_role=role_allowance is not None,
    )
