"""Which stems ride on the result as files, and how big each may be. Plain values, no I/O.

Discord takes at most 10 files per message and refuses a whole request above the channel's
upload limit (10 MiB without boosts: read it at run time, never a constant), so the plan counts
the request, not each file: the picture first, then the stems. A stem keeps the API's own file
when everything fits; otherwise it gets a byte budget for a smaller copy made here (shares
left over by stems that fit are passed on to the others); a stem whose budget cannot hold even
a low-bitrate copy of its length stays a link, and the note says which and why. The links stay
on the result whatever happens (full quality).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

FILES_MAX = 10
# The multipart envelope and the JSON payload travel in the same request as the files.
REQUEST_OVERHEAD_BYTES = 64 * 1024
# Below this a copy is not worth listening to (and Opus/MP3 encoders go no lower usefully).
LOWEST_BITRATE_BPS = 48_000
# Container and frame overhead on top of the audio bitrate.
ENCODING_OVERHEAD = 1.05


class Choice(enum.StrEnum):
    ORIGINAL = "original"  # the API's file, as it is
    SMALLER_COPY = "smaller copy"  # encoded here within ``budget_bytes``
    LINK_ONLY = "link only"


@dataclass(frozen=True, slots=True)
class FetchedStem:
    """What the plan needs to know of one fetched stem."""

    name: str
    size: int  # bytes of the API's file
    seconds: float  # its length
    plays_inline: bool = True  # Discord plays its format in the message (mp3, ogg, wav, flac)


@dataclass(frozen=True, slots=True)
class Planned:
    name: str
    choice: Choice
    budget_bytes: int = 0  # for SMALLER_COPY: the most the copy may take


@dataclass(frozen=True, slots=True)
class AttachmentPlan:
    stems: tuple[Planned, ...]
    note: str | None  # for the card: what stays a link, or what was made smaller, and why

    def choice_of(self, name: str) -> Choice:
        return next(p.choice for p in self.stems if p.name == name)


def plan_attachments(
    stems: Sequence[FetchedStem], limit_bytes: int, picture_bytes: int = 0
) -> AttachmentPlan:
    """How the stems fit in one message under ``limit_bytes`` with a picture of
    ``picture_bytes`` (0: none) sent alongside."""
    slots = FILES_MAX - (1 if picture_bytes else 0)
    room = limit_bytes - REQUEST_OVERHEAD_BYTES - picture_bytes
    considered, no_slot = list(stems[:slots]), list(stems[slots:])
    if all(s.plays_inline for s in considered) and sum(s.size for s in considered) <= room:
        planned = {s.name: Planned(s.name, Choice.ORIGINAL) for s in considered}
    else:
        planned = _share(considered, room)
    for stem in no_slot:
        planned[stem.name] = Planned(stem.name, Choice.LINK_ONLY)
    ordered = tuple(planned[s.name] for s in stems)
    return AttachmentPlan(ordered, _note(ordered, limit_bytes, no_slot))


def _share(stems: list[FetchedStem], room: int) -> dict[str, Planned]:
    """Water-filling: the smallest needs first; a stem whose own file fits its fair share keeps
    it and passes the rest on; the others get smaller copies of an equal share, or stay links
    when that share cannot hold the lowest bitrate for their length."""
    planned: dict[str, Planned] = {}
    waiting = sorted(stems, key=lambda s: s.size)
    while waiting:
        share = max(0, room) // len(waiting)
        whole = next((s for s in waiting if s.plays_inline and s.size <= share), None)
        if whole is not None:
            planned[whole.name] = Planned(whole.name, Choice.ORIGINAL)
            room -= whole.size
            waiting.remove(whole)
            continue
        # Nothing left fits whole: equal shares, the shortest stems first (they need least).
        for stem in sorted(waiting, key=lambda s: s.seconds):
            share = max(0, room) // len(waiting)
            if share >= lowest_copy_bytes(stem.seconds):
                planned[stem.name] = Planned(stem.name, Choice.SMALLER_COPY, share)
                room -= share
            else:
                planned[stem.name] = Planned(stem.name, Choice.LINK_ONLY)
            waiting.remove(stem)
    return planned


def lowest_copy_bytes(seconds: float) -> int:
    """The smallest copy worth attaching of a stem this long."""
    return int(seconds * LOWEST_BITRATE_BPS / 8 * ENCODING_OVERHEAD)


def bitrate_for(budget_bytes: int, seconds: float) -> int:
    """The highest bitrate (bits per second) whose copy of ``seconds`` fits ``budget_bytes``."""
    return int(budget_bytes * 8 / ENCODING_OVERHEAD / max(seconds, 0.001))


def _note(
    planned: Sequence[Planned], limit_bytes: int, no_slot: Sequence[FetchedStem]
) -> str | None:
    links = [p.name for p in planned if p.choice is Choice.LINK_ONLY]
    smaller = [p.name for p in planned if p.choice is Choice.SMALLER_COPY]
    limit = f"{limit_bytes / 2**20:.0f} MiB"
    parts = []
    if smaller:
        parts.append(
            f"{_names(smaller)}: smaller copies attached to fit this channel's {limit} upload "
            "limit; the links have full quality."
        )
    if links:
        why = (
            f"a message holds at most {FILES_MAX} files"
            if links == [s.name for s in no_slot]
            else f"they do not fit this channel's {limit} upload limit"
        )
        parts.append(f"{_names(links)}: link only ({why}).")
    return " ".join(parts) or None


def _names(names: Sequence[str]) -> str:
    return ", ".join(names)
