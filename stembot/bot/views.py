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
    from stembot.jobs import StemService


def service_of(interaction: discord.Interaction) -> StemService:
    service: StemService = getattr(interaction.client, "service")  # noqa: B009 - StemBot's
    return service


class CancelButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"stems:cancel:(?P<job_id>[0-9]+)"
):
    """Cancel a waiting request; only its requester may, and only before it starts."""

    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel",
                style=discord.ButtonStyle.secondary,
                custom_id=f"stems:cancel:{job_id}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Item[Any],
        match: Match[str],
        /,
    ) -> CancelButton:
        return cls(int(match["job_id"]))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await answer_if_elsewhere(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        service = service_of(interaction)
        try:
            job = service.cancel(self.job_id, interaction.user.id)
        except StembotError as refusal:
            await reply_privately(interaction, refusal.user_message)
            return
        quota = service.quota_status(job.guild_id, job.user_id)
        embed = embeds.failed_embed(job.mode, job.source_name, RequestCancelledError(), quota)
        await interaction.response.edit_message(embed=embed, view=None)


def cancel_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view
