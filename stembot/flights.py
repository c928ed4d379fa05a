"""A flight: one API call and the requests held in memory while it is queued or running.

Identical requests share a flight, so the service calls the API once for all of them; each
held request keeps the listener the Discord layer handed in, to be told its outcome.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from stembot.errors import StembotError
from stembot.models import Mode, NewRequest, QuotaStatus, Request, Separation


class RequestListener(Protocol):
    """How the service tells the requester's side what happened. Called at most once each.

    An outcome comes with the requester's quota as it stands after it (None when the database
    could not say: that line is a nicety that must not hold the answer back).
    """

    async def on_started(self, request: Request) -> None: ...

    async def on_succeeded(
        self, request: Request, separation: Separation, quota: QuotaStatus | None
    ) -> None: ...

    async def on_failed(
        self, request: Request, error: StembotError, quota: QuotaStatus | None
    ) -> None: ...

    async def on_cancelled(self, request: Request) -> None: ...


@dataclass(eq=False)
class HeldRequest:
    """One request the service holds in memory while its call is queued or running."""

    request: Request
    asked: NewRequest
    listener: RequestListener


@dataclass(eq=False)
class Flight:
    """One API call and every request waiting for it; the first request pays for it.

    Identical requests (same source, same mode) join the flight instead of calling the API
    again, so a remix event's crowd costs one call per track and mode.
    """

    id: int
    key: tuple[str, Mode]
    held: list[HeldRequest]
    started_at: datetime | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def payer(self) -> HeldRequest:
        return self.held[0]

    @property
    def request_ids(self) -> list[int]:
        return [t.request.id for t in self.held]
