"""The error tree's facts agree with what its messages tell the user."""

from __future__ import annotations

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
    errors.IncidentError: ("AB12CD34",),
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
