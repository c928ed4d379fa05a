"""`stembot quota show|set` and `stembot usage`: operators' view of the ledger, on either
store (the SQLite file, or the PostgreSQL database of STEMBOT_DATABASE_URL).

Every argument is checked before the database is opened, so a typo changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Any

from stembot.cli.ledger import ledger_name, open_ledger
from stembot.config import QuotaPolicy, load_settings
from stembot.errors import ConfigError, StembotError
from stembot.ledger_csv import write_spend_csv
from stembot.models import DailySpend, GuildLimits, QuotaStatus, UsageLine, UsageReport
from stembot.quota_rules import MAX_LIMIT
from stembot.store.interface import LedgerStore
from stembot.windows import month_window

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_GUILD_HELP = "the Discord server (guild) id, digits only"
_LIMIT_OPTIONS = (
    ("--daily", "daily", "units the server may use per UTC day"),
    ("--monthly", "monthly", "units the server may use per UTC calendar month"),
    ("--per-user", "per_user", "units one member may use per UTC day"),
    ("--active", "active_requests", "requests one member may have queued or running at once"),
)


class _BadArgument(Exception):
    """An operator's argument is wrong; the message says what and how to fix it."""


def register(subparsers: Any) -> None:
    quota: argparse.ArgumentParser = subparsers.add_parser(
        "quota",
        help="show or set a server's quota limits",
        description="Show or set a server's quota limits (units per day, month, member).",
    )
    actions = quota.add_subparsers(dest="quota_action", required=True, metavar="ACTION")

    show = actions.add_parser(
        "show", help="a server's limits and usage", description="Show a server's limits and usage."
    )
    show.add_argument("guild", metavar="GUILD", help=_GUILD_HELP)
    show.set_defaults(handler=handle_show)

    set_ = actions.add_parser(
        "set",
        help="override a server's limits",
        description="Override some of a server's limits; the others stay as they are.",
    )
    set_.add_argument("guild", metavar="GUILD", help=_GUILD_HELP)
    for flag, dest, text in _LIMIT_OPTIONS:
        set_.add_argument(flag, dest=dest, metavar="N", help=f"{text} (0 allows none)")
    set_.set_defaults(handler=handle_set)

    reset = actions.add_parser(
        "reset",
        help="give a server its default limits back",
        description="Drop a server's own limits: the named ones (all of them if none is named) "
        "are the defaults from the settings again.",
    )
    reset.add_argument("guild", metavar="GUILD", help=_GUILD_HELP)
    for flag, dest, text in _LIMIT_OPTIONS:
        reset.add_argument(flag, dest=dest, action="store_true", help=f"{text}: the default")
    reset.set_defaults(handler=handle_reset)

    usage = subparsers.add_parser(
        "usage",
        help="a server's usage report, or its ledger as CSV",
        description="Report a server's usage since a date (UTC), or export the ledger as CSV.",
    )
    usage.add_argument("guild", metavar="GUILD", nargs="?", help=_GUILD_HELP)
    usage.add_argument(
        "--all",
        dest="all_servers",
        action="store_true",
        help="every server instead of one: paid API calls and units per UTC day and server",
    )
    usage.add_argument(
        "--since", metavar="DATE", help="first UTC day, YYYY-MM-DD (default: the 1st of this month)"
    )
    usage.add_argument(
        "--csv", action="store_true", help="write the ledger (one row per request) as CSV"
    )
    usage.set_defaults(handler=handle_usage)


# --- handlers ---------------------------------------------------------------------------------


