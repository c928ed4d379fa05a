"""Discord's documented message and command limits, and its error bodies.

Each check returns a list of ``(path, message)`` problems; ``form_error`` turns them into the
400 "Invalid Form Body" (50035) body Discord answers, nested the way discord.py flattens it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

CONTENT_MAX = 2000
EMBEDS_MAX = 10
EMBED_TITLE_MAX = 256
EMBED_DESCRIPTION_MAX = 4096
EMBED_FIELDS_MAX = 25
EMBED_FIELD_NAME_MAX = 256
EMBED_FIELD_VALUE_MAX = 1024
EMBED_FOOTER_MAX = 2048
EMBED_AUTHOR_NAME_MAX = 256
EMBEDS_TOTAL_MAX = 6000
ACTION_ROWS_MAX = 5
ROW_BUTTONS_MAX = 5
BUTTON_LABEL_MAX = 80
CUSTOM_ID_MAX = 100
LINK_URL_MAX = 512
SELECT_OPTIONS_MAX = 25
SELECT_OPTION_TEXT_MAX = 100
SELECT_PLACEHOLDER_MAX = 150
FILES_MAX = 10
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
# Upload limit per request by the server's boost level (discord.py's Guild.filesize_limit).
UPLOAD_LIMIT_BY_PREMIUM_TIER = {
    0: DEFAULT_UPLOAD_LIMIT,
    1: DEFAULT_UPLOAD_LIMIT,
    2: 50 * 1024 * 1024,
    3: 100 * 1024 * 1024,
}

Problem = tuple[tuple[str | int, ...], str]


def _too_long(path: tuple[str | int, ...], value: Any, limit: int) -> list[Problem]:
    if isinstance(value, str) and len(value) > limit:
        return [(path, f"Must be {limit} or fewer in length.")]
    return []


def _embed_text_length(embed: dict[str, Any]) -> int:
    total = len(embed.get("title") or "") + len(embed.get("description") or "")
    total += len((embed.get("footer") or {}).get("text") or "")
    total += len((embed.get("author") or {}).get("name") or "")
    for field in embed.get("fields") or []:
        total += len(field.get("name") or "") + len(field.get("value") or "")
    return total


def check_embeds(embeds: list[dict[str, Any]]) -> list[Problem]:
    problems: list[Problem] = []
    if len(embeds) > EMBEDS_MAX:
        problems.append((("embeds",), f"Must be {EMBEDS_MAX} or fewer in length."))
    for i, embed in enumerate(embeds):
        at: tuple[str | int, ...] = ("embeds", i)
        problems += _too_long((*at, "title"), embed.get("title"), EMBED_TITLE_MAX)
        problems += _too_long((*at, "description"), embed.get("description"), EMBED_DESCRIPTION_MAX)
        footer = embed.get("footer") or {}
        problems += _too_long((*at, "footer", "text"), footer.get("text"), EMBED_FOOTER_MAX)
        author = embed.get("author") or {}
        problems += _too_long((*at, "author", "name"), author.get("name"), EMBED_AUTHOR_NAME_MAX)
        fields = embed.get("fields") or []
        if len(fields) > EMBED_FIELDS_MAX:
            problems.append(((*at, "fields"), f"Must be {EMBED_FIELDS_MAX} or fewer in length."))
        for j, field in enumerate(fields):
            problems += _too_long(
                (*at, "fields", j, "name"), field.get("name"), EMBED_FIELD_NAME_MAX
            )
            problems += _too_long(
                (*at, "fields", j, "value"), field.get("value"), EMBED_FIELD_VALUE_MAX
            )
    if sum(_embed_text_length(e) for e in embeds) > EMBEDS_TOTAL_MAX:
        problems.append((("embeds",), f"Embed size exceeds maximum size of {EMBEDS_TOTAL_MAX}"))
    return problems


def check_component_text(path: tuple[str | int, ...], component: dict[str, Any]) -> list[Problem]:
    problems = _too_long((*path, "custom_id"), component.get("custom_id"), CUSTOM_ID_MAX)
    problems += _too_long((*path, "label"), component.get("label"), BUTTON_LABEL_MAX)
    problems += _too_long((*path, "url"), component.get("url"), LINK_URL_MAX)
    problems += _too_long(
        (*path, "placeholder"), component.get("placeholder"), SELECT_PLACEHOLDER_MAX
    )
    options = component.get("options") or []
    if len(options) > SELECT_OPTIONS_MAX:
        problems.append(((*path, "options"), f"Must be {SELECT_OPTIONS_MAX} or fewer in length."))
    for k, option in enumerate(options):
        for key in ("label", "value", "description"):
            problems += _too_long(
                (*path, "options", k, key), option.get(key), SELECT_OPTION_TEXT_MAX
            )
    return problems


def check_components(rows: list[dict[str, Any]]) -> list[Problem]:
    problems: list[Problem] = []
    if len(rows) > ACTION_ROWS_MAX:
        problems.append((("components",), f"Must be {ACTION_ROWS_MAX} or fewer in length."))
    for i, row in enumerate(rows):
        children = row.get("components") or []
        if row.get("type") == 1 and len(children) > ROW_BUTTONS_MAX:
            problems.append(
                (("components", i, "components"), f"Must be {ROW_BUTTONS_MAX} or fewer in length.")
            )
        for j, child in enumerate(children):
            problems += check_component_text(("components", i, "components", j), child)
    return problems


def check_message(body: dict[str, Any], *, layout: bool = False) -> list[Problem]:
    """Limits on a message create/edit body (channel message, callback data or webhook).

    ``layout``: the message has the IS_COMPONENTS_V2 flag, whose components follow the
    rules of components_v2 instead of the five action rows checked here.
    """
    problems = _too_long(("content",), body.get("content"), CONTENT_MAX)
    problems += allowed_mentions_problems(body.get("allowed_mentions"))
    problems += check_embeds(body.get("embeds") or [])
    if not layout:
        problems += check_components(body.get("components") or [])
    return problems


def check_file_count(count: int) -> list[Problem]:
    """At most ten files on a message, counting the ones an edit keeps."""
    if count > FILES_MAX:
        return [(("attachments",), f"Must be {FILES_MAX} or fewer in length.")]
    return []


# --- application commands (https://discord.com/developers/docs/interactions/application-commands)

COMMANDS_MAX = {1: 100, 2: 5, 3: 5}  # chat input (slash), user, message commands per scope
COMMAND_NAME_MAX = 32
COMMAND_DESCRIPTION_MAX = 100
COMMAND_OPTIONS_MAX = 25  # options, subcommands or subcommand groups at each level
OPTION_CHOICES_MAX = 25
# Slash command and option names: lowercase letters (any script), digits, - and _.
_CHAT_INPUT_NAME = re.compile(r"^[-_\w]{1,32}$")


def _check_option_level(
    path: tuple[str | int, ...], options: list[dict[str, Any]]
) -> list[Problem]:
    problems: list[Problem] = []
    if len(options) > COMMAND_OPTIONS_MAX:
        problems.append(((*path, "options"), f"Must be {COMMAND_OPTIONS_MAX} or fewer in length."))
    for i, option in enumerate(options):
        at = (*path, "options", i)
        problems += _check_chat_input_naming(at, option)
        choices = option.get("choices") or []
        if len(choices) > OPTION_CHOICES_MAX:
            problems.append(((*at, "choices"), f"Must be {OPTION_CHOICES_MAX} or fewer in length."))
        problems += _check_option_level(at, option.get("options") or [])
    return problems


def _check_chat_input_naming(path: tuple[str | int, ...], entry: dict[str, Any]) -> list[Problem]:
    name, description = str(entry.get("name") or ""), str(entry.get("description") or "")
    problems: list[Problem] = []
    if not _CHAT_INPUT_NAME.match(name) or name != name.lower():
        problems.append(((*path, "name"), "Command name is invalid"))
    if not 1 <= len(description) <= COMMAND_DESCRIPTION_MAX:
        problems.append(
            ((*path, "description"), f"Must be between 1 and {COMMAND_DESCRIPTION_MAX} in length.")
        )
    return problems


def check_commands(commands: list[dict[str, Any]]) -> list[Problem]:
    """Limits on a bulk overwrite of one scope's commands."""
    problems: list[Problem] = []
    for kind, most in COMMANDS_MAX.items():
        if sum(1 for c in commands if c.get("type", 1) == kind) > most:
            problems.append(
                ((), f"Maximum number of application commands of type {kind} ({most}) reached")
            )
    for i, command in enumerate(commands):
        if command.get("type", 1) == 1:
            problems += _check_chat_input_naming((i,), command)
        else:
            problems += _too_long((i, "name"), command.get("name"), COMMAND_NAME_MAX)
        problems += _check_option_level((i,), command.get("options") or [])
    return problems


