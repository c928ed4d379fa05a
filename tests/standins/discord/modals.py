"""Modals (interaction callback type 9) and what a member's submit (MODAL_SUBMIT) carries.

https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-response-object-modal
and https://discord.com/developers/docs/components/reference#label. A modal answers a command
or a component, never a modal submit. It has a ``custom_id`` of 1-100 characters, a title of
up to 45, and 1 to 5 top-level components: Labels (a label of up to 45 characters, a
description of up to 100, and one component: a Text Input, a select, a File Upload, ...), Text
Displays, or (the old way) action rows of Text Inputs. A File Upload sits in a Label, takes
0 to 10 files (``min_values`` / ``max_values``, 1 and 1 by default; ``min_values`` at least 1
unless ``required`` is false), optionally only ``file_types`` (``audio``, ``image``, ``video``
or ``.ext``, matched on the file name). Custom ids are unique in the modal. Discord numbers
the components (``id``) the bot left unnumbered.

A member's client enforces the rest before the submit leaves it: a required input filled, a
text between ``min_length`` and ``max_length``, the number and kinds of files, each file within
the member's upload limit. The submit carries every input (a Label's ``component``, a row's
``components``, a Text Display as ``{type, id}``), a text as ``value``, the choices and the
uploaded files' attachment ids as ``values``, and the files themselves in
``resolved.attachments`` (ephemeral attachments with CDN URLs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .components_v2 import ACTION_ROW, TEXT_DISPLAY, numbered, walk
from .rules import Problem, check_component_text

TITLE_MAX = 45
COMPONENTS_MAX = 5
LABEL_MAX = 45
LABEL_DESCRIPTION_MAX = 100
TEXT_INPUT, STRING_SELECT, LABEL, FILE_UPLOAD = 4, 3, 18, 19
RADIO_GROUP, CHECKBOX_GROUP, CHECKBOX = 21, 22, 23
_SELECTS = {STRING_SELECT, 5, 6, 7, 8}  # string, user, role, mentionable, channel
LABEL_CHILDREN = {TEXT_INPUT, FILE_UPLOAD, RADIO_GROUP, CHECKBOX_GROUP, CHECKBOX, *_SELECTS}
TEXT_MAX = 4000
FILES_MAX = 10
FILE_GROUPS = {
    "image": {".png", ".gif", ".jpg", ".jpeg", ".jfif", ".webp", ".avif"},
    "video": {".mp4", ".mov", ".qt", ".webm"},
    "audio": {".mp3", ".m4a", ".wav", ".ogg", ".opus", ".flac"},
}

# What a test submits for an input: a text, the values chosen, or uploaded files (attachment
# objects from DiscordEmulator.upload_attachment).
Value = str | bool | Sequence[str] | Sequence[dict[str, Any]]


def _length(path: tuple[str | int, ...], text: Any, most: int, least: int = 0) -> list[Problem]:
    if isinstance(text, str) and not least <= len(text) <= most:
        return [(path, f"Must be between {least} and {most} in length.")]
    return []


def check_modal(data: dict[str, Any]) -> list[Problem]:
    """Discord's rules for the ``data`` of a MODAL callback."""
    problems = _length(("data", "title"), data.get("title"), TITLE_MAX, 1)
    problems += _length(("data", "custom_id"), data.get("custom_id"), 100, 1)
    components = list(data.get("components") or [])
    if not 1 <= len(components) <= COMPONENTS_MAX:
        problems.append(
            (("data", "components"), f"Must be between 1 and {COMPONENTS_MAX} in length.")
        )
    for i, component in enumerate(components):
        problems += _check_top_level(("data", "components", i), component)
    seen: set[str] = set()
    for path, component in walk(components, ("data", "components")):
        custom_id = component.get("custom_id")
        if custom_id in seen:
            problems.append(((*path, "custom_id"), "Component custom id cannot be duplicated"))
        if isinstance(custom_id, str):
            seen.add(custom_id)
    return problems


