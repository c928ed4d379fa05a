"""The loopback Discord: REST v10, the gateway, a CDN, Discord's rules, and records.

async with DiscordEmulator() as discord:
    use_discord_endpoints(discord.api_base, discord.gateway_url)
    guild = await discord.add_guild("Test server")
    member = discord.add_member(guild, "alice")
    ... start a discord.py client with discord.token ...
    interaction = await discord.slash("stems vocals", member=member, options={...})
    message = await discord.final_message(interaction)
    stem = interaction.original.file("vocals.mp3")  # the bytes a member would hear

Files the bot uploads (multipart ``payload_json`` + ``files[n]``) are kept with the message
and served by the CDN. Per request, all files together may not pass the upload limit of the
place (``upload_limit_for``: a guild's boost level, ``add_guild(premium_tier=...)`` or
``set_premium_tier``, or a test's ``guild.upload_limit``; the interaction says it in
``attachment_size_limit``): 413 / 40005 past it. A message holds at most 10 files. Bodies with
IS_COMPONENTS_V2 follow the V2 rules (components_v2.py).

What the bot may do in a guild follows its permissions there (permissions.py):
``set_bot_permissions`` for the guild, ``overwrite_permissions`` for one channel (a member's
too); interactions carry them (``app_permissions``, the member's ``permissions``), and a
channel post without SEND_MESSAGES (SEND_MESSAGES_IN_THREADS in a thread), ATTACH_FILES for
files or SEND_POLLS for a poll is refused with 403 / 50013. Modals and their submits are in
modals.py (``submit_modal``), polls in polls.py (``vote``, ``end_poll``), threads in
threads.py, pins in pins.py, scheduled events in scheduled_events.py.

The gateway is sharded as Discord's (sharding.py): a guild's events and interactions reach the
session of its shard, DMs shard 0; ``add_guild(shard=(id, count))`` makes a guild that shard
serves; ``GET /gateway/bot`` tells ``recommended_shards`` and the ``session_start_limit``;
``identify_window_s=5.0`` enforces IDENTIFY pacing and ``max_guilds_per_shard`` the 4011.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web

from . import components_v2, modals, permissions, rules
from .attachments import sniff_content_type, upload_details
from .errors import DiscordError, refuse
from .gateway import INVALID_SESSION, RECONNECT, UNKNOWN_ERROR, Gateway, Session
from .permissions import ATTACH_FILES, EMBED_LINKS
from .pins import Pins
from .polls import Polls, check_poll
from .records import (
    EPHEMERAL,
    LOADING,
    Call,
    InteractionFailed,
    InteractionRecord,
    MessageRecord,
    SentBody,
    Upload,
)
from .scheduled_events import ScheduledEvents
from .sharding import (
    MAX_GUILDS_PER_SHARD,
    SessionStartLimit,
    Shard,
    guild_id_on,
    recommended_shards,
    shard_of,
)
from .spec import OpenAPISpec
from .threads import Thread, Threads
from .world import (
    BOT_DEFAULT,
    BOT_DM,
    CONTEXTS,
    GUILD,
    MEMBER_DEFAULT,
    USER_APP,
    USER_APP_DM,
    Channel,
    Guild,
    Member,
    Role,
    iso,
    snowflake,
    user_payload,
)

_log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
ACK_WINDOW_S = 3.0
TOKEN_LIFETIME_S = 15 * 60
ATTACHMENT_LIFETIME_S = 24 * 3600
_JSON_HEADERS = {
    "Content-Type": "application/json"
}  # exactly: discord.py reads anything else as text
_NOT_AUTHED = ("/webhooks/", "/interactions/")

# interaction types and callback types
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, MODAL_SUBMIT = 1, 2, 3, 5
CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE, MODAL = 4, 5, 6, 7, 9
# A modal never answers a modal submit; updating a message needs one the modal came from.
_ALLOWED_CALLBACKS = {
    MODAL_SUBMIT: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE},
    APPLICATION_COMMAND: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, MODAL},
    MESSAGE_COMPONENT: {
        CHANNEL_MESSAGE,
        DEFERRED_CHANNEL_MESSAGE,
        DEFERRED_UPDATE,
        UPDATE_MESSAGE,
        MODAL,
    },
}
# What a user-installed app may do where its bot is not: answer the interaction, no more.
USER_APP_PERMISSIONS = EMBED_LINKS | ATTACH_FILES
_ATTACHMENT_OPTION, _USER_OPTION = 11, 6
_CHANNEL_OPTION = 7
# Message flags a bot may set when it creates a message (SUPPRESS_EMBEDS,
# SUPPRESS_NOTIFICATIONS, IS_COMPONENTS_V2; EPHEMERAL only on interaction responses), and
# the ones an edit may change.
SUPPRESS_EMBEDS, SUPPRESS_NOTIFICATIONS = 1 << 2, 1 << 12
_CREATE_FLAGS = (
    EPHEMERAL | SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | components_v2.IS_COMPONENTS_V2
)
_EDIT_FLAGS = SUPPRESS_EMBEDS | components_v2.IS_COMPONENTS_V2
_ROLE_OPTION = 8
_PARTIAL_CHANNEL = ("id", "name", "type", "parent_id", "flags")
_GUILD_CREATE_ONLY = (
    "channels",
    "threads",
    "members",
    "member_count",
    "voice_states",
    "presences",
    "stage_instances",
    "guild_scheduled_events",
    "soundboard_sounds",
    "joined_at",
    "large",
    "unavailable",
)
_INTERACTION = web.RequestKey("interaction", InteractionRecord)
# The REST call being handled (method, route template), for the records it leaves.
_REQUEST: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar(
    "request", default=("", "")
)


# A burst makes a bot open hundreds of connections at once; aiohttp's default backlog (128)
# drops the excess SYNs and the kernel retries them a second later, which would be charged to
# the bot. Discord's edge does not drop them.
LISTEN_BACKLOG = 4096


class SpecViolationError(AssertionError):
    """The bot sent a body that Discord's OpenAPI description does not allow."""


@dataclass
class SpecViolation:
    method: str
    route: str
    problems: list[str]
    body: Any


@dataclass
class _RateLimit:
    remaining: int
    via: bool
    retry_after: float
    is_global: bool


@dataclass(frozen=True)
class _NewFile:
    """A file of this request that the message is to carry, under the name it is to have."""

    upload: Upload
    filename: str
    description: str | None


# An attachment the message keeps (Discord's attachment object) or gains.
_Planned = dict[str, Any] | _NewFile


def _plan_attachments(
    descriptors: list[dict[str, Any]] | None,
    uploads: list[Upload],
    existing: list[dict[str, Any]],
) -> list[_Planned]:
    """The files a message will carry: without an ``attachments`` list, the ones it has and
    every upload; with one, exactly the listed ones (kept by id, new by upload index)."""
    if descriptors is None:
        return [*existing, *(_NewFile(u, u.filename, None) for u in uploads)]
    kept = {a["id"]: a for a in existing}
    by_index = {upload.index: upload for upload in uploads}
    plan: list[_Planned] = []
    for position, descriptor in enumerate(descriptors):
        key = str(descriptor.get("id"))
        if key in kept:
            plan.append(kept[key])
        elif key.isdigit() and int(key) in by_index:
            upload = by_index[int(key)]
            filename = descriptor.get("filename") or upload.filename
            plan.append(_NewFile(upload, filename, descriptor.get("description")))
        else:
            problem = (("attachments", position, "id"), f"Unknown attachment {key}")
            raise DiscordError(400, 50035, "Invalid Form Body", rules.form_error([problem]))
    return plan


def _filename(planned: _Planned) -> str:
    return planned.filename if isinstance(planned, _NewFile) else str(planned["filename"])


