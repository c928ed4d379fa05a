"""A remix event's card over the loopback Discord, as the end-to-end tests and the event
benchmark drive and read it: `/stems-event start` as an organiser, the card it posts, a
mode's button, the card's text, and what members and the channel see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stembot.models import Mode
from tests.e2e.stack import WAV, eventually
from tests.standins.discord import (
    EPHEMERAL,
    LOADING,
    MANAGE_EVENTS,
    MEMBER_DEFAULT,
    Channel,
    DiscordEmulator,
    Guild,
    InteractionRecord,
    Member,
    MessageRecord,
)

ORGANISER = MEMBER_DEFAULT | MANAGE_EVENTS


def take_id(event_id: int, mode: Mode) -> str:
    return f"stems-event:take:{event_id}:{mode.value}"


def cards_in(discord: DiscordEmulator, channel_id: int) -> list[MessageRecord]:
    return [
        m
        for m in discord.channel_messages(channel_id)
        if any(i.startswith("stems-event:take:") for i in m.custom_ids())
    ]


def card_text(card: MessageRecord) -> str:
    return "\n".join(_texts(card.components))


def _texts(components: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []
    for component in components:
        if component.get("type") == 10:
            found.append(str(component["content"]))
        found += _texts(list(component.get("components") or []))
    return found


def public_posts(discord: DiscordEmulator, channel_id: int) -> list[MessageRecord]:
    """What everyone in the channel sees from the bot: no ephemeral answers, no messages
    Discord posts itself (pin notices, thread starts)."""
    return [m for m in discord.channel_messages(channel_id) if not m.ephemeral and not m.system]


def private_body(interaction: InteractionRecord) -> str:
    """The text of the private answer the member sees now ("" while thinking)."""
    original = interaction.view().original
    if original is None or original.get("flags", 0) & LOADING:
        return ""
    assert original["flags"] & EPHEMERAL, "an event's answer must be private"
    parts = [str(original.get("content") or "")]
    for embed in original.get("embeds") or []:
        parts += [str(embed.get("title", "")), str(embed.get("description", ""))]
        parts += [str(f.get("value", "")) for f in embed.get("fields", [])]
    parts += _texts(list(original.get("components") or []))
    return "\n".join(parts)


async def private(interaction: InteractionRecord, containing: str, timeout_s: float = 10) -> str:
    await eventually(lambda: containing in private_body(interaction), timeout_s)
    return private_body(interaction)


@dataclass
class Event:
    id: int
    card: MessageRecord
    reply: str


async def start_event(
    discord: DiscordEmulator,
    guild: Guild,
    by: Member,
    *,
    channel: Channel | None = None,
    **options: Any,
) -> Event:
    """`/stems-event start` with ``options`` (a fresh WAV file unless another source is
    given); the organiser's private reply and the card."""
    channel = channel or guild.default_channel
    if not {"file", "url", "message"} & options.keys():
        options["file"] = discord.upload_attachment(WAV, "track.wav", "audio/wav", channel=channel)
    options.setdefault("title", "Spring remix")
    before = {m.id for c in [channel, *discord.threads(channel)] for m in cards_in(discord, c.id)}
    started = await discord.slash("stems-event start", member=by, channel=channel, options=options)
    reply = await private(started, "started")

    def new_card() -> MessageRecord | None:
        for place in [channel, *discord.threads(channel)]:
            for card in cards_in(discord, place.id):
                if card.id not in before:
                    return card
        return None

    await eventually(new_card)
    card = new_card()
    assert card is not None
    (event_id,) = {int(i.split(":")[2]) for i in card.custom_ids() if ":take:" in i}
    return Event(event_id, card, reply)
