"""Starting a request from an interaction, shared by the `/stems` cog and the split picker.

Acknowledge first, then the checks that take time, then reserve and queue; every refusal goes
privately to the member who asked.
"""

from __future__ import annotations

import discord

from stembot.bot.delivery import RequestMessages
from stembot.bot.tree import reply_privately
from stembot.bot.views import result_files_of
from stembot.errors import InvalidSourceError, StembotError
from stembot.models import Mode
from stembot.request_inputs import AttachmentInput, CheckedSource, Requester
from stembot.stem_service import StemService


async def start_attachment_request(
    client: discord.Client,
    service: StemService,
    interaction: discord.Interaction,
    mode: Mode,
    source: CheckedSource,
) -> None:
    """Acknowledge, then reserve and queue a checked attachment; refusals go privately."""
    requester = requester_of(interaction)
    await interaction.response.defer(thinking=True)
    await _submit(client, service, interaction, requester, mode, source)


async def start_url_request(
    client: discord.Client,
    service: StemService,
    interaction: discord.Interaction,
    mode: Mode,
    url: str,
) -> None:
    """Acknowledge, probe the link, then reserve and queue; refusals go privately.

    The link is fetched only after the cheap checks (limits, budget, requests in progress) pass.
    """
    requester = requester_of(interaction)
    await interaction.response.defer(thinking=True)
    try:
        await service.precheck(requester, mode, url)
        source = await service.check_url(url, requester)
    except StembotError as refusal:
        await reply_privately(interaction, refusal.user_message)
        return
    await _submit(client, service, interaction, requester, mode, source)


async def _submit(
    client: discord.Client,
    service: StemService,
    interaction: discord.Interaction,
    requester: Requester,
    mode: Mode,
    source: CheckedSource,
) -> None:
    try:
        messages = RequestMessages(
            client, interaction, service, mode, source.name, files=result_files_of(client)
        )
        request = await service.submit(requester, mode, source, messages)
    except StembotError as refusal:
        await reply_privately(interaction, refusal.user_message)
        return
    messages.acknowledged(request)


def usable_audio(
    service: StemService, attachments: list[discord.Attachment]
) -> tuple[list[AttachmentInput], InvalidSourceError | None]:
    """The attachments stembot can split, and why the first refused one was refused."""
    usable: list[AttachmentInput] = []
    refusal: InvalidSourceError | None = None
    for attachment in attachments:
        file = attachment_input(attachment)
        try:
            service.check_attachment(file)
        except InvalidSourceError as error:
            refusal = refusal or error
            continue
        usable.append(file)
    return usable, refusal


def attachment_input(file: discord.Attachment) -> AttachmentInput:
    return AttachmentInput(
        id=file.id,
        url=file.url,
        filename=file.filename,
        content_type=file.content_type,
        size=file.size,
    )


def requester_of(interaction: discord.Interaction) -> Requester:
    assert interaction.guild_id is not None and interaction.channel_id is not None
    return Requester(
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        user_id=interaction.user.id,
        interaction_id=interaction.id,
        role_ids=role_ids_of(interaction.user),
    )


def role_ids_of(user: discord.User | discord.Member) -> tuple[int, ...]:
    """The member's role ids in the server, as Discord sent them with the interaction."""
    return tuple(role.id for role in user.roles) if isinstance(user, discord.Member) else ()
