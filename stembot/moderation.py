"""What moderators ask of the ledger: usage, limits, the export, refunds and quota alerts.

Plain values in and out (no discord): the `/stems-admin` cog renders what this returns, and
posts the alerts it decides on.
"""

from __future__ import annotations

import asyncio
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from stembot.errors import ModerationError, NotRefundableError, RequestNotFoundError
from stembot.models import GuildLimits, Mode, QuotaStatus, Request, RequestStatus, UsageReport
from stembot.quota_rules import MAX_LIMIT
from stembot.store.interface import LedgerStore
from stembot.windows import day_window, month_window

Clock = Callable[[], datetime]

# Percentages of a window at which the log channel hears about it, once per window each.
ALERT_THRESHOLDS = (80, 100)
TOP_USERS = 5
# What `reset` may name: one limit, or all of them.
RESETTABLE = ("daily", "monthly", "per_user", "all")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True)
class UsageOverview:
    """Everything `/stems-admin usage` shows: windows against limits, today's and the month's
    requests by mode and by member."""

    now: datetime
    quota: QuotaStatus
    limits: GuildLimits
    today: UsageReport
    month: UsageReport
    costs: Mapping[Mode, int]


@dataclass(frozen=True, slots=True)
class LedgerExport:
    """The ledger of ``[since, until)`` written to a file, ready to attach if it fits.

    A CSV that is larger than the upload limit is zipped (a ledger compresses about tenfold,
    and every system opens a .zip); if even that is too large, ``path`` is None and ``parts``
    are shorter periods, each expected to fit, that together cover the one asked for.
    """

    filename: str
    path: Path | None
    size: int
    csv_size: int
    rows: int
    requests: int
    since: datetime
    until: datetime
    parts: tuple[tuple[date, date], ...] = ()

    @property
    def zipped(self) -> bool:
        return self.filename.endswith(".zip")


@dataclass(frozen=True, slots=True)
class Refund:
    """A request whose units a moderator gave back."""

    request: Request
    units: int


@dataclass(frozen=True, slots=True)
class QuotaAlert:
    """The guild just reached ``threshold`` percent of its daily or monthly window."""

    guild_id: int
    channel_id: int
    period: str  # "day" or "month", as the store names them
    threshold: int
    used: int
    limit: int
    resets_at: datetime


