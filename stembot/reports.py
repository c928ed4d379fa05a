"""Usage reports shaped from the store's grouped rows. Plain values, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from stembot.models import DailySpend, EventUsage, Mode, UsageLine, UsageReport
from stembot.windows import utc

# A grouped row: (key, requests, units charged, requests refunded).
Grouped = Sequence[Sequence[Any]]


def usage_report(
    guild_id: int,
    since: datetime,
    until: datetime,
    grouped: tuple[Grouped, Grouped, Grouped],
    *,
    top: int,
    events: Grouped = (),
) -> UsageReport:
    """Totals, by user (most units first), by mode and by UTC day, from the rows grouped by
    user, by mode and by day; the remix events' calls from rows of (event id, title,
    requests, units charged, requests refunded)."""
    users, modes, days = grouped
    by_user = [(row[0], _line(row)) for row in users]
    by_mode = [(Mode(row[0]), _line(row)) for row in modes]
    by_day = [(date.fromisoformat(row[0]), _line(row)) for row in days]
    by_user.sort(key=lambda item: (-item[1].units, -item[1].requests, item[0]))
    lines = [line for _, line in by_mode]
    total = UsageLine(
        requests=sum(line.requests for line in lines),
        units=sum(line.units for line in lines),
        refunded=sum(line.refunded for line in lines),
    )
    return UsageReport(
        guild_id=guild_id,
        since=utc(since),
        until=utc(until),
        total=total,
        by_user=tuple(by_user),
        by_mode=tuple(by_mode),
        by_day=tuple(by_day),
        top_users=tuple(by_user[:top]),
        by_event=tuple(EventUsage(row[0], row[1], _line(row[1:])) for row in events),
    )


def daily_spend(calls: Grouped, units: Grouped) -> list[DailySpend]:
    """One line per UTC day and server from (day, guild, calls) and (day, guild, units) rows."""
    spend: dict[tuple[str, int], list[int]] = {}
    for day, guild_id, count in calls:
        spend.setdefault((day, guild_id), [0, 0])[0] = count
    for day, guild_id, charged in units:
        spend.setdefault((day, guild_id), [0, 0])[1] = charged
    return [
        DailySpend(date.fromisoformat(day), guild_id, figures[0], figures[1])
        for (day, guild_id), figures in sorted(spend.items())
    ]


def _line(row: Sequence[Any]) -> UsageLine:
    return UsageLine(requests=row[1], units=row[2], refunded=row[3])
