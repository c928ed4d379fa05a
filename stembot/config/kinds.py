"""Kinds: how a setting's text becomes a value, and what it must be."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from stembot.config.values import DatabaseUrl, Secret

T = TypeVar("T")


@dataclass(frozen=True)
class Kind(Generic[T]):
    """``parse`` raises ValueError for text that is no valid value; ``expected`` says what is."""

    parse: Callable[[str], T]
    expected: str


def whole(at_least: int, unit: str = "", note: str = "") -> Kind[int]:
    def parse(text: str) -> int:
        number = int(text)
        if number < at_least:
            raise ValueError(text)
        return number

    of = f" of {unit}," if unit else " of"
    return Kind(parse, f"a whole number{of} at least {at_least}" + (f" ({note})" if note else ""))


def positive(unit: str = "", at_most: float | None = None, why: str = "") -> Kind[float]:
    def parse(text: str) -> float:
        number = float(text)
        if not number > 0 or number == float("inf") or (at_most is not None and number > at_most):
            raise ValueError(text)
        return number

    expected = "a positive number" + (f" of {unit}" if unit else "")
    if at_most is not None:
        expected += f", at most {at_most:g}" + (f" ({why})" if why else "")
    return Kind(parse, expected)


def parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def snowflake(text: str) -> int:
    number = int(text)
    if number <= 0 or number >= 2**64:
        raise ValueError(text)
    return number


# Far beyond any bot (one shard per 1,000-2,500 servers); it bounds what a typo expands to.
_MAX_SHARD_ID = 99_999


def shard_id_list(text: str) -> tuple[int, ...]:
    """``0-3``, ``0,2,5`` or both (``0-1,4``): the shard ids, sorted, each once."""
    ids: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        low, high = int(first), int(last) if dash else int(first)
        if low < 0 or high < low or high > _MAX_SHARD_ID:
            raise ValueError(text)
        ids.update(range(low, high + 1))
    return tuple(sorted(ids))


def port(text: str) -> int:
    number = int(text)
    if not 1 <= number <= 65_535:
        raise ValueError(text)
    return number


def http_host(text: str) -> str:
    """An address or host name to listen on; no scheme, port or spaces."""
    if not text or any(c.isspace() or c in "/[]" for c in text):
        raise ValueError(text)
    return text


def url(schemes: tuple[str, ...], expected: str) -> Kind[str]:
    def parse(text: str) -> str:
        parts = urlsplit(text)
        if parts.scheme not in schemes or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(text)
        return text.rstrip("/")

    return Kind(parse, expected)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(text: str) -> str:
    upper = text.upper()
    if upper not in LOG_LEVELS:
        raise ValueError(text)
    return upper


def secret(what: str) -> Kind[Secret]:
    return Kind(Secret, what)


def database_url(text: str) -> DatabaseUrl:
    if urlsplit(text).scheme not in ("postgresql", "postgres"):
        raise ValueError("not a PostgreSQL URL")  # the text itself is never shown
    return DatabaseUrl(text)


HTTP_URL = url(("http", "https"), "an http(s) URL")
SECONDS = positive("seconds")
AT_LEAST_0 = whole(0)
AT_LEAST_1 = whole(1)
