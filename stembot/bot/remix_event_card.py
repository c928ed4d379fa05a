"""A remix event's card: the one public message of the event (Components V2).

It shows the event's title and organiser, the track (played on the card when the bot
re-uploaded it there), a button per offered mode that takes its stems privately, "Submit your
remix" when the event takes submissions, the free mixes of each mode once its stems exist, the
live counts (members who took stems, remixes submitted, the event's budget) and when it ends.
Once the event has ended every button and menu is disabled and the card says so.

Drawn from plain values only (``CardState``); remix_event_card_updates.py gathers them and
edits the card at most once every 10 s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import discord

from stembot.bot.embeds import (
    MEDIA_NOTE_MAX,
    SOURCE_NAME_MAX,
    TITLE_MAX,
    our_text,
    safe_text,
    timestamp,
)
from stembot.bot.remix_event_mixes import EventMixSelect
from stembot.bot.remix_event_takes import TakeButton
from stembot.models import Mode
from stembot.remix_event_models import EventCounts, RemixEvent
from stembot.result_media import Mix

OPEN_COLOUR: Final = discord.Colour.blurple()
ENDED_COLOUR: Final = discord.Colour.dark_grey()
# The submit button's custom id: answered by the submissions' own item (its modal).
SUBMIT_ID: Final = "stems-event:submit:{event_id}"
BUTTONS_PER_ROW: Final = 5
_UNSAFE_FILENAME: Final = re.compile(r"[^A-Za-z0-9._-]+")
_EXTENSION: Final = re.compile(r"[A-Za-z0-9]{1,8}")
FILENAME_MAX: Final = 80


@dataclass(frozen=True, slots=True)
class CardState:
    """What the card shows besides the event itself."""

    counts: EventCounts
    # Modes whose stems the event has (free for everyone from now on), and being separated.
    ready: frozenset[Mode] = frozenset()
    separating: frozenset[Mode] = frozenset()
    # Why a mode has no stems (its last call failed): shown until a later call succeeds.
    failures: Mapping[Mode, str] = field(default_factory=dict)
    # The free mixes of each ready mode (none when the bot keeps no copies of stems).
    mixes: Mapping[Mode, tuple[Mix, ...]] = field(default_factory=dict)
    # What a mode costs the event (to tell whether the budget still pays for it).
    costs: Mapping[Mode, int] = field(default_factory=dict)
    # The track's file on the card (``card_filename``), when the card carries it.
    track_file: str | None = None


def card_filename(source_name: str) -> str:
    """The track's file name on the card: Discord-safe, so ``attachment://`` finds it."""
    name = re.split(r"[/\\]", source_name)[-1]
    stem, dot, extension = name.rpartition(".")
    if not dot or not _EXTENSION.fullmatch(extension):
        stem, extension = name, ""
    base = _UNSAFE_FILENAME.sub("_", stem).strip("._") or "track"
    base = base[: FILENAME_MAX - len(extension) - 1]
    return f"{base}.{extension}" if extension else base


def track_file(event: RemixEvent) -> str | None:
    """The track's file name on the card, when the card carries it (the event reads it there)."""
    ref = event.source_ref
    on_card = ref is not None and ref.message_id == event.card_message_id
    return card_filename(event.source_name) if on_card else None


def event_card(event: RemixEvent, state: CardState, now: datetime) -> discord.ui.LayoutView:
    """The card as it should look now."""
    is_open = event.is_open(now)
    view = discord.ui.LayoutView(timeout=None)
    box = discord.ui.Container[Any](accent_colour=OPEN_COLOUR if is_open else ENDED_COLOUR)
    box.add_item(discord.ui.TextDisplay[Any](_heading(event)))
    if state.track_file is not None:
        box.add_item(discord.ui.File[Any](f"attachment://{state.track_file}"))
    box.add_item(
        discord.ui.TextDisplay[Any](_track_line(event, on_card=state.track_file is not None))
    )
    modes_text = _modes_text(event, state)
    if modes_text:
        box.add_item(discord.ui.TextDisplay[Any](modes_text))
    for row in _take_rows(event, state, is_open):
        box.add_item(row)
    if event.submissions:
        box.add_item(discord.ui.ActionRow[Any](_submit_button(event.id, disabled=not is_open)))
    for mode in event.modes:
        mixes = state.mixes.get(mode, ())
        if mode in state.ready and mixes:
            menu = EventMixSelect(event.id, mode, mixes, disabled=not is_open)
            box.add_item(discord.ui.ActionRow[Any](menu))
    box.add_item(discord.ui.TextDisplay[Any](_counts_text(state.counts)))
    box.add_item(discord.ui.TextDisplay[Any](_when_text(event, now)))
    view.add_item(box)
    return view


