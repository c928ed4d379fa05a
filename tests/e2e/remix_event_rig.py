"""A remix event on the real bot against the loopback Discord, for the submission and vote
tests: the stack, the bot's RemixEventService, an open event, and a card carrying the
"Submit your remix" button (posted by the bot as the card would be)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
from discord import app_commands

from stembot.bot.client import StemBot
from stembot.bot.remix_event_submissions import SubmitButton
from stembot.remix_event_models import EventSpec, RemixEvent, SourceRef, Submission
from stembot.remix_events import RemixEventService
from stembot.request_inputs import Requester
from tests.e2e.stack import WAV, Stack, running_stack
from tests.standins.discord import EPHEMERAL, InteractionRecord, Member, MessageRecord

EVENT_TITLE = "Summer remix jam"


@dataclass
class EventRig:
    stack: Stack
    events: RemixEventService
    event: RemixEvent
    card: MessageRecord
    organiser: Member

    def member(self, name: str, permissions: int | None = None) -> Member:
        if permissions is None:
            return self.stack.discord.add_member(self.stack.guild, name)
        return self.stack.discord.add_member(self.stack.guild, name, permissions=permissions)

    def upload(
        self, data: bytes = WAV, filename: str = "remix.wav", content_type: str = "audio/wav"
    ) -> dict[str, Any]:
        """A file the member puts in the modal's File Upload."""
        return self.stack.discord.upload_attachment(
            data, filename, content_type, channel=self.stack.channel
        )

    async def open_modal(self, member: Member) -> InteractionRecord:
        """``member`` clicks "Submit your remix" on the card: the modal (callback type 9)."""
        opened = await self.stack.discord.click(
            self.card, f"stems-event:submit:{self.event.id}", member=member
        )
        assert await self.stack.discord.acknowledged(opened) == 9
        return opened

    async def submit(
        self,
        member: Member,
        title: str = "Night mix",
        upload: dict[str, Any] | None = None,
        *,
        opened: InteractionRecord | None = None,
        check: bool = True,
    ) -> str:
        """``member`` submits the modal; the private answer they get."""
        opened = opened or await self.open_modal(member)
        submitted = await self.stack.discord.submit_modal(
            opened, {"title": title, "remix": [upload or self.upload()]}, check=check
        )
        return await private_answer(self.stack, submitted)

    async def submissions(self) -> list[Submission]:
        return await self.events.submissions(self.event.id)

    def post(self, submission: Submission) -> MessageRecord:
        return self.stack.discord.messages[submission.message_id]

    def posts(self) -> list[MessageRecord]:
        """The bot's plain messages in the event's channel but the card (system ones left out)."""
        return [
            m
            for m in self.stack.discord.channel_messages(self.stack.channel)
            if not m.system and m.type == 0 and m.id != self.card.id
        ]


async def private_answer(
    stack: Stack, interaction: InteractionRecord, timeout_s: float = 15
) -> str:
    """The finished response of ``interaction``, which must be ephemeral."""
    shown = await stack.discord.final_message(interaction, timeout_s)
    assert shown is not None and shown["flags"] & EPHEMERAL, shown
    return str(shown["content"])


@contextlib.asynccontextmanager
async def event_rig(
    db_path: Path, env: Mapping[str, str] | None = None, *, submissions: bool = True
) -> AsyncIterator[EventRig]:
    """The stack with an open event of its member (the organiser) and the event's card."""
    async with (
        running_stack(db_path, env) as stack,
        opened_event(stack, submissions=submissions) as rig,
    ):
        yield rig


@contextlib.asynccontextmanager
async def opened_event(stack: Stack, *, submissions: bool = True) -> AsyncIterator[EventRig]:
    """An open event of the stack's member (the organiser) and its card, on the stack's bot."""
    async with remix_events(stack) as events:
        organiser = stack.member
        event = await events.start(
            Requester(stack.guild.id, stack.channel.id, organiser.id, interaction_id=1),
            EventSpec(
                title=EVENT_TITLE,
                source_name="track.wav",
                source_key="attachment:1",
                source_ref=SourceRef(stack.channel.id, 1, 1),
                submissions=submissions,
            ),
        )
        card = await _post_card(stack.bot, stack, event)
        event = await events.card_posted(
            event.id, stack.channel.id, card.id, pinned=False, scheduled_event_id=None
        )
        yield EventRig(stack, events, event, card, organiser)


@contextlib.asynccontextmanager
async def remix_events(stack: Stack) -> AsyncIterator[RemixEventService]:
    """The bot's RemixEventService, as `stembot run` wires it."""
    events = stack.bot.remix_events
    assert events is not None
    yield events


async def _post_card(bot: StemBot, stack: Stack, event: RemixEvent) -> MessageRecord:
    view = discord.ui.View(timeout=None)
    view.add_item(SubmitButton(event.id))
    channel = bot.get_partial_messageable(stack.channel.id, guild_id=stack.guild.id)
    message = await channel.send(content=f"**{event.title}**", view=view)
    return stack.discord.messages[message.id]


async def with_vote_command(bot: StemBot) -> None:
    """`/stems-event vote` is on the bot: the event cog's group carries it."""
    group = bot.tree.get_command("stems-event")
    assert isinstance(group, app_commands.Group) and group.get_command("vote") is not None
