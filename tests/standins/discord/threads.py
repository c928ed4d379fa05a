"""Threads: started from a message or on their own, and the messages posted in them.

https://discord.com/developers/docs/resources/channel#start-thread-from-message and
#start-thread-without-message. A thread started from a message has the message's id; the
message then shows it (``thread``, flag HAS_THREAD, MESSAGE_UPDATE) and cannot start another
(400 / 160004); the thread opens with a THREAD_STARTER_MESSAGE (type 21) pointing back at it.
A thread started on its own is private unless ``type`` says 11 (Discord's default is still
PRIVATE_THREAD); a public one is announced in the parent channel by a THREAD_CREATED message
(type 18). Starting a public thread needs CREATE_PUBLIC_THREADS, a private one
CREATE_PRIVATE_THREADS, both in the parent; only a guild text channel can have threads
(400 / 50024). The bot receives THREAD_CREATE (``newly_created``) and the new channel (201).
Posting in a thread needs SEND_MESSAGES_IN_THREADS (server.py), and counts its messages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import permissions
from .errors import DiscordError, refuse
from .rules import Problem
from .world import Channel, Guild, iso, snowflake

if TYPE_CHECKING:
    from .server import DiscordEmulator

ANNOUNCEMENT_THREAD, PUBLIC_THREAD, PRIVATE_THREAD = 10, 11, 12
THREAD_CREATED, THREAD_STARTER_MESSAGE = 18, 21
HAS_THREAD = 1 << 5  # message flag: a thread was started from this message
ARCHIVE_DURATIONS = (60, 1440, 4320, 10080)
NAME_MAX = 100
SLOWMODE_MAX_S = 21600


@dataclass
class Thread(Channel):
    """A thread channel in a guild text channel (``parent_id``)."""

    kind: int = PUBLIC_THREAD
    owner_id: int = 0
    auto_archive_duration: int = 1440
    invitable: bool = True
    rate_limit_per_user: int = 0
    created_at: float = field(default_factory=time.time)
    message_count: int = 0
    total_message_sent: int = 0
    last_message_id: int | None = None

    @property
    def is_thread(self) -> bool:
        return True

    def note_message(self, message_id: int) -> None:
        self.message_count += 1
        self.total_message_sent += 1
        self.last_message_id = message_id

    def payload(self) -> dict[str, Any]:
        """The thread as a channel object (ThreadResponse)."""
        metadata: dict[str, Any] = {
            "archived": False,
            "archive_timestamp": iso(self.created_at),
            "auto_archive_duration": self.auto_archive_duration,
            "locked": False,
            "create_timestamp": iso(self.created_at),
        }
        if self.kind == PRIVATE_THREAD:
            metadata["invitable"] = self.invitable
        return {
            "id": str(self.id),
            "type": self.kind,
            "guild_id": str(self.guild_id),
            "parent_id": str(self.parent_id),
            "owner_id": str(self.owner_id),
            "name": self.name,
            "last_message_id": None if self.last_message_id is None else str(self.last_message_id),
            "rate_limit_per_user": self.rate_limit_per_user,
            "flags": 0,
            "thread_metadata": metadata,
            "message_count": self.message_count,
            "member_count": 1,
            "total_message_sent": self.total_message_sent,
        }


def check_request(body: dict[str, Any], *, with_message: bool) -> list[Problem]:
    """Discord's limits on a start-thread body."""
    problems: list[Problem] = []
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= NAME_MAX:
        problems.append((("name",), f"Must be between 1 and {NAME_MAX} in length."))
    duration = body.get("auto_archive_duration")
    if duration is not None and duration not in ARCHIVE_DURATIONS:
        problems.append((("auto_archive_duration",), f"Must be one of {ARCHIVE_DURATIONS}."))
    slowmode = body.get("rate_limit_per_user")
    if slowmode is not None and not (isinstance(slowmode, int) and 0 <= slowmode <= SLOWMODE_MAX_S):
        problems.append((("rate_limit_per_user",), f"Must be between 0 and {SLOWMODE_MAX_S}."))
    if not with_message and body.get("type") not in (None, PUBLIC_THREAD, PRIVATE_THREAD):
        problems.append((("type",), "Only public and private threads exist in a text channel."))
    return problems


