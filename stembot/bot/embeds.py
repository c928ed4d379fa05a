"""What stembot shows in Discord: embeds, link-button views and mention lines.

Pure functions from plain values (models, errors) to discord.py objects: no network, no service
calls. Every builder stays within Discord's message limits whatever arrives (long names, many
stems, huge URLs), and never drops a stem without saying so in the message.

User- and API-supplied text (file names, stem names, API messages) is flattened to one line,
markdown-escaped and mention-neutralised before it reaches an embed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

import discord
from discord.utils import escape_mentions, format_dt

from stembot.errors import (
    DuplicateRequestError,
    IncidentError,
    InvalidSourceError,
    QuotaExceededError,
    RequestCancelledError,
    RequestInterruptedError,
    SoundverseRejected,
    StembotError,
)
from stembot.models import Mode, QuotaStatus, Separation, Stem, WindowStatus
from stembot.result_media import ResultMedia, StemMedia

if TYPE_CHECKING:
    from discord.utils import TimestampStyle

# Discord's documented limits (characters unless stated).
CONTENT_MAX = 2000
TITLE_MAX = 256
DESCRIPTION_MAX = 4096
EMBEDS_TOTAL_MAX = 6000
ROWS_MAX = 5
BUTTONS_PER_ROW = 5
BUTTON_LABEL_MAX = 80
BUTTON_URL_MAX = 512
LINK_BUTTONS_MAX = ROWS_MAX * BUTTONS_PER_ROW

# How much of a user-supplied name we show; the rest becomes "…".
SOURCE_NAME_MAX = 100
STEM_NAME_MAX = 60
# The media note names stems and limits; the stem names in it are bounded by STEM_NAME_MAX.
MEDIA_NOTE_MAX = 600

QUEUED_COLOUR = discord.Colour.blurple()
PROCESSING_COLOUR = discord.Colour.blue()
DONE_COLOUR = discord.Colour.green()
FAILED_COLOUR = discord.Colour.red()
INTERRUPTED_COLOUR = discord.Colour.orange()
QUOTA_COLOUR = discord.Colour.blurple()

_NICE_STEM_NAMES = {
    name.lower(): name.capitalize()
    for name in ("vocals", "guitar", "other", "drums", "bass", "piano")
}
_NOT_CHARGED = "You were not charged."
_ELLIPSIS = "…"


# --- Text helpers ---------------------------------------------------------------------------


def one_line(text: str) -> str:
    """``text`` with control characters and runs of whitespace turned into single spaces."""
    printable = "".join(c if c.isprintable() else " " for c in text)
    return re.sub(r"\s+", " ", printable).strip()


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in "…" when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)].rstrip() + _ELLIPSIS


def safe_text(text: str, limit: int) -> str:
    """Untrusted text as one line, escaped for markdown and mentions, at most ``limit`` long.

    Cutting happens before escaping so that an escape is never split in half; the raw text is
    shortened until its escaped form fits.
    """
    flat = one_line(text)
    keep = len(flat)
    while keep > 0:
        escaped = escape_mentions(_escape_markdown(shorten(flat, keep)))
        if len(escaped) <= limit:
            return escaped
        # A raw character escapes to at most two characters, so dropping half the overflow
        # never cuts more than needed.
        keep -= max(1, (len(escaped) - limit + 1) // 2)
    return ""


# discord.utils.escape_markdown leaves backslashes alone (so a name ending in one would escape
# our own closing "**") and "[" unless it sees a whole masked link (a cut "[x](..." slips by).
# Discord treats a backslash before any punctuation as an escape, so escape all that matter.
# Line-start syntax (#, >, -) needs nothing: a name never starts a line.
_MARKDOWN_CHARACTERS = re.compile(r"([\\*_~|`\[\]<])")


def _escape_markdown(text: str) -> str:
    return _MARKDOWN_CHARACTERS.sub(r"\\\1", text)


def label_text(text: str, limit: int) -> str:
    """Untrusted text for a label (button, select option): one line, mentions neutralised.

    The same sanitising as ``safe_text`` less the markdown escapes, which a label would show
    as literal backslashes: labels render no markdown.
    """
    return shorten(escape_mentions(one_line(text)), limit)


def our_text(text: str, limit: int) -> str:
    """stembot's own user-safe message (markdown intended), mention-neutralised and capped."""
    return shorten(escape_mentions(text), limit)


