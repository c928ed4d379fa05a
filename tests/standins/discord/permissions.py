"""Discord's permission bits and how a channel's overwrites change them.

https://discord.com/developers/docs/topics/permissions. A user's permissions in a channel are
its guild-wide permissions with the channel's overwrite for that user applied (deny, then
allow); ADMINISTRATOR allows everything and bypasses overwrites. A thread has no overwrites of
its own: it takes its parent channel's, except that sending in it needs
SEND_MESSAGES_IN_THREADS rather than SEND_MESSAGES.

Since 23 February 2026 (Discord's change log of 24 November 2025) pinning needs PIN_MESSAGES
(MANAGE_MESSAGES no longer does) and creating a scheduled event needs CREATE_EVENTS
(MANAGE_EVENTS no longer does).
"""

from __future__ import annotations

from .errors import DiscordError

CREATE_INSTANT_INVITE = 1 << 0
ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_APPLICATION_COMMANDS = 1 << 31
MANAGE_EVENTS = 1 << 33
MANAGE_THREADS = 1 << 34
CREATE_PUBLIC_THREADS = 1 << 35
CREATE_PRIVATE_THREADS = 1 << 36
SEND_MESSAGES_IN_THREADS = 1 << 38
CREATE_EVENTS = 1 << 44
SEND_POLLS = 1 << 49
PIN_MESSAGES = 1 << 51

# What @everyone may do in a new server, and so what a member or a freshly invited bot can do
# without a role of its own: talk, read the history, start threads and talk in them, post
# polls. Not: pin, manage messages or events, create events.
EVERYONE_DEFAULT = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_APPLICATION_COMMANDS
    | CREATE_PUBLIC_THREADS
    | CREATE_PRIVATE_THREADS
    | SEND_MESSAGES_IN_THREADS
    | SEND_POLLS
)

Overwrite = tuple[int, int]  # (allow, deny)
NO_OVERWRITE: Overwrite = (0, 0)


def apply_overwrite(base: int, overwrite: Overwrite) -> int:
    """``base`` (guild-wide permissions) in a channel whose overwrite for the user is
    ``overwrite``; an administrator keeps everything."""
    if base & ADMINISTRATOR:
        return base
    allow, deny = overwrite
    return (base & ~deny) | allow


def has(permissions: int, needed: int) -> bool:
    """Whether ``permissions`` include every bit of ``needed`` (ADMINISTRATOR includes all)."""
    return bool(permissions & ADMINISTRATOR) or permissions & needed == needed


def require(permissions: int, needed: int, *, in_channel: bool = True) -> None:
    """Refuse as Discord does when ``permissions`` lack ``needed``: in a channel the bot cannot
    see, 403 / 50001 "Missing Access"; else 403 / 50013 "Missing Permissions"."""
    if in_channel and not has(permissions, VIEW_CHANNEL):
        raise DiscordError(403, 50001, "Missing Access")
    if not has(permissions, needed):
        raise DiscordError(403, 50013, "Missing Permissions")
