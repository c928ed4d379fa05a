"""Posting the 80% / 100% quota alerts in a server's log channel (set with /stems-admin)."""

from __future__ import annotations

import logging

import discord

from stembot.bot import admin_embeds
from stembot.moderation import ModerationService, QuotaAlert

log = logging.getLogger(__name__)


class QuotaAlerts:
    """Posts the 80% / 100% quota alerts the moderation service decides on."""

    def __init__(self, client: discord.Client, moderation: ModerationService) -> None:
        self._client = client
        self._moderation = moderation

    async def after_reservation(self, guild_id: int) -> None:
        """Call after each successful reservation; never raises (a failure is only logged)."""
        try:
            due = await self._moderation.alerts_due(guild_id)
        except Exception:
            log.exception("guild %s: deciding on quota alerts failed", guild_id)
            return
        for alert in due:
            await self._post(alert)

    async def _post(self, alert: QuotaAlert) -> None:
        channel = self._client.get_partial_messageable(alert.channel_id, guild_id=alert.guild_id)
        try:
            await channel.send(embed=admin_embeds.alert_embed(alert))
        except discord.HTTPException as error:
            log.warning(
                "guild %s: the %s%% %s alert could not be posted in channel %s: %s",
                alert.guild_id,
                alert.threshold,
                alert.period,
                alert.channel_id,
                error.status,
            )
        except Exception:
            log.exception("guild %s: posting a quota alert failed", alert.guild_id)
        else:
            log.info(
                "guild %s: %s%% %s alert posted", alert.guild_id, alert.threshold, alert.period
            )
