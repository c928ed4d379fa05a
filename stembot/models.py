"""Plain values shared by every layer. No I/O, no discord, no aiohttp."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Mode(enum.StrEnum):
    """What to separate; the values are the slash subcommand names."""

    VOCALS = "vocals"
    INSTRUMENTS = "instruments"
    ALL = "all"

    @property
    def api_path(self) -> str:
        return _API_PATHS[self]

    @property
    def label(self) -> str:
        """How the mode is named to users."""
        return _LABELS[self]


_API_PATHS = {
    Mode.VOCALS: "/v1/generate/stem-separation/vocals",
    Mode.INSTRUMENTS: "/v1/generate/stem-separation/instruments",
    Mode.ALL: "/v1/generate/stem-separation/all-stems",
}

_LABELS = {
    Mode.VOCALS: "Vocals",
    Mode.INSTRUMENTS: "Instruments",
    Mode.ALL: "All stems",
}

# The stems the API documents for each mode, in its order. Unknown extra stems are kept.
DOCUMENTED_STEMS: dict[Mode, tuple[str, ...]] = {
    Mode.VOCALS: ("vocals",),
    Mode.INSTRUMENTS: ("Guitar", "Other", "Drums", "Bass", "Piano"),
    Mode.ALL: ("vocals", "Guitar", "Other", "Drums", "Bass", "Piano"),
}


@dataclass(frozen=True, slots=True)
class Stem:
    """One separated track: its name as the API gave it and where to download it."""

    name: str
    url: str


@dataclass(frozen=True, slots=True)
class Separation:
    """The API's answer for one source and mode, with when the URLs were issued."""

    mode: Mode
    stems: tuple[Stem, ...]
    issued_at: datetime


class JobStatus(enum.StrEnum):
    """Where a request stands. Only the first two hold quota that may still be refunded."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def is_active(self) -> bool:
        return self in (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class JobRequest:
    """Everything the service needs about one request, in plain values (no discord objects).

    ``source_key`` identifies the input for reuse: ``attachment:<id>`` for a Discord
    attachment, or the normalised URL.
    """

    guild_id: int
    channel_id: int
    user_id: int
    interaction_id: int
    mode: Mode
    source_url: str
    source_name: str
    source_key: str
