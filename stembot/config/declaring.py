"""How a setting is declared: once, on its field (environ-config's style), with its name,
default, kind, section of .env.example and one line of help."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from stembot.config.kinds import Kind
from stembot.models import Mode

# When a setting must be given: never (its default, or None, is fine), always, or when the
# command talks to Discord / Soundverse (load_settings' need_discord / need_soundverse).
Required = Literal["never", "always", "discord", "soundverse"]


@dataclass(frozen=True)
class Setting:
    """One setting as the operator meets it: in the environment, .env.example and errors."""

    name: str
    default: Any
    kind: Kind[Any]
    section: str
    help: str
    secret: bool = False
    required: Required = "never"


SETTING = "stembot.setting"  # field metadata: the field's Setting
GROUP = "stembot.group"  # field metadata: a dataclass of further settings
PER_MODE = "stembot.per_mode"  # field metadata: Mode -> Setting, one setting per mode


def setting(
    name: str,
    default: Any,
    kind: Kind[Any],
    section: str,
    help: str,
    *,
    secret: bool = False,
    required: Required = "never",
) -> Any:
    declared = Setting(name, default, kind, section, help, secret, required)
    return field(default=default, metadata={SETTING: declared})


def declared_in(within: type[Any]) -> Iterator[Setting]:
    """The settings declared on the dataclass ``within``, in the order of its fields."""
    for f in fields(within):
        if GROUP in f.metadata:
            yield from declared_in(f.metadata[GROUP])
        elif PER_MODE in f.metadata:
            yield from (f.metadata[PER_MODE](mode) for mode in Mode)
        else:
            yield f.metadata[SETTING]


def name_of(within: type[Any], field_name: str) -> str:
    [declared] = [f.metadata[SETTING] for f in fields(within) if f.name == field_name]
    name: str = declared.name
    return name
