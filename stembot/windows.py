"""UTC days and months, and the stamps the ledger stores moments as. Plain values, no I/O.

Every quota window is a UTC day or a UTC calendar month, whatever the caller's offset.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta


def utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("the store needs timezone-aware datetimes (UTC)")
    return moment.astimezone(UTC)


def stamp(moment: datetime) -> str:
    """Fixed-width ISO-8601 UTC text: sorts like the moments it names."""
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(text: str | datetime | None) -> datetime | None:
    """A stored moment: a stamp from SQLite, or the datetime PostgreSQL's timestamptz gives."""
    if text is None or isinstance(text, datetime):
        return text
    return datetime.fromisoformat(text)


def iso_seconds(text: str | None) -> str:
    moment = parse_stamp(text)
    return "" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def day_window(now: datetime) -> tuple[datetime, datetime]:
    """The UTC day holding ``now``: [00:00, next 00:00)."""
    start = utc(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def month_window(now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month holding ``now``: [the 1st 00:00, next 1st 00:00)."""
    start = utc(now).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


@functools.lru_cache(maxsize=4)
def window_stamps(day: date) -> tuple[str, str, str, str]:
    """The stamps bounding the day and the month of ``day`` (cached: every call needs them)."""
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    day_start, day_end = day_window(moment)
    month_start, month_end = month_window(moment)
    return stamp(day_start), stamp(day_end), stamp(month_start), stamp(month_end)