def timestamp(moment: datetime, style: TimestampStyle) -> str:
    """A Discord timestamp (``<t:unix:style>``); a naive datetime is taken as UTC."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return format_dt(aware, style)


def stem_display_name(name: str, position: int) -> str:
    """How a stem is named to users: documented names capitalised, unknown names kept."""
    flat = one_line(name)
    if not flat:
        return f"Stem {position}"
    return _NICE_STEM_NAMES.get(flat.lower(), flat)


def request_title(mode: Mode, source_name: str) -> str:
    name = safe_text(source_name, min(SOURCE_NAME_MAX, TITLE_MAX - len(mode.label) - 3))
    return f"{mode.label} · {name or 'your audio'}"


# Discord's masked-link syntax ends at ")" or whitespace and chokes on "\\", "<", ">": those
# are percent-encoded, as is anything non-printable or non-ASCII (as browsers send them).
_MARKDOWN_URL_SAFE = "".join(chr(c) for c in range(33, 127) if chr(c) not in "()\\<>")


def masked_link(label: str, url: str) -> str:
    """``[label](url)`` that Discord renders as a link whatever the URL holds."""
    return f"[{label}]({quote(url, safe=_MARKDOWN_URL_SAFE)})"


def _units(count: int) -> str:
    return f"{count} unit" if count == 1 else f"{count} units"


# --- Quota text -----------------------------------------------------------------------------


def _left(window: WindowStatus) -> str:
    if window.limit == 0:
        return "switched off"
    return f"{window.remaining}/{window.limit}"


def quota_left_text(quota: QuotaStatus) -> str:
    """One plain line for a footer: units left today and this month (no markdown, no stamps)."""
    parts = [f"Server: {_left(quota.guild_daily)} today, {_left(quota.guild_monthly)} this month"]
    if quota.user_daily is not None:
        parts.append(f"you: {_left(quota.user_daily)} today")
    return "Units left · " + " · ".join(parts)


def _window_value(window: WindowStatus) -> str:
    if window.limit == 0:
        return "Switched off by the server's moderators."
    return (
        f"**{window.remaining}** of {_units(window.limit)} left\n"
        f"Resets {timestamp(window.resets_at, 'R')} ({timestamp(window.resets_at, 'f')})"
    )


def quota_embed(quota: QuotaStatus, costs: Mapping[Mode, int]) -> discord.Embed:
    """The answer to ``/stems quota``: what is left for the server and the user, and prices."""
    embed = discord.Embed(title="Stem separation quota", colour=QUOTA_COLOUR)
    embed.add_field(name="This server today", value=_window_value(quota.guild_daily))
    embed.add_field(name="This server this month", value=_window_value(quota.guild_monthly))
    if quota.user_daily is not None:
        embed.add_field(
            name="You today (your role's allowance)" if quota.user_limit_from_role else "You today",
            value=_window_value(quota.user_daily),
        )
    if quota.user_active_requests is not None:
        embed.add_field(
            name="Your requests in progress",
            value=f"{quota.user_active_requests} of {quota.user_active_limit} at a time",
        )
    if quota.api_budget_spent:
        embed.add_field(
            name="New songs today",
            value="stembot has made all the new separations it can today, across all "
            f"servers. Songs already split are still answered; new ones from "
            f"{timestamp(quota.guild_daily.resets_at, 't')}.",
            inline=False,
        )
    price_lines = [f"{mode.label}: {_units(cost)}" for mode, cost in costs.items()]
    embed.add_field(name="Cost per request", value="\n".join(price_lines) or "-", inline=False)
    return embed


# --- The result -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _StemLine:
    """One stem's line in the result, with and without its link."""

    bare: str
    linked: str
    has_button: bool


def _button_indexes(stems: Sequence[Stem]) -> set[int]:
    fitting = [i for i, stem in enumerate(stems) if len(stem.url) <= BUTTON_URL_MAX]
    return set(fitting[:LINK_BUTTONS_MAX])


def _stem_lines(
    stems: Sequence[Stem], with_button: set[int], media: ResultMedia | None = None
) -> list[_StemLine]:
    shown = {} if media is None else {stem.name: stem for stem in media.stems}
    lines = []
    for i, stem in enumerate(stems):
        name = safe_text(stem_display_name(stem.name, i + 1), STEM_NAME_MAX)
        notes = stem_notes(shown.get(stem.name))
        has_button = i in with_button
        if has_button:
            bare = f"**{name}**{notes} · use the button below"
        else:
            bare = f"**{name}**{notes} · ⚠️ link too long to show in Discord"
        linked = f"**{name}**{notes} · {masked_link('download', stem.url)}"
        lines.append(_StemLine(bare=bare, linked=linked, has_button=has_button))
    return lines


