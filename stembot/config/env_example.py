""".env.example, generated from the settings' declarations."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from typing import Any

from stembot.config.declaring import Setting

_ENV_EXAMPLE_HEAD = """\
# stembot settings. Copy to .env and fill in the two secrets.
# Every other setting is shown commented out, with its default: remove the "# " to change it.
# Left commented, a default never overrides one set elsewhere (the Docker image keeps its
# database on the /data volume). The process environment wins over this file.
"""
_RULE_WIDTH = 93
_TEXT_WIDTH = 98


def _shown(value: Any) -> str:
    """A default as the operator would write it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def render(declared: Iterable[Setting]) -> str:
    """.env.example showing the settings ``declared``, in their order."""
    lines = [_ENV_EXAMPLE_HEAD.rstrip("\n")]
    section = shown_help = None
    for setting in declared:
        if setting.section != section:
            section, shown_help = setting.section, None
            lines += ["", f"# --- {section} ".ljust(_RULE_WIDTH, "-")]
        # Settings that share their help (the costs, the caps) show it once, above them all.
        if setting.help != shown_help:
            shown_help = setting.help
            text = setting.help + (" Secret." if setting.secret else "")
            lines += textwrap.wrap(text, _TEXT_WIDTH, initial_indent="# ", subsequent_indent="# ")
        if setting.secret:
            lines.append(f"{setting.name}=")
        else:
            lines.append(f"# {setting.name}={_shown(setting.default)}")
    return "\n".join(lines) + "\n"
