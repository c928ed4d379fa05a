"""What the bot sent, as Discord would have stored it, with arrival times.

Times are ``time.time()`` seconds, comparable with an interaction's ``created_at``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .components_v2 import walk
from .rules import Pings
from .world import GUILD, Member

LOADING = 1 << 7  # message flag of a deferred "is thinking..." response
EPHEMERAL = 1 << 6
# Message types a member or an app writes; every other type is one Discord posts itself
# (a pin, a thread start, a poll's result, ...).
_AUTHORED_TYPES = frozenset({0, 19, 20, 23})


class InteractionFailed(AssertionError):
    """The user saw "The application did not respond": no acknowledgement within 3 s."""


@dataclass
class Call:
    """One REST call the bot made, and how the emulator answered it."""

    at: float
    method: str
    route: str
    status: int
    code: int | None = None  # Discord's JSON error code, for refusals


@dataclass(frozen=True)
class Upload:
    """One file of a multipart request (``files[index]``), as the bot sent it."""

    index: int
    filename: str
    content_type: str
    data: bytes


@dataclass
class MessageRecord:
    """A message as Discord stores it; ``data`` is the current state, ``history`` every state."""

    data: dict[str, Any]
    created_at: float
    history: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    deleted_at: float | None = None
    # The bytes of every file the message has carried, by attachment id (what the CDN serves).
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def channel_id(self) -> int:
        return int(self.data["channel_id"])

    @property
    def content(self) -> str:
        return str(self.data.get("content") or "")

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return list(self.data.get("embeds") or [])

    @property
    def components(self) -> list[dict[str, Any]]:
        return list(self.data.get("components") or [])

    @property
    def attachments(self) -> list[dict[str, Any]]:
        return list(self.data.get("attachments") or [])

    @property
    def flags(self) -> int:
        return int(self.data.get("flags") or 0)

    @property
    def type(self) -> int:
        return int(self.data.get("type") or 0)

    @property
    def system(self) -> bool:
        """Whether Discord posted it itself (a pin notice, a thread start, a poll result)."""
        return self.type not in _AUTHORED_TYPES

    @property
    def poll(self) -> dict[str, Any] | None:
        """The message's poll as Discord shows it (question, answers, expiry, results)."""
        poll = self.data.get("poll")
        return poll if isinstance(poll, dict) else None

    def file(self, filename: str) -> bytes:
        """The bytes of the attachment ``filename`` the message has now: what a member hears."""
        for attachment in self.attachments:
            if attachment["filename"] == filename:
                return self.files[attachment["id"]]
        names = [a["filename"] for a in self.attachments]
        raise LookupError(f"message {self.id} has no attachment {filename!r}; it has {names}")

    def attached(self) -> dict[str, bytes]:
        """Every attachment the message has now, filename -> bytes, in the message's order."""
        return {a["filename"]: self.files[a["id"]] for a in self.attachments}

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    def custom_ids(self) -> list[str]:
        """Every interactive component's custom_id, nested ones (V2) included, in order."""
        return [found["custom_id"] for _, found in walk(self.components) if "custom_id" in found]


@dataclass
class SentBody:
    """One body that created or edited a message, and who Discord would have pinged for it."""

    at: float
    method: str
    route: str
    message_id: int
    channel_id: int
    body: dict[str, Any]
    pings: Pings
    uploads: tuple[Upload, ...] = ()

    @property
    def sets_allowed_mentions(self) -> bool:
        return isinstance(self.body.get("allowed_mentions"), dict)


@dataclass
class UserView:
    """What the invoking user sees for an interaction right now."""

    failed: bool
    original: dict[str, Any] | None
    followups: list[dict[str, Any]]


@dataclass
class InteractionRecord:
    """One interaction the emulator dispatched; doubles as the handle tests hold."""

    id: int
    token: str
    kind: str  # "slash", "message_command", "component", "modal_submit"
    payload: dict[str, Any]
    created_at: float
    ack_window_s: float
    token_lifetime_s: float
    ack_type: int | None = None
    acked_at: float | None = None
    late_ack_at: float | None = None
    original: MessageRecord | None = None
    followups: list[MessageRecord] = field(default_factory=list)
    modal: dict[str, Any] | None = None
    source_message: MessageRecord | None = None  # the message a clicked component sits on
    invoker: Member | None = None  # the member who triggered it
    context: str = GUILD  # where (world.CONTEXTS)
    settled_at: float | None = None  # when the user first saw a finished response
    calls: list[Call] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def channel_id(self) -> int:
        return int(self.payload["channel_id"])

    @property
    def ack_deadline(self) -> float:
        return self.created_at + self.ack_window_s

    @property
    def token_expires_at(self) -> float:
        return self.created_at + self.token_lifetime_s

    @property
    def acknowledged(self) -> bool:
        return self.ack_type is not None

    @property
    def failed(self) -> bool:
        """Discord shows "The application did not respond" once the 3 s pass unacknowledged."""
        return self.ack_type is None and time.time() > self.ack_deadline

    @property
    def settled(self) -> bool:
        return self.settled_at is not None

    def view(self) -> UserView:
        original = self.original
        shown = None if original is None or original.deleted_at is not None else original.data
        return UserView(
            failed=self.failed,
            original=shown,
            followups=[m.data for m in self.followups if m.deleted_at is None],
        )

    def touch(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(
        self, predicate: Callable[[InteractionRecord], bool], timeout_s: float
    ) -> None:
        """Wait until ``predicate(self)`` holds; the ack deadline passing counts as a change."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout_s
        while not predicate(self):
            remaining = give_up - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"interaction {self.id} ({self.kind}): condition not met")
            if self.ack_type is None:
                remaining = min(remaining, max(0.0, self.ack_deadline - time.time()) + 0.001)
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
