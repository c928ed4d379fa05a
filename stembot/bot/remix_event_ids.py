"""The custom ids of the items on a remix event's card and under its stems
(``stems-event:<kind>:<event id>:<mode>``): their state lives in the id, so they keep working
after a restart. A mode this bot no longer offers is read back as its text and answered, never
a crash."""

from __future__ import annotations

from re import Match
from typing import Final

from stembot.models import Mode

_MODES: Final = frozenset(mode.value for mode in Mode)


def template(kind: str) -> str:
    """The pattern a DynamicItem of ``kind`` (take, mix) is found by."""
    return rf"stems-event:{kind}:(?P<event_id>[0-9]+):(?P<mode>[-_a-z0-9]+)"


def custom_id(kind: str, event_id: int, mode_text: str) -> str:
    return f"stems-event:{kind}:{event_id}:{mode_text}"


def event_and_mode(match: Match[str]) -> tuple[int, str]:
    """The event's id and the mode's text, from a match of ``template``."""
    return int(match["event_id"]), match["mode"]


def offered(mode_text: str) -> bool:
    """Whether ``mode_text`` names a mode of this bot."""
    return mode_text in _MODES


def mode_label(mode_text: str, otherwise: str) -> str:
    return Mode(mode_text).label if offered(mode_text) else otherwise
