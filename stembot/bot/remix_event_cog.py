"""`/stems-event start` and `/stems-event end`: an organiser's remix event from one card.

Start: the organiser needs Manage Events or Manage Server (checked when the command runs,
whatever the server's command settings say). The track is a ``file:``, a ``url:`` or a
``message:`` link (several audio files there: the organiser picks one, privately). Everything
the organiser typed is checked before anything is recorded or spent; every refusal is private.
Then the event is recorded (a few per server at once), the card posted (in a new thread when
asked), a ``file:`` put on the card when it fits the upload limit (the event reads the track
from there later: signed URLs are never stored), the card pinned when the bot may (the
organiser is told when it may not), and a Discord scheduled event created when the bot has
Create Events (skipped quietly otherwise). A track that cannot be read again later (a link, or
a file too large for the card) is separated in every offered mode at once, and the organiser
is told why.

End: the organiser, or anyone with Manage Events or Manage Server (remix_event_end.py).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from re import Match
from typing import Any, Final

import discord
from discord import app_commands
from discord.ext import commands

from stembot.attachment_plan import REQUEST_OVERHEAD_BYTES
from stembot.bot.embeds import label_text, one_line, safe_text, shorten, timestamp
from stembot.bot.guild_only import answer_if_elsewhere
from stembot.bot.remix_event_card import CardState, card_filename, event_card
from stembot.bot.remix_event_desk import RemixEventDesk
from stembot.bot.remix_event_source import linked_message
from stembot.bot.remix_event_submissions import manages_events
from stembot.bot.remix_event_vote import running_events, the_event, vote_command
from stembot.bot.requests import attachment_input, requester_of, usable_audio
from stembot.bot.split import file_options
from stembot.bot.tree import reply_privately
from stembot.errors import (
    InvalidSourceError,
    RemixEventEndedError,
    RemixEventError,
    StembotError,
)
from stembot.models import Mode
from stembot.quota_rules import MAX_LIMIT
from stembot.remix_event_models import EventSpec, RemixEvent, SourceRef
from stembot.remix_event_options import parse_ends, parse_message_link, parse_modes
from stembot.remix_events import MAX_TITLE_CHARS
from stembot.request_inputs import AttachmentInput, CheckedSource
from stembot.source_urls import check_url_syntax
from stembot.stem_service import StemService, utc_now

log = logging.getLogger(__name__)

NEED_PERMISSION: Final = (
    "Starting a remix event needs the **Manage Events** or **Manage Server** permission."
)
NOT_YOURS: Final = (
    "Only the event's organiser, or someone with the **Manage Events** or **Manage Server** "
    "permission, can end it."
)
ONE_SOURCE: Final = "Give the track as exactly one of `file:`, `url:` or `message:`."
NO_AUDIO: Final = "That message has no audio file stembot can split."
PICK_EXPIRED: Final = "This menu has expired. Run `/stems-event start` again."
FILES_MAX: Final = 25
SCHEDULE_LEAD: Final = timedelta(seconds=30)
SCHEDULE_DEFAULT_LENGTH: Final = timedelta(days=7)
LOCATION_MAX: Final = 100
THREAD_ARCHIVE_MINUTES: Final = 10080
_PICKERS_MAX: Final = 200

EventId = app_commands.Range[int, 1, 2**53 - 1]
Budget = app_commands.Range[int, 1, MAX_LIMIT]


@dataclass(frozen=True, slots=True)
class StartOptions:
    """What the organiser asked for, checked."""

    title: str | None
    modes: tuple[Mode, ...]
    ends: str | None
    submissions: bool
    thread: bool
    prefetch: bool
    budget: int | None


@dataclass(frozen=True, slots=True)
class Track:
    """The event's track as checked at start: where the bot reads it later, if anywhere."""

    source: CheckedSource
    # The organiser's upload, put on the card when it fits.
    upload: discord.Attachment | None = None
    # A posted message's file (``message:``).
    ref: SourceRef | None = None


