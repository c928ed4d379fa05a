"""Values that hold a secret and never show it: in a repr, str, log line or error message."""

from __future__ import annotations

from urllib.parse import urlsplit

from stembot.source_urls import redact_url


class Secret:
    """A string that never shows itself in a repr, str, log line or error message."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class DatabaseUrl:
    """A PostgreSQL URL (``postgresql://user:password@host:port/database``) that shows only its
    server and database in a repr, str, log line or error: never its credentials or options."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    @property
    def password(self) -> str | None:
        return urlsplit(self._value).password

    def __repr__(self) -> str:
        return f"DatabaseUrl({str(self)!r})"

    def __str__(self) -> str:
        return redact_url(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DatabaseUrl) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