def _check_body(
    body: dict[str, Any], after: dict[str, Any], flags: int, plan: list[_Planned]
) -> list[rules.Problem]:
    """Discord's limits on a create/edit ``body``; ``after``: the message's content, embeds
    (and poll, stickers) once the body applies; ``plan``: the files it will carry."""
    layout = bool(flags & components_v2.IS_COMPONENTS_V2)
    problems = rules.check_message(body, layout=layout)
    problems += rules.check_file_count(len(plan))
    if body.get("poll") is not None:
        problems += check_poll(body["poll"])
    components = body.get("components") or []
    if layout:
        problems += components_v2.check_legacy_fields(after)
        filenames = {_filename(p) for p in plan}
        problems += components_v2.check_v2_components(components, filenames)
    else:
        problems += components_v2.check_top_level_without_flag(components)
    return problems


def _flags(body: dict[str, Any]) -> int:
    return int(body.get("flags") or 0)


def _upload_limit(record: InteractionRecord) -> int:
    """What the interaction told the bot it may upload: Discord holds it to that."""
    return int(record.payload["attachment_size_limit"])


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps(data, separators=(",", ":")).encode()
    return web.Response(body=body, status=status, headers={**_JSON_HEADERS, **(headers or {})})


class DiscordEmulator:
    """Discord's wire protocol on 127.0.0.1, for the real discord.py client."""

    def __init__(
        self,
        *,
        token: str = "emulated.bot.token",
        validate_spec: bool | OpenAPISpec | None = None,
        upload_limit: int = rules.DEFAULT_UPLOAD_LIMIT,
        ack_window_s: float = ACK_WINDOW_S,
        token_lifetime_s: float = TOKEN_LIFETIME_S,
        session_start_limit: SessionStartLimit | None = None,
        identify_window_s: float | None = None,
        max_guilds_per_shard: int = MAX_GUILDS_PER_SHARD,
        recommended_shards: int | None = None,
    ) -> None:
        """``validate_spec``: None checks bodies when ../shared/discord-openapi.json exists.

        Sharding (sharding.py): ``session_start_limit`` (default 1,000 a day, max_concurrency
        1), ``identify_window_s`` (None: IDENTIFY pacing not enforced; Discord's is 5.0),
        ``max_guilds_per_shard`` (past it: 4011), ``recommended_shards`` (None: one per
        1,000 guilds, as GET /gateway/bot answers).
        """
        self.recommended_shards = recommended_shards
        self.upload_limit = upload_limit
        self.ack_window_s = ack_window_s
        self.token_lifetime_s = token_lifetime_s
        self.spec = self._load_spec(validate_spec)
        self.application_id = snowflake()
        self.bot_user = user_payload(self.application_id, "stembot", bot=True)
        self.owner = user_payload(snowflake(), "owner")
        self.users: dict[int, dict[str, Any]] = {int(self.owner["id"]): self.owner}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        self.command_syncs: list[tuple[float, int | None]] = []
        self.interactions: dict[int, InteractionRecord] = {}
        self.messages: dict[int, MessageRecord] = {}
        self.calls: list[Call] = []
        # Every body that created or edited a message (deferrals carry none), in order.
        self.sent_bodies: list[SentBody] = []
        self.spec_violations: list[SpecViolation] = []
        self.cdn_fetches = 0
        self._by_token: dict[str, InteractionRecord] = {}
        self._channel_messages: dict[int, list[MessageRecord]] = {}
        self._dm_channels: dict[int, Channel] = {}
        self._cdn: dict[str, tuple[bytes, str]] = {}
        # One copy of each distinct file the bot uploaded, however many messages carry it.
        self._blobs: dict[bytes, bytes] = {}
        self._cdn_secret = secrets.token_bytes(16)
        self._rate_limits: dict[tuple[str, str], _RateLimit] = {}
        self._refused_channels: set[int] = set()
        self._refused_dm_users: set[int] = set()
        self._held: dict[tuple[str, str], asyncio.Event] = {}
        self._held_count: dict[tuple[str, str], int] = {}
        self.gateway = Gateway(
            token,
            self._ready_payload,
            self._guild_payloads,
            limits=session_start_limit,
            identify_window_s=identify_window_s,
            max_guilds_per_shard=max_guilds_per_shard,
        )
        self._polls = Polls(self)
        self._pins = Pins(self)
        self._threads = Threads(self)
        self._scheduled_events = ScheduledEvents(self)
        self._runner: web.AppRunner | None = None
        self._port = 0

    @staticmethod
    def _load_spec(validate: bool | OpenAPISpec | None) -> OpenAPISpec | None:
        if isinstance(validate, OpenAPISpec):
            return validate
        if validate is False:
            return None
        spec = OpenAPISpec.load()
        if spec is None and validate is True:
            raise FileNotFoundError(
                "validate_spec=True but Discord's OpenAPI description is absent"
            )
        return spec

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=256 * 1024 * 1024)
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=LISTEN_BACKLOG)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self.release_held()
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DiscordEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
        if exc_type is None and self.spec_violations:
            raise SpecViolationError(self.describe_spec_violations())

    @property
    def token(self) -> str:
        """The bot's token (a new one once the session start limit was passed)."""
        return self.gateway.token

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/gateway"

    @property
    def resume_gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/gateway/resume"

    # ---- the world -------------------------------------------------------------------------

    async def add_guild(
        self,
        name: str = "Test server",
        *,
        bot_permissions: int = BOT_DEFAULT,
        bot_present: bool = True,
        premium_tier: int = 0,
        shard: Shard | None = None,
    ) -> Guild:
        """A guild with one text channel ("general"); a connected bot receives GUILD_CREATE.

        ``bot_present=False``: a server the bot was never added to, where members can still use
        the app if they installed it to their account (``context=USER_APP``).
        ``premium_tier``: its boost level (0-3), which sets its upload limit.
        ``shard``: (shard_id, num_shards) whose session the guild's events go to.
        """
        guild_id = snowflake() if shard is None else guild_id_on(shard)
        guild = Guild(guild_id, name, int(self.owner["id"]), bot_permissions)
        guild.bot_present = bot_present
        guild.premium_tier = premium_tier
        self.guilds[guild.id] = guild
        self._add_channel(guild, "general")
        if bot_present:
            await self.gateway.dispatch("GUILD_CREATE", guild.payload(self.bot_user), guild.id)
        return guild

    async def add_channel(self, guild: Guild, name: str) -> Channel:
        channel = self._add_channel(guild, name)
        await self.gateway.dispatch("CHANNEL_CREATE", channel.payload(), guild.id)
        return channel

    def _add_channel(self, guild: Guild, name: str) -> Channel:
        channel = Channel(snowflake(), name, guild.id)
        guild.channels[channel.id] = channel
        self.add_channel_record(channel)
        return channel

    def add_channel_record(self, channel: Channel) -> None:
        """Make ``channel`` (a thread too) reachable by id, with no messages yet."""
        self.channels[channel.id] = channel
        self._channel_messages[channel.id] = []

    def upload_limit_for(self, guild: Guild | None) -> int:
        """Bytes of files one request may carry there: the guild's own limit if a test set
        one, else its boost level's (``upload_limit`` for levels 0 and 1, and outside guilds)."""
        if guild is None:
            return self.upload_limit
        if guild.upload_limit is not None:
            return guild.upload_limit
        if guild.premium_tier >= 2:
            return rules.UPLOAD_LIMIT_BY_PREMIUM_TIER[guild.premium_tier]
        return self.upload_limit

    async def set_premium_tier(self, guild: Guild, tier: int) -> None:
        """Boost ``guild`` to ``tier`` (0-3); a connected bot receives GUILD_UPDATE."""
        guild.premium_tier = tier
        if guild.bot_present:
            payload = guild.payload(self.bot_user)
            for only_on_create in _GUILD_CREATE_ONLY:
                payload.pop(only_on_create, None)
            await self.gateway.dispatch("GUILD_UPDATE", payload, guild.id)

    # ---- permissions -----------------------------------------------------------------------

    def bot_permissions_in(self, channel: Channel) -> int:
        """The bot's permissions in ``channel``: its guild-wide ones with the channel's overwrite
        for it (a thread: its parent's); in a DM, what an interaction response may use."""
        guild = self.guilds.get(channel.guild_id or 0)
        if guild is None:
            return USER_APP_PERMISSIONS
        return guild.permissions_in(channel, self.application_id, guild.bot_permissions)

    def permissions_in(self, channel: Channel, member: Member) -> int:
        """``member``'s permissions in ``channel``: ``member.permissions`` with the channel's
        overwrite for the member."""
        guild = self.guilds.get(channel.guild_id or 0)
        if guild is None:
            return member.permissions
        return guild.permissions_in(channel, member.id, member.permissions)

    async def set_bot_permissions(self, guild: Guild, permissions: int) -> None:
        """The bot's guild-wide permissions become ``permissions`` (what its roles give it);
        a connected bot receives GUILD_ROLE_UPDATE, so discord.py's own view agrees."""
        guild.bot_permissions = permissions
        if guild.bot_present:
            role = {"guild_id": str(guild.id), "role": guild.everyone.payload()}
            await self.dispatch_event("GUILD_ROLE_UPDATE", role)

    async def overwrite_permissions(
        self, channel: Channel, member: Member | None = None, *, allow: int = 0, deny: int = 0
    ) -> None:
        """Discord's member overwrite in ``channel`` for ``member`` (None: the bot): ``deny``
        taken from and ``allow`` added to its guild-wide permissions there, and in the
        channel's threads; both 0 removes it. A connected bot receives CHANNEL_UPDATE."""
        if channel.guild_id is None or channel.is_thread:
            raise ValueError("overwrites belong to guild channels (a thread takes its parent's)")
        user_id = self.application_id if member is None else member.id
        if allow or deny:
            channel.overwrites[user_id] = (allow, deny)
        else:
            channel.overwrites.pop(user_id, None)
        await self.dispatch_event("CHANNEL_UPDATE", channel.payload())

    def add_member(
        self,
        guild: Guild,
        name: str,
        *,
        permissions: int = MEMBER_DEFAULT,
        roles: Sequence[Role] = (),
    ) -> Member:
        """A member whose guild-wide permissions are ``permissions`` (``member.permissions``;
        ``overwrite_permissions`` changes them in one channel)."""
        user = user_payload(snowflake(), name)
        self.users[int(user["id"])] = user
        member = Member(user, guild.id, permissions, roles=list(roles))
        guild.members[member.id] = member
        return member

    async def add_role(self, guild: Guild, name: str) -> Role:
        """A new role in ``guild``; a connected bot receives GUILD_ROLE_CREATE, as from Discord."""
        role = Role(snowflake(), name, position=len(guild.roles) + 1)
        guild.roles[role.id] = role
        await self.dispatch_event(
            "GUILD_ROLE_CREATE", {"guild_id": str(guild.id), "role": role.payload()}
        )
        return role

    def upload_attachment(
        self,
        data: bytes,
        filename: str,
        content_type: str = "application/octet-stream",
        *,
        channel: Channel | None = None,
        expires_in_s: float = ATTACHMENT_LIFETIME_S,
    ) -> dict[str, Any]:
        """Put a user's upload on the CDN; returns Discord's attachment object (signed URL)."""
        channel_id = channel.id if channel is not None else snowflake()
        return self._store(channel_id, data, filename, content_type, lifetime_s=expires_in_s)

    async def post_user_message(
        self,
        channel: Channel,
        member: Member,
        content: str = "",
        attachments: list[dict[str, Any]] | None = None,
    ) -> MessageRecord:
        """A message a user posted (a target for message context-menu commands)."""
        now = time.time()
        data = self._message_data(channel, now, content=content, author=member.user)
        data["attachments"] = list(attachments or [])
        data["member"] = {k: v for k, v in member.payload().items() if k not in ("user",)}
        record = self._keep(MessageRecord(data, now))
        await self.dispatch_event("MESSAGE_CREATE", data)
        return record

    async def post_system_message(
        self,
        channel: Channel,
        type_: int,
        *,
        author: dict[str, Any] | None = None,
        content: str = "",
        reference: MessageRecord | Channel | None = None,
        embeds: list[dict[str, Any]] | None = None,
        mentions: list[dict[str, Any]] | None = None,
    ) -> MessageRecord:
        """A message Discord posts itself (``type_``: a pin notice, a thread start, a poll's
        result), by ``author`` (default the bot), pointing at ``reference``."""
        now = time.time()
        data = self._message_data(channel, now, content=content, author=author, type_=type_)
        if reference is not None:
            if isinstance(reference, MessageRecord):
                pointer = {"message_id": str(reference.id), "channel_id": str(reference.channel_id)}
            else:
                pointer = {"channel_id": str(reference.id)}
            if channel.guild_id is not None:
                pointer["guild_id"] = str(channel.guild_id)
            data["message_reference"] = {"type": 0, **pointer}
        data["embeds"] = list(embeds or [])
        data["mentions"] = list(mentions or [])
        record = self._keep(MessageRecord(data, now))
        await self.dispatch_event("MESSAGE_CREATE", data)
        return record

    async def dispatch_event(self, event: str, data: dict[str, Any]) -> None:
        """Send the gateway event to the bot's session of the shard of ``data["guild_id"]``
        (none: shard 0), kept for a RESUME while it is away."""
        guild_id = data.get("guild_id")
        await self.gateway.dispatch(event, data, None if guild_id is None else int(guild_id))

    # ---- polls, pins, threads, scheduled events --------------------------------------------

    async def vote(self, message: MessageRecord, member: Member, *answer_ids: int) -> None:
        """``member``'s votes on the poll of ``message`` become ``answer_ids`` (none withdraws
        them); the bot receives MESSAGE_POLL_VOTE_ADD / _REMOVE per answer. PollClosedError once
        the poll has ended, LookupError for an unknown answer, ValueError for two answers on
        a single-choice poll."""
        await self._polls.vote(message, member.id, list(answer_ids))

    async def end_poll(self, message: MessageRecord) -> MessageRecord:
        """The poll's time runs out now: final results, MESSAGE_UPDATE; returns the
        POLL_RESULT message Discord posts after it."""
        return await self._polls.end(message)

    def poll_counts(self, message: MessageRecord) -> dict[int, int]:
        """Votes per answer id of the poll of ``message``, every answer listed."""
        return self._polls.of(message).counts()

    def pinned(self, channel: Channel) -> list[MessageRecord]:
        """The messages pinned in ``channel``, newest pin first."""
        return self._pins.pinned(channel)

    def threads(self, channel: Channel) -> list[Thread]:
        """The threads started in ``channel``, oldest first; post in one with
        ``post_user_message``, run commands there with ``slash(..., channel=thread)``."""
        return self._threads.threads(channel)

    def scheduled_events(self, guild: Guild) -> list[dict[str, Any]]:
        """``guild``'s scheduled events as Discord answers them (status 1-4, times, location)."""
        return list(guild.scheduled_events.values())

    async def run_event_schedule(self, guild: Guild, now: float | None = None) -> None:
        """Discord's clock for ``guild``'s EXTERNAL events at ``now`` (default: the time):
        started when their start has come, completed when their end has."""
        await self._scheduled_events.run_schedule(guild, now)

    # ---- dispatching interactions ----------------------------------------------------------

    async def slash(
        self,
        command: str,
        *,
        member: Member,
        channel: Channel | None = None,
        options: dict[str, Any] | None = None,
        age_s: float = 0.0,
        context: str = GUILD,
    ) -> InteractionRecord:
        """Run ``/command`` ("stems vocals" for a subcommand) as ``member``.

        Option values: plain values for strings and numbers, an attachment dict from
        ``upload_attachment`` for attachment options, a Member for user options. ``age_s``
        mints the interaction that many seconds in the past (late acks, expired tokens).
        ``context``: where it is run (see world.CONTEXTS); outside GUILD, Discord offers a
        command only if its registration allows that context, or before a changed registration
        has reached every client, so the bot must not rely on it.
        """
        root, *path = command.split()
        definition = self.find_command(root, 1, member.guild_id)
        data: dict[str, Any] = {"id": definition["id"], "name": root, "type": 1}
        if definition.get("guild_id"):
            data["guild_id"] = definition["guild_id"]
        node, node_definition = data, definition
        for name in path:
            sub_definition = self._option_definition(node_definition, name, command)
            sub: dict[str, Any] = {"name": name, "type": sub_definition["type"], "options": []}
            node.setdefault("options", []).append(sub)
            node, node_definition = sub, sub_definition
        resolved: dict[str, dict[str, Any]] = {}
        for name, value in (options or {}).items():
            option = self._option_definition(node_definition, name, command)
            node.setdefault("options", []).append(
                self._option_value(option, value, resolved, invoker=member)
            )
        if resolved:
            data["resolved"] = resolved
        return await self._dispatch(
            "slash", APPLICATION_COMMAND, data, member, channel, age_s, context=context
        )

    async def message_command(
        self,
        name: str,
        *,
        member: Member,
        target: MessageRecord,
        age_s: float = 0.0,
        context: str = GUILD,
    ) -> InteractionRecord:
        """Run the message context-menu command ``name`` on ``target`` (``context``: see slash)."""
        definition = self.find_command(name, 3, member.guild_id)
        data = {
            "id": definition["id"],
            "name": name,
            "type": 3,
            "target_id": str(target.id),
            "resolved": {"messages": {str(target.id): target.data}},
        }
        channel = self.channels[target.channel_id]
        return await self._dispatch(
            "message_command", APPLICATION_COMMAND, data, member, channel, age_s, context=context
        )

    async def click(
        self,
        message: MessageRecord,
        custom_id: str,
        *,
        member: Member,
        values: list[str] | None = None,
        age_s: float = 0.0,
        context: str = GUILD,
        check_component: bool = True,
    ) -> InteractionRecord:
        """Click the button (or pick ``values`` in the select) ``custom_id`` on ``message``,
        wherever it sits: in a top-level action row, or nested in a Components V2 container,
        section (as its accessory) or action row.

        ``check_component=False`` sends ``custom_id`` and ``values`` even if the message does
        not offer them: what a modified client can send.
        """
        component = next(
            (
                found
                for _, found in components_v2.walk(message.components)
                if found.get("custom_id") == custom_id
            ),
            None,
        )
        if component is None and check_component:
            raise LookupError(f"message {message.id} has no component {custom_id!r}")
        kind = component["type"] if component is not None else (2 if values is None else 3)
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": kind}
        if values is not None:
            data["values"] = values
        channel = self.channels[message.channel_id]
        record = await self._dispatch(
            "component", MESSAGE_COMPONENT, data, member, channel, age_s, message, context
        )
        return record

    async def submit_modal(
        self,
        opened: InteractionRecord,
        values: Mapping[str, modals.Value] | None = None,
        *,
        age_s: float = 0.0,
        check: bool = True,
    ) -> InteractionRecord:
        """The member the bot showed a modal (in answer to ``opened``) fills it in and submits
        it: a MODAL_SUBMIT interaction ("modal_submit") in the same place, carrying the
        message the modal came from, if any.

        ``values``: custom id -> the text of a Text Input, the values picked in a select, or
        the files for a File Upload (attachment objects from ``upload_attachment``; they
        arrive in ``resolved.attachments``). SubmitRefusedError where the member's client
        would not let it go (see modals.py); ``check=False`` sends it anyway.
        """
        if opened.modal is None or opened.invoker is None:
            raise LookupError(f"interaction {opened.id} was not answered with a modal")
        data = modals.submission(
            opened.modal,
            values or {},
            upload_limit=_upload_limit(opened),
            check=check,
        )
        channel = self.channels[opened.channel_id]
        return await self._dispatch(
            "modal_submit",
            MODAL_SUBMIT,
            data,
            opened.invoker,
            channel,
            age_s,
            opened.source_message,
            opened.context,
        )

    def find_command(self, name: str, type_: int, guild_id: int) -> dict[str, Any]:
        for scope in (guild_id, None):
            for definition in self.commands.get(scope, []):
                if definition["name"] == name and definition.get("type", 1) == type_:
                    return definition
        synced = sorted(c["name"] for scoped in self.commands.values() for c in scoped)
        raise LookupError(f"command {name!r} (type {type_}) was never synced; synced: {synced}")

    @staticmethod
    def _option_definition(parent: dict[str, Any], name: str, command: str) -> dict[str, Any]:
        for option in parent.get("options") or []:
            if option["name"] == name:
                return dict(option)
        raise LookupError(f"/{command} has no option {name!r}")

    def _option_value(
        self,
        option: dict[str, Any],
        value: Any,
        resolved: dict[str, dict[str, Any]],
        invoker: Member,
    ) -> dict[str, Any]:
        kind = option["type"]
        if kind == _ATTACHMENT_OPTION:
            resolved.setdefault("attachments", {})[value["id"]] = value
            value = value["id"]
        elif kind == _USER_OPTION and isinstance(value, Member):
            resolved.setdefault("users", {})[str(value.id)] = value.user
            member = {k: v for k, v in value.payload().items() if k != "user"}
            resolved.setdefault("members", {})[str(value.id)] = member
            value = str(value.id)
        elif kind == _ROLE_OPTION and isinstance(value, Role):
            # Discord resolves a role option to the full role object.
            resolved.setdefault("roles", {})[str(value.id)] = value.payload()
            value = str(value.id)
        elif kind == _CHANNEL_OPTION and isinstance(value, Channel):
            # Discord resolves a channel option to a partial channel with the invoker's
            # permissions in it.
            partial = {k: v for k, v in value.payload().items() if k in _PARTIAL_CHANNEL}
            partial["permissions"] = str(self.permissions_in(value, invoker))
            resolved.setdefault("channels", {})[str(value.id)] = partial
            value = str(value.id)
        return {"name": option["name"], "type": kind, "value": value}

    async def _dispatch(
        self,
        kind: str,
        interaction_type: int,
        data: dict[str, Any],
        member: Member,
        channel: Channel | None,
        age_s: float,
        message: MessageRecord | None = None,
        context: str = GUILD,
    ) -> InteractionRecord:
        if context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, not {context!r}")
        guild = self.guilds[member.guild_id]
        created = time.time() - age_s
        interaction_id = snowflake(created)
        token = secrets.token_urlsafe(32)
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": interaction_type,
            "data": data,
            "token": token,
            "version": 1,
            "locale": "en-US",
            "entitlements": [],
            # what discord.py's interaction.filesize_limit reads
            "attachment_size_limit": self.upload_limit_for(
                guild if context in (GUILD, USER_APP) else None
            ),
        }
        if context in (GUILD, USER_APP):
            channel = channel or guild.default_channel
            payload |= {
                "guild_id": str(guild.id),
                "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
                "member": member.payload(self.permissions_in(channel, member)),
                "guild_locale": "en-US",
            }
        else:
            channel = self._private_channel(member, with_bot=context == BOT_DM)
            payload["user"] = member.user
        owners = {
            GUILD: {"0": str(guild.id)},
            BOT_DM: {"0": "0"},
            USER_APP: {"1": str(member.id)},
            USER_APP_DM: {"1": str(member.id)},
        }[context]
        if context == USER_APP and guild.bot_present:
            owners["0"] = str(guild.id)  # installed there too: Discord names both
        payload |= {
            "channel_id": str(channel.id),
            "channel": channel.payload(),
            "app_permissions": str(
                self.bot_permissions_in(channel) if context == GUILD else USER_APP_PERMISSIONS
            ),
            "authorizing_integration_owners": owners,
            "context": {GUILD: 0, USER_APP: 0, BOT_DM: 1, USER_APP_DM: 2}[context],
        }
        if message is not None:
            payload["message"] = message.data
        record = InteractionRecord(
            interaction_id, token, kind, payload, created, self.ack_window_s, self.token_lifetime_s
        )
        record.source_message, record.invoker, record.context = message, member, context
        self.interactions[interaction_id] = record
        self._by_token[token] = record
        await self._dispatch_interaction(payload)
        return record

    async def _dispatch_interaction(self, payload: dict[str, Any]) -> None:
        """To the session of the interaction's guild's shard (a DM's: shard 0)."""
        guild_id = int(payload["guild_id"]) if "guild_id" in payload else None
        sessions = self.gateway.sessions_for(guild_id)
        if not sessions:
            self.gateway.live_session()  # raises when no bot has identified at all
            raise RuntimeError(f"no session of the bot serves the shard of guild {guild_id}")
        for session in sessions:
            await session.dispatch("INTERACTION_CREATE", payload)

    def _private_channel(self, member: Member, *, with_bot: bool) -> Channel:
        """The member's DM with the bot, or a DM with another user (which the bot is not in)."""
        if with_bot:
            return self._dm_channel(member.user)
        other = user_payload(snowflake(), "friend")
        channel = Channel(snowflake(), "", recipient=other)
        self.channels[channel.id] = channel
        self._channel_messages[channel.id] = []
        return channel

    async def redeliver(self, interaction: InteractionRecord) -> None:
        """Send ``interaction``'s INTERACTION_CREATE again, unchanged: Discord's duplicate."""
        await self._dispatch_interaction(interaction.payload)

    # ---- asking what happened --------------------------------------------------------------

    async def wait_ready(self, timeout_s: float = 10.0) -> Session:
        """Wait until a client has identified and received READY and its guilds."""
        return await self.gateway.wait_ready(timeout_s)

    async def wait_shards(self, num_shards: int, timeout_s: float = 20.0) -> list[Session]:
        """Wait until every shard of ``num_shards`` has a connected session (by shard id)."""
        return await self.gateway.wait_shards(num_shards, timeout_s)

    def shard_of(self, guild: Guild, num_shards: int) -> int:
        return shard_of(guild.id, num_shards)

    async def acknowledged(self, interaction: InteractionRecord, timeout_s: float = 5.0) -> int:
        """The callback type the bot acknowledged with; InteractionFailed after 3 s without."""
        await interaction.wait_until(lambda r: r.acknowledged or r.failed, timeout_s)
        if interaction.ack_type is None:
            raise InteractionFailed(f"interaction {interaction.id} was not acknowledged in time")
        return interaction.ack_type

    async def final_message(
        self, interaction: InteractionRecord, timeout_s: float = 5.0
    ) -> dict[str, Any] | None:
        """The response the user finally sees (None if the bot deleted it).

        Waits past "is thinking..." (a deferral) until the response is finished. Raises
        InteractionFailed when the user saw "The application did not respond".
        """

        def done(r: InteractionRecord) -> bool:
            deleted = r.original is not None and r.original.deleted_at is not None
            return r.settled or r.failed or deleted

        await interaction.wait_until(done, timeout_s)
        if interaction.failed:
            raise InteractionFailed(f"interaction {interaction.id} was not acknowledged in time")
        return interaction.view().original

    def age(self, interaction: InteractionRecord, seconds: float) -> None:
        """Move an interaction ``seconds`` into the past (its token expires after 15 min)."""
        interaction.created_at -= seconds

    def channel_messages(self, channel: Channel | int) -> list[MessageRecord]:
        """Messages in a channel, oldest first, deleted ones left out."""
        channel_id = channel if isinstance(channel, int) else channel.id
        return [m for m in self._channel_messages.get(channel_id, []) if m.deleted_at is None]

    def dm_messages(self, user: Member | int) -> list[MessageRecord]:
        user_id = user if isinstance(user, int) else user.id
        channel = self._dm_channels.get(user_id)
        return [] if channel is None else self.channel_messages(channel)

    def take_spec_violations(self) -> list[SpecViolation]:
        """The violations so far, forgotten (a test that provokes one must take it)."""
        taken, self.spec_violations = self.spec_violations, []
        return taken

    def describe_spec_violations(self) -> str:
        lines = [f"{len(self.spec_violations)} body(ies) break Discord's OpenAPI description:"]
        for v in self.spec_violations:
            lines += [f"  {v.method} {v.route}"] + [f"    {p}" for p in v.problems[:5]]
        return "\n".join(lines)

    # ---- failure injection -----------------------------------------------------------------

    def rate_limit(
        self,
        method: str,
        route: str,
        times: int = 1,
        *,
        via: bool = True,
        retry_after: float = 0.05,
        is_global: bool = False,
    ) -> None:
        """Answer the next ``times`` calls of ``method route`` (a template) with 429.

        Without ``via`` the 429 looks like Cloudflare's ban, which discord.py does not retry.
        """
        self._rate_limits[(method.upper(), route)] = _RateLimit(times, via, retry_after, is_global)

    def hold(self, method: str, route: str) -> None:
        """Keep the bot's calls of ``method route`` (a template) waiting, unanswered, until
        ``release_held()``; a call whose client is gone by then never takes effect (the reply
        did not reach Discord)."""
        self._held[(method.upper(), route)] = asyncio.Event()

    def held_calls(self, method: str, route: str) -> int:
        return self._held_count.get((method.upper(), route), 0)

    def release_held(self) -> None:
        for event in self._held.values():
            event.set()
        self._held.clear()

    def refuse_channel(self, channel: Channel) -> None:
        """Bot posts to ``channel`` get 403 / 50013 Missing Permissions."""
        self._refused_channels.add(channel.id)

    def refuse_dms(self, user: Member) -> None:
        """DMs to ``user`` get 403 / 50007 (the user closed DMs or blocked the bot)."""
        self._refused_dm_users.add(user.id)

    async def drop_gateway(self) -> None:
        """Close the bot's gateway socket abruptly; the client should RESUME."""
        await self.gateway.drop()

    async def take_gateway_down(self) -> None:
        """A gateway outage: every session's socket closed (the client tries to RESUME) and
        every new connection refused with 503, until ``bring_gateway_up``."""
        self.gateway.refusing = True
        await self.gateway.close_all(code=UNKNOWN_ERROR, message=b"Unknown error.")

    def bring_gateway_up(self) -> None:
        """The outage is over: connections are accepted again."""
        self.gateway.refusing = False

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT; the client should reconnect and RESUME."""
        await self.gateway.send_op(RECONNECT, None)

    async def invalidate_session(self) -> None:
        """Send op 9 INVALID_SESSION (not resumable); the client should IDENTIFY again."""
        await self.gateway.send_op(INVALID_SESSION, False)

    # ---- HTTP plumbing ---------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        api: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/users/@me", self._get_me),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/applications/{application_id}/commands", self._list_commands),
            ("PUT", "/applications/{application_id}/commands", self._overwrite_commands),
            (
                "GET",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._list_commands,
            ),
            (
                "PUT",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._overwrite_commands,
            ),
            ("POST", "/interactions/{interaction_id}/{interaction_token}/callback", self._callback),
            ("POST", "/webhooks/{webhook_id}/{webhook_token}", self._followup),
            (
                "GET",
                "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                self._get_webhook_message,
            ),
            (
                "PATCH",
                "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                self._edit_webhook_message,
            ),
            (
                "DELETE",
                "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                self._delete_webhook_message,
            ),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("POST", "/channels/{channel_id}/messages", self._create_channel_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_channel_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit_channel_message),
            ("POST", "/users/@me/channels", self._open_dm),
        ]
        # The features' routes first: /messages/pins must not be read as a message id.
        features: list[Polls | Pins | Threads | ScheduledEvents] = [
            self._polls,
            self._pins,
            self._threads,
            self._scheduled_events,
        ]
        api = [route for feature in features for route in feature.routes()] + api
        for method, path, handler in api:
            app.router.add_route(method, API_PREFIX + path, handler)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/gateway/resume", self.gateway.handle)
        app.router.add_get(
            "/cdn/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn_get
        )

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        route = self.route_template(request)
        held = self._held.get((request.method, route))
        if held is not None:
            key = (request.method, route)
            self._held_count[key] = self._held_count.get(key, 0) + 1
            await held.wait()
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=503)  # the client is gone: nothing happened
        _REQUEST.set((request.method, route))
        code: int | None = None
        try:
            limited = self._take_rate_limit(request.method, route)
            if limited is not None:
                response: web.StreamResponse = limited
            else:
                if not route.startswith(_NOT_AUTHED):
                    self._check_auth(request)
                response = await handler(request)
        except DiscordError as error:
            code = error.body.get("code")
            response = _json(error.body, error.status)
        except web.HTTPNotFound:
            code = 0
            response = _json(rules.error_body(0, "404: Not Found"), 404)
        call = Call(time.time(), request.method, route, response.status, code)
        self.calls.append(call)
        record = request.get(_INTERACTION)
        if record is not None:
            record.calls.append(call)
            record.touch()
        return response

    @staticmethod
    def json_response(data: Any, status: int = 200) -> web.Response:
        """A JSON answer exactly as Discord labels it."""
        return _json(data, status)

    @staticmethod
    def route_template(request: web.Request) -> str:
        resource = request.match_info.route.resource
        if resource is None:
            return request.path[len(API_PREFIX) :]
        template = resource.canonical[len(API_PREFIX) :]
        if (
            template.endswith("/messages/{message_id}")
            and request.match_info.get("message_id") == "@original"
        ):
            return template.replace("{message_id}", "@original")
        return template

    def _take_rate_limit(self, method: str, route: str) -> web.Response | None:
        limit = self._rate_limits.get((method, route))
        if limit is None or limit.remaining <= 0:
            return None
        limit.remaining -= 1
        headers = {
            "Retry-After": str(max(1, round(limit.retry_after))),
            "X-RateLimit-Scope": "global" if limit.is_global else "user",
        }
        if limit.is_global:
            headers["X-RateLimit-Global"] = "true"
        if limit.via:
            headers["Via"] = "1.1 google"
        body = {
            "message": "You are being rate limited.",
            "retry_after": limit.retry_after,
            "global": limit.is_global,
            "code": 0,
        }
        return _json(body, 429, headers)

    def _check_auth(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bot {self.token}":
            raise DiscordError(401, 0, "401: Unauthorized")

    async def read_body(
        self, request: web.Request, route: str, upload_limit: int | None = None
    ) -> tuple[Any, list[Upload]]:
        """The JSON body (or multipart ``payload_json``) and uploads, checked against the spec.

        ``upload_limit``: the most bytes of files the request may carry together (Discord
        counts the request, not each file); more is refused with 413 / 40005.
        """
        uploads: list[Upload] = []
        if request.content_type == "multipart/form-data":
            body: Any = {}
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                if part.name == "payload_json":
                    body = json.loads(await part.text())
                elif part.name.startswith("files["):
                    index = int(part.name[len("files[") : -1])
                    content_type = part.headers.get("Content-Type", "application/octet-stream")
                    data = await part.read(decode=False)
                    uploads.append(
                        Upload(index, part.filename or "file", content_type, self._intern(data))
                    )
        else:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        if body is not None and self.spec is not None:
            self._check_spec(request.method, route, body)
        limit = self.upload_limit if upload_limit is None else upload_limit
        if sum(len(upload.data) for upload in uploads) > limit:
            raise DiscordError(413, 40005, "Request entity too large")
        return body, uploads

    def _intern(self, data: bytearray | bytes) -> bytes:
        """The kept copy of ``data``: a burst of results with the same stems attached holds
        their bytes once, not once per message."""
        key = hashlib.blake2b(data, digest_size=16).digest()
        return self._blobs.setdefault(key, bytes(data))

    def _check_spec(self, method: str, route: str, body: Any) -> None:
        assert self.spec is not None
        problems = self.spec.check(method, route, body)
        if problems:
            self.spec_violations.append(SpecViolation(method, route, problems, body))
            errors = {"_spec": {"_errors": [{"code": "SPEC", "message": p} for p in problems]}}
            raise DiscordError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "code": 50035,
                    "message": "Invalid Form Body",
                    "errors": errors,
                },
            )

    # ---- REST: identity, gateway, commands -------------------------------------------------

    async def _get_me(self, request: web.Request) -> web.Response:
        return _json({**self.bot_user, "verified": True, "mfa_enabled": False, "email": None})

    async def _get_application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(self.application_id),
                "name": self.bot_user["username"],
                "icon": None,
                "description": "",
                "summary": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "owner": self.owner,
                "team": None,
                "flags": 0,
                "bot": self.bot_user,
            }
        )

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        bots_guilds = sum(1 for g in self.guilds.values() if g.bot_present)
        shards = self.recommended_shards or recommended_shards(bots_guilds)
        limit = self.gateway.limits.payload()
        return _json({"url": self.gateway_url, "shards": shards, "session_start_limit": limit})

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return _json({"url": self.gateway_url})

    def _command_scope(self, request: web.Request) -> int | None:
        if request.match_info["application_id"] != str(self.application_id):
            raise DiscordError(403, 50001, "Missing Access")
        guild_id = request.match_info.get("guild_id")
        if guild_id is None:
            return None
        if int(guild_id) not in self.guilds:
            raise DiscordError(403, 50001, "Missing Access")
        return int(guild_id)

    async def _list_commands(self, request: web.Request) -> web.Response:
        return _json(self.commands.get(self._command_scope(request), []))

    async def _overwrite_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        body, _ = await self.read_body(request, self.route_template(request))
        problems = rules.check_commands(body or [])
        if problems:
            raise DiscordError(400, 50035, "Invalid Form Body", rules.form_error(problems))
        previous = {(c["name"], c.get("type", 1)): c for c in self.commands.get(scope, [])}
        stored = []
        for command in body or []:
            kind = command.get("type", 1)
            old = previous.get((command["name"], kind))
            entry = {
                **command,
                "type": kind,
                "id": old["id"] if old else str(snowflake()),
                "application_id": str(self.application_id),
                "version": str(snowflake()),
                "description": command.get("description", ""),
                "default_member_permissions": command.get("default_member_permissions"),
                "nsfw": command.get("nsfw", False),
            }
            if scope is not None:
                entry["guild_id"] = str(scope)
            stored.append(entry)
        self.commands[scope] = stored
        self.command_syncs.append((time.time(), scope))
        return _json(stored)

    # ---- REST: interactions ----------------------------------------------------------------

    async def _callback(self, request: web.Request) -> web.Response:
        record = self.interactions.get(int(request.match_info["interaction_id"]))
        if record is None or record.token != request.match_info["interaction_token"]:
            raise DiscordError(404, 10062, "Unknown interaction")
        request[_INTERACTION] = record
        body, uploads = await self.read_body(
            request, self.route_template(request), _upload_limit(record)
        )
        now = time.time()
        if record.ack_type is not None:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        if now > record.ack_deadline:
            record.late_ack_at = now
            raise DiscordError(404, 10062, "Unknown interaction")
        kind = int(body.get("type", 0))
        if kind not in _ALLOWED_CALLBACKS[int(record.payload["type"])]:
            raise DiscordError(
                400,
                50035,
                "Invalid Form Body",
                rules.form_error(
                    [(("type",), f"Interaction callback type {kind} is not allowed here")]
                ),
            )
        if kind in (DEFERRED_UPDATE, UPDATE_MESSAGE) and record.source_message is None:
            refuse([(("type",), f"Interaction callback type {kind} needs a message to update")])
        data = body.get("data") or {}
        if kind == MODAL:
            refuse(modals.check_modal(data))
        if kind == DEFERRED_CHANNEL_MESSAGE and _flags(data) & components_v2.IS_COMPONENTS_V2:
            # Discord: the flag goes on the message that replaces "thinking...", not the ack
            problem = (("data", "flags"), "IS_COMPONENTS_V2 cannot be set on a deferred response.")
            refuse([problem])
        message = self._apply_callback(record, kind, data, uploads, now)
        record.ack_type, record.acked_at = kind, now
        if kind in (CHANNEL_MESSAGE, UPDATE_MESSAGE, MODAL):
            record.settled_at = now
        record.touch()
        if request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        return _json(self._callback_response(record, kind, message))

    def _apply_callback(
        self,
        record: InteractionRecord,
        kind: int,
        data: dict[str, Any],
        uploads: list[Upload],
        now: float,
    ) -> MessageRecord | None:
        channel = self.channels[record.channel_id]
        if kind == CHANNEL_MESSAGE:
            record.original = self._create_message(channel, data, uploads, msg_type=20)
        elif kind == DEFERRED_CHANNEL_MESSAGE:
            flags = LOADING | (int(data.get("flags") or 0) & EPHEMERAL)
            record.original = self._keep(
                MessageRecord(self._message_data(channel, now, flags=flags, type_=20), now)
            )
        elif kind in (DEFERRED_UPDATE, UPDATE_MESSAGE):
            record.original = record.source_message
            if kind == UPDATE_MESSAGE and record.original is not None:
                self._edit_message(record.original, data, uploads)
        elif kind == MODAL:
            record.modal = modals.stored(data)
            return None
        return record.original

    def _callback_response(
        self, record: InteractionRecord, kind: int, message: MessageRecord | None
    ) -> dict[str, Any]:
        interaction: dict[str, Any] = {"id": str(record.id), "type": record.payload["type"]}
        response: dict[str, Any] = {"interaction": interaction}
        if message is not None:
            interaction["response_message_id"] = str(message.id)
            interaction["response_message_loading"] = message.loading
            interaction["response_message_ephemeral"] = message.ephemeral
            if kind != DEFERRED_UPDATE:
                response["resource"] = {"type": kind, "message": message.data}
        return response

    def _webhook_interaction(self, request: web.Request) -> InteractionRecord:
        if request.match_info["webhook_id"] != str(self.application_id):
            raise DiscordError(404, 10015, "Unknown Webhook")
        record = self._by_token.get(request.match_info["webhook_token"])
        if record is None:
            raise DiscordError(401, 50027, "Invalid Webhook Token")
        request[_INTERACTION] = record
        if time.time() > record.token_expires_at:
            raise DiscordError(401, 50027, "Invalid Webhook Token")
        return record

    def _webhook_message(self, request: web.Request, record: InteractionRecord) -> MessageRecord:
        wanted = request.match_info["message_id"]
        if wanted == "@original":
            found = record.original
        else:
            found = next((m for m in record.followups if str(m.id) == wanted), None)
            if found is None and record.original is not None and str(record.original.id) == wanted:
                found = record.original
        if found is None or found.deleted_at is not None:
            raise DiscordError(404, 10008, "Unknown Message")
        return found

    async def _followup(self, request: web.Request) -> web.Response:
        record = self._webhook_interaction(request)
        body, uploads = await self.read_body(
            request, self.route_template(request), _upload_limit(record)
        )
        if record.ack_type is None:
            raise DiscordError(404, 10015, "Unknown Webhook")
        original = record.original
        if original is not None and original.loading and original.deleted_at is None:
            # Discord turns the first followup after a deferral into the deferred response
            self._edit_message(original, body, uploads)
            message = original
        else:
            channel = self.channels[record.channel_id]
            message = self._create_message(channel, body, uploads, msg_type=20)
            record.followups.append(message)
        self._settle(record)
        if request.query.get("wait") not in ("true", "1", "True"):
            return web.Response(status=204)
        return _json(message.data)

    async def _get_webhook_message(self, request: web.Request) -> web.Response:
        record = self._webhook_interaction(request)
        return _json(self._webhook_message(request, record).data)

    async def _edit_webhook_message(self, request: web.Request) -> web.Response:
        record = self._webhook_interaction(request)
        body, uploads = await self.read_body(
            request, self.route_template(request), _upload_limit(record)
        )
        message = self._webhook_message(request, record)
        self._edit_message(message, body or {}, uploads)
        if message is record.original:
            self._settle(record)
        record.touch()
        return _json(message.data)

    async def _delete_webhook_message(self, request: web.Request) -> web.Response:
        record = self._webhook_interaction(request)
        message = self._webhook_message(request, record)
        message.deleted_at = time.time()
        record.touch()
        return web.Response(status=204)

    @staticmethod
    def _settle(record: InteractionRecord) -> None:
        if record.settled_at is None:
            record.settled_at = time.time()
        record.touch()

    # ---- REST: channels and DMs ------------------------------------------------------------

    def request_channel(self, request: web.Request) -> Channel:
        """The channel a route names (404 / 10003 if none)."""
        channel = self.channels.get(int(request.match_info["channel_id"]))
        if channel is None:
            raise DiscordError(404, 10003, "Unknown Channel")
        return channel

    async def _get_channel(self, request: web.Request) -> web.Response:
        return _json(self.request_channel(request).payload())

    def _channel_upload_limit(self, channel: Channel) -> int:
        return self.upload_limit_for(
            None if channel.guild_id is None else self.guilds.get(channel.guild_id)
        )

    async def _create_channel_message(self, request: web.Request) -> web.Response:
        channel = self.request_channel(request)
        body, uploads = await self.read_body(
            request, self.route_template(request), self._channel_upload_limit(channel)
        )
        if channel.id in self._refused_channels:
            raise DiscordError(403, 50013, "Missing Permissions")
        if channel.guild_id is not None:
            self._require_post(channel, body or {}, uploads)
        if channel.recipient is not None and int(channel.recipient["id"]) in self._refused_dm_users:
            raise DiscordError(403, 50007, "Cannot send messages to this user")
        message = self._create_message(channel, body or {}, uploads, msg_type=0)
        return _json(message.data)

    def _require_post(self, channel: Channel, body: dict[str, Any], uploads: list[Upload]) -> None:
        """A post needs SEND_MESSAGES (SEND_MESSAGES_IN_THREADS in a thread), and ATTACH_FILES
        with files, SEND_POLLS with a poll."""
        needed = (
            permissions.SEND_MESSAGES_IN_THREADS if channel.is_thread else permissions.SEND_MESSAGES
        )
        if uploads:
            needed |= ATTACH_FILES
        if body.get("poll") is not None:
            needed |= permissions.SEND_POLLS
        permissions.require(self.bot_permissions_in(channel), needed)

    def request_message(self, request: web.Request, channel: Channel) -> MessageRecord:
        """The message a route names in ``channel`` (404 / 10008 if none, or ephemeral)."""
        message = self.messages.get(int(request.match_info["message_id"]))
        if (
            message is None
            or message.channel_id != channel.id
            or message.deleted_at is not None
            or message.ephemeral  # an ephemeral message exists only for its interaction
        ):
            raise DiscordError(404, 10008, "Unknown Message")
        return message

    async def _get_channel_message(self, request: web.Request) -> web.Response:
        channel = self.request_channel(request)
        return _json(self.request_message(request, channel).data)

    async def _edit_channel_message(self, request: web.Request) -> web.Response:
        channel = self.request_channel(request)
        body, uploads = await self.read_body(
            request, self.route_template(request), self._channel_upload_limit(channel)
        )
        message = self.request_message(request, channel)
        if message.data["author"]["id"] != self.bot_user["id"]:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        self._edit_message(message, body or {}, uploads)
        return _json(message.data)

    async def _open_dm(self, request: web.Request) -> web.Response:
        body, _ = await self.read_body(request, self.route_template(request))
        user = self.users.get(int((body or {}).get("recipient_id", 0)))
        if user is None:
            raise DiscordError(400, 50033, "Invalid Recipient(s)")
        return _json(self._dm_channel(user).payload())

    def _dm_channel(self, user: dict[str, Any]) -> Channel:
        channel = self._dm_channels.get(int(user["id"]))
        if channel is None:
            channel = Channel(snowflake(), "", recipient=user)
            self._dm_channels[int(user["id"])] = channel
            self.channels[channel.id] = channel
            self._channel_messages[channel.id] = []
        return channel

    # ---- messages, attachments and the CDN -------------------------------------------------

    def _message_data(
        self,
        channel: Channel,
        now: float,
        *,
        content: str = "",
        author: dict[str, Any] | None = None,
        flags: int = 0,
        type_: int = 0,
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(snowflake(now)),
            "channel_id": str(channel.id),
            "type": type_,
            "content": content,
            "author": author or self.bot_user,
            "embeds": [],
            "components": [],
            "attachments": [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": iso(now),
            "edited_timestamp": None,
            "flags": flags,
        }
        if channel.guild_id is not None:
            data["guild_id"] = str(channel.guild_id)
        if author is None and type_ == 20:
            data["webhook_id"] = str(self.application_id)
            data["application_id"] = str(self.application_id)
        return data

    def _keep(self, record: MessageRecord) -> MessageRecord:
        record.history.append((record.created_at, record.data))
        self.messages[record.id] = record
        self._channel_messages.setdefault(record.channel_id, []).append(record)
        channel = self.channels.get(record.channel_id)
        if isinstance(channel, Thread):
            channel.note_message(record.id)
        return record

    def _create_message(
        self, channel: Channel, body: dict[str, Any], uploads: list[Upload], *, msg_type: int
    ) -> MessageRecord:
        flags = int(body.get("flags") or 0) & _CREATE_FLAGS
        plan = _plan_attachments(body.get("attachments"), uploads, [])
        refuse(_check_body(body, body, flags, plan))
        now = time.time()
        data = self._message_data(
            channel, now, content=body.get("content") or "", flags=flags, type_=msg_type
        )
        record = MessageRecord(data, now)
        self._apply_fields(record, data, body, plan)
        self._keep(record)
        self._note_mentions(record, body, now, uploads)
        return record

    def _edit_message(
        self, message: MessageRecord, body: dict[str, Any], uploads: list[Upload]
    ) -> None:
        """Discord's edit: fields the body names change; the ``attachments`` list, when sent,
        is every file the message keeps (by id) or gains (by upload index); without it new
        files are added to the ones it has."""
        flags = message.flags
        if "flags" in body:
            flags = (flags & ~_EDIT_FLAGS) | (int(body["flags"] or 0) & _EDIT_FLAGS)
        plan: list[_Planned] = list(message.attachments)
        if "attachments" in body or uploads:
            plan = _plan_attachments(body.get("attachments"), uploads, message.attachments)
        after = {name: body.get(name) for name in components_v2.LEGACY_FIELDS}
        after["content"] = body.get("content", message.content)
        after["embeds"] = body.get("embeds", message.embeds)
        if message.poll is not None or (body.get("poll") is not None and not message.loading):
            raise DiscordError(400, 520003, "Cannot edit a poll message")
        problems = _check_body(body, after, flags, plan)
        if (
            message.flags & components_v2.IS_COMPONENTS_V2
            and not flags & components_v2.IS_COMPONENTS_V2
        ):
            problems.append((("flags",), "IS_COMPONENTS_V2 cannot be removed from a message."))
        refuse(problems)
        now = time.time()
        data = dict(message.data)
        if "content" in body:
            data["content"] = body["content"] or ""
        data["flags"] = flags & ~LOADING
        data["edited_timestamp"] = iso(now)
        self._apply_fields(message, data, body, plan)
        message.data = data
        message.history.append((now, data))
        self._note_mentions(message, body, now, uploads)

    def _note_mentions(
        self,
        message: MessageRecord,
        body: dict[str, Any],
        now: float,
        uploads: list[Upload],
    ) -> None:
        """Work out who the body pings, store it on the message as Discord does, keep the body."""
        allowed = body.get("allowed_mentions")
        pinged = rules.pings(
            str(body.get("content") or ""), allowed if isinstance(allowed, dict) else None
        )
        if "content" in body:
            message.data["mentions"] = [
                self.users.get(u) or user_payload(u, str(u)) for u in sorted(pinged.users)
            ]
            message.data["mention_roles"] = [str(r) for r in sorted(pinged.roles)]
            message.data["mention_everyone"] = pinged.everyone
        method, route = _REQUEST.get()
        self.sent_bodies.append(
            SentBody(
                now, method, route, message.id, message.channel_id, body, pinged, tuple(uploads)
            )
        )

    def _apply_fields(
        self,
        record: MessageRecord,
        data: dict[str, Any],
        body: dict[str, Any],
        plan: list[_Planned],
    ) -> None:
        if "embeds" in body:
            data["embeds"] = [{"type": "rich", **e} for e in body["embeds"] or []]
        if "attachments" in body or any(isinstance(p, _NewFile) for p in plan):
            data["attachments"] = [self._attach(record, data, p) for p in plan]
        if body.get("poll") is not None:
            data["poll"] = self._polls.open(record, body["poll"], time.time())
        if "components" in body:
            components = body["components"] or []
            if data["flags"] & components_v2.IS_COMPONENTS_V2:
                components = components_v2.resolve_media(components, data["attachments"])
            data["components"] = components

    def _attach(
        self, record: MessageRecord, data: dict[str, Any], planned: _Planned
    ) -> dict[str, Any]:
        """A kept attachment as it is; a new file stored on the CDN, its bytes on the record."""
        if not isinstance(planned, _NewFile):
            return planned
        upload = planned.upload
        attachment = self._store(
            int(data["channel_id"]),
            upload.data,
            planned.filename,
            sniff_content_type(planned.filename, upload.content_type),
            description=planned.description,
        )
        attachment |= upload_details(upload)
        record.files[attachment["id"]] = upload.data
        return attachment

    def _store(
        self,
        channel_id: int,
        data: bytes,
        filename: str,
        content_type: str,
        *,
        description: str | None = None,
        lifetime_s: float = ATTACHMENT_LIFETIME_S,
    ) -> dict[str, Any]:
        attachment_id = snowflake()
        path = f"/cdn/attachments/{channel_id}/{attachment_id}/{quote(filename)}"
        self._cdn[path] = (data, content_type)
        now = time.time()
        url = self.base_url + path + "?" + self._signature(path, now, now + lifetime_s)
        attachment = {
            "id": str(attachment_id),
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }
        if description:
            attachment["description"] = description
        return attachment

    def cdn_file(self, url: str) -> bytes:
        """The bytes the CDN serves at an attachment ``url`` (signature and expiry unchecked)."""
        path = url.removeprefix(self.base_url).split("?", 1)[0]
        return self._cdn[path][0]

    def _signature(self, path: str, issued: float, expires: float) -> str:
        ex, is_ = f"{int(expires):x}", f"{int(issued):x}"
        hm = hmac.new(self._cdn_secret, f"{path}|{ex}|{is_}".encode(), hashlib.sha256).hexdigest()
        return f"ex={ex}&is={is_}&hm={hm}&"

    async def _cdn_get(self, request: web.Request) -> web.Response:
        path = request.rel_url.raw_path
        ex, is_ = request.query.get("ex", ""), request.query.get("is", "")
        expected = self._signature(path, int(is_ or "0", 16), int(ex or "0", 16))
        signed = f"ex={ex}&is={is_}&hm={request.query.get('hm', '')}&"
        if path not in self._cdn or not hmac.compare_digest(signed, expected):
            return web.Response(status=404, text="Not Found")
        if time.time() > int(ex, 16):
            return web.Response(status=404, text="This content is no longer available.")
        self.cdn_fetches += 1
        data, content_type = self._cdn[path]
        return web.Response(body=data, headers={"Content-Type": content_type})

    # ---- gateway payloads ------------------------------------------------------------------

    def _ready_payload(self, session: Session) -> dict[str, Any]:
        return {
            "v": 10,
            "user": {**self.bot_user, "verified": True, "mfa_enabled": False},
            "guilds": [
                {"id": str(g.id), "unavailable": True} for g in self._guilds_on(session.shard)
            ],
            "session_id": session.id,
            "resume_gateway_url": self.resume_gateway_url,
            "shard": list(session.shard),
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "user_settings": {},
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
        }

    def _guilds_on(self, shard: Shard) -> list[Guild]:
        shard_id, num_shards = shard
        return [
            g
            for g in self.guilds.values()
            if g.bot_present and shard_of(g.id, num_shards) == shard_id
        ]

    def _guild_payloads(self, shard: Shard) -> list[dict[str, Any]]:
        return [g.payload(self.bot_user) for g in self._guilds_on(shard)]