def handle_show(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return _run(lambda: _show(args, env))


def handle_set(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return _run(lambda: _set(args, env))


def handle_reset(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return _run(lambda: _reset(args, env))


def handle_usage(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.all_servers:
        return _run(lambda: _usage_all(args, env))
    return _run(lambda: _usage(args, env))


def _run(action: Callable[[], Awaitable[int]]) -> int:
    try:
        return asyncio.run(_awaited(action))
    except _BadArgument as problem:
        _fail(str(problem))
        return EXIT_USAGE
    except ConfigError:
        raise  # the entry point names every problem and exits 2
    except StembotError as error:
        _fail(error.user_message)
        return EXIT_FAILED


async def _awaited(action: Callable[[], Awaitable[int]]) -> int:
    return await action()


def _fail(message: str) -> None:
    print(f"stembot: {message}", file=sys.stderr)


@asynccontextmanager
async def _opened(env: Mapping[str, str]) -> AsyncIterator[LedgerStore]:
    """The bot's existing database; never a new empty SQLite file (that would hide a wrong
    path). Closed when the block ends."""
    settings = load_settings(env)
    path = settings.db_path.absolute()
    if settings.database_url is None and not path.exists():
        raise StembotError(f"no database at {path}; check STEMBOT_DB_PATH")
    store = await open_ledger(settings)
    try:
        # On stderr, so that `stembot usage --csv` output stays clean.
        print(f"stembot: reading the database at {ledger_name(settings)}", file=sys.stderr)
        yield store
    finally:
        await store.close()


async def _show(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    guild_id = _guild_id(args.guild)
    async with _opened(env) as store:
        limits = await store.guilds.guild_limits(guild_id)
        status = await store.quotas.quota_status(guild_id, None, datetime.now(UTC))
        log_channel = await store.guilds.log_channel(guild_id)
    print(f"Server {guild_id}")
    print(_limits_text(limits))
    print(_usage_text(status))
    print(f"  log channel      {log_channel if log_channel is not None else 'none'}")
    return EXIT_OK


async def _set(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    guild_id = _guild_id(args.guild)
    changes = {
        dest: _limit(flag, getattr(args, dest))
        for flag, dest, _ in _LIMIT_OPTIONS
        if getattr(args, dest) is not None
    }
    if not changes:
        flags = ", ".join(flag for flag, _, _ in _LIMIT_OPTIONS)
        raise _BadArgument(f"nothing to set: give at least one of {flags}")
    _within_ceilings(changes, load_settings(env).quota)
    async with _opened(env) as store:
        limits = await store.guilds.set_limits(guild_id, **changes)
    print(f"Server {guild_id}: limits updated")
    print(_limits_text(limits))
    return EXIT_OK


async def _reset(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    guild_id = _guild_id(args.guild)
    names = [dest for _, dest, _ in _LIMIT_OPTIONS if getattr(args, dest)]
    async with _opened(env) as store:
        limits = await store.guilds.reset_limits(
            guild_id, names or [dest for _, dest, _ in _LIMIT_OPTIONS]
        )
    print(f"Server {guild_id}: limits reset to the defaults")
    print(_limits_text(limits))
    return EXIT_OK


async def _usage_all(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.guild is not None:
        raise _BadArgument("give either GUILD or --all, not both")
    now = datetime.now(UTC)
    since = _since(args.since, now)
    async with _opened(env) as store:
        spend = await store.reports.spend_by_day(since, now)
        calls_today = await store.quotas.api_calls_today(now)
        budget = store.policy.api_daily_budget
    if args.csv:
        write_spend_csv(spend, sys.stdout)
        return EXIT_OK
    print(_spend_text(spend, since, now, calls_today, budget))
    return EXIT_OK


async def _usage(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.guild is None:
        raise _BadArgument("give a GUILD (a Discord server id), or --all for every server")
    guild_id = _guild_id(args.guild)
    now = datetime.now(UTC)
    since = _since(args.since, now)
    async with _opened(env) as store:
        if args.csv:
            await store.reports.stream_ledger(guild_id, since, now, sys.stdout)
        else:
            print(_report_text(await store.reports.usage_report(guild_id, since, now)))
    return EXIT_OK


# --- checking arguments -------------------------------------------------------------------------


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _guild_id(text: str) -> int:
    if re.fullmatch(r"[0-9]{1,19}", text) and 0 < int(text) < 2**63:
        return int(text)
    raise _BadArgument(
        f"GUILD must be a Discord server id (digits only, like 123456789012345678), "
        f"not {_shown(text)}"
    )


def _limit(flag: str, text: str) -> int:
    if re.fullmatch(r"[0-9]{1,10}", text.strip()) and int(text) <= MAX_LIMIT:
        return int(text)
    raise _BadArgument(f"{flag} must be a whole number from 0 to {MAX_LIMIT}, not {_shown(text)}")


def _within_ceilings(changes: Mapping[str, int], policy: QuotaPolicy) -> None:
    """The ceilings bind the operator's own changes too: one rule for every server."""
    for name, flag, env_name, ceiling in (
        ("daily", "--daily", "STEMBOT_MAX_GUILD_DAILY_LIMIT", policy.max_guild_daily_limit),
        ("monthly", "--monthly", "STEMBOT_MAX_GUILD_MONTHLY_LIMIT", policy.max_guild_monthly_limit),
    ):
        value = changes.get(name)
        if value is not None and ceiling is not None and value > ceiling:
            raise _BadArgument(
                f"{flag} {value} is above {env_name} ({ceiling}); raise that setting first"
            )


def _since(text: str | None, now: datetime) -> datetime:
    if text is None:
        return month_window(now)[0]
    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            raise ValueError(text)
        day = date.fromisoformat(text)
    except ValueError:
        raise _BadArgument(f"--since must be a date like 2026-05-01, not {_shown(text)}") from None
    since = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if since > now:
        raise _BadArgument(f"--since {text} is in the future (UTC)")
    return since


# --- rendering ----------------------------------------------------------------------------------


def _origin(limits: GuildLimits, name: str) -> str:
    if name in limits.capped:
        return "set for this server, held to the STEMBOT_MAX_GUILD_* ceiling"
    return "set for this server" if name in limits.overridden else "default"


def _limits_text(limits: GuildLimits) -> str:
    return "\n".join(
        (
            f"  daily limit      {limits.daily} units ({_origin(limits, 'daily')})",
            f"  monthly limit    {limits.monthly} units ({_origin(limits, 'monthly')})",
            f"  per member       {limits.per_user} units a day ({_origin(limits, 'per_user')})",
            f"  active requests  {limits.active_requests} per member at once "
            f"({_origin(limits, 'active_requests')})",
            *(
                f"  role {role_id:<19} {per_user} units a day per member"
                for role_id, per_user in limits.role_allowances
            ),
        )
    )


def _spend_text(
    spend: list[DailySpend], since: datetime, now: datetime, calls_today: int, budget: int | None
) -> str:
    lines = [
        f"Bot-wide usage from {since:%Y-%m-%d %H:%M} UTC to {now:%Y-%m-%d %H:%M} UTC",
        f"  API calls today  {calls_today} of "
        + (f"{budget} (STEMBOT_API_DAILY_BUDGET)" if budget is not None else "no daily budget"),
    ]
    if not spend:
        lines.append("  (no requests in this period)")
        return "\n".join(lines)
    by_day: dict[date, list[int]] = {}
    for line in spend:
        figures = by_day.setdefault(line.day, [0, 0, 0])
        figures[0] += line.calls
        figures[1] += line.units
        figures[2] += 1
    lines.append("By day (UTC):           API calls   units  servers")
    lines += [
        f"  {day.isoformat():<20} {calls:>10} {units:>7} {servers:>8}"
        for day, (calls, units, servers) in sorted(by_day.items())
    ]
    lines.append("By day and server:      API calls   units")
    lines += [f"  {s.day.isoformat()} {s.guild_id:<20} {s.calls:>6} {s.units:>7}" for s in spend]
    return "\n".join(lines)


def _usage_text(status: QuotaStatus) -> str:
    lines = []
    for label, window in (("today", status.guild_daily), ("this month", status.guild_monthly)):
        lines.append(
            f"  {label:<16} {window.used} used, {window.remaining} left of {window.limit}; "
            f"resets {window.resets_at:%Y-%m-%d %H:%M} UTC"
        )
    return "\n".join(lines)


def _line_text(label: str, line: UsageLine) -> str:
    return (
        f"  {label:<20} {line.requests:>6} requests {line.units:>7} units "
        f"{line.refunded:>5} refunded"
    )


def _report_text(report: UsageReport) -> str:
    lines = [
        f"Usage of server {report.guild_id} from {report.since:%Y-%m-%d %H:%M} UTC "
        f"to {report.until:%Y-%m-%d %H:%M} UTC",
        _line_text("total", report.total),
    ]
    if report.total.requests == 0:
        lines.append("  (no requests in this period)")
        return "\n".join(lines)
    lines.append("By mode:")
    lines += [_line_text(mode.value, line) for mode, line in report.by_mode]
    lines.append("By day (UTC):")
    lines += [_line_text(day.isoformat(), line) for day, line in report.by_day]
    lines.append("Top users:")
    lines += [_line_text(f"user {user_id}", line) for user_id, line in report.top_users]
    if report.by_event:
        lines.append("Remix events (charged to the server, not to members):")
        lines += [_line_text(f"event {event.event_id}", event.usage) for event in report.by_event]
    return "\n".join(lines)
