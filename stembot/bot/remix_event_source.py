"""A remix event's track in Discord: read again, with a fresh signed URL, when a paid call of
the event is about to run (the service's SourceResolver), and found in a posted message at
start (``message:``).

Signed URLs never reach the database: the event keeps where the file is (its channel, message
and attachment ids; the organiser's post, or the card the bot re-uploaded the file onto) and
this reads the message again.
"""

from __future__ import annotations

import logging
from typing import Final

import discord

from stembot.bot.requests import attachment_input
from stembot.errors import RemixEventError
from stembot.remix_event_models import RemixEvent
from stembot.remix_event_options import MessageLink
from stembot.request_inputs import CheckedSource
from stembot.stem_service import StemService

log = logging.getLogger(__name__)

TRACK_GONE: Final = (
    "The event's track is gone (its message or file was deleted), so no more stems can be "
    "separated from it. Stems already separated are still given out."
)
TRACK_UNREADABLE: Final = (
    "stembot couldn't read the event's track from Discord just now (HTTP {status}). "
    "Nothing was charged; try again in a moment."
)
MESSAGE_UNKNOWN: Final = (
    "stembot can't find that message. Check the link, and that stembot can see the channel "
    "and read its message history."
)
MESSAGE_ELSEWHERE: Final = "That message is in another server; link a message of this one."


class TrackResolver:
    """The service's SourceResolver: the event's track with a fresh URL, checked as any
    attachment is."""

    def __init__(self, client: discord.Client, stems: StemService) -> None:
        self._client = client
        self._stems = stems

    async def __call__(self, event: RemixEvent) -> CheckedSource:
        ref = event.source_ref
        if ref is None:
            raise RemixEventError(TRACK_GONE)
        channel = self._client.get_partial_messageable(ref.channel_id, guild_id=event.guild_id)
        try:
            message = await channel.fetch_message(ref.message_id)
        except discord.NotFound as error:
            raise RemixEventError(TRACK_GONE) from error
        except discord.HTTPException as error:
            log.warning("remix event %s: its track could not be read (%s)", event.id, error.status)
            raise RemixEventError(TRACK_UNREADABLE.format(status=error.status)) from error
        attachment = next((a for a in message.attachments if a.id == ref.attachment_id), None)
        if attachment is None:
            raise RemixEventError(TRACK_GONE)
        return self._stems.check_attachment(attachment_input(attachment))


async def linked_message(
    client: discord.Client, link: MessageLink, guild_id: int
) -> discord.Message:
    """The message a ``message:`` link names, in this server; RemixEventError otherwise."""
    if link.guild_id != guild_id:
        raise RemixEventError(MESSAGE_ELSEWHERE)
    channel = client.get_partial_messageable(link.channel_id, guild_id=guild_id)
    try:
        return await channel.fetch_message(link.message_id)
    except discord.HTTPException as error:
        log.info("a linked message could not be read (HTTP %s)", error.status)
        raise RemixEventError(MESSAGE_UNKNOWN) from error
