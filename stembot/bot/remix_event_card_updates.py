"""Keeping each remix event's card current without flooding Discord: at most one edit per card
every CARD_EDIT_INTERVAL_S, whatever the click rate, and one pending edit at a time.

A change (a take, a submission, a mode's stems ready or refused, the end) only marks the card;
the one task of that card waits out the interval since the card's last write (its posting
counts), then draws the card from what the store says at that moment. Changes that come while
it waits or edits are all in that edit or the next one, never an edit each. 200 clicks in a
second make one edit, not 200; a change never goes unshown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Final

import discord

from stembot.bot.remix_event_card import CardState, event_card, track_file
from stembot.bot.remix_event_desk import desk_of
from stembot.bot.views import media_of
from stembot.errors import StembotError
from stembot.models import Mode, Separation
from stembot.remix_event_models import RemixEvent
from stembot.result_media import mixes_for
from stembot.stem_service import utc_now

log = logging.getLogger(__name__)

CARD_EDIT_INTERVAL_S: Final = 10.0


class CardUpdates:
    """The cards' edits, throttled per card; ``changed`` marks one, ``on_change`` is the
    service's hook (a mode's stems ready, or why its call failed)."""

    def __init__(
        self,
        client: discord.Client,
        costs: Mapping[Mode, int],
        *,
        interval_s: float = CARD_EDIT_INTERVAL_S,
    ) -> None:
        self._client = client
        self._costs = dict(costs)
        self._interval = interval_s
        self._last_write: dict[int, float] = {}
        self._pending: dict[int, asyncio.Task[None]] = {}
        self._again: set[int] = set()
        self._failures: dict[int, dict[Mode, str]] = {}
        self._closed = False

    def posted(self, event_id: int) -> None:
        """The card was just posted: its first edit waits out the interval from now."""
        self._last_write[event_id] = self._now()

    def changed(self, event_id: int) -> None:
        """Something the card shows changed: it is edited within the interval."""
        if self._closed:
            return
        if event_id in self._pending:
            self._again.add(event_id)
            return
        self._pending[event_id] = asyncio.create_task(
            self._keep_current(event_id), name=f"event-card-{event_id}"
        )

    async def on_change(self, event_id: int, mode: Mode, failure: StembotError | None) -> None:
        failures = self._failures.setdefault(event_id, {})
        if failure is None:
            failures.pop(mode, None)
        else:
            failures[mode] = failure.user_message
        self.changed(event_id)

    def failed(self, event_id: int, mode: Mode, failure: StembotError) -> None:
        """A mode's call was refused before it ran (prefetch at start): the card says why."""
        self._failures.setdefault(event_id, {})[mode] = failure.user_message
        self.changed(event_id)

    async def close(self) -> None:
        self._closed = True
        pending = list(self._pending.values())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _keep_current(self, event_id: int) -> None:
        try:
            while True:
                wait = self._last_write.get(event_id, float("-inf")) + self._interval - self._now()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._again.discard(event_id)
                self._last_write[event_id] = self._now()
                await self._edit(event_id)
                if event_id not in self._again:
                    return
        finally:
            del self._pending[event_id]

    async def _edit(self, event_id: int) -> None:
        desk = desk_of(self._client)
        if desk is None:
            return
        try:
            event = await desk.events.get(event_id)
            if event.card_channel_id is None or event.card_message_id is None:
                return
            card = event_card(event, await self._state(event), utc_now())
        except StembotError as error:  # the database busy: the next change draws it again
            log.warning("remix event %s: card not drawn (%s)", event_id, type(error).__name__)
            return
        channel = self._client.get_partial_messageable(
            event.card_channel_id, guild_id=event.guild_id
        )
        try:
            await channel.get_partial_message(event.card_message_id).edit(view=card)
        except discord.NotFound:
            log.info("remix event %s: its card is gone; no more edits", event_id)
            self._closed_card(event_id)
        except discord.HTTPException as error:
            log.warning(
                "remix event %s: card edit refused (HTTP %s, code %s)",
                event_id,
                error.status,
                error.code,
            )

    async def _state(self, event: RemixEvent) -> CardState:
        desk = desk_of(self._client)
        assert desk is not None
        counts = await desk.events.counts(event.id)
        stems: dict[Mode, Separation] = {}
        for mode in event.modes:
            found = await desk.events.stems(event.id, mode)
            if found is not None:
                stems[mode] = found
        with_mixes = media_of(self._client) is not None
        return CardState(
            counts=counts,
            ready=frozenset(stems),
            separating=desk.events.separating(event.id),
            failures=dict(self._failures.get(event.id, {})),
            mixes={
                mode: mixes_for([stem.name for stem in found.stems])
                for mode, found in stems.items()
                if with_mixes
            },
            costs=self._costs,
            track_file=track_file(event),
        )

    def _closed_card(self, event_id: int) -> None:
        self._failures.pop(event_id, None)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()