@dataclass(frozen=True, slots=True)
class _Picking:
    """A ``message:`` with several audio files, waiting for the organiser's pick."""

    guild_id: int
    user_id: int
    options: StartOptions
    channel_id: int
    message_id: int
    files: dict[int, AttachmentInput]


@app_commands.guild_only()
class RemixEventCog(
    commands.GroupCog,
    group_name="stems-event",
    group_description="Remix events: one card where everyone takes a track's stems privately",
):
    def __init__(
        self,
        bot: commands.Bot | commands.AutoShardedBot,
        desk: RemixEventDesk,
        stems: StemService,
    ) -> None:
        self._bot = bot
        self._desk = desk
        self._stems = stems
        self._picking: OrderedDict[int, _Picking] = OrderedDict()
        super().__init__()
        assert self.app_command is not None  # a GroupCog is its group
        self.app_command.add_command(vote_command())

    # --- start ----------------------------------------------------------------------------

    @app_commands.command(
        name="start", description="Start a remix event: one card where everyone takes the stems"
    )
    @app_commands.describe(
        file="The track: an audio file",
        url="Or a link to the track",
        message="Or a link to a posted message with the track",
        title="The event's name (default: the track's)",
        modes="What to offer: vocals, instruments, all (default: all three)",
        ends="When it ends: a duration (3d, 12h) or a UTC time (2026-12-24 18:00)",
        submissions="Collect members' remixes (default: yes)",
        thread="Post the card in a new thread (default: no)",
        prefetch="Separate every mode now, so the first clicks are instant (default: no)",
        budget="The most units the event may spend (default: the server's limits only)",
    )
    async def start(
        self,
        interaction: discord.Interaction,
        file: discord.Attachment | None = None,
        url: str | None = None,
        message: str | None = None,
        title: str | None = None,
        modes: str | None = None,
        ends: str | None = None,
        submissions: bool = True,
        thread: bool = False,
        prefetch: bool = False,
        budget: Budget | None = None,
    ) -> None:
        if not manages_events(interaction):
            log.info("user %s was refused /stems-event start", interaction.user.id)
            await reply_privately(interaction, NEED_PERMISSION)
            return
        try:
            if sum(given is not None for given in (file, url, message)) != 1:
                raise InvalidSourceError(ONE_SOURCE)
            options = StartOptions(
                title, parse_modes(modes), ends, submissions, thread, prefetch, budget
            )
            parse_ends(ends, utc_now())
            if title is not None and not 1 <= len(title.strip()) <= MAX_TITLE_CHARS:
                raise RemixEventError(
                    f"Give the event a title of 1 to {MAX_TITLE_CHARS} characters."
                )
            checked = None if file is None else self._stems.check_attachment(attachment_input(file))
            link = None if message is None else parse_message_link(message)
            plain_url = None if url is None else check_url_syntax(url)
        except StembotError as refusal:
            await reply_privately(interaction, refusal.user_message)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            if checked is not None:
                await self._open(interaction, options, Track(checked, upload=file))
            elif plain_url is not None:
                source = await self._stems.check_url(plain_url, requester_of(interaction))
                await self._open(interaction, options, Track(source))
            else:
                assert link is not None and interaction.guild_id is not None
                posted = await linked_message(self._bot, link, interaction.guild_id)
                await self._from_message(interaction, options, posted)
        except StembotError as refusal:
            await _answer(interaction, refusal.user_message)

    async def _from_message(
        self, interaction: discord.Interaction, options: StartOptions, posted: discord.Message
    ) -> None:
        usable, refusal = usable_audio(self._stems, posted.attachments)
        if not usable:
            await _answer(interaction, f"{NO_AUDIO} {refusal.user_message if refusal else ''}")
            return
        if len(usable) == 1:
            await self._open(interaction, options, _message_track(self._stems, posted, usable[0]))
            return
        assert interaction.guild_id is not None
        offered = usable[:FILES_MAX]
        self._remember(
            interaction.id,
            _Picking(
                interaction.guild_id,
                interaction.user.id,
                options,
                posted.channel.id,
                posted.id,
                {f.id: f for f in offered},
            ),
        )
        view = discord.ui.View(timeout=None)
        view.add_item(TrackSelect(interaction.id, offered))
        extra = f" (the first {FILES_MAX} are offered)" if len(usable) > FILES_MAX else ""
        await interaction.edit_original_response(
            content=f"That message has {len(usable)} audio files{extra}. Which is the track?",
            view=view,
        )

    async def picked(self, interaction: discord.Interaction, picker_id: int, value: str) -> None:
        """The organiser picked the track among a message's files."""
        picking = self._picking.get(picker_id)
        if picking is None or picking.guild_id != interaction.guild_id:
            await reply_privately(interaction, PICK_EXPIRED)
            return
        if picking.user_id != interaction.user.id:
            await reply_privately(interaction, "This menu was opened by someone else.")
            return
        file = picking.files.get(int(value)) if value.isdigit() else None
        if file is None:
            await reply_privately(interaction, "That is not one of the files offered.")
            return
        del self._picking[picker_id]
        await interaction.response.edit_message(content="Starting the remix event…", view=None)
        source = self._stems.check_attachment(file)
        ref = SourceRef(picking.channel_id, picking.message_id, file.id)
        try:
            await self._open(interaction, picking.options, Track(source, ref=ref))
        except StembotError as refusal:
            await _answer(interaction, refusal.user_message)

    def _remember(self, picker_id: int, picking: _Picking) -> None:
        self._picking[picker_id] = picking
        while len(self._picking) > _PICKERS_MAX:
            self._picking.popitem(last=False)

    async def _open(
        self, interaction: discord.Interaction, options: StartOptions, track: Track
    ) -> None:
        """Record the event, post its card, and everything around it."""
        events = self._desk.events
        title = options.title or shorten(one_line(track.source.name), MAX_TITLE_CHARS) or "Remix"
        spec = EventSpec(
            title=title,
            source_name=track.source.name,
            source_key=track.source.key,
            source_ref=track.ref,
            modes=options.modes,
            ends_at=parse_ends(options.ends, utc_now()),
            submissions=options.submissions,
            budget=options.budget,
            prefetch=options.prefetch,
        )
        event = await events.start(requester_of(interaction), spec)
        notes: list[str] = []
        where = await self._where(interaction, event, options.thread, notes)
        card = await self._post_card(interaction, where, event, track, notes)
        if card is None:
            await events.end(event.id, by_user_id=interaction.user.id)
            await _answer(
                interaction,
                f"stembot can't post in {where.mention}: it needs the **Send Messages** "
                "permission there. The event was not started and nothing was spent.",
            )
            return
        on_card = card.attachments[0] if card.attachments else None
        pinned = await _pin(card, notes)
        scheduled = await self._schedule(interaction, event, card)
        event = await events.card_posted(
            event.id,
            where.id,
            card.id,
            pinned=pinned,
            scheduled_event_id=scheduled,
            source_ref=None if on_card is None else SourceRef(where.id, card.id, on_card.id),
        )
        self._desk.cards.posted(event.id)
        self._desk.closer.expect(event.ends_at)
        if event.must_prefetch:
            await self._prefetch(event, track, notes)
        log.info("remix event %s: card %s posted in channel %s", event.id, card.id, where.id)
        await _answer(interaction, _started_text(event, card, notes))

    async def _where(
        self,
        interaction: discord.Interaction,
        event: RemixEvent,
        thread: bool,
        notes: list[str],
    ) -> discord.PartialMessageable:
        """The channel the card goes in: a new thread of this one when asked and possible."""
        channel_id = interaction.channel_id or event.channel_id
        if thread:
            parent = self._bot.get_channel(channel_id)
            if isinstance(parent, discord.TextChannel):
                try:
                    started = await parent.create_thread(
                        name=event.title[:100],
                        type=discord.ChannelType.public_thread,
                        auto_archive_duration=THREAD_ARCHIVE_MINUTES,
                    )
                    channel_id = started.id
                except discord.HTTPException as error:
                    log.info("remix event %s: no thread (HTTP %s)", event.id, error.status)
                    notes.append(
                        "stembot couldn't start a thread here (it needs **Create Public "
                        "Threads**), so the card is in this channel."
                    )
            else:
                notes.append("A thread can't be started here, so the card is in this channel.")
        return self._bot.get_partial_messageable(channel_id, guild_id=event.guild_id)

    async def _post_card(
        self,
        interaction: discord.Interaction,
        where: discord.PartialMessageable,
        event: RemixEvent,
        track: Track,
        notes: list[str],
    ) -> discord.Message | None:
        """Post the card, with the track on it when it fits; None when Discord refused."""
        counts = await self._desk.events.counts(event.id)
        file = await _card_file(interaction, event, track)
        if file is not None:
            state = CardState(counts, costs=self._stems.costs, track_file=file.filename)
            try:
                return await where.send(view=event_card(event, state, utc_now()), file=file)
            except discord.HTTPException as error:
                log.info("remix event %s: card with its track refused (%s)", event.id, error.code)
            finally:
                file.close()
            notes.append(
                "The track couldn't be put on the card (stembot needs **Attach Files** here)."
            )
        state = CardState(counts, costs=self._stems.costs)
        try:
            return await where.send(view=event_card(event, state, utc_now()))
        except discord.HTTPException as error:
            log.info("remix event %s: card refused (%s)", event.id, error.code)
            return None

    async def _schedule(
        self, interaction: discord.Interaction, event: RemixEvent, card: discord.Message
    ) -> int | None:
        """A Discord scheduled event pointing at the card, when the bot may create one."""
        guild = self._bot.get_guild(event.guild_id)
        if guild is None or not interaction.app_permissions.create_events:
            return None
        start = utc_now() + SCHEDULE_LEAD
        end = max(event.ends_at or start + SCHEDULE_DEFAULT_LENGTH, start + SCHEDULE_LEAD)
        location = card.jump_url
        if len(location) > LOCATION_MAX:
            location = "#" + label_text(getattr(card.channel, "name", "") or "remix", 90)
        try:
            scheduled = await guild.create_scheduled_event(
                name=event.title[:100],
                start_time=start,
                end_time=end,
                entity_type=discord.EntityType.external,
                privacy_level=discord.PrivacyLevel.guild_only,
                location=location,
                description=(
                    f"Remix event: take the stems of {label_text(event.source_name, 200)} "
                    "privately from the event's card, free, and share your remix."
                ),
            )
        except discord.HTTPException as error:
            log.info("remix event %s: no scheduled event (%s)", event.id, error.code)
            return None
        return scheduled.id

    async def _prefetch(self, event: RemixEvent, track: Track, notes: list[str]) -> None:
        """Separate every offered mode now; refusals go on the card and to the organiser."""
        if event.source_ref is None:
            notes.append(
                "The track can't be read again later (a link, or a file too large for the "
                "card), so every offered mode is being separated now."
            )
        else:
            notes.append("Every offered mode is being separated now.")
        source = track.source if event.source_ref is None else None
        outcomes = await self._desk.events.prefetch(event.id, source)
        for mode, outcome in outcomes.items():
            if isinstance(outcome, StembotError):
                self._desk.cards.failed(event.id, mode, outcome)
                notes.append(f"{mode.label}: {outcome.user_message}")
        self._desk.cards.changed(event.id)

    # --- end ------------------------------------------------------------------------------

    @app_commands.command(
        name="end", description="End a remix event: its summary, and who took part as CSV"
    )
    @app_commands.describe(event="Which event (default: the one running)")
    @app_commands.autocomplete(event=running_events)
    async def end(self, interaction: discord.Interaction, event: EventId | None = None) -> None:
        assert interaction.guild_id is not None  # guild_only
        try:
            target = await the_event(interaction, event)
        except StembotError as refusal:
            await reply_privately(interaction, refusal.user_message)
            return
        mod = manages_events(interaction)
        if not mod and target.organiser_id != interaction.user.id:
            log.info("user %s was refused ending remix event %s", interaction.user.id, target.id)
            await reply_privately(interaction, NOT_YOURS)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            summary = await self._desk.ender.end(
                target.id, by_user_id=interaction.user.id, guild_id=interaction.guild_id
            )
        except RemixEventEndedError:
            await _answer(interaction, "That remix event has already ended.")
            return
        where = summary.event.card_channel_id or summary.event.channel_id
        title = safe_text(summary.event.title, MAX_TITLE_CHARS)
        csv_file = await self._desk.ender.participation_file(target.id)
        try:
            await interaction.edit_original_response(
                content=(
                    f"Remix event **{title}** has ended; its summary is posted in <#{where}>. "
                    "Who took part is in the file (only you see this)."
                ),
                attachments=[csv_file],
            )
        except discord.HTTPException as error:
            log.warning("remix event %s: CSV not sent (%s)", target.id, error.status)


