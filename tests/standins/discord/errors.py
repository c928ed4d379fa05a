"""The answers Discord gives instead of doing what was asked."""

from __future__ import annotations

from typing import Any

from . import rules


class DiscordError(Exception):
    """An answer Discord gives instead of doing what was asked."""

    def __init__(self, status: int, code: int, message: str, body: dict[str, Any] | None = None):
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.body = body or rules.error_body(code, message)


def refuse(problems: list[rules.Problem]) -> None:
    """400 / 50035 "Invalid Form Body" naming each problem, if there are any."""
    if problems:
        raise DiscordError(400, 50035, "Invalid Form Body", rules.form_error(problems))
