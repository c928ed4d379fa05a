"""Reading the mapping (normally the environment) into the declared settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from stembot.config.declaring import GROUP, PER_MODE, SETTING, Required, Setting
from stembot.models import Mode

T = TypeVar("T")


class Reader:
    """Reads each declared setting from the mapping, collecting every problem instead of
    stopping."""

    def __init__(self, env: Mapping[str, str], needed: Mapping[Required, bool]) -> None:
        self.env = env
        self.needed = needed
        self.problems: list[str] = []

    def read(self, setting: Setting) -> Any:
        value = self.env.get(setting.name)
        if value is None or value.strip() == "":
            if self.needed[setting.required]:
                self.problems.append(
                    f"{setting.name} is missing: set it to {setting.kind.expected}"
                )
            return setting.default
        try:
            return setting.kind.parse(value.strip())
        except ValueError:
            # Never echo the value: a misplaced secret must not reach the terminal.
            self.problems.append(f"{setting.name} must be {setting.kind.expected}")
            return setting.default

    def build(self, within: type[T]) -> T:
        """An instance of the dataclass ``within`` from its fields' declarations."""
        values: dict[str, Any] = {}
        for f in fields(within):  # type: ignore[arg-type]
            if GROUP in f.metadata:
                values[f.name] = self.build(f.metadata[GROUP])
            elif PER_MODE in f.metadata:
                values[f.name] = {mode: self.read(f.metadata[PER_MODE](mode)) for mode in Mode}
            else:
                values[f.name] = self.read(f.metadata[SETTING])
        return within(**values)
