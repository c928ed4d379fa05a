"""Free mixes from a result's menu ("Instrumental", "Without Drums", ...; on the card, or
under the links of a result posted in the channel or by DM): a pick makes the mix from the
stems stembot already has and sends it privately to the member who picked.

A mix costs nothing: no units, no API call, no ledger row. It is made once per result and
upload limit (stembot/stem_media.py), however many members pick it.

Who may pick: anyone who sees the result, that is anyone in the channel of its request in that
server. The result is public there already; the mix goes only to the member who picked. A
result delivered by DM (the channel refused it) is its requester's: there the menu answers
them alone, the one place outside a server where stembot answers. A menu naming a request of
another server, channel or member (only a modified client sends one) is refused.

Why the pick is acknowledged with an update that changes nothing: Discord keeps a pick shown
in a select until the message is drawn again, and picking the same option again then sends
nothing. The empty update draws the message again for everyone who has it open (nothing on
it changes, and it cannot undo another edit of it), so the menu is back at its placeholder
and ready for the next pick. The answer is a private followup: a line at once, then the file
in its place.

The menu's state is its custom_id (``stems:mix:<request id>``) and the picked value (a mix
key), so it works after a restart like Cancel does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from re import Match
from typing import Any

import discord
from discord.ext import commands
from discord.utils import MISSING

from stembot.bot.embeds import SOURCE_NAME_MAX, label_text, safe_text
from stembot.bot.guild_only import answer_if_elsewhere
from stembot.bot.views import media_of, service_of
from stembot.errors import (
    AudioError,
    IncidentError,
    MixUnavailableError,
    StembotError,
    UnknownMixError,
)
from stembot.models import Mode, Request, Separation
from stembot.result_media import Mix, mix_by_key
from stembot.stem_media import MediaService

log = logging.getLogger(__name__)

# The slash command group a new request is made with (StemsCog's group_name).
STEMS_COMMAND = "stems"
MIX_LABEL_MAX = 60
MIX_PLACEHOLDER = "Free mixes: pick one (sent privately, no units)"
SELECT_OPTIONS_MAX = 25
MIX_OPTION_LABEL_MAX = 100  # Discord's limit for an option's label

RESULT_GONE = (
    "stembot no longer keeps this result (old results are deleted after a while, and a "
    "refunded one at once), so it can't make mixes of it. To get the stems again, run "
    "`/stems` with the song again: that is a new request, charged as usual."
)
NOT_THIS_CHANNEL = "This menu doesn't belong to a result sent here."
NO_MEDIA = (
    "Free mixes are switched off on this bot: it keeps no copies of stems. "
    "The links on the result still work."
)
NOT_SENT = "Discord didn't take the mix file, so it couldn't be sent. Please pick it again."
STEMS_GONE = (
    "The stems of {source} are no longer available: stembot's copies are gone and their "
    "links have expired, so no mix can be made of them. Run {command} with the same file or "
    "link to get them again; that is a new request, charged as usual."
)


class MixSelect(
    discord.ui.DynamicItem[discord.ui.Select[Any]], template=r"stems:mix:(?P<request_id>[0-9]+)"
):
    """A result's menu of free mixes; result_card.mix_menu draws it, this answers its picks."""

    def __init__(self, request_id: int, mixes: Sequence[Mix] = ()) -> None:
        """The menu offering ``mixes``; without them, the item that answers a pick (the
        message carries the real options)."""
        super().__init__(
            discord.ui.Select(
                custom_id=f"stems:mix:{request_id}",
                placeholder=MIX_PLACEHOLDER,
                options=mix_options(mixes),
            )
        )
        self.request_id = request_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Match[str], /
    ) -> MixSelect:
        return cls(int(match["request_id"]))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return in_the_bots_dm(interaction) or await answer_if_elsewhere(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        picked = self.item.values[0] if len(self.item.values) == 1 else ""
        request_id = self.request_id
        await send_mix(interaction, picked, lambda: _request_subject(interaction, request_id))


def mix_options(mixes: Sequence[Mix]) -> list[discord.SelectOption]:
    """A menu's options for ``mixes`` (a placeholder option when there are none: the item
    that only answers picks)."""
    options = [
        discord.SelectOption(label=label_text(mix.label, MIX_OPTION_LABEL_MAX), value=mix.key)
        for mix in mixes[:SELECT_OPTIONS_MAX]
    ]
    return options or [discord.SelectOption(label="-", value="-")]


@dataclass(frozen=True, slots=True)
class MixSubject:
    """The stored result a pick names, as far as making its mix goes."""

    guild_id: int
    source_key: str
    source_name: str
    mode: Mode
    separation: Separation
    # How the log names it ("request 12").
    name: str
    # What to say when its stems are gone for good; None: how to run the request again.
    gone: str | None = None


# The result a pick names, or why it names none (a line for the member).
FindSubject = Callable[[], Awaitable[MixSubject | str]]


async def send_mix(interaction: discord.Interaction, mix_key: str, find: FindSubject) -> None:
    """Answer a pick: the mix ``mix_key`` of the result ``find`` gives, privately."""
    try:
        await interaction.response.edit_message()  # nothing changes: see the module's note
    except discord.HTTPException as error:
        log.warning("mix pick %s could not be acknowledged: %s", interaction.id, error.status)
        return
    reply = _PrivateReply(interaction)
    try:
        await _answer_pick(interaction, reply, find, mix_key)
    except StembotError as refusal:  # the database busy, say
        await reply.say(refusal.user_message)
    except Exception:
        incident = IncidentError()
        log.exception("mix pick %s failed (incident %s)", interaction.id, incident.incident_id)
        await reply.say(incident.user_message)


async def _request_subject(interaction: discord.Interaction, request_id: int) -> MixSubject | str:
    found = await service_of(interaction).stored_result(request_id)
    if found is None:
        return RESULT_GONE
    request, separation = found
    if not _sent_here(request, interaction):
        log.info("mix pick %s names request %s sent elsewhere", interaction.id, request_id)
        return NOT_THIS_CHANNEL
    return MixSubject(
        request.guild_id,
        request.source_key,
        request.source_name,
        request.mode,
        separation,
        f"request {request.id}",
    )


async def _answer_pick(
    interaction: discord.Interaction, reply: _PrivateReply, find: FindSubject, mix_key: str
) -> None:
    subject = await find()
    if isinstance(subject, str):
        await reply.say(subject)
        return
    media = media_of(interaction.client)
    if media is None:
        await reply.say(NO_MEDIA)
        return
    chosen = mix_by_key([stem.name for stem in subject.separation.stems], mix_key)
    if chosen is None:
        await reply.say(UnknownMixError().user_message)
        return
    what = _what(chosen, subject)
    await reply.say(f"Mixing {what}… Free: no units, no API call.")
    await _make_and_send(interaction, reply, media, subject, chosen)


async def _make_and_send(
    interaction: discord.Interaction,
    reply: _PrivateReply,
    media: MediaService,
    subject: MixSubject,
    chosen: Mix,
) -> None:
    # The limit Discord gives with this interaction (this channel's, boosts included).
    limit = interaction.filesize_limit
    try:
        async with media.mix(
            subject.guild_id, subject.source_key, subject.separation, chosen.key, limit
        ) as prepared:
            file = discord.File(prepared.file.path, filename=prepared.file.filename)
            line = f"{_what(chosen, subject)}: a free mix of the stems (no units, no API call)."
            if not await reply.say(line, file):
                await reply.say(NOT_SENT)
                return
    except MixUnavailableError as error:
        log.info("mix %r of %s not made: %s", chosen.key, subject.name, type(error).__name__)
        await reply.say(await _unavailable(interaction, subject, error))
        return
    except AudioError as error:
        log.warning("mix %r of %s failed: %s", chosen.key, subject.name, error)
        await reply.say(error.user_message)
        return
    log.info("mix %r of %s sent to user %s", chosen.key, subject.name, interaction.user.id)


def in_the_bots_dm(interaction: discord.Interaction) -> bool:
    """A DM with the bot itself, where a result goes when its channel refused it (not a DM
    reached through the app installed to a member's account)."""
    return interaction.guild_id is None and interaction.context.dm_channel


def _sent_here(request: Request, interaction: discord.Interaction) -> bool:
    """Whether the request's result went where the pick comes from: its channel, or the
    requester's DM with the bot."""
    if interaction.guild_id is None:
        return request.user_id == interaction.user.id
    return (request.guild_id, request.channel_id) == (interaction.guild_id, interaction.channel_id)


def _what(chosen: Mix, subject: MixSubject) -> str:
    return f"**{safe_text(chosen.label, MIX_LABEL_MAX)}** of {_source(subject)}"


def _source(subject: MixSubject) -> str:
    return f"**{safe_text(subject.source_name, SOURCE_NAME_MAX) or 'your audio'}**"


async def _unavailable(
    interaction: discord.Interaction, subject: MixSubject, error: MixUnavailableError
) -> str:
    """Why the mix cannot be made; when only a new request helps, how to make one: source
    links are never stored, so the member gives the file or link again."""
    if not error.rerun_helps:
        return error.user_message
    if subject.gone is not None:
        return subject.gone
    command = await _command_mention(interaction, subject)
    return STEMS_GONE.format(source=_source(subject), command=command)


async def _command_mention(interaction: discord.Interaction, subject: MixSubject) -> str:
    """``</stems all:id>`` as registered (globally, else in the request's server for a
    development bot); the plain text if Discord cannot say. Asked only on this rare path."""
    client = interaction.client
    if isinstance(client, (commands.Bot, commands.AutoShardedBot)):
        for scope in (None, discord.Object(subject.guild_id)):
            try:
                registered = await client.tree.fetch_commands(guild=scope)
            except discord.HTTPException as error:
                log.info("could not list the commands for a mention: %s", error.status)
                break
            for command in registered:
                if command.name == STEMS_COMMAND:
                    return f"</{STEMS_COMMAND} {subject.mode.value}:{command.id}>"
    return f"`/{STEMS_COMMAND} {subject.mode.value}`"


class _PrivateReply:
    """The picker's private answer: one followup, sent once and then edited in place."""

    def __init__(self, interaction: discord.Interaction) -> None:
        self._interaction = interaction
        self._message: discord.WebhookMessage | None = None

    async def say(self, text: str, file: discord.File | None = None) -> bool:
        """Show ``text`` (and ``file``); False, logged, if Discord refused it."""
        try:
            if self._message is None:
                self._message = await self._interaction.followup.send(
                    text, ephemeral=True, wait=True, file=file or MISSING
                )
            elif file is None:
                await self._message.edit(content=text)
            else:
                await self._message.edit(content=text, attachments=[file])
        except discord.HTTPException as error:
            log.warning(
                "could not answer mix pick %s: %s", self._interaction.id, error.text or error.status
            )
            return False
        return True
