"""A server's settings in the PostgreSQL ledger (see stembot/store/guilds.py): its limits and
role allowances, its log channel, the quota alerts sent, the synced commands' digests, and
whether the operator was told the day's API budget is spent. A claim (an alert, the budget
notice) is an insert that only one process can make.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import psycopg

from stembot import quota_rules
from stembot.config import QuotaPolicy
from stembot.models import GuildLimits
from stembot.quota_rules import check_limit
from stembot.store.guilds import ALERT_PERIODS, check_overrides
from stembot.store.postgres.connection import (
    COMMAND_SYNC_LOCK,
    LOCK_CLASS,
    Conn,
    Database,
    errors_explained,
)
from stembot.windows import utc

# One statement per limit a moderator may reset: column names are never built from input.
_RESETS = {
    "daily": "UPDATE guild_settings SET daily_limit = NULL WHERE guild_id = %s",
    "monthly": "UPDATE guild_settings SET monthly_limit = NULL WHERE guild_id = %s",
    "per_user": "UPDATE guild_settings SET user_daily_limit = NULL WHERE guild_id = %s",
    "active_requests": "UPDATE guild_settings SET user_active_requests = NULL WHERE guild_id = %s",
}
_SET_LIMITS = """
INSERT INTO guild_settings
  (guild_id, daily_limit, monthly_limit, user_daily_limit, user_active_requests)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (guild_id) DO UPDATE SET
  daily_limit = coalesce(excluded.daily_limit, guild_settings.daily_limit),
  monthly_limit = coalesce(excluded.monthly_limit, guild_settings.monthly_limit),
  user_daily_limit = coalesce(excluded.user_daily_limit, guild_settings.user_daily_limit),
  user_active_requests =
    coalesce(excluded.user_active_requests, guild_settings.user_active_requests)
