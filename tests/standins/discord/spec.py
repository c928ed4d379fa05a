"""Validate request bodies against Discord's OpenAPI 3.1 description (discord/discord-api-spec).

The description lives beside the project (``../shared/discord-openapi.json``) and is never copied
into it. One validator is built per (method, route template) on first use and cached.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

_log = logging.getLogger(__name__)

# tests/standins/discord/spec.py -> parents[3] is the repo root; the file sits in ../shared
DEFAULT_SPEC_PATH = Path(__file__).resolve().parents[3].parent / "shared" / "discord-openapi.json"
_SPEC_URI = "urn:discord-openapi"


def _pointer_part(text: str) -> str:
    return text.replace("~", "~0").replace("/", "~1")


class OpenAPISpec:
    """Request-body validators for Discord's REST routes, built lazily."""

    def __init__(self, document: dict[str, Any]) -> None:
        _accept_integer_snowflakes(document)
        self._paths: dict[str, Any] = document["paths"]
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(_SPEC_URI, resource)
        self._validators: dict[tuple[str, str], Draft202012Validator | None] = {}

    @classmethod
    def load(cls, path: Path = DEFAULT_SPEC_PATH) -> OpenAPISpec | None:
        """The spec at ``path``, or None (with a logged notice) when the file is absent."""
        if not path.is_file():
            _log.warning("Discord OpenAPI description not found at %s: spec check skipped", path)
            return None
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def has_route(self, method: str, template: str) -> bool:
        return method.lower() in self._paths.get(template, {})

    def _validator(self, method: str, template: str) -> Draft202012Validator | None:
        key = (method.lower(), template)
        if key not in self._validators:
            self._validators[key] = self._build(*key)
        return self._validators[key]

    def _build(self, method: str, template: str) -> Draft202012Validator | None:
        operation = self._paths.get(template, {}).get(method)
        if operation is None:
            return None
        content = operation.get("requestBody", {}).get("content", {})
        if "application/json" not in content:
            return None
        body_schema = "requestBody/content/application~1json/schema"
        pointer = f"paths/{_pointer_part(template)}/{method}/{body_schema}"
        schema = {"$ref": f"{_SPEC_URI}#/{pointer}"}
        return Draft202012Validator(schema, registry=self._registry)

    def check_schema(self, name: str, payload: Any) -> list[str]:
        """Problems with ``payload`` as the component schema ``name`` (e.g. GuildRoleResponse):
        how the emulator checks what it sends the bot, as the bot's bodies are checked."""
        schema = {"$ref": f"{_SPEC_URI}#/components/schemas/{_pointer_part(name)}"}
        validator = Draft202012Validator(schema, registry=self._registry)
        return [_describe(error) for error in validator.iter_errors(payload)]

    def check(self, method: str, template: str, body: Any) -> list[str]:
        """Problems with ``body`` as the JSON request body of ``method template``.

        A route the description does not know is itself a problem: the bot called something
        Discord does not document.
        """
        if not self.has_route(method, template):
            return [f"{method.upper()} {template} is not in Discord's OpenAPI description"]
        validator = self._validator(method, template)
        if validator is None:
            return []
        return [_describe(error) for error in validator.iter_errors(body)]


def _accept_integer_snowflakes(document: dict[str, Any]) -> None:
    """Let a snowflake be an integer too, as the live API does.

    The description types request snowflakes as strings, but Discord reads integers as well,
    and discord.py sends some (the ``id`` of each new attachment is its upload index).
    """
    schemas = document.get("components", {}).get("schemas", {})
    snowflake = schemas.get("SnowflakeType")
    if snowflake is not None:
        schemas["SnowflakeType"] = {"anyOf": [snowflake, {"type": "integer", "minimum": 0}]}


def _describe(error: Any) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(body)"
    best = error
    # anyOf/oneOf errors say little; the deepest sub-error usually names the real problem
    while best.context:
        best = max(best.context, key=lambda e: len(e.absolute_path))
        where = "/".join(str(p) for p in best.absolute_path) or where
    message = best.message
    if len(message) > 200:  # the message quotes the whole offending value
        message = f"breaks {best.validator!s} = {best.validator_value!r}"[:200]
    return f"{where}: {message}"
