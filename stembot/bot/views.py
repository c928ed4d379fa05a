"""Buttons that keep working after a restart: their state lives in the custom_id."""

from __future__ import annotations

from re import Match
from typing import TYPE_CHECKING, Any

import discord

from stembot.bot import embeds
from stembot.bot.guild_only import answer_if_elsewhere
from stembot.bot.tree import reply_privately
from stembot.errors import RequestCancelledError, StembotError

if TYPE_CHECKING:
    from stembot.bot.result_attachments import ResultFiles
    from stembot.stem_media import MediaService
    from stembot.stem_service import StemService


def service_of(interaction: discord.Interaction) -> StemService:
    service: StemService = getattr(interaction.client, "service")  # noqa: B009 - StemBot's
    return service


def media_of(client: discord.Client) -> MediaService | None:
    """The bot's media service: None for links only (no stem cache, or turned off)."""
    media: MediaService | None = getattr(client, "media", None)
    return media


def result_files_of(client: discord.Client) -> ResultFiles | None:
    """What adds files to delivered results: None for links only."""
    files: ResultFiles | None = getattr(client, "result_files", None)
    return files


class CancelButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"stems:cancel:(?P<request_id>[0-9]+)"
):
    """Cancel a waiting request; only its requester may, and only before it starts."""

    def __init__(self, request_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel",
                style=discord.ButtonStyle.secondary,
                custom_id=f"stems:cancel:{request_id}",
            )
        )
        self.request_id = request_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Item[Any],
        match: Match[str],
        /,
    ) -> CancelButton:
        return cls(int(match["request_id"]))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await answer_if_elsewhere(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        service = service_of(interaction)
        try:
            request = await service.cancel(self.request_id, interaction.user.id)
        except StembotError as refusal:
            await reply_privately(interaction, refusal.user_message)
            return
        quota = await service.quota_status(request.guild_id, request.user_id)
        embed = embeds.failed_embed(
            request.mode, request.source_name, RequestCancelledError(), quota
        )
        await interaction.response.edit_message(embed=embed, view=None)


def cancel_view(request_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(request_id))
    return view
