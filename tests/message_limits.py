"""A readable check of a message against Discord's documented limits, for builder tests.

It names every broken limit in one error (the loopback Discord answers the first request that
breaks one with its 400 body instead); the numbers are the emulator's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import discord

from tests.standins.discord.rules import (
    ACTION_ROWS_MAX,
    BUTTON_LABEL_MAX,
    CONTENT_MAX,
    EMBED_AUTHOR_NAME_MAX,
    EMBED_DESCRIPTION_MAX,
    EMBED_FIELD_NAME_MAX,
    EMBED_FIELD_VALUE_MAX,
    EMBED_FIELDS_MAX,
    EMBED_FOOTER_MAX,
    EMBED_TITLE_MAX,
    EMBEDS_MAX,
    EMBEDS_TOTAL_MAX,
    LINK_URL_MAX,
    ROW_BUTTONS_MAX,
)


class MessageLimitError(ValueError):
    """A message would break one of Discord's limits (a bug in a builder)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


def _too_long(where: str, text: object, limit: int) -> list[str]:
    if isinstance(text, str) and len(text) > limit:
        return [f"{where} is {len(text)} characters (limit {limit})"]
    return []


def _embed_problems(index: int, data: Mapping[str, Any]) -> list[str]:
    at = f"embeds[{index}]"
    problems = _too_long(f"{at}.title", data.get("title"), EMBED_TITLE_MAX)
    problems += _too_long(f"{at}.description", data.get("description"), EMBED_DESCRIPTION_MAX)
    problems += _too_long(f"{at}.footer", (data.get("footer") or {}).get("text"), EMBED_FOOTER_MAX)
    problems += _too_long(
        f"{at}.author", (data.get("author") or {}).get("name"), EMBED_AUTHOR_NAME_MAX
    )
    fields = data.get("fields") or []
    if len(fields) > EMBED_FIELDS_MAX:
        problems.append(f"{at} has {len(fields)} fields (limit {EMBED_FIELDS_MAX})")
    for j, field in enumerate(fields):
        problems += _too_long(f"{at}.fields[{j}].name", field.get("name"), EMBED_FIELD_NAME_MAX)
        problems += _too_long(f"{at}.fields[{j}].value", field.get("value"), EMBED_FIELD_VALUE_MAX)
    return problems


def _component_problems(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    problems = []
    if len(rows) > ACTION_ROWS_MAX:
        problems.append(f"{len(rows)} rows of components (limit {ACTION_ROWS_MAX})")
    for i, row in enumerate(rows):
        children = row.get("components") or []
        if len(children) > ROW_BUTTONS_MAX:
            problems.append(f"row {i} has {len(children)} buttons (limit {ROW_BUTTONS_MAX})")
        for j, child in enumerate(children):
            at = f"row {i} button {j}"
            problems += _too_long(f"{at} label", child.get("label"), BUTTON_LABEL_MAX)
            problems += _too_long(f"{at} url", child.get("url"), LINK_URL_MAX)
    return problems


def message_limit_problems(
    embeds: Sequence[discord.Embed] = (),
    view: discord.ui.View | None = None,
    content: str | None = None,
) -> list[str]:
    """Every way the message would break Discord's limits; empty when it is fine."""
    problems = _too_long("content", content, CONTENT_MAX)
    if len(embeds) > EMBEDS_MAX:
        problems.append(f"{len(embeds)} embeds (limit {EMBEDS_MAX})")
    for i, embed in enumerate(embeds):
        problems += _embed_problems(i, embed.to_dict())
    total = sum(len(embed) for embed in embeds)
    if total > EMBEDS_TOTAL_MAX:
        problems.append(f"embeds hold {total} characters (limit {EMBEDS_TOTAL_MAX})")
    if view is not None:
        problems += _component_problems(view.to_components())
    return problems


def check_message_limits(
    embeds: Sequence[discord.Embed] = (),
    view: discord.ui.View | None = None,
    content: str | None = None,
) -> None:
    """Raise MessageLimitError naming every limit the message would break."""
    problems = message_limit_problems(embeds, view, content)
    if problems:
        raise MessageLimitError(problems)
