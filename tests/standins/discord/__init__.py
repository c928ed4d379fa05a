"""A loopback Discord speaking the real wire protocol (REST v10 + gateway) for discord.py."""

from .records import (
    EPHEMERAL,
    LOADING,
    Call,
    InteractionFailed,
    InteractionRecord,
    MessageRecord,
    UserView,
)
from .server import DiscordEmulator, DiscordError, SpecViolation, SpecViolationError
from .spec import DEFAULT_SPEC_PATH, OpenAPISpec
from .world import (
    ADMINISTRATOR,
    MANAGE_GUILD,
    MEMBER_DEFAULT,
    Channel,
    Guild,
    Member,
    Role,
)

__all__ = [
    "ADMINISTRATOR",
    "DEFAULT_SPEC_PATH",
    "EPHEMERAL",
    "LOADING",
    "MANAGE_GUILD",
    "MEMBER_DEFAULT",
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
    "Role",
    "SpecViolation",
    "SpecViolationError",
    "UserView",
]
