"""One error handler for every command: user-safe errors become a short reply, bugs get an id."""

from __future__ import annotations

import contextlib
import logging

import discord
from discord import app_commands

from stembot.bot.guild_only import NOT_HERE, in_its_server
from stembot.errors import IncidentError, StembotError

log = logging.getLogger(__name__)

# Discord's answer to acknowledging an interaction that another copy already acknowledged.
ALREADY_ACKNOWLEDGED = 40060
# Discord's answer to a first response that came after the interaction's 3 s.
UNKNOWN_INTERACTION = 10062


class StemTree(app_commands.CommandTree[discord.Client]):
    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        """Every command, before its own checks: only in a server that added the bot."""
        if not in_its_server(interaction):
            raise app_commands.NoPrivateMessage(NOT_HERE)
        return True

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        if isinstance(cause, StembotError):
            await reply_privately(interaction, cause.user_message)
            return
        if isinstance(cause, app_commands.NoPrivateMessage):
            await reply_privately(interaction, NOT_HERE)
            return
        if isinstance(cause, app_commands.MissingPermissions):
            await reply_privately(interaction, "You need the Manage Server permission for this.")
            return
        if isinstance(cause, discord.HTTPException) and cause.code == ALREADY_ACKNOWLEDGED:
            # Not a bug here: the first copy is being handled; answering again would fail too.
            log.warning(
                "interaction %s arrived twice (Discord's duplicate, or a second bot running "
                "with this token); ignored the copy",
                interaction.id,
            )
            return
        if isinstance(cause, discord.NotFound) and cause.code == UNKNOWN_INTERACTION:
            # Not a bug but load: Discord already told the member the app did not respond,
            # and a reply through this token fails the same way. Trying anyway costs a round
            # trip per late interaction, which makes the ones behind it later still.
            log.warning("interaction %s expired before it was acknowledged", interaction.id)
            return
        incident = IncidentError()
        command = interaction.command.qualified_name if interaction.command else "?"
        log.error("command /%s failed (incident %s)", command, incident.incident_id, exc_info=cause)
        await reply_privately(interaction, incident.user_message)


async def reply_privately(interaction: discord.Interaction, text: str) -> None:
    """An ephemeral answer whether or not the interaction was acknowledged yet.

    After a public defer, the "thinking" message is removed so that only the requester sees
    the refusal. Failures (an expired token, say) are logged, not raised: this is the last word.
    """
    try:
        if not interaction.response.is_done() and await _sent_first(interaction, text):
            return
        with contextlib.suppress(discord.NotFound):
            await interaction.delete_original_response()
        await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException as error:
        log.warning(
            "could not tell user %s why their request was refused: %s",
            interaction.user.id,
            error.text or error.status,
        )


async def _sent_first(interaction: discord.Interaction, text: str) -> bool:
    """``text`` as the interaction's first response; False when it turns out to be
    acknowledged already: a defer whose answer was lost on the way back (under a burst's load
    the client once failed reading a reply Discord had sent) reached Discord after all, and
    its member must not be left with "thinking..." for good."""
    try:
        await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as error:
        if error.code != ALREADY_ACKNOWLEDGED:
            raise
        return False
    return True
