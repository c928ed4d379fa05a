"""Register the slash commands with Discord only when they changed.

Discord allows 200 command creations a day per guild, and a bot restarted in a crash loop
must not burn them. The commands are synced when the tree's own description differs from the
digest recorded at the last sync (a new database has none), or when Discord holds a different
set of command names (a new application holds none).
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import discord
from discord import app_commands

log = logging.getLogger(__name__)


class SyncRecord(Protocol):
    """Where the digest of the last synced commands is kept (the store)."""

    async def command_digest(self, scope: str) -> str | None: ...

    async def remember_command_digest(self, scope: str, digest: str) -> None: ...

    def syncing(self) -> AbstractAsyncContextManager[None]:
        """Held while one bot process checks and syncs (several may start at once)."""
        ...


Tree = app_commands.CommandTree[discord.Client]


def local_commands(tree: Tree, guild: discord.Object | None) -> list[dict[str, Any]]:
    """What a sync would send for ``guild``, in a stable order."""
    payload = [command.to_dict(tree) for command in tree.get_commands(guild=guild)]
    return sorted(payload, key=lambda command: (command.get("type", 1), command["name"]))


def digest_of(payload: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def scope_name(guild: discord.Object | None) -> str:
    return f"guild:{guild.id}" if guild else "global"


async def sync_if_changed(
    tree: Tree,
    record: SyncRecord,
    guild: discord.Object | None,
    *,
    force: bool = False,
) -> bool:
    """Sync the commands of ``guild`` (None: global) when needed; True when a sync happened.
    Processes starting at once take turns: the first syncs, the others find it done."""
    async with record.syncing():
        return await _sync_if_changed(tree, record, guild, force=force)


async def _sync_if_changed(
    tree: Tree, record: SyncRecord, guild: discord.Object | None, *, force: bool
) -> bool:
    scope = scope_name(guild)
    local = local_commands(tree, guild)
    digest = digest_of(local)
    local_names = {(c.get("type", 1), c["name"]) for c in local}
    remote_names = {(c.type.value, c.name) for c in await tree.fetch_commands(guild=guild)}
    if not force and await record.command_digest(scope) == digest and local_names == remote_names:
        log.info("slash commands (%s) unchanged; not syncing", scope)
        return False
    await tree.sync(guild=guild)
    await record.remember_command_digest(scope, digest)
    log.info("slash commands (%s) synced: %d command(s)", scope, len(local_names))
    return True
