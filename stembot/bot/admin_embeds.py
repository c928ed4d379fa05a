"""What `/stems-admin` shows: usage figures, limits, refunds, and the quota alerts.

Pure functions from the moderation service's plain values to discord.py objects. Figures are
plain numbers and plain UTC times (a Discord timestamp may follow, for the reader's zone).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import discord

from stembot.bot.embeds import timestamp
from stembot.models import GuildLimits, Mode, UsageLine, UsageReport, WindowStatus
from stembot.moderation import ALERT_THRESHOLDS, LedgerExport, QuotaAlert, Refund, UsageOverview

USAGE_COLOUR = discord.Colour.blurple()
WARNING_COLOUR = discord.Colour.orange()
FULL_COLOUR = discord.Colour.red()

_PERIOD_NAMES = {"day": "daily", "month": "monthly"}
# Events listed by name in the usage embed (each line at most ~90 characters).
_EVENTS_SHOWN = 8
_LIMIT_NAMES = (
    ("daily", "Server per UTC day"),
    ("monthly", "Server per UTC month"),
    ("per_user", "Each member per UTC day"),
)


def units(count: int) -> str:
    return f"{count:,} unit" if count == 1 else f"{count:,} units"


def requests(count: int) -> str:
    return f"{count:,} request" if count == 1 else f"{count:,} requests"


def utc_text(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _percent(used: int, limit: int) -> str:
    return f"{used * 100 // limit}%"


def _window_value(window: WindowStatus, made: UsageLine) -> str:
    if window.limit == 0:
        used = f"**{window.used:,}** units used; switched off (limit 0)"
    else:
        used = (
            f"**{window.used:,}** of {units(window.limit)} used "
            f"({_percent(window.used, window.limit)}), {window.remaining:,} left"
        )
    return (
        f"{used}\n{requests(made.requests)} made, {made.refunded:,} refunded\n"
        f"Resets {utc_text(window.resets_at)} ({timestamp(window.resets_at, 'R')})"
    )


def _mode_lines(report: UsageReport) -> str:
    lines = [
        f"{mode.label}: {requests(line.requests)}, {units(line.units)}"
        for mode, line in report.by_mode
    ]
    return "\n".join(lines) or "No requests."


def _top_user_lines(report: UsageReport) -> str:
    lines = [
        f"{rank}. <@{user_id}> ({user_id}): {units(line.units)}, {requests(line.requests)}"
        for rank, (user_id, line) in enumerate(report.top_users, start=1)
    ]
    return "\n".join(lines) or "No requests."


def _event_lines(report: UsageReport) -> str:
    """Each remix event's calls (charged to the server, apart from members' spend), the
    most expensive first, within an embed field's 1,024 characters."""
    ranked = sorted(report.by_event, key=lambda event: (-event.usage.units, event.event_id))
    lines = [
        f"{discord.utils.escape_markdown(_short(event.title)) or 'Event'} (#{event.event_id}): "
        f"{requests(event.usage.requests)}, {units(event.usage.units)}"
        for event in ranked[:_EVENTS_SHOWN]
    ]
    if len(ranked) > _EVENTS_SHOWN:
        lines.append(f"and {len(ranked) - _EVENTS_SHOWN:,} more")
    total = report.events_total
    members = report.total.units - total.units
    lines.append(f"Remix events {units(total.units)}, members {units(members)}")
    return "\n".join(lines)


def _short(title: str, most: int = 40) -> str:
    return title if len(title) <= most else title[: most - 1] + "…"


def _costs_line(costs: Mapping[Mode, int]) -> str:
    return ", ".join(f"{mode.label} {cost}" for mode, cost in costs.items())


def usage_embed(overview: UsageOverview) -> discord.Embed:
    """`/stems-admin usage`: today and this month against the limits, by mode, top members."""
    limits = overview.limits
    embed = discord.Embed(
        title="stembot usage on this server",
        description=(
            f"Units per request: {_costs_line(overview.costs)}. Windows are UTC days and months."
        ),
        colour=USAGE_COLOUR,
    )
    embed.add_field(
        name="Today", value=_window_value(overview.quota.guild_daily, overview.today.total)
    )
    embed.add_field(
        name="This month", value=_window_value(overview.quota.guild_monthly, overview.month.total)
    )
    embed.add_field(
        name="Per member",
        value="\n".join(
            [
                f"{units(limits.per_user)} a day, {requests(limits.active_requests)} at once",
                *_role_lines(limits),
            ]
        ),
        inline=False,
    )
    embed.add_field(name="By mode today", value=_mode_lines(overview.today))
    embed.add_field(name="By mode this month", value=_mode_lines(overview.month))
    if overview.month.by_event:
        embed.add_field(
            name="Remix events this month", value=_event_lines(overview.month), inline=False
        )
    embed.add_field(
        name="Top members this month", value=_top_user_lines(overview.month), inline=False
    )
    embed.set_footer(text=f"As of {utc_text(overview.now)}")
    return embed


