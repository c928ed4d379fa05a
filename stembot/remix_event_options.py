"""What an organiser types into `/stems-event start`, read into plain values: the modes to
offer (``modes:``), the event's end (``ends:``: a duration or a UTC time) and a message link
(``message:``). Plain text in, plain values out; every refusal is a RemixEventError saying what
to type instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from stembot.errors import RemixEventError
from stembot.models import Mode

# An event runs at most this long (a longer one is more likely a typo than a plan).
MAX_EVENT_DAYS: Final = 90
_UNITS: Final = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION: Final = re.compile(r"(?:\s*\d{1,6}\s*[dhms])+\s*", re.IGNORECASE)
_PART: Final = re.compile(r"(\d{1,6})\s*([dhms])", re.IGNORECASE)
_TIME_FORMATS: Final = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")
_ENDS_HELP: Final = (
    "Give `ends:` as a duration such as `3d`, `12h`, `1d 12h` or `90m`, or as a UTC time such "
    "as `2026-12-24 18:00`."
)
_MODE_SEPARATORS: Final = re.compile(r"[\s,;+/&]+")
_MESSAGE_LINK: Final = re.compile(
    r"https://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/"
    r"(?P<guild>[0-9]{15,21})/(?P<channel>[0-9]{15,21})/(?P<message>[0-9]{15,21})/?"
)


@dataclass(frozen=True, slots=True)
class MessageLink:
    """A link to a posted message (Discord's "Copy Message Link")."""

    guild_id: int
    channel_id: int
    message_id: int


def parse_modes(text: str | None) -> tuple[Mode, ...]:
    """``"vocals all"`` -> (VOCALS, ALL), in the mode table's order; none given: every mode."""
    if text is None or not text.strip():
        return tuple(Mode)
    wanted: set[Mode] = set()
    for word in _MODE_SEPARATORS.split(text.strip().lower()):
        if word in ("", "and"):
            continue
        mode = next((m for m in Mode if word in (m.value, m.label.lower())), None)
        if mode is None:
            names = ", ".join(f"`{m.value}`" for m in Mode)
            raise RemixEventError(
                f"`modes:` takes {names}, separated by spaces (for example "
                f"`{Mode.VOCALS.value} {Mode.ALL.value}`); leave it out to offer them all."
            )
        wanted.add(mode)
    return tuple(mode for mode in Mode if mode in wanted)


def parse_ends(text: str | None, now: datetime) -> datetime | None:
    """The event's end: ``now`` plus a duration, or a UTC time; None when not given."""
    if text is None or not text.strip():
        return None
    flat = text.strip()
    if _DURATION.fullmatch(flat):
        seconds = sum(int(n) * _UNITS[unit.lower()] for n, unit in _PART.findall(flat))
        ends = now + timedelta(seconds=seconds)
    else:
        ends = _utc_time(flat)
    if ends <= now:
        raise RemixEventError(f"The event's end must be in the future (it is {_shown(now)} now).")
    if ends > now + timedelta(days=MAX_EVENT_DAYS):
        raise RemixEventError(f"A remix event runs at most {MAX_EVENT_DAYS} days. {_ENDS_HELP}")
    return ends


def parse_message_link(text: str) -> MessageLink:
    """The ids in a message link; RemixEventError when ``text`` is not one."""
    match = _MESSAGE_LINK.fullmatch(text.strip().strip("<>"))
    if match is None:
        raise RemixEventError(
            "`message:` takes a link to a message with the track: right-click the message "
            "(or long-press it) and pick **Copy Message Link**."
        )
    return MessageLink(int(match["guild"]), int(match["channel"]), int(match["message"]))


def _utc_time(text: str) -> datetime:
    flat = re.sub(r"\s*(?:Z|UTC)$", "", text, flags=re.IGNORECASE).replace("T", " ", 1)
    for form in _TIME_FORMATS:
        try:
            return datetime.strptime(flat, form).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise RemixEventError(f"`ends:` wasn't understood. {_ENDS_HELP}")


def _shown(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
