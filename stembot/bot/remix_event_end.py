"""Ending a remix event: by `/stems-event end` or by itself at its end (remix_event_closer.py).

The event is closed in the store first (once: whoever comes second is told it already ended),
so no new takes or submissions are accepted from that moment. Then the card is drawn once more
with its buttons disabled (through the card's throttled edits), the vote's poll is ended if it
still runs, the summary is posted under the card with the poll's result, the Discord scheduled
event is completed (or cancelled before its start), and the participation goes as CSV privately
to whoever ended it (the organiser by DM when the event closed itself). Every Discord step that
fails is logged and skipped: the event is over either way.
"""

from __future__ import annotations

import io
import logging
from typing import Final

import discord

from stembot.bot.embeds import TITLE_MAX, safe_text
from stembot.bot.remix_event_card_updates import CardUpdates
from stembot.bot.remix_event_submissions import event_channel
from stembot.bot.remix_event_summary import VoteAnswer, VoteResult, summary_embed
from stembot.bot.remix_event_vote import poll_result
from stembot.remix_event_csv import write_participation
from stembot.remix_event_models import EventSummary, RemixEvent
from stembot.remix_events import RemixEventService

log = logging.getLogger(__name__)

POLL_ALREADY_ENDED: Final = 520001
CSV_NAME: Final = "remix-event-{event_id}-participation.csv"


class EventEnder:
    def __init__(
        self, client: discord.Client, events: RemixEventService, cards: CardUpdates
    ) -> None:
        self._client = client
        self._events = events
        self._cards = cards

    async def end(
        self, event_id: int, *, by_user_id: int | None, guild_id: int | None = None
    ) -> EventSummary:
        """Close the event and do everything its end means (see the module's note).
        RemixEventEndedError / RemixEventNotFoundError: nothing done."""
        summary = await self._events.end(event_id, by_user_id=by_user_id, guild_id=guild_id)
        event = summary.event
        self._cards.changed(event_id)
        vote = await self._end_poll(event)
        await self._post_summary(summary, vote)
        await self._end_scheduled_event(event)
        if by_user_id is None:
            await self._send_csv_to_organiser(event)
        return summary

    async def participation_file(self, event_id: int) -> discord.File:
        """The event's participation as a CSV file to attach."""
        out = io.StringIO()
        write_participation(await self._events.participation(event_id), out)
        data = io.BytesIO(out.getvalue().encode())
        return discord.File(data, filename=CSV_NAME.format(event_id=event_id))

    async def _end_poll(self, event: RemixEvent) -> VoteResult | None:
        """End the vote's poll if it still runs; its submissions and votes as it ended."""
        if event.poll_message_id is None:
            return None
        poll = event_channel(self._client, event).get_partial_message(event.poll_message_id)
        try:
            await poll.end_poll()
        except discord.HTTPException as error:
            if error.code != POLL_ALREADY_ENDED:
                log.warning("remix event %s: its poll not ended (%s)", event.id, error.status)
        ranked = await poll_result(self._client, event)
        if not ranked:
            return None
        return VoteResult(
            tuple(VoteAnswer(made.title, votes, made.user_id) for made, votes in ranked)
        )

    async def _post_summary(self, summary: EventSummary, vote: VoteResult | None) -> None:
        event = summary.event
        try:
            await event_channel(self._client, event).send(embed=summary_embed(summary, vote))
        except discord.HTTPException as error:
            log.warning("remix event %s: summary not posted (%s)", event.id, error.status)

    async def _end_scheduled_event(self, event: RemixEvent) -> None:
        guild = self._client.get_guild(event.guild_id)
        if event.scheduled_event_id is None or guild is None:
            return
        try:
            scheduled = await guild.fetch_scheduled_event(event.scheduled_event_id)
            if scheduled.status is discord.EventStatus.active:
                await scheduled.end()
            elif scheduled.status is discord.EventStatus.scheduled:
                await scheduled.cancel()
        except discord.HTTPException as error:
            log.info("remix event %s: scheduled event left (%s)", event.id, error.status)

    async def _send_csv_to_organiser(self, event: RemixEvent) -> None:
        try:
            dm = await self._client.create_dm(discord.Object(event.organiser_id))
            await dm.send(
                f"Your remix event **{safe_text(event.title, TITLE_MAX)}** has ended; "
                "here is who took part.",
                file=await self.participation_file(event.id),
            )
        except discord.HTTPException as error:
            log.info("remix event %s: participation CSV not sent (%s)", event.id, error.status)