def _heading(event: RemixEvent) -> str:
    title = safe_text(event.title, TITLE_MAX) or "Remix event"
    return (
        f"## {title}\n"
        f"A remix event by <@{event.organiser_id}>: take the stems of the track privately, "
        "free for you (the server pays once per mode)."
    )


def _track_line(event: RemixEvent, *, on_card: bool) -> str:
    name = safe_text(event.source_name, SOURCE_NAME_MAX) or "the track"
    ref = event.source_ref
    if ref is not None and not on_card:
        link = f"https://discord.com/channels/{event.guild_id}/{ref.channel_id}/{ref.message_id}"
        return f"Track: **{name}** · [original post]({link})"
    return f"Track: **{name}**"


def _modes_text(event: RemixEvent, state: CardState) -> str:
    """One line per mode that has news: its stems ready, being separated, or refused."""
    lines = []
    for mode in event.modes:
        failure = state.failures.get(mode)
        if mode in state.ready:
            lines.append(f"**{mode.label}**: ready, sent at once")
        elif mode in state.separating:
            lines.append(f"**{mode.label}**: separating…")
        elif failure is not None:
            why = our_text(failure, MEDIA_NOTE_MAX)
            lines.append(f"**{mode.label}**: not separated. {why} Nobody was charged.")
    return "\n".join(lines)


def _take_rows(
    event: RemixEvent, state: CardState, is_open: bool
) -> list[discord.ui.ActionRow[Any]]:
    left = state.counts.budget_left()
    buttons = [
        TakeButton(
            event.id,
            mode.value,
            label=mode.label,
            disabled=not is_open or _unaffordable(mode, state, left),
        )
        for mode in event.modes
    ]
    return [
        discord.ui.ActionRow[Any](*buttons[start : start + BUTTONS_PER_ROW])
        for start in range(0, len(buttons), BUTTONS_PER_ROW)
    ]


def _unaffordable(mode: Mode, state: CardState, left: int | None) -> bool:
    """The budget can no longer pay for a mode the event has no stems of."""
    if left is None or mode in state.ready or mode in state.separating:
        return False
    return left < state.costs.get(mode, 1)


def _submit_button(event_id: int, *, disabled: bool) -> discord.ui.Button[Any]:
    return discord.ui.Button[Any](
        label="Submit your remix",
        style=discord.ButtonStyle.success,
        custom_id=SUBMIT_ID.format(event_id=event_id),
        disabled=disabled,
    )


def _counts_text(counts: EventCounts) -> str:
    members = "member" if counts.members == 1 else "members"
    remixes = "remix" if counts.submissions == 1 else "remixes"
    parts = [
        f"**{counts.members}** {members} took stems",
        f"**{counts.submissions}** {remixes} submitted",
    ]
    left = counts.budget_left()
    if counts.budget is not None and left is not None:
        parts.append(
            f"budget: **{left}** of {counts.budget} units left"
            if left > 0
            else "**budget spent**: stems not separated yet can't be taken"
        )
    return " · ".join(parts)


def _when_text(event: RemixEvent, now: datetime) -> str:
    footer = f"-# Remix event {event.id}"
    if event.ended_at is not None or not event.is_open(now):
        ended = event.ended_at or event.ends_at or now
        return (
            f"This remix event has ended ({timestamp(ended, 'f')}): its stems are no longer "
            f"given out.\n{footer}"
        )
    if event.ends_at is None:
        return f"Runs until the organiser ends it.\n{footer}"
    return f"Ends {timestamp(event.ends_at, 'f')} ({timestamp(event.ends_at, 'R')})\n{footer}"
