"""Pins: pin and unpin a channel's messages, and list them.

https://discord.com/developers/docs/resources/message#pin-message. Pinning needs PIN_MESSAGES
in the channel (MANAGE_MESSAGES no longer does, since 23 February 2026); a channel holds at
most 250 pins (400 / 30003). A pin sets the message's ``pinned``, posts a
CHANNEL_PINNED_MESSAGE (type 6) pointing at it, and fires CHANNEL_PINS_UPDATE; pinning a
pinned message or unpinning one that is not changes nothing (204 either way). The list
(``GET /channels/{channel_id}/messages/pins``) is newest pin first, ``limit`` 1-50 (default
50) pinned ``before`` a time, and empty without READ_MESSAGE_HISTORY; the deprecated
``/channels/{channel_id}/pins`` routes do the same (its list: the first 50 messages, bare).
An ephemeral or deleted message is unknown (10008); a deleted pinned message leaves the list.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import permissions
from .errors import DiscordError, refuse
from .records import MessageRecord
from .world import Channel, iso

if TYPE_CHECKING:
    from .server import DiscordEmulator

PINS_MAX = 250
PAGE_MAX = 50
CHANNEL_PINNED_MESSAGE = 6


class Pins:
    """Pinned messages per channel (message id -> when it was pinned) and the pin routes."""

    def __init__(self, emulator: DiscordEmulator) -> None:
        self._emulator = emulator
        self._pinned: dict[int, dict[int, float]] = {}

    def routes(self) -> list[tuple[str, str, Any]]:
        routes: list[tuple[str, str, Any]] = []
        for base in ("/channels/{channel_id}/messages/pins", "/channels/{channel_id}/pins"):
            routes += [
                ("PUT", base + "/{message_id}", self._pin),
                ("DELETE", base + "/{message_id}", self._unpin),
            ]
        routes += [
            ("GET", "/channels/{channel_id}/messages/pins", self._list),
            ("GET", "/channels/{channel_id}/pins", self._list_deprecated),
        ]
        return routes

    def pinned(self, channel: Channel) -> list[MessageRecord]:
        """The channel's pinned messages, newest pin first."""
        return [message for message, _ in self._entries(channel)]

    def _entries(self, channel: Channel) -> list[tuple[MessageRecord, float]]:
        pins = self._pinned.get(channel.id, {})
        messages = self._emulator.messages
        entries = [
            (messages[message_id], at)
            for message_id, at in pins.items()
            if messages[message_id].deleted_at is None
        ]
        return sorted(entries, key=lambda entry: entry[1], reverse=True)

    def _target(self, request: web.Request) -> tuple[Channel, MessageRecord]:
        channel = self._emulator.request_channel(request)
        message = self._emulator.request_message(request, channel)
        if channel.guild_id is not None:
            allowed = self._emulator.bot_permissions_in(channel)
            permissions.require(allowed, permissions.PIN_MESSAGES)
        return channel, message

    async def _pin(self, request: web.Request) -> web.Response:
        channel, message = self._target(request)
        pins = self._pinned.setdefault(channel.id, {})
        if message.id not in pins:
            if len(self._entries(channel)) >= PINS_MAX:
                raise DiscordError(
                    400, 30003, f"Maximum number of pins reached for the channel ({PINS_MAX})"
                )
            pins[message.id] = time.time()
            message.data["pinned"] = True
            await self._emulator.post_system_message(
                channel, CHANNEL_PINNED_MESSAGE, reference=message
            )
            await self._pins_update(channel)
        return web.Response(status=204)

    async def _unpin(self, request: web.Request) -> web.Response:
        channel, message = self._target(request)
        if self._pinned.get(channel.id, {}).pop(message.id, None) is not None:
            message.data["pinned"] = False
            await self._pins_update(channel)
        return web.Response(status=204)

    async def _pins_update(self, channel: Channel) -> None:
        entries = self._entries(channel)
        data: dict[str, Any] = {
            "channel_id": str(channel.id),
            "last_pin_timestamp": iso(entries[0][1]) if entries else None,
        }
        if channel.guild_id is not None:
            data["guild_id"] = str(channel.guild_id)
        await self._emulator.dispatch_event("CHANNEL_PINS_UPDATE", data)

    def _readable(self, request: web.Request) -> tuple[Channel, list[tuple[MessageRecord, float]]]:
        channel = self._emulator.request_channel(request)
        if channel.guild_id is None:
            return channel, self._entries(channel)
        allowed = self._emulator.bot_permissions_in(channel)
        permissions.require(allowed, permissions.VIEW_CHANNEL)
        if not permissions.has(allowed, permissions.READ_MESSAGE_HISTORY):
            return channel, []
        return channel, self._entries(channel)

    async def _list(self, request: web.Request) -> web.Response:
        _, entries = self._readable(request)
        limit = int(request.query.get("limit") or PAGE_MAX)
        if not 1 <= limit <= PAGE_MAX:
            refuse([(("limit",), f"Must be between 1 and {PAGE_MAX}.")])
        before = request.query.get("before")
        if before:
            cutoff = datetime.fromisoformat(before).timestamp()
            entries = [(m, at) for m, at in entries if at < cutoff]
        page = entries[:limit]
        items = [{"pinned_at": iso(at), "message": m.data} for m, at in page]
        return self._emulator.json_response({"items": items, "has_more": len(entries) > limit})

    async def _list_deprecated(self, request: web.Request) -> web.Response:
        _, entries = self._readable(request)
        return self._emulator.json_response([m.data for m, _ in entries[:PAGE_MAX]])
