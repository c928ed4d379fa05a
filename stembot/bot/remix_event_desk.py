"""What the Discord layer runs remix events with, built once in cli/run.py and handed to the
bot (``StemBot.remix``): the service, the card's throttled edits, the end and the auto-close.
Buttons and menus, which discord.py builds from their custom ids, find it on the client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord

if TYPE_CHECKING:
    from stembot.bot.remix_event_card_updates import CardUpdates
    from stembot.bot.remix_event_closer import EventCloser
    from stembot.bot.remix_event_end import EventEnder
    from stembot.remix_events import RemixEventService


@dataclass(frozen=True, slots=True)
class RemixEventDesk:
    events: RemixEventService
    cards: CardUpdates
    ender: EventEnder
    closer: EventCloser


def desk_of(client: discord.Client) -> RemixEventDesk | None:
    """The bot's remix events (None: a bot built without them)."""
    desk: RemixEventDesk | None = getattr(client, "remix", None)
    return desk


def card_changed(client: discord.Client, event_id: int) -> None:
    """What the event's card shows changed (a submission, say): it is edited soon."""
    desk = desk_of(client)
    if desk is not None:
        desk.cards.changed(event_id)
