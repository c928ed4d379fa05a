"""What a result offers beyond its links: the stems attached as files Discord plays, a picture
of them, the stems that are silent, and the free mixes. Plain values, no I/O; the audio work
fills them in and the Discord layer draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

VOCALS = "vocals"


@dataclass(frozen=True, slots=True)
class Mix:
    """A free mix of some of a result's stems, summed locally (no API call, no units)."""

    key: str  # stable: custom ids and cache keys carry it ("instrumental", "without:Drums")
    label: str  # what members see: "Instrumental", "Without Drums"
    stems: tuple[str, ...]  # the stems it sums, in the result's order


def mixes_for(stem_names: Sequence[str]) -> tuple[Mix, ...]:
    """The mixes a result with these stems offers: none for a single stem; else
    "Instrumental" (everything but the vocals, or all of them when there are no vocals),
    then "Without <stem>" for each stem ("Without vocals" is the instrumental, so it is not
    offered twice)."""
    names = tuple(stem_names)
    if len(names) < 2:
        return ()
    instrumental = tuple(name for name in names if name.lower() != VOCALS)
    mixes = [Mix("instrumental", "Instrumental", instrumental)]
    for left_out in names:
        if left_out.lower() == VOCALS:
            continue
        kept = tuple(name for name in names if name != left_out)
        mixes.append(Mix(f"without:{left_out}", f"Without {left_out}", kept))
    return tuple(mixes)


def mix_by_key(stem_names: Sequence[str], key: str) -> Mix | None:
    """The mix a button or menu named, if this result offers it."""
    return next((mix for mix in mixes_for(stem_names) if mix.key == key), None)


@dataclass(frozen=True, slots=True)
class StemMedia:
    """One stem as the result shows it."""

    name: str
    silent: bool = False
    attachment: str | None = None  # the attached file's name; None: the link only
    compressed: bool = False  # the attachment is a smaller copy made here, not the API's file


@dataclass(frozen=True, slots=True)
class ResultMedia:
    """Everything the result card shows besides the links."""

    stems: tuple[StemMedia, ...]
    picture: str | None = None  # the attached PNG's name
    # Why some or all stems stay links only (too large for this channel, could not be fetched).
    note: str | None = None

    @property
    def mixes(self) -> tuple[Mix, ...]:
        """The mixes worth offering: leaving out a silent stem changes nothing audible."""
        silent = {f"without:{stem.name}" for stem in self.stems if stem.silent}
        return tuple(
            mix for mix in mixes_for([stem.name for stem in self.stems]) if mix.key not in silent
        )
