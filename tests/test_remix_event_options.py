"""What an organiser types into `/stems-event start`: modes, the end, a message link."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stembot.errors import RemixEventError
from stembot.models import Mode
from stembot.remix_event_options import (
    MAX_EVENT_DAYS,
    MessageLink,
    parse_ends,
    parse_message_link,
    parse_modes,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "modes"),
    [
        (None, tuple(Mode)),
        ("  ", tuple(Mode)),
        ("all vocals", (Mode.VOCALS, Mode.ALL)),
        ("Vocals, instruments", (Mode.VOCALS, Mode.INSTRUMENTS)),
        ("vocals+vocals", (Mode.VOCALS,)),
        ("instruments and all", (Mode.INSTRUMENTS, Mode.ALL)),
    ],
)
def test_modes_are_read_in_the_tables_order(text: str | None, modes: tuple[Mode, ...]) -> None:
    assert parse_modes(text) == modes


def test_an_unknown_mode_is_refused_with_the_names_to_use() -> None:
    with pytest.raises(RemixEventError, match="`vocals`, `instruments`, `all`"):
        parse_modes("vocals drums")


@pytest.mark.parametrize(
    ("text", "after"),
    [
        ("3d", timedelta(days=3)),
        ("12h", timedelta(hours=12)),
        ("1d 12h", timedelta(days=1, hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2H30M", timedelta(hours=2, minutes=30)),
    ],
)
def test_a_duration_counts_from_now(text: str, after: timedelta) -> None:
    assert parse_ends(text, NOW) == NOW + after


@pytest.mark.parametrize(
    "text", ["2026-12-24 18:00", "2026-12-24T18:00", "2026-12-24 18:00:00 UTC", "2026-12-24 18:00Z"]
)
def test_a_utc_time_is_the_end(text: str) -> None:
    assert parse_ends(text, NOW) == datetime(2026, 12, 24, 18, 0, tzinfo=UTC)


def test_no_end_is_none() -> None:
    assert parse_ends(None, NOW) is None
    assert parse_ends("", NOW) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2026-11-30 10:00", "in the future"),
        ("0h", "in the future"),
        (f"{MAX_EVENT_DAYS + 1}d", f"at most {MAX_EVENT_DAYS} days"),
        ("tomorrow", "wasn't understood"),
        ("24/12/2026 18:00", "wasn't understood"),
    ],
)
def test_an_end_that_cannot_be_is_refused(text: str, says: str) -> None:
    with pytest.raises(RemixEventError, match=says):
        parse_ends(text, NOW)


def test_a_message_link_gives_its_ids() -> None:
    link = "https://discord.com/channels/123456789012345678/223456789012345678/323456789012345678"
    expected = MessageLink(123456789012345678, 223456789012345678, 323456789012345678)
    assert parse_message_link(link) == expected
    assert parse_message_link(f" <{link.replace('discord.com', 'ptb.discord.com')}> ") == expected


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        "https://discord.com/channels/@me/223456789012345678/323456789012345678",
        "https://evil.example/channels/123456789012345678/223456789012345678/323456789012345678",
    ],
)
def test_anything_else_is_not_a_message_link(text: str) -> None:
    with pytest.raises(RemixEventError, match="Copy Message Link"):
        parse_message_link(text)