def _check_top_level(path: tuple[str | int, ...], component: dict[str, Any]) -> list[Problem]:
    kind = component.get("type")
    if kind == LABEL:
        problems = _length((*path, "label"), component.get("label"), LABEL_MAX, 1)
        problems += _length(
            (*path, "description"), component.get("description"), LABEL_DESCRIPTION_MAX
        )
        child = component.get("component") or {}
        if child.get("type") not in LABEL_CHILDREN:
            problems.append(((*path, "component", "type"), "Not a component a Label can hold."))
        return problems + _check_input((*path, "component"), child)
    if kind == ACTION_ROW:
        problems = []
        for j, child in enumerate(component.get("components") or []):
            at = (*path, "components", j)
            if child.get("type") != TEXT_INPUT:
                problems.append(((*at, "type"), "A modal's action row holds Text Inputs only."))
            problems += _check_input(at, child)
        return problems
    if kind == TEXT_DISPLAY:
        return []
    return [((*path, "type"), f"Component type {kind} cannot be used in a modal.")]


def _check_input(path: tuple[str | int, ...], component: dict[str, Any]) -> list[Problem]:
    problems = check_component_text(path, component)
    kind = component.get("type")
    if kind == TEXT_INPUT:
        least = int(component.get("min_length") or 0)
        most = int(component.get("max_length") or TEXT_MAX)
        if least > most:
            problems.append(((*path, "min_length"), "Must not be more than max_length."))
        problems += _length((*path, "value"), component.get("value"), most)
    elif kind == FILE_UPLOAD:
        least, most = _file_counts(component)
        if not 0 <= least <= most <= FILES_MAX:
            problems.append(
                ((*path, "min_values"), f"Need 0 <= min_values <= max_values <= {FILES_MAX}.")
            )
        if component.get("required", True) and component.get("min_values") == 0:
            problems.append(((*path, "min_values"), "Must be at least 1 for a required upload."))
        problems += _check_file_types(path, component.get("file_types"))
    return problems


def _file_counts(component: dict[str, Any]) -> tuple[int, int]:
    least = component.get("min_values")
    most = component.get("max_values")
    return (1 if least is None else int(least)), (1 if most is None else int(most))


def _check_file_types(path: tuple[str | int, ...], file_types: Any) -> list[Problem]:
    if file_types is None:
        return []
    if not isinstance(file_types, list) or len(file_types) > FILES_MAX:
        return [((*path, "file_types"), f"Must be a list of up to {FILES_MAX} file types.")]
    return [
        ((*path, "file_types", k), "Must be image, video, audio or a dot-prefixed extension.")
        for k, kind in enumerate(file_types)
        if not (kind in FILE_GROUPS or (isinstance(kind, str) and kind.startswith(".")))
    ]


def stored(data: dict[str, Any]) -> dict[str, Any]:
    """The modal as Discord keeps it: every component numbered."""
    return {**data, "components": numbered(list(data.get("components") or []))}


