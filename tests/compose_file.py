"""A reader for the YAML docker-compose.yml is written in, for its tests: no YAML package is a
dependency, and Docker Compose is not on the test machines.

It takes block mappings and block sequences of scalars, plain and double-quoted scalars, flow
sequences written as JSON, comments, anchors (``&name``), aliases (``*name``) and merge keys
(``<<: *name``, the mapping's own keys winning), and refuses anything else (tabs, a line it
cannot place), so a file that is not this YAML fails the tests rather than reads wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_KEY = re.compile(r"^([A-Za-z0-9_.<-]+):(?:\s+(.*))?$")


class ComposeSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class _Line:
    number: int
    indent: int
    text: str


def load(text: str) -> dict[str, Any]:
    lines = _lines(text)
    reader = _Reader(lines)
    document, end = reader.block(0, 0)
    if end != len(lines) or not isinstance(document, dict):
        raise ComposeSyntaxError(f"line {lines[end].number}: not part of the document")
    return document


def _lines(text: str) -> list[_Line]:
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw:
            raise ComposeSyntaxError(f"line {number}: a tab")
        content = _without_comment(raw).rstrip()
        if content.strip():
            lines.append(_Line(number, len(content) - len(content.lstrip(" ")), content.strip()))
    return lines


def _without_comment(raw: str) -> str:
    """The line up to a ``#`` that starts a comment (at the start, or after a space, outside
    double quotes)."""
    quoted = False
    for index, char in enumerate(raw):
        if char == '"':
            quoted = not quoted
        elif char == "#" and not quoted and (index == 0 or raw[index - 1] == " "):
            return raw[:index]
    return raw


class _Reader:
    def __init__(self, lines: list[_Line]) -> None:
        self._lines = lines
        self._anchors: dict[str, Any] = {}

    def block(self, start: int, indent: int) -> tuple[Any, int]:
        if self._lines[start].text.startswith("- "):
            return self._sequence(start, indent)
        return self._mapping(start, indent)

    def _sequence(self, index: int, indent: int) -> tuple[list[Any], int]:
        items = []
        while index < len(self._lines) and self._lines[index].indent == indent:
            line = self._lines[index]
            if not line.text.startswith("- "):
                raise ComposeSyntaxError(f"line {line.number}: expected '- item'")
            items.append(self._scalar(line.text[2:].strip(), line))
            index += 1
        return items, index

    def _mapping(self, index: int, indent: int) -> tuple[dict[str, Any], int]:
        own: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        while index < len(self._lines) and self._lines[index].indent == indent:
            line = self._lines[index]
            match = _KEY.match(line.text)
            if match is None:
                raise ComposeSyntaxError(f"line {line.number}: expected 'key: value'")
            key, rest = match.group(1), (match.group(2) or "").strip()
            anchor = None
            if rest.startswith("&"):
                anchor, _, rest = rest[1:].partition(" ")
                rest = rest.strip()
            index += 1
            if rest:
                value = self._scalar(rest, line)
            elif index < len(self._lines) and self._lines[index].indent > indent:
                value, index = self.block(index, self._lines[index].indent)
            else:
                value = None
            if anchor:
                self._anchors[anchor] = value
            if key == "<<":
                if not isinstance(value, dict):
                    raise ComposeSyntaxError(f"line {line.number}: '<<' merges a mapping")
                merged.update(value)
            elif key in own:
                raise ComposeSyntaxError(f"line {line.number}: {key} given twice")
            else:
                own[key] = value
        if index < len(self._lines) and self._lines[index].indent > indent:
            raise ComposeSyntaxError(f"line {self._lines[index].number}: unexpected indentation")
        return {**merged, **own}, index

    def _scalar(self, text: str, line: _Line) -> Any:
        if text.startswith("*"):
            if text[1:] not in self._anchors:
                raise ComposeSyntaxError(f"line {line.number}: no anchor {text[1:]}")
            return self._anchors[text[1:]]
        if text.startswith(("[", '"')):
            try:
                return json.loads(text)
            except ValueError:
                raise ComposeSyntaxError(f"line {line.number}: {text} is not JSON") from None
        if text[0] in "{'&!|>%@`":
            raise ComposeSyntaxError(f"line {line.number}: YAML this reader does not take")
        return text