"""


class PostgresGuildSettings:
    """Each method is one short transaction (or one statement)."""

    def __init__(self, db: Database, policy: QuotaPolicy) -> None:
        self._db = db
        self._policy = policy

    async def guild_limits(self, guild_id: int) -> GuildLimits:
        """The guild's effective limits: a moderator's override, else the policy's default."""
        return await self._db.read(lambda conn: self._limits(conn, guild_id))

    async def _limits(self, conn: Conn, guild_id: int) -> GuildLimits:
        cursor = await conn.execute(
            "SELECT daily_limit, monthly_limit, user_daily_limit, user_active_requests "
            "FROM guild_settings WHERE guild_id = %s",
            (guild_id,),
        )
        row = await cursor.fetchone()
        cursor = await conn.execute(
            "SELECT role_id, per_user FROM role_allowances WHERE guild_id = %s "
            "ORDER BY per_user DESC, role_id",
            (guild_id,),
        )
        roles = await cursor.fetchall()
        limits = quota_rules.effective_limits(self._policy, row or (None, None, None, None))
        return dataclasses.replace(limits, role_allowances=tuple((r[0], r[1]) for r in roles))

    async def reset_limits(self, guild_id: int, names: Sequence[str]) -> GuildLimits:
        """Drop the guild's overrides of ``names``: those limits are the defaults again."""
        unknown = set(names) - set(_RESETS)
        if unknown:
            raise ValueError(f"unknown limits: {sorted(unknown)}")

        async def work(conn: Conn) -> GuildLimits:
            for name in names:
                await conn.execute(_RESETS[name].encode(), (guild_id,))
            return await self._limits(conn, guild_id)

        return await self._db.write(work)

    async def set_role_allowance(
        self, guild_id: int, role_id: int, per_user: int | None
    ) -> GuildLimits:
        """Give a role's members their own daily allowance, or (None) remove it."""
        check_limit(per_user, "per_user")

        async def work(conn: Conn) -> GuildLimits:
            if per_user is None:
                await conn.execute(
                    "DELETE FROM role_allowances WHERE guild_id = %s AND role_id = %s",
                    (guild_id, role_id),
                )
            else:
                await conn.execute(
                    "INSERT INTO role_allowances (guild_id, role_id, per_user) "
                    "VALUES (%s, %s, %s) ON CONFLICT (guild_id, role_id) "
                    "DO UPDATE SET per_user = excluded.per_user",
                    (guild_id, role_id, per_user),
                )
            return await self._limits(conn, guild_id)

        return await self._db.write(work)

    async def set_limits(
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

        async def work(conn: Conn) -> GuildLimits:
            await conn.execute(_SET_LIMITS, (guild_id, daily, monthly, per_user, active_requests))
            return await self._limits(conn, guild_id)

        return await self._db.write(work)

    async def set_log_channel(self, guild_id: int, channel_id: int | None) -> None:
        """Where moderators' notices for this guild go; None turns them off."""
        await self._statement(
            "INSERT INTO guild_settings (guild_id, log_channel_id) VALUES (%s, %s) "
            "ON CONFLICT (guild_id) DO UPDATE SET log_channel_id = excluded.log_channel_id",
            (guild_id, channel_id),
        )

    async def log_channel(self, guild_id: int) -> int | None:
        row = await self._db.fetch_one(
            "SELECT log_channel_id FROM guild_settings WHERE guild_id = %s", (guild_id,)
        )
        return None if row is None else row[0]

    async def claim_alert(
        self, guild_id: int, period: str, period_start: datetime, threshold: int, now: datetime
    ) -> bool:
        """Remember that a quota alert was sent; True only the first time for that window."""
        if period not in ALERT_PERIODS:
            raise ValueError(f"period must be one of {ALERT_PERIODS}")
        claimed = await self._statement(
            "INSERT INTO quota_alerts (guild_id, period, period_start, threshold, sent_at) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (guild_id, period, utc(period_start), threshold, utc(now)),
        )
        return claimed == 1

    async def claim_budget_notice(self, now: datetime) -> bool:
        """Remember that the operator was told the day's budget is spent; True the first time."""
        claimed = await self._statement(
            "INSERT INTO budget_notices (day, sent_at) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (utc(now).date(), utc(now)),
        )
        return claimed == 1

    async def command_digest(self, scope: str) -> str | None:
        """The digest of the slash commands last synced for ``scope`` (global or a guild)."""
        row = await self._db.fetch_one(
            "SELECT digest FROM command_digests WHERE scope = %s", (scope,)
        )
        return None if row is None else str(row[0])

    async def remember_command_digest(self, scope: str, digest: str) -> None:
        await self._statement(
            "INSERT INTO command_digests (scope, digest) VALUES (%s, %s) "
            "ON CONFLICT (scope) DO UPDATE SET digest = excluded.digest",
            (scope, digest),
        )

    @contextlib.asynccontextmanager
    async def syncing(self) -> AsyncIterator[None]:
        """One process at a time checks and syncs the slash commands, under a session lock
        on a connection of the pool (let go when the process ends, however it ends); the
        next finds them synced. It waits as long as a sync may take, not the busy timeout."""
        async with self._db.connection() as conn:
            with errors_explained():
                async with conn.transaction():
                    await conn.execute("SET LOCAL lock_timeout = '120s'")
                    await conn.execute(
                        "SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, COMMAND_SYNC_LOCK)
                    )
            try:
                yield
            finally:
                try:
                    await conn.execute(
                        "SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, COMMAND_SYNC_LOCK)
                    )
                except psycopg.Error:
                    # Never back in the pool with the lock: closing it lets go of the lock.
                    await conn.close()

    async def _statement(self, sql: str, params: tuple[object, ...]) -> int:
        """One statement, its own transaction; how many rows it changed."""

        async def work(conn: Conn) -> int:
            cursor = await conn.execute(sql.encode(), params)
            return cursor.rowcount

        return await self._db.write(work, atomic=False)
