"""Which limits hold for a server and a member, whether a request fits them, and what a refusal
tells the member. Plain values, no I/O: the store reads the usage (inside the reservation's
transaction) and asks these rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from stembot.config import QuotaPolicy
from stembot.errors import QuotaLimitReached
from stembot.models import GuildLimits, QuotaLimit, QuotaStatus, WindowStatus
from stembot.windows import day_window, month_window, utc

# Largest limit a moderator or operator may set; far above any real budget, well inside int64.
MAX_LIMIT = 1_000_000_000


def check_limit(value: int | None, name: str) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT
    ):
        raise ValueError(f"{name} must be a whole number from 0 to {MAX_LIMIT}")


def effective_limits(policy: QuotaPolicy, overrides: Sequence[int | None]) -> GuildLimits:
    """A server's limits: its moderators' overrides (daily, monthly, per_user, active_requests;
    None for none) over the policy's defaults, within the operator's ceilings."""
    p = policy
    defaults = (p.guild_daily_limit, p.guild_monthly_limit, p.user_daily_limit)
    names = ("daily", "monthly", "per_user", "active_requests")
    values = [
        d if o is None else o
        for o, d in zip(overrides, (*defaults, p.user_active_jobs), strict=True)
    ]
    # The operator's ceilings bind every server, even a limit set before they were.
    capped = set()
    for index, name, ceiling in (
        (0, "daily", p.max_guild_daily_limit),
        (1, "monthly", p.max_guild_monthly_limit),
    ):
        if ceiling is not None and values[index] > ceiling:
            values[index] = ceiling
            capped.add(name)
    return GuildLimits(
        daily=values[0],
        monthly=values[1],
        per_user=values[2],
        active_requests=values[3],
        overridden=frozenset(n for n, o in zip(names, overrides, strict=True) if o is not None),
        capped=frozenset(capped),
    )


def member_limit(limits: GuildLimits, role_allowance: int | None) -> int:
    """A role's allowance replaces the per-member limit, never beyond the server's day."""
    return limits.per_user if role_allowance is None else min(role_allowance, limits.daily)


class Snapshot(NamedTuple):
    """What a reservation is checked against, read in one statement."""

    duplicate: bool
    limits: GuildLimits
    today: int
    month: int
    user_today: int
    user_active: int
    member_limit: int
    limit_from_role: bool = False


def quota_status(
    seen: Snapshot, *, with_member: bool, now: datetime, budget_spent: bool
) -> QuotaStatus:
    """Used, limit, remaining and reset time of the server's windows (and the member's)."""
    limits = seen.limits
    day_end = day_window(now)[1]
    return QuotaStatus(
        guild_daily=_window_status(seen.today, limits.daily, day_end),
        guild_monthly=_window_status(seen.month, limits.monthly, month_window(now)[1]),
        user_daily=_window_status(seen.user_today, seen.member_limit, day_end)
        if with_member
        else None,
        user_active_requests=seen.user_active if with_member else None,
        user_active_limit=limits.active_requests,
        user_limit_from_role=with_member and seen.limit_from_role,
        api_budget_spent=budget_spent,
    )


def _window_status(used: int, limit: int, resets_at: datetime) -> WindowStatus:
    return WindowStatus(used=used, limit=limit, remaining=max(0, limit - used), resets_at=resets_at)


def member_has_room(seen: Snapshot, cost: int) -> bool:
    """Whether the member's own daily allowance takes ``cost`` more (a handed-over charge)."""
    return cost == 0 or seen.user_today + cost <= seen.member_limit


def server_has_room(seen: Snapshot, cost: int) -> bool:
    """Whether the server's month and day take ``cost`` more (a charge passed to a request of
    another server)."""
    limits = seen.limits
    switched_off = limits.monthly == 0 or limits.daily == 0
    return (
        not switched_off
        and seen.month + cost <= limits.monthly
        and seen.today + cost <= limits.daily
    )


