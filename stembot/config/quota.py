"""The quota policy: default limits in units, each mode's cost, and the operator's ceilings
on what a server's moderators may set."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from stembot.config import kinds
from stembot.config.declaring import GROUP, PER_MODE, Setting, name_of, setting
from stembot.models import Mode

_QUOTAS = "Quotas (units; moderators can override per server)"
_CAPS = "The operator's caps (empty = none)"


def _cost(mode: Mode) -> Setting:
    """STEMBOT_COST_<MODE>, from the mode's line in models.py; no default there: required."""
    return Setting(
        f"STEMBOT_COST_{mode.name}",
        mode.default_cost,
        kinds.AT_LEAST_0,
        _QUOTAS,
        "What each mode costs in units.",
        required="never" if mode.default_cost is not None else "always",
    )


def _default_costs() -> dict[Mode, int]:
    return {mode: mode.default_cost for mode in Mode if mode.default_cost is not None}


_CAPS_HELP = (
    "The highest daily / monthly limit a server's moderators may set (the defaults must fit)."
)


# fmt: off
# (One setting to a few lines: name, default, kind and section, then its help.)


@dataclass(frozen=True)
class QuotaPolicy:
    """Default limits (in units) and the cost of each mode; moderators override per guild."""

    guild_daily_limit: int = setting(
        "STEMBOT_GUILD_DAILY_LIMIT", 50, kinds.AT_LEAST_0, _QUOTAS,
        "Units a server may use per day (resets 00:00 UTC); 0 switches the bot off for servers.",
    )
    guild_monthly_limit: int = setting(
        "STEMBOT_GUILD_MONTHLY_LIMIT", 500, kinds.AT_LEAST_0, _QUOTAS,
        "Units a server may use per calendar month (resets on the 1st, 00:00 UTC).",
    )
    user_daily_limit: int = setting(
        "STEMBOT_USER_DAILY_LIMIT", 10, kinds.AT_LEAST_0, _QUOTAS,
        "Units one member may use per day in a server.",
    )
    user_active_jobs: int = setting(
        "STEMBOT_USER_ACTIVE_JOBS", 1, kinds.AT_LEAST_1, _QUOTAS,
        "Requests one member may have queued or running at once.",
    )
    costs: Mapping[Mode, int] = field(default_factory=_default_costs, metadata={PER_MODE: _cost})
    # The operator's ceilings on what a server's moderators may set (None: no ceiling).
    max_guild_daily_limit: int | None = setting(
        "STEMBOT_MAX_GUILD_DAILY_LIMIT", None, kinds.AT_LEAST_0, _CAPS, _CAPS_HELP
    )
    max_guild_monthly_limit: int | None = setting(
        "STEMBOT_MAX_GUILD_MONTHLY_LIMIT", None, kinds.AT_LEAST_0, _CAPS, _CAPS_HELP
    )
    api_daily_budget: int | None = setting(
        "STEMBOT_API_DAILY_BUDGET", None, kinds.AT_LEAST_0, _CAPS,
        "Paid Soundverse calls per UTC day across all servers; then only repeats and shared calls.",
    )

    def cost_of(self, mode: Mode) -> int:
        return self.costs[mode]


# fmt: on


@dataclass(frozen=True)
class QuotaSettings:
    """The quota policy, as one group of the settings."""

    quota: QuotaPolicy = field(default_factory=QuotaPolicy, metadata={GROUP: QuotaPolicy})


def defaults_above_ceilings(quota: QuotaPolicy) -> list[str]:
    """A default limit must itself be one a moderator could set."""
    problems = []
    for default_field, ceiling_field in (
        ("guild_daily_limit", "max_guild_daily_limit"),
        ("guild_monthly_limit", "max_guild_monthly_limit"),
    ):
        default, ceiling = getattr(quota, default_field), getattr(quota, ceiling_field)
        if ceiling is not None and default > ceiling:
            problems.append(
                f"{name_of(QuotaPolicy, default_field)} ({default}) is above "
                f"{name_of(QuotaPolicy, ceiling_field)} ({ceiling}): "
                f"lower the default or raise the ceiling"
            )
    return problems
