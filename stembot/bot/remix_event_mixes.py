"""Free mixes of a remix event's stems: the menu under a mode on the event's card and on the
stems a member took (``stems-event:mix:<event id>:<mode>``). A pick is answered as a result's
menu is (bot/mixes.py): the mix, made once from the cached stems, sent privately to the member
who picked; no units, no API call.

Anyone in the event's server may pick (the event's stems are the whole server's); in the bot's
DM, where a member's stems went when their answer could not reach them otherwise, only a
member who took that mode. A menu naming another server's event is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from re import Match
from typing import Any, Final

import discord

from stembot.bot import remix_event_ids as ids
from stembot.bot.guild_only import answer_if_elsewhere
from stembot.bot.mixes import MIX_PLACEHOLDER, MixSubject, in_the_bots_dm, mix_options, send_mix
from stembot.bot.remix_event_desk import desk_of
from stembot.errors import RemixEventNotFoundError
from stembot.models import Mode
from stembot.result_media import Mix

log = logging.getLogger(__name__)

NO_EVENTS: Final = "Remix events are switched off on this bot."
NOT_THIS_SERVER: Final = "This menu belongs to a remix event of another server."
NOT_TAKEN: Final = "These mixes are for members who took these stems at the remix event."
NO_STEMS: Final = (
    "This remix event no longer has these stems (old results are deleted after a while), so "
    "no mix can be made of them."
)
STEMS_GONE: Final = (
    "The stems of this remix event are no longer available: stembot's copies are gone and "
    "their links have expired, so no mix can be made of them."
)


class EventMixSelect(
    discord.ui.DynamicItem[discord.ui.Select[Any]],
    template=ids.template("mix"),
):
    """The free mixes of an event's stems of one mode."""

    def __init__(
        self,
        event_id: int,
        mode: Mode | str,
        mixes: Sequence[Mix] = (),
        *,
        disabled: bool = False,
    ) -> None:
        mode_text = mode.value if isinstance(mode, Mode) else mode
        label = ids.mode_label(mode_text, "these stems")
        super().__init__(
            discord.ui.Select(
                custom_id=ids.custom_id("mix", event_id, mode_text),
                placeholder=f"{label}: {MIX_PLACEHOLDER}",
                options=mix_options(mixes),
                disabled=disabled,
            )
        )
        self.event_id = event_id
        self.mode_text = mode_text

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Match[str], /
    ) -> EventMixSelect:
        return cls(*ids.event_and_mode(match))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return in_the_bots_dm(interaction) or await answer_if_elsewhere(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        picked = self.item.values[0] if len(self.item.values) == 1 else ""
        event_id, mode_text = self.event_id, self.mode_text
        await send_mix(interaction, picked, lambda: _subject(interaction, event_id, mode_text))


async def _subject(
    interaction: discord.Interaction, event_id: int, mode_text: str
) -> MixSubject | str:
    desk = desk_of(interaction.client)
    if desk is None:
        return NO_EVENTS
    if not ids.offered(mode_text):
        return NO_STEMS
    mode = Mode(mode_text)
    try:
        event = await desk.events.get(event_id)
    except RemixEventNotFoundError as gone:
        return gone.user_message
    if interaction.guild_id is None:
        taken = await desk.events.participation(event_id)
        if not any(p.user_id == interaction.user.id and mode in p.modes for p in taken):
            return NOT_TAKEN
    elif interaction.guild_id != event.guild_id:
        log.info("mix pick %s names remix event %s of another server", interaction.id, event_id)
        return NOT_THIS_SERVER
    separation = await desk.events.stems(event_id, mode)
    if separation is None:
        return NO_STEMS
    return MixSubject(
        event.guild_id,
        event.source_key,
        event.source_name,
        mode,
        separation,
        f"remix event {event_id} {mode.value}",
        gone=STEMS_GONE,
    )