def stem_notes(shown: StemMedia | None) -> str:
    """What a result says of one stem's file: silent, attached, a smaller copy, or link only."""
    if shown is None:
        return ""
    notes = []
    if shown.silent:
        notes.append("silent (nothing to hear in it)")
    if shown.attachment is None:
        notes.append("link only")
    elif shown.compressed:
        notes.append("a smaller copy is attached")
    else:
        notes.append("attached")
    return " · " + " · ".join(notes)


def _overflow_note(hidden: Sequence[_StemLine]) -> str:
    as_buttons = sum(1 for line in hidden if line.has_button)
    lost = len(hidden) - as_buttons
    parts = []
    if as_buttons:
        parts.append(f"{as_buttons} as buttons below")
    if lost:
        parts.append(f"⚠️ {lost} not shown: too many for one Discord message")
    return f"…and {len(hidden)} more stems: " + ", ".join(parts) + "."


# The longest the overflow note can be for any stem count a Separation can hold.
_OVERFLOW_NOTE_ROOM = len(
    "…and 9999999 more stems: 25 as buttons below, "
    "⚠️ 9999999 not shown: too many for one Discord message."
)


def _layout_lines(lines: list[_StemLine], budget: int) -> list[str]:
    """The description's stem lines within ``budget`` characters (joined by newlines).

    Every stem gets a line, or a count in a closing note when even bare lines don't fit;
    links are then added where room is left, first for stems that have no button.
    """
    shown = _bare_lines_that_fit(lines, budget)
    texts = [line.bare for line in lines[:shown]]
    tail = [_overflow_note(lines[shown:])] if shown < len(lines) else []
    used = _joined_length(texts + tail)
    for i in sorted(range(shown), key=lambda i: lines[i].has_button):
        extra = len(lines[i].linked) - len(texts[i])
        if used + extra <= budget:
            texts[i] = lines[i].linked
            used += extra
    return texts + tail


def _bare_lines_that_fit(lines: list[_StemLine], budget: int) -> int:
    """How many bare lines fit, leaving room for the note about the rest."""
    if _joined_length([line.bare for line in lines]) <= budget:
        return len(lines)
    room = budget - _OVERFLOW_NOTE_ROOM
    used = 0
    for shown, line in enumerate(lines):
        used += len(line.bare) + 1
        if used > room:
            return shown
    return len(lines)


def _joined_length(texts: Sequence[str]) -> int:
    return sum(len(t) for t in texts) + max(0, len(texts) - 1)


