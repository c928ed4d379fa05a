"""Submissions to a remix event: the card's "Submit your remix" button, its modal (a title and
one audio file), the post in the event's channel crediting the member, and its Remove button.

The modal's submit is answered by ``on_submission_modal`` (the bot's ``on_interaction``
listener), from its custom id ``stems-event:submission:<event id>``, and not by a discord.py
Modal kept in memory: discord.py finds a Modal by its custom id alone, so members submitting
the same event's modal at once would share one object and its values, and a restart between
opening and submitting would lose it. The buttons keep their state in their custom ids too.

The file gets the checks of any input: its name, type and size within STEMBOT_MAX_INPUT_MB at
once, then its bytes sniffed through the guarded URL probe. The post carries it when it fits
the channel's upload limit, and otherwise links to the member's upload (and says so). The post
is made before the submission is recorded (the record names it), so the Remove button, which
names the record, is added to it by an edit. Every refusal is private and costs nothing.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import weakref
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from re import Match
from typing import TYPE_CHECKING, Any, TypeVar

import discord

from stembot.audio_formats import FORMATS_HINT
from stembot.bot.embeds import label_text, masked_link, safe_text
from stembot.bot.guild_only import answer_if_elsewhere
from stembot.bot.remix_event_desk import card_changed
from stembot.bot.requests import requester_of
from stembot.bot.tree import reply_privately
from stembot.bot.views import service_of
from stembot.errors import (
    IncidentError,
    InvalidSourceError,
    NotAudioSourceError,
    RemixEventEndedError,
    RemixEventError,
    StembotError,
    SubmissionRefusedError,
)
from stembot.remix_event_models import RemixEvent, Submission
from stembot.remix_events import MAX_TITLE_CHARS, checked_title
from stembot.request_inputs import AttachmentInput
from stembot.sources import describe_size

if TYPE_CHECKING:
    from stembot.remix_events import RemixEventService

log = logging.getLogger(__name__)
T = TypeVar("T")

MODAL_ID = re.compile(r"stems-event:submission:(?P<event_id>[0-9]+)")
TITLE_INPUT = "title"
FILE_INPUT = "remix"
SUBMIT_LABEL = "Submit your remix"
# Copies of members' files being read and posted at once, per bot: each is held in memory
# (up to the channel's upload limit) until Discord has it.
COPIES_AT_ONCE = 4

SUBMISSION_COLOUR = discord.Colour.purple()
RETIRED_COLOUR = discord.Colour.light_grey()
EMBED_TITLE_MAX = 256
AUTHOR_NAME_MAX = 256
EVENT_TITLE_SHOWN = 100

NOT_RUNNING = "Remix events aren't available on this bot right now. Please try again later."
ENDED = "This remix event has ended, so it takes no more submissions."
NO_SUBMISSIONS = "This remix event doesn't take submissions."
ONE_FILE = "Attach one audio file with your remix."
UNREADABLE = (
    "stembot couldn't read your file from Discord to check it. Please submit it again; "
    "nothing was posted."
)
NOT_POSTED = (
    "stembot couldn't post your remix in the event's channel (it needs Send Messages, Embed "
    "Links and Attach Files there). Ask a moderator to let it, then submit again; nothing "
    "was recorded."
)


def remix_events_of(client: discord.Client) -> RemixEventService:
    """The bot's remix event service; RemixEventError saying so when it has none."""
    events: RemixEventService | None = getattr(client, "remix_events", None)
    if events is None:
        raise RemixEventError(NOT_RUNNING)
    return events


def manages_events(interaction: discord.Interaction) -> bool:
    """Manage Events or Manage Server (or Administrator) in the interaction's channel, as
    Discord resolved it."""
    permissions = interaction.permissions
    return permissions.manage_events or permissions.manage_guild or permissions.administrator


def event_channel(client: discord.Client, event: RemixEvent) -> discord.PartialMessageable:
    """Where the event's card is (a thread's id for a card in a new thread)."""
    channel_id = event.card_channel_id or event.channel_id
    return client.get_partial_messageable(channel_id, guild_id=event.guild_id)


# --- the card's button and the modal ----------------------------------------------------------


class SubmitButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"stems-event:submit:(?P<event_id>[0-9]+)",
):
    """The "Submit your remix" button on an event's card: opens the submission modal."""

    def __init__(self, event_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=SUBMIT_LABEL,
                style=discord.ButtonStyle.primary,
                custom_id=f"stems-event:submit:{event_id}",
            )
        )
        self.event_id = event_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Match[str], /
    ) -> SubmitButton:
        return cls(int(match["event_id"]))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await answer_if_elsewhere(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            event = await _open_event(interaction, self.event_id)
        except StembotError as refusal:
            await reply_privately(interaction, refusal.user_message)
            return
        modal = submission_modal(event)
        # Never kept by discord.py: on_submission_modal answers the submit (module's note).
        modal.stop()
        await interaction.response.send_modal(modal)


def submission_modal(event: RemixEvent) -> discord.ui.Modal:
    """The modal: a title, and one file."""
    modal = discord.ui.Modal(title=SUBMIT_LABEL, custom_id=f"stems-event:submission:{event.id}")
    title = discord.ui.TextInput[Any](
        custom_id=TITLE_INPUT, min_length=1, max_length=MAX_TITLE_CHARS
    )
    upload = discord.ui.FileUpload[Any](custom_id=FILE_INPUT, min_values=1, max_values=1)
    about = label_text(f"The name of your remix of {event.title}", 100)
    modal.add_item(discord.ui.Label(text="Title", description=about, component=title))
    modal.add_item(
        discord.ui.Label(
            text="Your remix", description=f"One audio file: {FORMATS_HINT}", component=upload
        )
    )
    return modal


async def _open_event(interaction: discord.Interaction, event_id: int) -> RemixEvent:
    """The event, if it takes submissions now."""
    assert interaction.guild_id is not None
    event = await remix_events_of(interaction.client).get(event_id, guild_id=interaction.guild_id)
    if not event.is_open(datetime.now(UTC)):
        raise RemixEventEndedError(ENDED)
    if not event.submissions:
        raise SubmissionRefusedError(NO_SUBMISSIONS)
    return event


# --- the modal's submit -----------------------------------------------------------------------


async def on_submission_modal(interaction: discord.Interaction) -> None:
    """The bot's ``on_interaction`` listener: answers the submits of submission modals."""
    if interaction.type is not discord.InteractionType.modal_submit:
        return
    data: Any = interaction.data or {}
    match = MODAL_ID.fullmatch(str(data.get("custom_id", "")))
    if match is None or not await answer_if_elsewhere(interaction):
        return
    thinking = interaction.response.defer(ephemeral=True, thinking=True)
    if not await acknowledged(interaction, thinking, "submission"):
        return
    answer = await outcome(_receive(interaction, int(match["event_id"]), data), "a submission")
    await say_privately(interaction, answer)


async def acknowledged(
    interaction: discord.Interaction, acknowledgement: Awaitable[object], what: str
) -> bool:
    """Whether ``acknowledgement`` (the interaction's response) went through; logged if not."""
    try:
        await acknowledgement
    except discord.HTTPException as error:
        log.warning("%s %s could not be acknowledged: %s", what, interaction.id, error.status)
        return False
    return True


async def outcome(work: Awaitable[T], what: str) -> T | str:
    """What ``work`` gives, or the private line for its refusal, or for a bug (an incident,
    logged with the traceback)."""
    try:
        return await work
    except StembotError as refusal:
        return refusal.user_message
    except Exception:
        incident = IncidentError()
        log.exception("%s failed (incident %s)", what, incident.incident_id)
        return incident.user_message


async def say_privately(
    interaction: discord.Interaction, text: str, view: discord.ui.View | None = None
) -> None:
    """Replace the interaction's private response with ``text`` (and ``view``)."""
    try:
        await interaction.edit_original_response(content=text, view=view)
    except discord.HTTPException as error:
        log.warning("could not answer interaction %s: %s", interaction.id, error.status)


@dataclass(frozen=True, slots=True)
class _Form:
    title: str
    uploads: list[AttachmentInput]


def _form(data: Any) -> _Form:
    """The title and the files of a submit, from its components (Labels, or rows)."""
    title = ""
    chosen: list[str] = []
    for component in _inputs(data.get("components") or []):
        if component.get("custom_id") == TITLE_INPUT:
            title = str(component.get("value") or "")
        elif component.get("custom_id") == FILE_INPUT:
            chosen = [str(v) for v in component.get("values") or []]
    files = (data.get("resolved") or {}).get("attachments") or {}
    uploads = [_attachment(files[key]) for key in chosen if key in files]
    return _Form(title, uploads)


def _inputs(components: list[Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for component in components:
        if "component" in component:
            found += _inputs([component["component"]])
        elif "components" in component:
            found += _inputs(component["components"])
        else:
            found.append(component)
    return found


def _attachment(data: dict[str, Any]) -> AttachmentInput:
    return AttachmentInput(
        id=int(data["id"]),
        url=str(data["url"]),
        filename=str(data.get("filename") or "remix"),
        content_type=data.get("content_type"),
        size=int(data.get("size") or 0),
    )


async def _receive(interaction: discord.Interaction, event_id: int, data: Any) -> str:
    """Check, post and record the submission; the member's answer (StembotError: refused)."""
    assert interaction.guild_id is not None
    event = await _open_event(interaction, event_id)
    form = _form(data)
    if len(form.uploads) != 1:
        raise SubmissionRefusedError(ONE_FILE)
    title = checked_title(form.title)
    upload = await _checked(interaction, form.uploads[0])
    post = await _post(interaction, event, title, upload)
    events = remix_events_of(interaction.client)
    try:
        submission, replaced = await events.submit(
            event.id,
            interaction.user.id,
            title,
            upload.filename,
            post.id,
            guild_id=interaction.guild_id,
        )
    except StembotError as refusal:
        await _retire(post, None, f"Not accepted: {refusal.user_message}")
        raise
    card_changed(interaction.client, event.id)
    await _add_remove(post, submission)
    if replaced is not None:
        await _mark_replaced(interaction, event, replaced, post)
    log.info("remix event %s: submission %s posted", event.id, submission.id)
    return _accepted(title, post, replaced is not None, attached=bool(post.attachments))


async def _checked(interaction: discord.Interaction, upload: AttachmentInput) -> AttachmentInput:
    """The checks of any input: name, type and size at once, then the bytes sniffed through
    the guarded probe. Refusals name the member's file."""
    stems = service_of(interaction)
    stems.check_attachment(upload)
    try:
        await stems.check_url(upload.url, requester_of(interaction))
    except NotAudioSourceError as error:
        name = safe_text(upload.filename, 100)
        raise SubmissionRefusedError(
            f"Your file **{name}** is {error.what}, not audio. Submit the audio file of your "
            f"remix ({FORMATS_HINT})."
        ) from None
    except InvalidSourceError:
        raise SubmissionRefusedError(UNREADABLE) from None
    return upload


_copy_slots: weakref.WeakKeyDictionary[discord.Client, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _copy_slot(client: discord.Client) -> asyncio.Semaphore:
    return _copy_slots.setdefault(client, asyncio.Semaphore(COPIES_AT_ONCE))


async def _post(
    interaction: discord.Interaction, event: RemixEvent, title: str, upload: AttachmentInput
) -> discord.Message:
    """The submission in the event's channel: the file when it fits there, else a link."""
    limit = interaction.filesize_limit
    fits = upload.size <= limit
    link = None if fits else _link_note(upload, limit)
    embed = submission_embed(event, interaction.user, title, link)
    channel = event_channel(interaction.client, event)
    try:
        async with _copy_slot(interaction.client):
            if not fits:
                return await channel.send(embed=embed)
            data = await interaction.client.http.get_from_cdn(upload.url)
            file = discord.File(io.BytesIO(data), filename=upload.filename)
            return await channel.send(embed=embed, file=file)
    except discord.HTTPException as error:
        log.warning("remix event %s: a submission could not be posted: %s", event.id, error.status)
        raise SubmissionRefusedError(NOT_POSTED) from None


def _link_note(upload: AttachmentInput, limit: int) -> str:
    return (
        f"The file is too large to attach in this channel "
        f"({describe_size(upload.size, round_up=True)}; the limit here is "
        f"{describe_size(limit)}): {masked_link('download it', upload.url)} "
        "(Discord's link to the upload expires after a while)."
    )


def submission_embed(
    event: RemixEvent,
    member: discord.User | discord.Member,
    title: str,
    link_note: str | None = None,
) -> discord.Embed:
    """The post: the member's name (the vote reads it back from here) and mention, the title,
    the event; ``link_note`` when the file is linked instead of attached."""
    description = (
        f"A remix by {member.mention} for **{safe_text(event.title, EVENT_TITLE_SHOWN)}**."
    )
    if link_note is not None:
        description += f"\n{link_note}"
    embed = discord.Embed(
        title=safe_text(title, EMBED_TITLE_MAX), description=description, colour=SUBMISSION_COLOUR
    )
    embed.set_author(
        name=label_text(member.display_name, AUTHOR_NAME_MAX), icon_url=member.display_avatar.url
    )
    return embed


def _accepted(title: str, post: discord.Message, replaced: bool, *, attached: bool) -> str:
    lines = [f"Your remix **{safe_text(title, 100)}** is in: {post.jump_url}"]
    if replaced:
        lines.append("It replaces your earlier submission, whose post now says so.")
    if not attached:
        lines.append(
            "Your file is larger than this channel takes, so the post links to your upload."
        )
    return "\n".join(lines)


async def _add_remove(post: discord.Message, submission: Submission) -> None:
    view = discord.ui.View(timeout=None)
    view.add_item(RemoveButton(submission.id))
    try:
        await post.edit(view=view)
    except discord.HTTPException as error:
        log.warning("submission %s: no Remove button (%s)", submission.id, error.status)


async def _mark_replaced(
    interaction: discord.Interaction,
    event: RemixEvent,
    old: Submission,
    new_post: discord.Message,
) -> None:
    note = f"Replaced by a newer submission of {interaction.user.mention}: {new_post.jump_url}"
    embed = submission_embed(event, interaction.user, old.title)
    old_post = event_channel(interaction.client, event).get_partial_message(old.message_id)
    await _retire(old_post, embed, note)


async def _retire(
    post: discord.Message | discord.PartialMessage, embed: discord.Embed | None, note: str
) -> None:
    """Edit a post that is no longer a submission (its embed, or ``embed``): ``note`` says
    why; no file, no button."""
    if embed is None and isinstance(post, discord.Message):
        embed = _first_embed(post)
    try:
        await post.edit(embed=retired(embed, note), attachments=[], view=None)
    except discord.HTTPException as error:
        log.warning("post %s could not be marked (%s)", post.id, error.status)


def retired(embed: discord.Embed | None, note: str) -> discord.Embed:
    """A submission's embed once it is out of the running: greyed, ``note`` instead of its
    description (its title and member stay)."""
    embed = embed or discord.Embed()
    embed.description = note
    embed.colour = RETIRED_COLOUR
    return embed


def _first_embed(message: discord.Message | None) -> discord.Embed | None:
    return message.embeds[0] if message is not None and message.embeds else None


# --- removal ----------------------------------------------------------------------------------


class RemoveButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"stems-event:remove:(?P<submission_id>[0-9]+)",
):
    """The "Remove" button on a submission's post: for its member, the organiser, or a member
    with Manage Events or Manage Server."""

    def __init__(self, submission_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Remove",
                style=discord.ButtonStyle.secondary,
                custom_id=f"stems-event:remove:{submission_id}",
            )
        )
        self.submission_id = submission_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Match[str], /
    ) -> RemoveButton:
        return cls(int(match["submission_id"]))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await answer_if_elsewhere(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            note = await _remove(interaction, self.submission_id)
        except StembotError as refusal:
            await reply_privately(interaction, refusal.user_message)
            return
        embed = retired(_first_embed(interaction.message), note)
        await interaction.response.edit_message(embed=embed, attachments=[], view=None)


async def _remove(interaction: discord.Interaction, submission_id: int) -> str:
    """Take the submission out; the line its post shows from now on."""
    assert interaction.guild_id is not None
    events = remix_events_of(interaction.client)
    found = await events.submission(submission_id, guild_id=interaction.guild_id)
    event = await events.get(found.event_id, guild_id=interaction.guild_id)
    removed = await events.remove_submission(
        event.id,
        submission_id,
        interaction.user.id,
        guild_id=interaction.guild_id,
        moderator=manages_events(interaction),
    )
    card_changed(interaction.client, event.id)
    if removed.removed_by == removed.user_id:
        by = "its member"
    elif removed.removed_by == event.organiser_id:
        by = "the event's organiser"
    else:
        by = "a moderator"
    log.info("remix event %s: submission %s removed by %s", event.id, submission_id, by)
    return f"This submission by <@{removed.user_id}> was removed by {by}."