class Threads:
    """The thread routes, and the threads started so far."""

    def __init__(self, emulator: DiscordEmulator) -> None:
        self._emulator = emulator

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("POST", "/channels/{channel_id}/messages/{message_id}/threads", self._from_message),
            ("POST", "/channels/{channel_id}/threads", self._without_message),
        ]

    def threads(self, channel: Channel) -> list[Thread]:
        """The threads started in ``channel``, oldest first."""
        guild = self._emulator.guilds.get(channel.guild_id or 0)
        if guild is None:
            return []
        return [
            t for t in guild.threads.values() if isinstance(t, Thread) and t.parent_id == channel.id
        ]

    def _parent(self, request: web.Request) -> tuple[Channel, Guild]:
        channel = self._emulator.request_channel(request)
        guild = self._emulator.guilds.get(channel.guild_id or 0)
        if guild is None or channel.is_thread:
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        return channel, guild

    async def _from_message(self, request: web.Request) -> web.Response:
        parent, guild = self._parent(request)
        body = await self._body(request, with_message=True)
        message = self._emulator.request_message(request, parent)
        self._require(parent, PUBLIC_THREAD)
        if message.id in guild.threads:
            raise DiscordError(400, 160004, "A thread has already been created for this message")
        thread = self._start(guild, parent, body, message.id, PUBLIC_THREAD)
        payload = await self._announce(thread)
        message.data["thread"] = thread.payload()
        message.data["flags"] = message.flags | HAS_THREAD
        await self._emulator.dispatch_event("MESSAGE_UPDATE", message.data)
        await self._emulator.post_system_message(
            thread, THREAD_STARTER_MESSAGE, author=message.data["author"], reference=message
        )
        return self._emulator.json_response(payload, 201)

    async def _without_message(self, request: web.Request) -> web.Response:
        parent, guild = self._parent(request)
        body = await self._body(request, with_message=False)
        kind = int(body.get("type") or PRIVATE_THREAD)
        self._require(parent, kind)
        thread = self._start(guild, parent, body, snowflake(), kind)
        payload = await self._announce(thread)
        if kind == PUBLIC_THREAD:
            await self._emulator.post_system_message(
                parent, THREAD_CREATED, content=thread.name, reference=thread
            )
        return self._emulator.json_response(payload, 201)

    async def _body(self, request: web.Request, *, with_message: bool) -> dict[str, Any]:
        body, _ = await self._emulator.read_body(request, self._emulator.route_template(request))
        body = body or {}
        refuse(check_request(body, with_message=with_message))
        return dict(body)

    def _require(self, parent: Channel, kind: int) -> None:
        needed = (
            permissions.CREATE_PRIVATE_THREADS
            if kind == PRIVATE_THREAD
            else permissions.CREATE_PUBLIC_THREADS
        )
        permissions.require(self._emulator.bot_permissions_in(parent), needed)

    def _start(
        self, guild: Guild, parent: Channel, body: dict[str, Any], thread_id: int, kind: int
    ) -> Thread:
        thread = Thread(
            thread_id,
            str(body["name"]),
            guild.id,
            parent_id=parent.id,
            kind=kind,
            owner_id=self._emulator.application_id,
            auto_archive_duration=int(body.get("auto_archive_duration") or 1440),
            invitable=bool(body.get("invitable", True)),
            rate_limit_per_user=int(body.get("rate_limit_per_user") or 0),
        )
        guild.threads[thread.id] = thread
        self._emulator.add_channel_record(thread)
        return thread

    async def _announce(self, thread: Thread) -> dict[str, Any]:
        """THREAD_CREATE for the new thread; returns the thread as the answer gives it (with
        the bot as its member)."""
        member = {
            "id": str(thread.id),
            "user_id": str(self._emulator.application_id),
            "join_timestamp": iso(thread.created_at),
            "flags": 0,
        }
        payload = thread.payload() | {"member": member}
        await self._emulator.dispatch_event("THREAD_CREATE", payload | {"newly_created": True})
        return payload
