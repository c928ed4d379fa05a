"""A server's settings in the ledger's file: its limits and role allowances, where its
moderators' notices go, which quota alerts were sent, the digests of the synced slash commands,
and (across servers) whether the operator was told the day's API budget is spent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from stembot import quota_rules
from stembot.config import QuotaPolicy
from stembot.models import GuildLimits
from stembot.quota_rules import check_limit
from stembot.store.connection import Connection, busy_is_retryable
from stembot.windows import stamp, utc

# Where the 80% / 100% quota alerts of the moderators' work will be remembered.
ALERT_PERIODS = ("day", "month")

_LIMIT_COLUMNS = {
    "daily": "daily_limit",
    "monthly": "monthly_limit",
    "per_user": "user_daily_limit",
    "active_requests": "user_active_requests",
}


def check_overrides(*values: int | None) -> None:
    """ValueError unless each of daily, monthly, per_user and active_requests is None or a
    limit a moderator may set."""
    for value, name in zip(values, _LIMIT_COLUMNS, strict=True):
        check_limit(value, name)


class GuildSettings:
    """Each method is one short transaction on the shared writer connection (or one read)."""

    def __init__(self, connection: Connection, policy: QuotaPolicy) -> None:
        self._conn = connection
        self._db = connection.db
        self._policy = policy

    def guild_limits(self, guild_id: int) -> GuildLimits:
        """The guild's effective limits: a moderator's override, else the policy's default."""
        with busy_is_retryable():
            return self._limits(guild_id)

    def _limits(self, guild_id: int) -> GuildLimits:
        row = self._conn.one(
            "SELECT daily_limit, monthly_limit, user_daily_limit, user_active_requests "
            "FROM guild_settings WHERE guild_id = ?",
            (guild_id,),
        )
        roles = self._conn.all(
            "SELECT role_id, per_user FROM role_allowances WHERE guild_id = ? "
            "ORDER BY per_user DESC, role_id",
            (guild_id,),
        )
        limits = quota_rules.effective_limits(self._policy, row or (None, None, None, None))
        return dataclasses.replace(limits, role_allowances=tuple((r[0], r[1]) for r in roles))

    def reset_limits(self, guild_id: int, names: Sequence[str]) -> GuildLimits:
        """Drop the guild's overrides of ``names`` (daily, monthly, per_user, active_requests):
        those limits are the defaults again. Returns the limits now in force."""
        unknown = set(names) - set(_LIMIT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown limits: {sorted(unknown)}")
        with self._conn.write():
            for name in names:
                # The column name comes from the constant table above, never from input.
                self._db.execute(
                    f"UPDATE guild_settings SET {_LIMIT_COLUMNS[name]} = NULL "  # noqa: S608
                    "WHERE guild_id = ?",
                    (guild_id,),
                )
            return self._limits(guild_id)

    def set_role_allowance(self, guild_id: int, role_id: int, per_user: int | None) -> GuildLimits:
        """Give a role's members their own daily allowance, or (None) remove it."""
        check_limit(per_user, "per_user")
        with self._conn.write():
            if per_user is None:
                self._db.execute(
                    "DELETE FROM role_allowances WHERE guild_id = ? AND role_id = ?",
                    (guild_id, role_id),
                )
            else:
                self._db.execute(
                    "INSERT INTO role_allowances (guild_id, role_id, per_user) VALUES (?, ?, ?) "
                    "ON CONFLICT (guild_id, role_id) DO UPDATE SET per_user = excluded.per_user",
                    (guild_id, role_id, per_user),
                )
            return self._limits(guild_id)

    def set_limits(
        self,
        guild_id: int,
        *,
        daily: int | None = None,
        monthly: int | None = None,
        per_user: int | None = None,
        active_requests: int | None = None,
    ) -> GuildLimits:
        """Override some of a guild's limits (None leaves one as it is); returns the result."""
        check_overrides(daily, monthly, per_user, active_requests)
        with self._conn.write():
            self._db.execute(
                "INSERT INTO guild_settings "
                "(guild_id, daily_limit, monthly_limit, user_daily_limit, user_active_requests) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (guild_id) DO UPDATE SET "
                "daily_limit = coalesce(excluded.daily_limit, daily_limit), "
                "monthly_limit = coalesce(excluded.monthly_limit, monthly_limit), "
                "user_daily_limit = coalesce(excluded.user_daily_limit, user_daily_limit), "
                "user_active_requests = "
                "coalesce(excluded.user_active_requests, user_active_requests)",
                (guild_id, daily, monthly, per_user, active_requests),
            )
            return self._limits(guild_id)

    def set_log_channel(self, guild_id: int, channel_id: int | None) -> None:
        """Where moderators' notices for this guild go; None turns them off."""
        with self._conn.write():
            self._db.execute(
                "INSERT INTO guild_settings (guild_id, log_channel_id) VALUES (?, ?) "
                "ON CONFLICT (guild_id) DO UPDATE SET log_channel_id = excluded.log_channel_id",
                (guild_id, channel_id),
            )

    def log_channel(self, guild_id: int) -> int | None:
        with busy_is_retryable():
            row = self._conn.one(
                "SELECT log_channel_id FROM guild_settings WHERE guild_id = ?", (guild_id,)
            )
        return None if row is None else row[0]

    def claim_alert(
        self, guild_id: int, period: str, period_start: datetime, threshold: int, now: datetime
    ) -> bool:
        """Remember that a quota alert was sent; True only the first time for that window."""
        if period not in ALERT_PERIODS:
            raise ValueError(f"period must be one of {ALERT_PERIODS}")
        with self._conn.write():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO quota_alerts "
                "(guild_id, period, period_start, threshold, sent_at) VALUES (?, ?, ?, ?, ?)",
                (guild_id, period, stamp(period_start), threshold, stamp(now)),
            )
        return cursor.rowcount == 1

    def claim_budget_notice(self, now: datetime) -> bool:
        """Remember that the operator was told the day's budget is spent; True the first time."""
        with self._conn.write():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO budget_notices (day, sent_at) VALUES (?, ?)",
                (utc(now).date().isoformat(), stamp(now)),
            )
        return cursor.rowcount == 1

    def command_digest(self, scope: str) -> str | None:
        """The digest of the slash commands last synced for ``scope`` (global or a guild)."""
        with busy_is_retryable():
            row = self._conn.one("SELECT digest FROM command_digests WHERE scope = ?", (scope,))
        return None if row is None else str(row[0])

    def remember_command_digest(self, scope: str, digest: str) -> None:
        with self._conn.write():
            self._db.execute(
                "INSERT INTO command_digests (scope, digest) VALUES (?, ?) "
                "ON CONFLICT (scope) DO UPDATE SET digest = excluded.digest",
                (scope, digest),
            )
