"""`/stems-admin usage|limits|export|refund|log-channel`: the moderators' commands.

A top-level command of its own: ``default_member_permissions`` is only a default that server
admins can change (and Discord ignores it on subcommands), so every call is also checked here
at run time against the member's permissions in the channel.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import discord
from discord import app_commands
from discord.ext import commands

from stembot.bot import admin_embeds
from stembot.moderation import ModerationService
from stembot.quota_rules import MAX_LIMIT

log = logging.getLogger(__name__)

Units = app_commands.Range[int, 0, MAX_LIMIT]
# Discord integers are below 2**53; a request id is a positive SQLite rowid.
RequestId = app_commands.Range[int, 1, 2**53 - 1]


def is_moderator(permissions: discord.Permissions) -> bool:
    return permissions.manage_guild or permissions.administrator


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class AdminCog(
    commands.GroupCog,
    group_name="stems-admin",
    group_description="Moderators: stembot usage, limits, ledger export, refunds, alerts",
):
    def __init__(self, moderation: ModerationService) -> None:
        self._moderation = moderation
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        """Manage Server (or Administrator) now, whatever the command's default said."""
        if not is_moderator(interaction.permissions):
            log.info("user %s was refused /stems-admin: no Manage Server", interaction.user.id)
            raise app_commands.MissingPermissions(["manage_guild"])
        return True

    @app_commands.command(
        name="usage", description="Units used today and this month against the limits"
    )
    async def usage(self, interaction: discord.Interaction) -> None:
        overview = await self._moderation.usage(_guild_id(interaction))
        await interaction.response.send_message(
            embed=admin_embeds.usage_embed(overview), ephemeral=True
        )

    @app_commands.command(
        name="limits", description="Set this server's daily, monthly and per-member unit limits"
    )
    @app_commands.describe(
        daily="Units this server may use per UTC day (0 switches stembot off)",
        monthly="Units this server may use per UTC month (0 switches stembot off)",
        per_user="Units each member may use per UTC day (with role: that role's members)",
        role="Give this role's members their own per_user allowance (reset removes it)",
        reset="Go back to the default for this limit (with role: remove its allowance)",
    )
    @app_commands.choices(
        reset=[
            app_commands.Choice(name="daily", value="daily"),
            app_commands.Choice(name="monthly", value="monthly"),
            app_commands.Choice(name="per_user", value="per_user"),
            app_commands.Choice(name="all limits", value="all"),
        ]
    )
    async def limits(
        self,
        interaction: discord.Interaction,
        daily: Units | None = None,
        monthly: Units | None = None,
        per_user: Units | None = None,
        role: discord.Role | None = None,
        reset: app_commands.Choice[str] | None = None,
    ) -> None:
        limits = await self._moderation.set_limits(
            _guild_id(interaction),
            daily=daily,
            monthly=monthly,
            per_user=per_user,
            role_id=None if role is None else role.id,
            reset=None if reset is None else reset.value,
        )
        log.info("guild %s: limits set by user %s", interaction.guild_id, interaction.user.id)
        await interaction.response.send_message(
            embed=admin_embeds.limits_embed(limits), ephemeral=True
        )

    @app_commands.command(name="export", description="The usage ledger for a period, as CSV")
    @app_commands.describe(
        since="First day, YYYY-MM-DD (UTC); default: the 1st of this month",
        until="Last day, YYYY-MM-DD (UTC), included; default: up to now",
    )
    async def export(
        self, interaction: discord.Interaction, since: str | None = None, until: str | None = None
    ) -> None:
        self._moderation.export_period(since, until)  # a bad date is refused at once
        # Writing a big ledger, and uploading it, takes longer than the 3 s for a first answer.
        await interaction.response.defer(ephemeral=True, thinking=True)
        limit = interaction.filesize_limit
        with tempfile.TemporaryDirectory(prefix="stembot-export-") as folder:
            export = await self._moderation.export(
                _guild_id(interaction), since, until, max_bytes=limit, folder=Path(folder)
            )
            if export.path is None:
                await interaction.followup.send(
                    admin_embeds.export_too_large_text(export, limit), ephemeral=True
                )
                return
            await interaction.followup.send(
                admin_embeds.export_text(export),
                file=discord.File(export.path, filename=export.filename),
                ephemeral=True,
            )

    @app_commands.command(name="refund", description="Give back the units of one request, once")
    @app_commands.describe(request_id="The request's id (the request_id column of the export)")
    async def refund(self, interaction: discord.Interaction, request_id: RequestId) -> None:
        refund = await self._moderation.refund(_guild_id(interaction), request_id)
        log.info(
            "guild %s: request %s refunded by user %s",
            interaction.guild_id,
            request_id,
            interaction.user.id,
        )
        await interaction.response.send_message(admin_embeds.refund_text(refund), ephemeral=True)

    @app_commands.command(
        name="log-channel", description="Where quota alerts go; leave it empty to turn them off"
    )
    @app_commands.describe(channel="A text channel stembot can post in")
    async def log_channel(
        self, interaction: discord.Interaction, channel: discord.TextChannel | None = None
    ) -> None:
        guild_id = _guild_id(interaction)
        if channel is None:
            await self._moderation.set_log_channel(guild_id, None)
            await interaction.response.send_message(
                admin_embeds.log_channel_text(None), ephemeral=True
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            # Posting a first notice now proves the alerts will get through later.
            await channel.send(embed=admin_embeds.log_channel_hello())
        except discord.HTTPException as error:
            log.info("guild %s: log channel %s refused: %s", guild_id, channel.id, error.status)
            await interaction.followup.send(
                f"I can't post in {channel.mention}. Give me View Channel, Send Messages and "
                "Embed Links there, then try again. Alerts are unchanged.",
                ephemeral=True,
            )
            return
        await self._moderation.set_log_channel(guild_id, channel.id)
        await interaction.followup.send(admin_embeds.log_channel_text(channel.id), ephemeral=True)


def _guild_id(interaction: discord.Interaction) -> int:
    assert interaction.guild_id is not None  # guild_only
    return interaction.guild_id
