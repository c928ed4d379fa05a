"""A loopback Discord speaking the real wire protocol (REST v10 + gateway) for discord.py."""

from .errors import DiscordError
from .modals import SubmitRefusedError
from .permissions import (
    ADMINISTRATOR,
    ATTACH_FILES,
    CREATE_EVENTS,
    CREATE_PRIVATE_THREADS,
    CREATE_PUBLIC_THREADS,
    EVERYONE_DEFAULT,
    MANAGE_EVENTS,
    MANAGE_GUILD,
    MANAGE_MESSAGES,
    PIN_MESSAGES,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    SEND_POLLS,
    VIEW_CHANNEL,
)
from .polls import PollClosedError
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
from .server import DiscordEmulator, SpecViolation, SpecViolationError
from .spec import DEFAULT_SPEC_PATH, OpenAPISpec
from .threads import Thread
from .world import (
    BOT_DEFAULT,
    BOT_DM,
    GUILD,
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
    "ATTACH_FILES",
    "BOT_DEFAULT",
    "BOT_DM",
    "CREATE_EVENTS",
    "CREATE_PRIVATE_THREADS",
    "CREATE_PUBLIC_THREADS",
    "DEFAULT_SPEC_PATH",
    "EPHEMERAL",
    "EVERYONE_DEFAULT",
    "GUILD",
    "LOADING",
    "MANAGE_EVENTS",
    "MANAGE_GUILD",
    "MANAGE_MESSAGES",
    "MEMBER_DEFAULT",
    "PIN_MESSAGES",
    "READ_MESSAGE_HISTORY",
    "SEND_MESSAGES",
    "SEND_MESSAGES_IN_THREADS",
    "SEND_POLLS",
    "USER_APP",
    "USER_APP_DM",
    "VIEW_CHANNEL",
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
    "PollClosedError",
    "Role",
    "SentBody",
    "SpecViolation",
    "SpecViolationError",
    "SubmitRefusedError",
    "Thread",
    "UserView",
]