class TrackSelect(
    discord.ui.DynamicItem[discord.ui.Select[Any]],
    template=r"stems-event:track:(?P<picker>[0-9]+)",
):
    """The organiser's pick of the track among a message's audio files."""

    def __init__(self, picker_id: int, files: list[AttachmentInput] | None = None) -> None:
        super().__init__(
            discord.ui.Select(
                custom_id=f"stems-event:track:{picker_id}",
                placeholder="Pick the event's track",
                options=file_options(files or []),
            )
        )
        self.picker_id = picker_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Match[str], /
    ) -> TrackSelect:
        return cls(int(match["picker"]))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await answer_if_elsewhere(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        client = interaction.client
        cog = None
        if isinstance(client, (commands.Bot, commands.AutoShardedBot)):
            cog = client.get_cog("RemixEventCog")
        if not isinstance(cog, RemixEventCog):
            await reply_privately(interaction, PICK_EXPIRED)
            return
        picked = self.item.values[0] if len(self.item.values) == 1 else ""
        await cog.picked(interaction, self.picker_id, picked)


def _message_track(stems: StemService, posted: discord.Message, file: AttachmentInput) -> Track:
    ref = SourceRef(posted.channel.id, posted.id, file.id)
    return Track(stems.check_attachment(file), ref=ref)


async def _card_file(
    interaction: discord.Interaction, event: RemixEvent, track: Track
) -> discord.File | None:
    """The organiser's upload as a file for the card, when it fits the channel's limit."""
    upload = track.upload
    if upload is None or upload.size + REQUEST_OVERHEAD_BYTES > interaction.filesize_limit:
        return None
    try:
        return await upload.to_file(filename=card_filename(event.source_name))
    except discord.HTTPException as error:
        log.info("remix event %s: the upload could not be read (%s)", event.id, error.status)
        return None


async def _pin(card: discord.Message, notes: list[str]) -> bool:
    try:
        await card.pin(reason="Remix event card")
    except discord.Forbidden:
        notes.append(
            "stembot couldn't pin the card: it needs the **Pin Messages** permission here."
        )
        return False
    except discord.HTTPException as error:
        notes.append(f"stembot couldn't pin the card (Discord said: {error.text or error.status}).")
        return False
    return True


def _started_text(event: RemixEvent, card: discord.Message, notes: list[str]) -> str:
    title = safe_text(event.title, MAX_TITLE_CHARS)
    ends = (
        f" It ends {timestamp(event.ends_at, 'f')}."
        if event.ends_at is not None
        else " End it with `/stems-event end`."
    )
    lines = [f"Remix event **{title}** started: {card.jump_url}.{ends}", *notes]
    return "\n".join(lines)[:2000]


async def _answer(interaction: discord.Interaction, text: str) -> None:
    """The organiser's private reply becomes ``text``."""
    try:
        await interaction.edit_original_response(content=text, view=None)
    except discord.HTTPException as error:
        log.warning("could not answer %s: %s", interaction.id, error.status)
