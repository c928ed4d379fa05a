"""A member's request as plain values: who asked and where, and the input they gave (the
Discord layer, the CLI and the tests build these; the service never sees discord objects)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AttachmentInput:
    """A Discord attachment as plain values; ``url`` is the signed URL exactly as given."""

    id: int
    url: str = field(repr=False)
    filename: str
    content_type: str | None
    size: int


@dataclass(frozen=True, slots=True)
class CheckedSource:
    """An input that passed every check: the URL the API gets, a name to show, a reuse key."""

    url: str = field(repr=False)
    name: str
    key: str


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked, and where: the ids the ledger records and the result is delivered to."""

    guild_id: int
    channel_id: int
    user_id: int
    interaction_id: int
    # The member's role ids in the server (a role may carry its own daily allowance).
    role_ids: tuple[int, ...] = ()
