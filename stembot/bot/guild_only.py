"""stembot works only in the servers that added it, checked on every interaction as it runs.

The synced commands are guild-only, but that is a setting Discord shows to clients, not a
promise: a registration from an older version, the app installed to a member's account and
used in a server (or DM) the bot is not in, or a modified client can still send an interaction
from elsewhere. There every command and component answers with one private line and does
nothing else: no fetch, no charge, no incident.
"""

from __future__ import annotations

import logging

import discord

log = logging.getLogger(__name__)

NOT_HERE = (
    "stembot works only in servers that have added it, not in DMs or as an app on your "
    "account. Use it in such a server."
)


def in_its_server(interaction: discord.Interaction) -> bool:
    """In a server, through the bot installed in that server (not a member's user install)."""
    return interaction.guild_id is not None and interaction.is_guild_integration()


async def answer_if_elsewhere(interaction: discord.Interaction) -> bool:
    """True if the interaction may go on; otherwise it was answered privately with NOT_HERE."""
    if in_its_server(interaction):
        return True
    log.info(
        "interaction %s from user %s outside a server that added stembot: refused",
        interaction.id,
        interaction.user.id,
    )
    try:
        await interaction.response.send_message(NOT_HERE, ephemeral=True)
    except discord.HTTPException as error:
        log.warning("could not answer interaction %s: %s", interaction.id, error.status)
    return False
