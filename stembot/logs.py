"""Logging set-up: stderr, one format, and no secret in any line that reaches it.

Two layers, because one slip should not leak a token: discord.py's loggers that print webhook
URLs and gateway payloads (interaction tokens) stay above DEBUG whatever the level, and the
handler's formatter redacts known secrets and token-shaped parts of every formatted line,
tracebacks included.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

TOKEN_CARRYING_LOGGERS = ("discord.http", "discord.webhook", "discord.gateway")
REDACTED = "[redacted]"

# Interaction tokens travel in webhook and callback URLs and in gateway JSON payloads.
_TOKEN_SHAPES = (
    (re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/\s?\"']+"), rf"\1{REDACTED}"),
    (re.compile(r"(\"token\"\s*:\s*\")[^\"]+"), rf"\1{REDACTED}"),
    (re.compile(r"((?:Bot|Bearer)\s+)[A-Za-z0-9._\-]{8,}"), rf"\1{REDACTED}"),
)


# Shorter "secrets" are placeholders (a test key, say); replacing them would garble every line.
_MIN_SECRET_LENGTH = 8


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if len(secret) >= _MIN_SECRET_LENGTH:
            text = text.replace(secret, REDACTED)
    for shape, replacement in _TOKEN_SHAPES:
        text = shape.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self._secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self._secrets)


def configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    """Log to stderr at ``level``; redact ``secrets`` (the bot token, the API key) and tokens."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets)
    )
    logging.basicConfig(level=level, handlers=[handler])
    floor = max(logging.INFO, logging.getLevelName(level))
    for name in TOKEN_CARRYING_LOGGERS:
        logging.getLogger(name).setLevel(floor)
    # stembot never joins voice; discord.py's warnings about missing voice libraries are noise.
    logging.getLogger("discord.client").addFilter(_not_about_voice)


def _not_about_voice(record: logging.LogRecord) -> bool:
    return "voice will NOT be supported" not in record.getMessage()
