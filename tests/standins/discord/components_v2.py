"""Discord's rules for Components V2 messages (message flag IS_COMPONENTS_V2, 1 << 15).

https://discord.com/developers/docs/components/reference: with the flag, the message is its
components: no ``content``, ``embeds``, ``poll`` or stickers; at most 40 components counting
nested ones (a Section's accessory and the children of rows, sections and containers); at most
4000 characters of text over all Text Displays; and every ``attachment://<filename>`` that a
File, Media Gallery or Thumbnail shows names a file of the message. Without the flag, only
action rows may sit at the top level. The OpenAPI description checks the shape of each
component; these are the rules it cannot express.

What "a file of the message" means here: on create, a file uploaded in the same request; on
edit, a file the message keeps or gains by that edit (the ``attachments`` list decides which).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from .rules import Problem, check_component_text

IS_COMPONENTS_V2 = 1 << 15
COMPONENTS_MAX = 40
TEXT_MAX = 4000
ROW_CHILDREN_MAX = 5
ACTION_ROW, TEXT_DISPLAY, THUMBNAIL, MEDIA_GALLERY, FILE = 1, 10, 11, 12, 13
ATTACHMENT_SCHEME = "attachment://"
LEGACY_FIELDS = ("content", "embeds", "poll", "sticker_ids")

Path = tuple[str | int, ...]


def walk(
    components: list[dict[str, Any]], path: Path = ("components",)
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every component, nested ones included (a Section's accessory, a Label's component), with
    its path in the body."""
    for i, component in enumerate(components):
        at = (*path, i)
        yield at, component
        for single in ("accessory", "component"):
            child = component.get(single)
            if isinstance(child, dict):
                yield (*at, single), child
        yield from walk(list(component.get("components") or []), (*at, "components"))


def media_references(component: dict[str, Any]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The unfurled media items a component shows, with their paths inside the component."""
    kind = component.get("type")
    if kind == FILE and isinstance(component.get("file"), dict):
        yield ("file",), component["file"]
    elif kind == THUMBNAIL and isinstance(component.get("media"), dict):
        yield ("media",), component["media"]
    elif kind == MEDIA_GALLERY:
        for k, item in enumerate(component.get("items") or []):
            if isinstance(item, dict) and isinstance(item.get("media"), dict):
                yield ("items", k, "media"), item["media"]


def attachment_name(media: dict[str, Any]) -> str | None:
    url = media.get("url")
    if isinstance(url, str) and url.startswith(ATTACHMENT_SCHEME):
        return url[len(ATTACHMENT_SCHEME) :]
    return None


def check_legacy_fields(message: Mapping[str, Any]) -> list[Problem]:
    """What a V2 message may not carry (``message``: the body, or the message after an edit)."""
    return [
        ((name,), f"The '{name}' field cannot be used when using MessageFlags.IS_COMPONENTS_V2")
        for name in LEGACY_FIELDS
        if message.get(name)
    ]


def check_v2_components(components: list[dict[str, Any]], filenames: set[str]) -> list[Problem]:
    """The V2 rules for a message's components; ``filenames``: the message's files."""
    problems: list[Problem] = []
    nodes = list(walk(components))
    if len(nodes) > COMPONENTS_MAX:
        problems.append((("components",), f"Must be {COMPONENTS_MAX} or fewer in total."))
    text = sum(len(str(c.get("content") or "")) for _, c in nodes if c.get("type") == TEXT_DISPLAY)
    if text > TEXT_MAX:
        problems.append((("components",), f"Text Displays total more than {TEXT_MAX} characters."))
    for path, component in nodes:
        problems += check_component_text(path, component)
        children = component.get("components") or []
        if component.get("type") == ACTION_ROW and len(children) > ROW_CHILDREN_MAX:
            problems.append(((*path, "components"), f"Must be {ROW_CHILDREN_MAX} or fewer."))
        for where, media in media_references(component):
            name = attachment_name(media)
            if name is None and component.get("type") == FILE:
                problems.append(
                    ((*path, *where, "url"), "A File component shows an attachment:// only.")
                )
            elif name is not None and name not in filenames:
                problems.append(((*path, *where, "url"), f"Unknown attachment reference {name!r}"))
    return problems


def check_top_level_without_flag(components: list[dict[str, Any]]) -> list[Problem]:
    """Without IS_COMPONENTS_V2 only action rows may sit at the top level."""
    return [
        (("components", i, "type"), "Components V2 need the IS_COMPONENTS_V2 message flag.")
        for i, component in enumerate(components)
        if component.get("type") != ACTION_ROW
    ]


def numbered(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of ``components`` with an ``id`` on each one that had none, as Discord numbers
    them: 1, 2, ... in reading order, skipping the ids the body chose."""
    stored = copy.deepcopy(components)
    nodes = [component for _, component in walk(stored)]
    taken = {c["id"] for c in nodes if isinstance(c.get("id"), int)}
    free = (n for n in itertools.count(1) if n not in taken)
    for component in nodes:
        if not isinstance(component.get("id"), int):
            component["id"] = next(free)
    return stored


def resolve_media(
    components: list[dict[str, Any]], attachments: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The components as Discord answers them: numbered (``id``) where the body left that out,
    each ``attachment://`` turned into the attachment's media (CDN url, content type,
    attachment id), and a File component given its name and size."""
    by_name = {a["filename"]: a for a in attachments}
    stored = numbered(components)
    for _, component in walk(stored):
        for _, media in media_references(component):
            attachment = by_name.get(attachment_name(media) or "")
            if attachment is None:
                continue
            media.update(
                id=attachment["id"],
                url=attachment["url"],
                proxy_url=attachment["proxy_url"],
                content_type=attachment["content_type"],
                attachment_id=attachment["id"],
            )
            if component.get("type") == FILE:
                component.update(name=attachment["filename"], size=attachment["size"])
                component.setdefault("spoiler", False)
    return stored