def enforce(seen: Snapshot, cost: int, now: datetime) -> None:
    """Raise for the limit that binds longest: month, then day, then the user's day, then the
    requests in progress."""
    enforce_server(seen, cost, now)
    limits = seen.limits
    user_today, user_active = seen.user_today, seen.user_active
    day_end = day_window(now)[1]
    member_limit = seen.member_limit
    if member_limit == 0 or user_today + cost > member_limit:
        raise _refusal(QuotaLimit.USER_DAILY, member_limit, user_today, cost, day_end, now)
    if user_active >= limits.active_requests:
        raise _refusal(QuotaLimit.USER_ACTIVE, limits.active_requests, user_active, cost, None, now)


def enforce_server(seen: Snapshot, cost: int, now: datetime) -> None:
    """Raise when the server's month, then its day, cannot take ``cost`` (a call the server
    alone carries, such as a remix event's, is checked against these and no member's)."""
    limits = seen.limits
    if limits.monthly == 0 or seen.month + cost > limits.monthly:
        month_end = month_window(now)[1]
        raise _refusal(QuotaLimit.GUILD_MONTHLY, limits.monthly, seen.month, cost, month_end, now)
    if limits.daily == 0 or seen.today + cost > limits.daily:
        day_end = day_window(now)[1]
        raise _refusal(QuotaLimit.GUILD_DAILY, limits.daily, seen.today, cost, day_end, now)


def enforce_budget(budget: int | None, calls_today: int, now: datetime) -> None:
    """Raise when the bot-wide daily budget of paid API calls is spent."""
    if budget is not None and calls_today >= budget:
        raise _budget_refusal(budget, now)


def _refusal(
    which: QuotaLimit,
    limit: int,
    used: int,
    cost: int,
    resets_at: datetime | None,
    now: datetime,
) -> QuotaLimitReached:
    if which is QuotaLimit.USER_ACTIVE:
        return QuotaLimitReached(which, _active_message(limit, used), None)
    assert resets_at is not None
    if limit == 0:
        return QuotaLimitReached(which, _SWITCHED_OFF[which], None)
    whose, period = {
        QuotaLimit.GUILD_MONTHLY: ("This server has used {used} of its {limit}", "monthly"),
        QuotaLimit.GUILD_DAILY: ("This server has used {used} of its {limit}", "daily"),
        QuotaLimit.USER_DAILY: ("You have used {used} of your {limit}", "daily"),
    }[which]
    return QuotaLimitReached(
        which,
        whose.format(used=used, limit=limit) + f" {period} units and this request needs {cost}. "
        f"The {period} limit resets at {_when(resets_at, now)}.",
        resets_at,
    )


_SWITCHED_OFF = {
    QuotaLimit.GUILD_MONTHLY: (
        "stembot is switched off on this server (its monthly limit is 0 units). "
        "A moderator can raise it."
    ),
    QuotaLimit.GUILD_DAILY: (
        "stembot is switched off on this server (its daily limit is 0 units). "
        "A moderator can raise it."
    ),
    QuotaLimit.USER_DAILY: (
        "Members can't start requests on this server (the per-member daily limit is 0 units). "
        "A moderator can raise it."
    ),
}


def _budget_refusal(budget: int, now: datetime) -> QuotaLimitReached:
    day_end = day_window(now)[1]
    return QuotaLimitReached(
        QuotaLimit.API_BUDGET,
        f"stembot has made all the new separations it can today ({budget} across all "
        f"servers). New songs can be split again after {_when(day_end, now)}; songs already "
        "split recently are still answered.",
        day_end,
    )


def _active_message(limit: int, active: int) -> str:
    if limit == 0:
        return (
            "Members can't start requests on this server (at most 0 at once). "
            "A moderator can raise it."
        )
    if limit == 1:
        return (
            "You already have a request queued or running. Wait for it to finish, then try again."
        )
    return (
        f"You already have {active} requests queued or running, the most allowed at once. "
        "Wait for one to finish, then try again."
    )


def _when(resets_at: datetime, now: datetime) -> str:
    left = resets_at - utc(now)
    hours, rest = divmod(int(left.total_seconds()) + 59, 3600)
    minutes = rest // 60
    wait = f"{hours} h {minutes} min" if hours < 48 else f"{left.days + 1} days"
    return f"{resets_at:%Y-%m-%d %H:%M} UTC (in {wait})"
