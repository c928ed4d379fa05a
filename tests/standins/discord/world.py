"""The emulated world: snowflakes, users, guilds, channels, members, and their wire payloads."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .permissions import EVERYONE_DEFAULT, NO_OVERWRITE, Overwrite, apply_overwrite

DISCORD_EPOCH_MS = 1_420_070_400_000
_counter = itertools.count(1)

# Members and the bot start with what @everyone may do in a new server (permissions.py).
MEMBER_DEFAULT = EVERYONE_DEFAULT
BOT_DEFAULT = EVERYONE_DEFAULT

# Where an interaction happens (``context``, the InteractionContextType) and who authorised the
# app there (``authorizing_integration_owners``: "0" = installed to a server, "1" = to a user).
GUILD = "guild"  # a server the bot is in, installed there
BOT_DM = "bot_dm"  # the bot's DM with the user
USER_APP = "user_app"  # installed to the user, used in a server the bot is not in
USER_APP_DM = "user_app_dm"  # installed to the user, used in a DM with someone else
CONTEXTS = (GUILD, BOT_DM, USER_APP, USER_APP_DM)


def snowflake(at: float | None = None) -> int:
    """A Discord id whose timestamp is ``at`` (``time.time()`` seconds, default now)."""
    ms = int((time.time() if at is None else at) * 1000)
    return ((ms - DISCORD_EPOCH_MS) << 22) | (next(_counter) & 0x3FFFFF)


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def user_payload(user_id: int, name: str, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "global_name": None if bot else name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
        "flags": 0,
        "primary_guild": None,
    }


@dataclass
class Role:
    """A guild role; its payload is Discord's role object (GuildRoleResponse)."""

    id: int
    name: str
    position: int = 1
    permissions: int = 0

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }


@dataclass
class Member:
    user: dict[str, Any]
    guild_id: int
    permissions: int
    joined_at: float = field(default_factory=time.time)
    # The member's roles, not counting @everyone (Discord leaves it out of member.roles).
    roles: list[Role] = field(default_factory=list)

    @property
    def id(self) -> int:
        return int(self.user["id"])

    def payload(self, permissions: int | None = None) -> dict[str, Any]:
        """The member object of an interaction: ``permissions``, the member's total in the
        channel (default: its guild-wide ``permissions``)."""
        return {
            "user": self.user,
            "nick": None,
            "avatar": None,
            "roles": [str(role.id) for role in self.roles],
            "joined_at": iso(self.joined_at),
            "premium_since": None,
            "banner": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "permissions": str(self.permissions if permissions is None else permissions),
            "communication_disabled_until": None,
        }


@dataclass
class Channel:
    """A guild text channel, or a DM channel when ``recipient`` is set."""

    id: int
    name: str
    guild_id: int | None = None
    recipient: dict[str, Any] | None = None  # set for a DM channel
    parent_id: int | None = None
    # Member overwrites, by user id: (allow, deny) applied over the user's guild-wide bits.
    overwrites: dict[int, Overwrite] = field(default_factory=dict)

    @property
    def is_thread(self) -> bool:
        return False

    def overwrite_payloads(self) -> list[dict[str, Any]]:
        return [
            {"id": str(user_id), "type": 1, "allow": str(allow), "deny": str(deny)}
            for user_id, (allow, deny) in self.overwrites.items()
        ]

    def payload(self) -> dict[str, Any]:
        if self.recipient is not None:
            return {
                "id": str(self.id),
                "type": 1,
                "recipients": [self.recipient],
                "last_message_id": None,
                "flags": 0,
            }
        return {
            "id": str(self.id),
            "type": 0,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": 0,
            "permission_overwrites": self.overwrite_payloads(),
            "nsfw": False,
            "parent_id": None if self.parent_id is None else str(self.parent_id),
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    bot_permissions: int = BOT_DEFAULT
    channels: dict[int, Channel] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    joined_at: float = field(default_factory=time.time)
    roles: dict[int, Role] = field(default_factory=dict)
    # False for a server the bot was never added to (its app reaches it only user-installed).
    bot_present: bool = True
    # The boost level (0-3), which sets the upload limit; ``upload_limit`` overrides it.
    premium_tier: int = 0
    upload_limit: int | None = None
    # Active threads (threads.py), by id; GUILD_CREATE lists them apart from the channels.
    threads: dict[int, Channel] = field(default_factory=dict)
    # Scheduled events as Discord answers them (scheduled_events.py), by id.
    scheduled_events: dict[int, dict[str, Any]] = field(default_factory=dict)

    def permissions_in(self, channel: Channel, user_id: int, base: int) -> int:
        """The total of a user whose guild-wide permissions are ``base`` in ``channel``: its
        overwrite for the user applied (a thread's are its parent's)."""
        source = (
            self.channels.get(channel.parent_id or 0, channel) if channel.is_thread else channel
        )
        return apply_overwrite(base, source.overwrites.get(user_id, NO_OVERWRITE))

    @property
    def everyone(self) -> Role:
        """The @everyone role: its id is the guild's."""
        return Role(self.id, "@everyone", 0, self.bot_permissions)

    @property
    def default_channel(self) -> Channel:
        return next(iter(self.channels.values()))

    def payload(self, bot_user: dict[str, Any]) -> dict[str, Any]:
        """GUILD_CREATE: the guild as the bot receives it after READY."""
        everyone = self.everyone.payload()
        bot_member = Member(bot_user, self.id, self.bot_permissions, self.joined_at).payload()
        bot_member.pop("permissions")
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "owner_id": str(self.owner_id),
            "roles": [everyone, *(role.payload() for role in self.roles.values())],
            "emojis": [],
            "stickers": [],
            "features": [],
            "channels": [c.payload() for c in self.channels.values()],
            "threads": [t.payload() for t in self.threads.values()],
            "members": [bot_member],
            "member_count": len(self.members) + 1,
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": list(self.scheduled_events.values()),
            "soundboard_sounds": [],
            "joined_at": iso(self.joined_at),
            "large": False,
            "unavailable": False,
            "premium_tier": self.premium_tier,
            "system_channel_flags": 0,
            "preferred_locale": "en-US",
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "afk_timeout": 300,
            "afk_channel_id": None,
            "system_channel_id": None,
            "description": None,
            "application_id": None,
        }