def limits_embed(limits: GuildLimits) -> discord.Embed:
    """The limits now in force, saying which a moderator set and which are the defaults."""
    values = {"daily": limits.daily, "monthly": limits.monthly, "per_user": limits.per_user}
    lines = [
        f"{label}: **{units(values[name])}** ({_origin(limits, name)})"
        for name, label in _LIMIT_NAMES
    ]
    lines += _role_lines(limits)
    embed = discord.Embed(title="Limits now in force", description="\n".join(lines))
    notes = _limit_notes(limits)
    if notes:
        embed.add_field(name="Note", value="\n".join(notes), inline=False)
    embed.colour = USAGE_COLOUR
    return embed


# Enough for any real server; the embed field stays far below Discord's 1,024 characters.
_ROLES_SHOWN = 10


def _role_lines(limits: GuildLimits) -> list[str]:
    """Roles whose members get their own daily allowance (a member gets their highest)."""
    shown = [
        f"Members of <@&{role_id}>: **{units(per_user)}** a day"
        for role_id, per_user in limits.role_allowances[:_ROLES_SHOWN]
    ]
    hidden = len(limits.role_allowances) - len(shown)
    if hidden:
        shown.append(f"…and {hidden} more roles")
    return shown


def _origin(limits: GuildLimits, name: str) -> str:
    if name in limits.capped:
        return "the most the bot's operator allows"
    return "set on this server" if name in limits.overridden else "default"


def _limit_notes(limits: GuildLimits) -> list[str]:
    notes = []
    if limits.switched_off:
        notes.append("A limit of 0 switches stembot off on this server.")
    elif limits.daily > limits.monthly:
        notes.append("The daily limit is above the monthly one: the monthly limit binds first.")
    if limits.per_user == 0 and not limits.switched_off:
        notes.append("A per-member limit of 0 lets no member start a request.")
    return notes


def export_text(export: LedgerExport) -> str:
    text = (
        f"The ledger from {utc_text(export.since)} up to {utc_text(export.until)}: "
        f"{requests(export.requests)}"
        + (f" in {export.rows:,} rows" if export.rows != export.requests else "")
        + '. Times in the file are ISO-8601 UTC; ids are written ="…" so spreadsheets '
        "keep every digit."
    )
    if export.zipped:
        text += (
            f" The CSV ({size_text(export.csv_size)}) is larger than Discord lets me upload "
            "here, so it is zipped: open the .zip to get it."
        )
    return text


def export_too_large_text(export: LedgerExport, limit_bytes: int) -> str:
    head = (
        f"The ledger for that period is {size_text(export.csv_size)} as CSV and still "
        f"{size_text(export.size)} zipped, more than the {size_text(limit_bytes)} Discord lets "
        "me upload here."
    )
    if len(export.parts) < 2:
        return (
            f"{head} A shorter period won't help; the bot's operator can export it with "
            "`stembot usage`."
        )
    shown = [f"`since:{first:%Y-%m-%d} until:{last:%Y-%m-%d}`" for first, last in export.parts[:10]]
    more = len(export.parts) - len(shown)
    tail = f", and {more} more periods after those" if more else ""
    return f"{head} Export it in {len(export.parts)} parts: " + ", ".join(shown) + tail + "."


def size_text(count: int) -> str:
    if count < 1024:
        return f"{count:,} bytes"
    if count < 1024 * 1024:
        return f"{count / 1024:,.1f} KiB"
    return f"{count / 1024 / 1024:,.1f} MiB"


def refund_text(refund: Refund) -> str:
    request = refund.request
    return (
        f"Refunded request {request.id} ({request.mode.label}, <@{request.user_id}>): "
        f"{units(refund.units)} given back to this server's quota."
    )


def log_channel_text(channel_id: int | None) -> str:
    if channel_id is None:
        return (
            "Quota alerts are off. Choose a channel with `/stems-admin log-channel` "
            "to turn them on."
        )
    shares = " and ".join(f"{t}%" for t in ALERT_THRESHOLDS)
    return (
        f"Quota alerts will be posted in <#{channel_id}> when this server reaches {shares} "
        "of its daily or monthly units (once per window)."
    )


def log_channel_hello() -> discord.Embed:
    """Posted in a new log channel: proves the bot can post there and says what will come."""
    return discord.Embed(
        title="stembot quota alerts",
        description="stembot will post here when this server nears or reaches its limits.",
        colour=USAGE_COLOUR,
    )


def alert_embed(alert: QuotaAlert) -> discord.Embed:
    """Posted in the log channel when the guild reaches 80% or 100% of a window."""
    period = _PERIOD_NAMES[alert.period]
    unit = "unit" if alert.limit == 1 else "units"
    if alert.threshold >= 100:
        title = f"stembot: {period} limit reached"
        text = (
            f"This server has used {alert.used:,} of its {alert.limit:,} {period} {unit} "
            f"({_percent(alert.used, alert.limit)}). New requests are refused until the "
            f"window resets at {utc_text(alert.resets_at)}."
        )
        colour = FULL_COLOUR
    else:
        title = f"stembot: {alert.threshold}% of the {period} limit used"
        text = (
            f"This server has used {alert.used:,} of its {alert.limit:,} {period} {unit} "
            f"({_percent(alert.used, alert.limit)}). The window resets at "
            f"{utc_text(alert.resets_at)}."
        )
        colour = WARNING_COLOUR
    embed = discord.Embed(title=title, description=text, colour=colour)
    embed.add_field(
        name="What you can do",
        value="See `/stems-admin usage`; raise the limit with `/stems-admin limits`.",
        inline=False,
    )
    return embed
