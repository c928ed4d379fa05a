"""`/stems <mode>` for each mode in the mode table, and `/stems quota`: parse the
interaction, call the service, answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from stembot.bot import embeds
from stembot.bot.requests import (
    attachment_input,
    role_ids_of,
    start_attachment_request,
    start_url_request,
)
from stembot.bot.tree import reply_privately
from stembot.errors import StembotError
from stembot.models import Mode
from stembot.source_urls import check_url_syntax
from stembot.sources import require_one_source
from stembot.stem_service import StemService

FILE_HELP = "An audio file: mp3, wav, flac, ogg/opus or m4a/aac"
URL_HELP = "Or a link to an audio file"


@app_commands.guild_only()
class StemsCog(
    commands.GroupCog,
    group_name="stems",
    group_description="Split a song into stems: vocals, instruments, or all of them",
):
    def __init__(self, client: discord.Client, service: StemService) -> None:
        self._client = client
        self._service = service
        super().__init__()
        assert self.app_command is not None  # a GroupCog is its group
        add_mode_commands(self.app_command, self._separate)

    @app_commands.command(name="quota", description="How many stem splits are left today")
    async def quota(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None  # guild_only
        status = await self._service.quota_status(
            interaction.guild_id, interaction.user.id, role_ids_of(interaction.user)
        )
        await interaction.response.send_message(
            embed=embeds.quota_embed(status, self._service.costs), ephemeral=True
        )

    async def _separate(
        self,
        interaction: discord.Interaction,
        mode: Mode,
        file: discord.Attachment | None,
        url: str | None,
    ) -> None:
        """The instant checks, before anything is acknowledged or spent."""
        try:
            require_one_source(file is not None, url is not None)
            if file is not None:
                source = self._service.check_attachment(attachment_input(file))
                await start_attachment_request(
                    self._client, self._service, interaction, mode, source
                )
                return
            assert url is not None
            check_url_syntax(url)
        except StembotError as refusal:
            assert interaction.guild_id is not None  # guild_only
            self._service.refused(interaction.guild_id, refusal)
            await reply_privately(interaction, refusal.user_message)
            return
        await start_url_request(self._client, self._service, interaction, mode, url)


Separate = Callable[
    [discord.Interaction, Mode, discord.Attachment | None, str | None], Awaitable[None]
]


def add_mode_commands(group: app_commands.Group, separate: Separate) -> None:
    """One subcommand per mode, from the mode table, ahead of the group's own commands."""
    own = group.commands
    for command in own:
        group.remove_command(command.name)
    for mode in Mode:
        group.add_command(_mode_command(mode, separate))
    for command in own:
        group.add_command(command)


def _mode_command(mode: Mode, separate: Separate) -> app_commands.Command[Any, ..., None]:
    @app_commands.describe(file=FILE_HELP, url=URL_HELP)
    async def run(
        interaction: discord.Interaction,
        file: discord.Attachment | None = None,
        url: str | None = None,
    ) -> None:
        await separate(interaction, mode, file, url)

    return app_commands.Command(name=mode.value, description=mode.description, callback=run)