class ModerationService:
    """The moderators' side of the ledger: short store calls, and the export, written and
    zipped off the event loop."""

    def __init__(self, store: LedgerStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    # --- usage --------------------------------------------------------------------------

    async def usage(self, guild_id: int) -> UsageOverview:
        now = self._clock()
        day_start, day_end = day_window(now)
        month_start, month_end = month_window(now)
        reports = self._store.reports
        quota, limits, today, month = await asyncio.gather(
            self._store.quotas.quota_status(guild_id, None, now),
            self._store.guilds.guild_limits(guild_id),
            reports.usage_report(guild_id, day_start, day_end, top=TOP_USERS),
            reports.usage_report(guild_id, month_start, month_end, top=TOP_USERS),
        )
        return UsageOverview(
            now=now,
            quota=quota,
            limits=limits,
            today=today,
            month=month,
            costs=self._store.policy.costs,
        )

    # --- limits -------------------------------------------------------------------------

    async def set_limits(
        self,
        guild_id: int,
        *,
        daily: int | None = None,
        monthly: int | None = None,
        per_user: int | None = None,
        role_id: int | None = None,
        reset: str | None = None,
    ) -> GuildLimits:
        """Override the given limits (the others stay), or ``reset`` some to the default;
        with ``role_id``, set or remove that role's per-member allowance instead.

        Returns the limits now in force. A value above the operator's ceiling is refused.
        """
        given = {"daily": daily, "monthly": monthly, "per_user": per_user}
        if reset is not None and reset not in RESETTABLE:
            raise ModerationError(f"`reset` must be one of {', '.join(RESETTABLE)}.")
        for name, value in given.items():
            if value is not None and not 0 <= value <= MAX_LIMIT:
                raise ModerationError(f"`{name}` must be a whole number from 0 to {MAX_LIMIT:,}.")
        if role_id is not None:
            return await self._set_role_allowance(
                guild_id, role_id, daily, monthly, per_user, reset
            )
        if all(value is None for value in given.values()) and reset is None:
            raise ModerationError(
                "Give at least one of `daily`, `monthly` or `per_user` (units, 0 turns it off), "
                "or `reset` to go back to the default."
            )
        names = _reset_names(reset)
        clash = [name for name in names if given[name] is not None]
        if clash:
            raise ModerationError(
                f"`{clash[0]}` can't be both set and reset; give one or the other."
            )
        self._check_ceilings(daily, monthly)
        if names:
            await self._store.guilds.reset_limits(guild_id, names)
        if any(value is not None for value in given.values()):
            return await self._store.guilds.set_limits(
                guild_id, daily=daily, monthly=monthly, per_user=per_user
            )
        return await self._store.guilds.guild_limits(guild_id)

    def _check_ceilings(self, daily: int | None, monthly: int | None) -> None:
        policy = self._store.policy
        for name, value, ceiling in (
            ("daily", daily, policy.max_guild_daily_limit),
            ("monthly", monthly, policy.max_guild_monthly_limit),
        ):
            if value is not None and ceiling is not None and value > ceiling:
                raise ModerationError(
                    f"This bot's operator caps the {name} limit at {ceiling:,} units. "
                    f"Choose {ceiling:,} or less."
                )

    async def _set_role_allowance(
        self,
        guild_id: int,
        role_id: int,
        daily: int | None,
        monthly: int | None,
        per_user: int | None,
        reset: str | None,
    ) -> GuildLimits:
        if daily is not None or monthly is not None:
            raise ModerationError(
                "A role gets only a `per_user` allowance; set `daily` and `monthly` without `role`."
            )
        if reset is not None:
            if per_user is not None:
                raise ModerationError("Give `per_user` or `reset` with `role`, not both.")
            return await self._store.guilds.set_role_allowance(guild_id, role_id, None)
        if per_user is None:
            raise ModerationError(
                "With `role`, give `per_user` (units a day for its members) or `reset` "
                "(to remove the role's allowance)."
            )
        server_daily = (await self._store.guilds.guild_limits(guild_id)).daily
        if per_user > server_daily:
            raise ModerationError(
                f"A role's allowance can't be above this server's daily limit "
                f"({server_daily:,} units). Choose {server_daily:,} or less."
            )
        return await self._store.guilds.set_role_allowance(guild_id, role_id, per_user)

    # --- the export ---------------------------------------------------------------------

    def export_period(self, since: str | None, until: str | None) -> tuple[datetime, datetime]:
        """``[start, end)`` from the day ``since`` through the day ``until`` (UTC, both
        included); raises ModerationError for a bad date. Defaults: this month through today.
        """
        now = self._clock()
        start = month_window(now)[0] if since is None else _day_start(since, "since")
        # Up to now is through today: nothing in the ledger is later than now.
        last = day_window(now)[0] if until is None else _day_start(until, "until")
        end = last + timedelta(days=1)
        if start >= end:
            raise ModerationError(
                "`since` must come before `until` (dates are YYYY-MM-DD, UTC, both included)."
            )
        return start, end

    async def export(
        self, guild_id: int, since: str | None, until: str | None, *, max_bytes: int, folder: Path
    ) -> LedgerExport:
        """The ledger of the period as a file in ``folder`` (the caller removes it): the CSV,
        zipped if too large, or how to split the period when even that is.

        Written page by page on a reader thread with its own database connection, zipped in
        another thread: a ledger of any size neither holds up the event loop nor sits in
        memory whole.
        """
        start, end = self.export_period(since, until)
        return await self.write_export(guild_id, start, end, max_bytes=max_bytes, folder=folder)

    async def write_export(
        self, guild_id: int, start: datetime, end: datetime, *, max_bytes: int, folder: Path
    ) -> LedgerExport:
        last = end - timedelta(days=1)
        name = f"stembot-ledger-{guild_id}-{start:%Y-%m-%d}-to-{last:%Y-%m-%d}.csv"
        csv_path = folder / name
        rows, requests = await self._store.reports.write_ledger_csv(guild_id, start, end, csv_path)
        csv_size, zip_path, zip_size = await asyncio.to_thread(_fit, csv_path, max_bytes)
        if zip_path is None:
            return LedgerExport(name, csv_path, csv_size, csv_size, rows, requests, start, end)
        if zip_size <= max_bytes:
            return LedgerExport(
                zip_path.name, zip_path, zip_size, csv_size, rows, requests, start, end
            )
        await asyncio.to_thread(zip_path.unlink)
        days = await self._store.reports.ledger_days(guild_id, start, end)
        per_row = zip_size / max(rows, 1)
        parts = _periods_that_fit(days, start.date(), last.date(), per_row, max_bytes)
        return LedgerExport(
            zip_path.name, None, zip_size, csv_size, rows, requests, start, end, parts
        )

    # --- refunds ------------------------------------------------------------------------

    async def refund(self, guild_id: int, request_id: int) -> Refund:
        """Give back a finished request's units, once; raises ModerationError otherwise."""
        ledger = self._store.ledger
        refunded = await ledger.refund_by_moderator(request_id, guild_id, self._clock())
        request = await ledger.get_request(request_id)
        if request is None or request.guild_id != guild_id:
            raise RequestNotFoundError(
                f"There is no request {request_id} on this server. Request ids are in the "
                "`request_id` column of `/stems-admin export`."
            )
        if refunded:
            return Refund(request, request.cost)
        raise NotRefundableError(_why_not_refundable(request))

    # --- the log channel and its alerts -------------------------------------------------

    async def set_log_channel(self, guild_id: int, channel_id: int | None) -> None:
        await self._store.guilds.set_log_channel(guild_id, channel_id)

    async def alerts_due(self, guild_id: int) -> list[QuotaAlert]:
        """The alerts to post now that the guild's usage went up, each once per window.

        Nothing is claimed while the guild has no log channel, so a channel set later still
        hears about the current window. When a jump passes 80% and 100% at once, only the
        100% alert is posted (the 80% one is claimed with it).
        """
        channel_id = await self._store.guilds.log_channel(guild_id)
        if channel_id is None:
            return []
        now = self._clock()
        quota = await self._store.quotas.quota_status(guild_id, None, now)
        windows = (
            ("day", day_window(now)[0], quota.guild_daily),
            ("month", month_window(now)[0], quota.guild_monthly),
        )
        alerts = []
        for period, period_start, window in windows:
            claimed = [
                threshold
                for threshold in _thresholds_reached(window.used, window.limit)
                if await self._store.guilds.claim_alert(
                    guild_id, period, period_start, threshold, now
                )
            ]
            if claimed:
                alerts.append(
                    QuotaAlert(
                        guild_id=guild_id,
                        channel_id=channel_id,
                        period=period,
                        threshold=max(claimed),
                        used=window.used,
                        limit=window.limit,
                        resets_at=window.resets_at,
                    )
                )
        return alerts


def _fit(csv_path: Path, max_bytes: int) -> tuple[int, Path | None, int]:
    """The CSV's size, and the zip made of it when the CSV is too large, with its size (the
    CSV is then removed)."""
    csv_size = csv_path.stat().st_size
    if csv_size <= max_bytes:
        return csv_size, None, csv_size
    zip_path = csv_path.with_suffix(".zip")
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        archive.write(csv_path, arcname=csv_path.name)
    csv_path.unlink()
    return csv_size, zip_path, zip_path.stat().st_size


def _reset_names(reset: str | None) -> list[str]:
    if reset is None:
        return []
    return ["daily", "monthly", "per_user"] if reset == "all" else [reset]


def _periods_that_fit(
    days: list[tuple[date, int]], first: date, last: date, bytes_per_row: float, max_bytes: int
) -> tuple[tuple[date, date], ...]:
    """Consecutive periods covering ``first``..``last`` whose zipped export should each fit.

    Estimated from the rows per day and the zipped size per row just measured, with a margin
    because some days compress less well than the average.
    """
    budget = max_bytes * 0.8
    parts: list[tuple[date, date]] = []
    part_start, part_bytes = first, 0.0
    for day, rows in days:
        day_bytes = rows * bytes_per_row
        if part_bytes and part_bytes + day_bytes > budget:
            parts.append((part_start, day - timedelta(days=1)))
            part_start, part_bytes = day, 0.0
        part_bytes += day_bytes
    parts.append((part_start, last))
    return tuple(parts)


def _thresholds_reached(used: int, limit: int) -> list[int]:
    if limit <= 0:
        # A switched-off server is a moderator's choice, not news for the log channel.
        return []
    return [t for t in ALERT_THRESHOLDS if used * 100 >= t * limit]


def _day_start(text: str, name: str) -> datetime:
    cleaned = text.strip()
    try:
        if not _DATE.fullmatch(cleaned):
            raise ValueError(cleaned)
        day = date.fromisoformat(cleaned)
    except ValueError:
        raise ModerationError(
            f"`{name}` must be a date written YYYY-MM-DD (UTC), for example 2026-05-01."
        ) from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


_HOW_REFUNDED = {
    RequestStatus.FAILED: "it failed",
    RequestStatus.CANCELLED: "it was cancelled",
    RequestStatus.INTERRUPTED: "it was interrupted",
}


def _why_not_refundable(request: Request) -> str:
    if request.status.is_active:
        return (
            f"Request {request.id} is still {request.status.value}. A request that fails is "
            "refunded automatically; refund it once it has finished if it still needs one."
        )
    if request.status in _HOW_REFUNDED:
        how = "by a moderator" if request.refunded_by_moderator else _HOW_REFUNDED[request.status]
        return f"Request {request.id} was already refunded ({how}); nothing changed."
    return f"Request {request.id} cost nothing (it reused an earlier result); nothing to refund."