def form_error(problems: list[Problem]) -> dict[str, Any]:
    """Discord's 400 body for an invalid form, errors nested by path."""
    errors: dict[str, Any] = {}
    for path, message in problems:
        node = errors
        for key in path:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": "BASE_TYPE_MAX_LENGTH", "message": message})
    return {"code": 50035, "message": "Invalid Form Body", "errors": errors}


def error_body(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


# --- who a message pings (https://discord.com/developers/docs/resources/message#allowed-mentions-object)

_USER_MENTION = re.compile(r"<@!?([0-9]+)>")
_ROLE_MENTION = re.compile(r"<@&([0-9]+)>")
_EVERYONE_MENTION = re.compile(r"@(everyone|here)")


@dataclass(frozen=True)
class Pings:
    """Who a message body notifies, as Discord works it out from its content."""

    users: frozenset[int] = frozenset()
    roles: frozenset[int] = frozenset()
    everyone: bool = False

    @property
    def anyone(self) -> bool:
        return bool(self.users or self.roles or self.everyone)


def allowed_mentions_problems(allowed: Any) -> list[Problem]:
    """Discord refuses ``parse`` naming a type whose ids are also listed."""
    if not isinstance(allowed, dict):
        return []
    parse = set(allowed.get("parse") or [])
    problems: list[Problem] = []
    for kind in ("users", "roles"):
        if kind in parse and allowed.get(kind):
            problems.append(
                (
                    ("allowed_mentions", "parse"),
                    f'parse:["{kind}"] and {kind}: [ids] are mutually exclusive.',
                )
            )
    return problems


def pings(content: str, allowed: dict[str, Any] | None) -> Pings:
    """The mentions in ``content`` that notify, given the body's ``allowed_mentions``.

    Without ``allowed_mentions`` Discord parses every mention in the content; with it, only
    the types named in ``parse`` and the ids listed under ``users`` and ``roles``. Mentions in
    embeds never notify.
    """
    users = {int(found) for found in _USER_MENTION.findall(content)}
    roles = {int(found) for found in _ROLE_MENTION.findall(content)}
    everyone = bool(_EVERYONE_MENTION.search(content))
    if allowed is None:
        return Pings(frozenset(users), frozenset(roles), everyone)
    parse = set(allowed.get("parse") or [])
    listed_users = {int(u) for u in allowed.get("users") or []}
    listed_roles = {int(r) for r in allowed.get("roles") or []}
    return Pings(
        frozenset(u for u in users if "users" in parse or u in listed_users),
        frozenset(r for r in roles if "roles" in parse or r in listed_roles),
        everyone and "everyone" in parse,
    )