def inputs(modal: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The modal's inputs (every component with a ``custom_id``), by custom id."""
    return {
        str(c["custom_id"]): c
        for _, c in walk(list(modal.get("components") or []))
        if "custom_id" in c
    }


class SubmitRefusedError(ValueError):
    """The member's client would not send this: a required input empty, a text too long or
    short, too many or too few files, a file of a kind the upload does not take or larger
    than the member may upload."""


def submission(
    modal: dict[str, Any],
    values: Mapping[str, Value],
    *,
    upload_limit: int,
    check: bool = True,
) -> dict[str, Any]:
    """The ``data`` of the MODAL_SUBMIT for ``modal`` filled with ``values`` (custom id ->
    text, choices, or uploaded attachment objects). ``check=False`` skips what the client
    enforces (what a modified client can send); an unknown custom id is always refused."""
    modal = stored(modal)
    fields = inputs(modal)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise LookupError(f"the modal has no input(s) {unknown}; it has {sorted(fields)}")
    if check:
        for custom_id, component in fields.items():
            _client_check(component, values.get(custom_id), upload_limit)
    attachments: dict[str, dict[str, Any]] = {}
    components = [_answer(c, values, attachments) for c in modal.get("components") or []]
    data: dict[str, Any] = {"custom_id": modal["custom_id"], "components": components}
    if attachments:
        data["resolved"] = {"attachments": attachments}
    return data


def _answer(
    component: dict[str, Any], values: Mapping[str, Value], attachments: dict[str, Any]
) -> dict[str, Any]:
    kind = component.get("type")
    if kind == LABEL:
        child = _answer(component["component"], values, attachments)
        return {"type": LABEL, "id": component["id"], "component": child}
    if kind == ACTION_ROW:
        children = [_answer(c, values, attachments) for c in component.get("components") or []]
        return {"type": ACTION_ROW, "id": component["id"], "components": children}
    if kind == TEXT_DISPLAY:
        return {"type": TEXT_DISPLAY, "id": component["id"]}
    answer: dict[str, Any] = {
        "type": kind,
        "id": component["id"],
        "custom_id": component["custom_id"],
    }
    given = values.get(component["custom_id"])
    if kind == TEXT_INPUT:
        answer["value"] = "" if given is None else str(given)
    elif kind in (RADIO_GROUP, CHECKBOX):
        answer["value"] = given if given is not None else (False if kind == CHECKBOX else None)
    elif kind == FILE_UPLOAD:
        files = [dict(f) for f in _files(given)]
        for attachment in files:
            attachments[str(attachment["id"])] = {**attachment, "ephemeral": True}
        answer["values"] = [str(f["id"]) for f in files]
    else:
        answer["values"] = [str(v) for v in _choices(given)]
    return answer


def _files(given: Value | None) -> list[dict[str, Any]]:
    if given is None:
        return []
    if isinstance(given, str | bool) or not all(isinstance(f, dict) for f in given):
        raise TypeError("a File Upload takes attachment objects from upload_attachment")
    return [f for f in given if isinstance(f, dict)]


def _choices(given: Value | None) -> list[str]:
    if given is None:
        return []
    if isinstance(given, str | bool):
        raise TypeError("a select takes a list of values")
    return [str(v) for v in given]


def _client_check(component: dict[str, Any], given: Value | None, upload_limit: int) -> None:
    kind = component.get("type")
    required = component.get("required", True) is not False
    name = component["custom_id"]
    if kind == TEXT_INPUT:
        text = "" if given is None else str(given)
        least = int(component.get("min_length") or 0)
        most = int(component.get("max_length") or TEXT_MAX)
        if (text or required) and not max(least, 1 if required else 0) <= len(text) <= most:
            raise SubmitRefusedError(f"{name}: {len(text)} characters, not {least}-{most}")
    elif kind == FILE_UPLOAD:
        _check_files(component, _files(given), required, upload_limit)
    elif kind == STRING_SELECT:
        chosen = _choices(given)
        offered = {str(o.get("value")) for o in component.get("options") or []}
        least = 0 if not required else int(component.get("min_values") or 1)
        most = int(component.get("max_values") or 1)
        if not least <= len(chosen) <= most or not set(chosen) <= offered:
            raise SubmitRefusedError(f"{name}: {chosen} is not {least}-{most} of {offered}")


def _check_files(
    component: dict[str, Any], files: list[dict[str, Any]], required: bool, upload_limit: int
) -> None:
    name = component["custom_id"]
    least, most = _file_counts(component)
    if not required:
        least = 0
    if not least <= len(files) <= most:
        raise SubmitRefusedError(f"{name}: {len(files)} file(s), not {least}-{most}")
    accepted = _accepted_extensions(component.get("file_types"))
    for attachment in files:
        filename = str(attachment["filename"])
        extension = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if accepted is not None and extension not in accepted:
            raise SubmitRefusedError(f"{name}: {filename} is not one of {sorted(accepted)}")
        if int(attachment["size"]) > upload_limit:
            raise SubmitRefusedError(f"{name}: {filename} is over the {upload_limit} B limit")


def _accepted_extensions(file_types: Any) -> set[str] | None:
    if not file_types:
        return None
    accepted: set[str] = set()
    for kind in file_types:
        accepted |= FILE_GROUPS.get(kind, {str(kind).lower()})
    return accepted
