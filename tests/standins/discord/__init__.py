"""A loopback Discord speaking the real wire protocol (REST v10 + gateway) for discord.py."""

from .records import (
    EPHEMERAL,
    LOADING,
    Call,
    InteractionFailed,
    InteractionRecord,
    MessageRecord,
    SentBody,
    UserView,
)
from .rules import Pings
from .server import DiscordEmulator, DiscordError, SpecViolation, SpecViolationError
from .spec import DEFAULT_SPEC_PATH, OpenAPISpec
from .world import (
    ADMINISTRATOR,
    BOT_DM,
    GUILD,
    MANAGE_GUILD,
    MEMBER_DEFAULT,
    USER_APP,
    USER_APP_DM,
    Channel,
    Guild,
    Member,
    Role,
)

__all__ = [
    "ADMINISTRATOR",
    "BOT_DM",
    "DEFAULT_SPEC_PATH",
    "EPHEMERAL",
    "GUILD",
    "LOADING",
    "MANAGE_GUILD",
    "MEMBER_DEFAULT",
    "USER_APP",
    "USER_APP_DM",
    "Call",
    "Channel",
    "DiscordEmulator",
    "DiscordError",
    "Guild",
    "InteractionFailed",
    "InteractionRecord",
    "Member",
    "MessageRecord",
    "OpenAPISpec",
    "Pings",
    "Role",
    "SentBody",
    "SpecViolation",
    "SpecViolationError",
    "UserView",
]
