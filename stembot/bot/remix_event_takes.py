"""Taking a remix event's stems: a click on a mode's button on the card
(``stems-event:take:<event id>:<mode>``), answered privately and nowhere else.

The click is acknowledged at once with a private "thinking" reply, so it is answered within
Discord's 3 s however many members click together. That reply then becomes the answer: the
stems (links, then their files, picture and free mixes, as a `/stems` result gains them) when
the event has them, else "separating", and the stems in the same private message when the
event's one call of that mode lands. The member is never charged: the event pays once per mode
(RemixEventService).

When that message can no longer be edited (Discord's 15 minutes are over, or a restart lost
the interaction), the stems go by DM, and only if the member's DMs are closed to the event's
channel with a mention: an event's answers stay private wherever they can, so a crowd never
drowns the channel.
"""

from __future__ import annotations

import asyncio
import logging
from re import Match
from typing import Any, Final

import discord

from stembot.bot import embeds
from stembot.bot import remix_event_ids as ids
from stembot.bot.delivery import NOWHERE, Answer, Delivered, attach_files_soon, post_to_requester
from stembot.bot.guild_only import answer_if_elsewhere
from stembot.bot.remix_event_desk import RemixEventDesk, desk_of
from stembot.bot.remix_event_mixes import EventMixSelect
from stembot.bot.result_attachments import DeliveredResult
from stembot.bot.views import result_files_of
from stembot.errors import IncidentError, StembotError
from stembot.models import Mode, Separation
from stembot.remix_event_models import RemixEvent, TakeState

log = logging.getLogger(__name__)

NO_EVENTS: Final = "Remix events are switched off on this bot."
NOT_OFFERED: Final = "This remix event doesn't offer that."


class TakeButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=ids.template("take"),
):
    """A mode's button on an event's card."""

    def __init__(
        self, event_id: int, mode_text: str, *, label: str = "", disabled: bool = False
    ) -> None:
        super().__init__(
            discord.ui.Button(
                label=label or ids.mode_label(mode_text, "Stems"),
                style=discord.ButtonStyle.primary,
                custom_id=ids.custom_id("take", event_id, mode_text),
                disabled=disabled,
            )
        )
        self.event_id = event_id
        self.mode_text = mode_text

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Match[str], /
    ) -> TakeButton:
        return cls(*ids.event_and_mode(match))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await answer_if_elsewhere(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        await take_stems(interaction, self.event_id, self.mode_text)


async def take_stems(interaction: discord.Interaction, event_id: int, mode_text: str) -> None:
    """Acknowledge privately, take the stems, answer in that same private message."""
    try:
        await interaction.response.defer(ephemeral=True, thinking=True)
    except discord.HTTPException as error:
        log.warning("take %s could not be acknowledged: %s", interaction.id, error.status)
        return
    desk = desk_of(interaction.client)
    if desk is None or not ids.offered(mode_text):
        await _say(interaction, NO_EVENTS if desk is None else NOT_OFFERED)
        return
    assert interaction.guild_id is not None  # answer_if_elsewhere
    user_id = interaction.user.id
    answer = TakeAnswer(interaction.client, desk, event_id, Mode(mode_text), user_id, interaction)
    try:
        async with answer.lock:
            await _take(desk, answer, interaction.guild_id)
    except Exception:
        incident = IncidentError()
        log.exception("take %s failed (incident %s)", interaction.id, incident.incident_id)
        await _say(interaction, incident.user_message)


async def _take(desk: RemixEventDesk, answer: TakeAnswer, guild_id: int) -> None:
    try:
        outcome = await desk.events.take(
            answer.event_id, answer.mode, answer.user_id, answer, guild_id=guild_id
        )
        event = await answer.event()
    except StembotError as refusal:
        await answer.refuse(refusal)
        return
    finally:
        desk.cards.changed(answer.event_id)
    if outcome.state is TakeState.READY:
        assert outcome.separation is not None
        await answer.deliver(outcome.separation)
    else:
        await answer.pending(event)


class TakeAnswer:
    """One member's take of an event's mode: the RemixEventService's TakeListener, answering in
    the click's private message (``interaction``; None after a restart: by DM)."""

    def __init__(
        self,
        client: discord.Client,
        desk: RemixEventDesk,
        event_id: int,
        mode: Mode,
        user_id: int,
        interaction: discord.Interaction | None,
    ) -> None:
        self.event_id = event_id
        self.mode = mode
        self.user_id = user_id
        # Held while the click is answered, so the stems never overtake "separating".
        self.lock = asyncio.Lock()
        self._client = client
        self._desk = desk
        self._interaction = interaction
        self._event: RemixEvent | None = None

    async def event(self) -> RemixEvent:
        if self._event is None:
            self._event = await self._desk.events.get(self.event_id)
        return self._event

    # --- TakeListener ---------------------------------------------------------------------

    async def on_ready(self, separation: Separation) -> None:
        async with self.lock:
            await self.deliver(separation)

    async def on_failed(self, error: StembotError) -> None:
        async with self.lock:
            event = await self.event()
            embed = embeds.failed_embed(self.mode, event.source_name, error)
            embed.clear_fields()
            embed.add_field(
                name="What now",
                value=f"Click **{self.mode.label}** on the event's card to try again.",
                inline=False,
            )
            await self._send(event, Answer(embed))

    # --- the answer -----------------------------------------------------------------------

    async def refuse(self, refusal: StembotError) -> None:
        if self._interaction is not None:
            await _say(self._interaction, refusal.user_message)

    async def pending(self, event: RemixEvent) -> None:
        """The stems are being separated for the whole event: say so; they follow here."""
        if self._interaction is None:
            return
        embed = embeds.processing_embed(self.mode, event.source_name, discord.utils.utcnow())
        embed.set_footer(text="Remix event: free for you, the server pays once per mode")
        try:
            await self._interaction.edit_original_response(embed=embed)
        except discord.HTTPException as error:
            log.info("take %s: status edit refused (%s)", self._interaction.id, error.status)

    async def deliver(self, separation: Separation) -> None:
        """The stems: links at once, then their files, picture and free mixes."""
        event = await self.event()
        embed, view = embeds.result_message(event.source_name, separation)
        line, _ = embeds.ready_mention(self.user_id, separation.mode, event.source_name)
        delivered = await self._send(event, Answer(embed, view, line))
        log.info(
            "remix event %s: %s stems sent to user %s via %s",
            event.id,
            separation.mode.value,
            self.user_id,
            delivered.via or "nowhere",
        )
        result = event_result(event, separation, self.user_id)
        attach_files_soon(
            self._client, result_files_of(self._client), result, delivered, self._interaction
        )

    async def _send(self, event: RemixEvent, answer: Answer) -> Delivered:
        interaction = self._interaction
        if interaction is not None and not interaction.is_expired():
            try:
                await interaction.edit_original_response(
                    content=None, embed=answer.embed, view=answer.view
                )
                return Delivered("interaction")
            except discord.HTTPException as error:
                log.warning("take %s: editing the reply failed (%s)", interaction.id, error.status)
        channel_id = event.card_channel_id or event.channel_id
        try:
            return await post_to_requester(
                self._client, event.guild_id, channel_id, self.user_id, answer, dm_first=True
            )
        except Exception:
            log.exception("remix event %s: could not reach user %s", event.id, self.user_id)
            return NOWHERE


def event_result(event: RemixEvent, separation: Separation, user_id: int) -> DeliveredResult:
    """An event's stems of a mode as sent to a member; mixes from the event's menu."""
    mode = separation.mode
    return DeliveredResult(
        separation,
        event.source_name,
        event.guild_id,
        event.source_key,
        None,
        f"remix event {event.id} {mode.value} for user {user_id}",
        None,
        lambda mixes: EventMixSelect(event.id, mode, mixes),
    )


async def _say(interaction: discord.Interaction, text: str) -> None:
    """The private reply becomes ``text`` (a refusal, or why nothing can be done)."""
    try:
        await interaction.edit_original_response(content=text, embed=None, view=None)
    except discord.HTTPException as error:
        log.warning("could not answer take %s: %s", interaction.id, error.status)
