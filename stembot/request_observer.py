"""What the service tells an observer (the metrics, stembot/metrics.py) as requests end:
plain values, told once each, never waited on. The service works the same unobserved."""

from __future__ import annotations

import enum
from typing import Protocol

from stembot.errors import StembotError
from stembot.models import Request


class Outcome(enum.StrEnum):
    """How a request that reached the service ended."""

    SUCCEEDED = "succeeded"  # the API call's result (paid, or shared with the payer)
    REUSED = "reused"  # answered from a stored result, free
    FAILED = "failed"  # refunded
    INTERRUPTED = "interrupted"  # refunded: a shutdown or a restart cut it short
    CANCELLED = "cancelled"  # by its requester, while it waited


class RequestObserver(Protocol):
    def request_ended(self, request: Request, outcome: Outcome) -> None:
        """``request`` ended so; its ``cost`` is what it was charged (0: free)."""
        ...

    def request_refused(self, guild_id: int, refusal: StembotError) -> None:
        """A member's request in ``guild_id`` was refused before anything was charged."""
        ...

    def result_delivered(self, via: str) -> None:
        """A result reached its requester ``via`` "interaction", "channel", "dm" or "nowhere"."""
        ...


class Unobserved:
    """Nobody is watching (tests, and the command line)."""

    def request_ended(self, request: Request, outcome: Outcome) -> None:
        pass

    def request_refused(self, guild_id: int, refusal: StembotError) -> None:
        pass

    def result_delivered(self, via: str) -> None:
        pass