def _link_view(stems: Sequence[Stem], with_button: set[int]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for slot, i in enumerate(sorted(with_button)):
        stem = stems[i]
        label = shorten(one_line(stem_display_name(stem.name, i + 1)), BUTTON_LABEL_MAX)
        view.add_item(discord.ui.Button(label=label, url=stem.url, row=slot // BUTTONS_PER_ROW))
    return view


def result_message(
    source_name: str,
    separation: Separation,
    quota: QuotaStatus | None = None,
    request_id: int | None = None,
    media: ResultMedia | None = None,
) -> tuple[discord.Embed, discord.ui.View]:
    """The finished result: one line per stem with its link, link buttons, quota in the footer.

    ``separation.mode`` names the mode; the links' issue time is shown as a relative
    timestamp since the API's URLs may expire. The request id in the footer is what a
    moderator's `/stems-admin refund` takes. With ``media`` (the files sent along with this
    embed) each stem says whether it is attached or silent, the picture is the embed's image
    and the note says what stayed a link and why.
    """
    title = request_title(separation.mode, source_name)
    footer = " · ".join(
        part
        for part in (
            f"Request {request_id}" if request_id is not None else "",
            quota_left_text(quota) if quota is not None else "",
        )
        if part
    )
    closing = (
        f"Links issued {timestamp(separation.issued_at, 'R')}; download them soon, they may expire."
    )
    if media is not None and media.note:
        closing = f"{safe_text(media.note, MEDIA_NOTE_MAX)}\n\n{closing}"
    room = min(DESCRIPTION_MAX, EMBEDS_TOTAL_MAX - len(title) - len(footer))
    budget = room - len(closing) - 2  # the blank line before the closing note
    with_button = _button_indexes(separation.stems)
    stem_texts = _layout_lines(_stem_lines(separation.stems, with_button, media), budget)
    embed = discord.Embed(
        title=title,
        description="\n".join(stem_texts) + "\n\n" + closing,
        colour=DONE_COLOUR,
        timestamp=separation.issued_at,
    )
    if footer:
        embed.set_footer(text=footer)
    if media is not None and media.picture is not None:
        embed.set_image(url=f"attachment://{media.picture}")
    return embed, _link_view(separation.stems, with_button)


# --- One request's status message -----------------------------------------------------------


def queued_embed(mode: Mode, source_name: str, position: int) -> discord.Embed:
    """Waiting in the queue at ``position`` (1 = next)."""
    place = (
        "You're next in the queue." if position <= 1 else f"You're **#{position}** in the queue."
    )
    return discord.Embed(
        title=request_title(mode, source_name),
        description=f"{place} I'll update this message when it starts.",
        colour=QUEUED_COLOUR,
    )


def processing_embed(mode: Mode, source_name: str, started_at: datetime) -> discord.Embed:
    """Being separated; the relative timestamp counts up by itself, so no edits are needed."""
    return discord.Embed(
        title=request_title(mode, source_name),
        description=(
            f"Separating {mode.label.lower()}, started {timestamp(started_at, 'R')}. "
            "This can take a few minutes; I'll update this message when it's done."
        ),
        colour=PROCESSING_COLOUR,
    )


def _next_step(error: StembotError) -> str:
    if isinstance(error, QuotaExceededError):
        if error.resets_at is not None:
            return f"You can try again {timestamp(error.resets_at, 'R')}. See `/stems quota`."
        return "See `/stems quota` for what is left."
    if isinstance(error, InvalidSourceError):
        return "Fix the file or link and run the command again."
    if isinstance(error, SoundverseRejected):
        return "Try again with a different file or file name."
    if isinstance(error, DuplicateRequestError):
        return "Nothing to do: the first request is still being handled."
    if isinstance(error, IncidentError):
        return "Run the command again later."
    if isinstance(error, RequestCancelledError):
        return "Run the command again whenever you like."
    return "Run the command again in a few minutes."


def failed_embed(
    mode: Mode, source_name: str, error: StembotError, quota: QuotaStatus | None = None
) -> discord.Embed:
    """A request that failed: what went wrong, what to do next, and that nothing was charged.

    Failed requests are refunded by the service, so the "not charged" line always holds.
    """
    message = our_text(error.user_message, DESCRIPTION_MAX - len(_NOT_CHARGED) - 2)
    if not error.says_not_charged:
        message = f"{message}\n\n{_NOT_CHARGED}"
    embed = discord.Embed(
        title=request_title(mode, source_name), description=message, colour=FAILED_COLOUR
    )
    embed.add_field(name="What now", value=_next_step(error), inline=False)
    if quota is not None:
        embed.set_footer(text=quota_left_text(quota))
    return embed


def interrupted_embed(
    mode: Mode, source_name: str, quota: QuotaStatus | None = None
) -> discord.Embed:
    """A request that a restart cut short (it was refunded)."""
    embed = discord.Embed(
        title=request_title(mode, source_name),
        description=RequestInterruptedError().user_message,
        colour=INTERRUPTED_COLOUR,
    )
    if quota is not None:
        embed.set_footer(text=quota_left_text(quota))
    return embed


def handed_over_embed(mode: Mode, source_name: str) -> discord.Embed:
    """A queued request the bot keeps through its restart (nothing more is charged)."""
    embed = discord.Embed(
        title=request_title(mode, source_name),
        description=(
            "stembot is restarting. Your request keeps its place in the queue; its stems "
            "will be posted in this channel, mentioning you, when they are ready."
        ),
        colour=INTERRUPTED_COLOUR,
    )
    return embed


# --- Posting in the channel after the interaction expired -----------------------------------


def ready_mention(
    user_id: int, mode: Mode, source_name: str
) -> tuple[str, discord.AllowedMentions]:
    """A plain line pinging only ``user_id``, for a result posted through the channel."""
    head = f"<@{user_id}> your stems for "
    tail = f" are ready ({mode.label})."
    name = safe_text(source_name, min(SOURCE_NAME_MAX, CONTENT_MAX - len(head) - len(tail)))
    allowed = discord.AllowedMentions(
        everyone=False, roles=False, users=[discord.Object(id=user_id)], replied_user=False
    )
    return f"{head}{name or 'your audio'}{tail}", allowed
