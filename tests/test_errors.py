"""The error tree's facts agree with what its messages tell the user."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stembot import errors
from stembot.errors import StembotError
from stembot.models import QuotaLimit

# Arguments for the errors whose constructor needs some.
_ARGS: dict[type[StembotError], tuple[object, ...]] = {
    errors.ConfigError: (["a problem"],),
    errors.QuotaExceededError: ("This server has used its units.",),
    errors.QuotaLimitReached: (QuotaLimit.GUILD_DAILY, "This server has used its units.", None),
    errors.TooManyLinksError: (2,),
    errors.NotAudioSourceError: ("That link leads to a PNG image; ...", "a PNG image"),
    errors.IncidentError: ("AB12CD34",),
    errors.DatabaseInUseError: (Path("stembot.db"), "pid 1 on host, since 2026-12-01"),
    errors.HttpPortError: ("127.0.0.1", 8080, "Address already in use"),
    errors.StemFetchError: ("drums",),
    errors.StemGoneError: ("drums", 404),
    errors.StemUnavailableError: ("drums", 503),
    errors.StemTooLargeError: ("drums", 200 * 1024 * 1024, None),
    errors.StemNotAudioError: ("drums", "a web page"),
    errors.StemTruncatedError: ("drums", 1000, 10),
    errors.StemAddressRefusedError: ("drums",),
    errors.StemUnreachableError: ("drums", "timed out"),
    errors.MixStemsUnavailableError: (errors.StemUnavailableError("drums", 503),),
    errors.TooManyRemixEventsError: (3,),
    errors.RemixEventBudgetSpentError: (2, 1, 2, "All stems"),
    errors.SharedCallFailedError: ("The API refused it. You were not charged.",),
}


def _every_error() -> list[type[StembotError]]:
    found, todo = [], [StembotError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [cls for cls in found if cls.__module__ == errors.__name__]


@pytest.mark.parametrize("cls", _every_error(), ids=lambda cls: cls.__name__)
def test_says_not_charged_is_what_the_message_says(cls: type[StembotError]) -> None:
    """A failure notice adds "You were not charged." exactly when the error's own text lacks it."""
    error = cls(*_ARGS.get(cls, ()))  # type: ignore[arg-type]
    assert error.says_not_charged == ("not charged" in error.user_message.lower())


def test_each_incident_gets_its_own_id_shown_to_the_user() -> None:
    """One generator for every incident (service and command tree): eight hex digits, new each
    time, and the id is what the user's message names."""
    first, second = errors.IncidentError(), errors.IncidentError()
    assert first.incident_id != second.incident_id
    for incident in (first, second):
        assert re.fullmatch("[0-9A-F]{8}", incident.incident_id)
        assert f"(incident {incident.incident_id})" in incident.user_message
