"""What the mode table reaches, as JSON: the `/stems` commands, the cost settings, the quota
prices, `stembot separate`'s choices and the "Split stems" picker for 1 to 30 files.

tests/test_mode_table.py imports it for the modes of today, and runs it as a script against a
copy of stembot whose table has one more line: that line must be all a new mode takes.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any, cast

import stembot
from stembot.bot.admin import AdminCog
from stembot.bot.client import StemBot
from stembot.bot.embeds import quota_embed
from stembot.bot.split import OPTIONS_MAX, SplitCog, mode_buttons, picker_text, picker_view
from stembot.bot.stems import StemsCog
from stembot.bot.sync import local_commands
from stembot.cli import build_parser
from stembot.config import env_example, load_settings, setting_names
from stembot.models import Mode, QuotaStatus, WindowStatus
from stembot.request_inputs import AttachmentInput

MAX_FILES_TRIED = 30


async def command_tree() -> list[dict[str, Any]]:
    """The commands a sync would register (globally), as Discord gets them."""
    bot = StemBot(
        service=cast(Any, None),
        moderation=cast(Any, None),
        sync_record=cast(Any, None),
        dev_guild_id=None,
        shutdown_grace_s=1.0,
    )
    # Never logged in, so there is nothing to close (its close() would stop the service).
    await bot.add_cog(StemsCog(bot, cast(Any, None)))
    await bot.add_cog(AdminCog(cast(Any, None)))
    await bot.add_cog(SplitCog(bot, cast(Any, None)))
    return local_commands(bot.tree, None)


def _files(count: int) -> list[AttachmentInput]:
    return [
        AttachmentInput(1000 + i, f"https://cdn.test/{i}.wav", f"take{i}.wav", "audio/wav", 10)
        for i in range(count)
    ]


def _message(text: str, view: Any) -> dict[str, Any]:
    return {"content": text, "components": view.to_components()}


def picker_steps(file_count: int, picker_id: int = 1) -> dict[str, Any]:
    """What the picker shows for a message with ``file_count`` audio files (as SplitCog
    builds it), and, when its first step picks a file, the step shown for each file."""
    usable = _files(file_count)
    offered = usable[:OPTIONS_MAX]
    first = _message(picker_text(usable), picker_view(picker_id, offered))
    then = {
        str(file.id): _message(picker_text([file]), mode_buttons(picker_id, file))
        for file in offered
    }
    return {"first": first, "then": then, "offered": [str(f.id) for f in offered]}


def _quota_prices(costs: dict[Mode, int]) -> str:
    now = datetime.now(UTC)
    window = WindowStatus(used=0, limit=10, remaining=10, resets_at=now)
    status = QuotaStatus(window, window, None, None, 1)
    (prices,) = [f for f in quota_embed(status, costs).fields if f.name == "Cost per request"]
    return str(prices.value)


async def report(extra_env: dict[str, str]) -> dict[str, Any]:
    settings = load_settings(extra_env)
    await asyncio.sleep(0)  # discord.ui views want a running loop
    return {
        "package": stembot.__file__,
        "modes": [[m.value, m.label, m.api_path, m.default_cost] for m in Mode],
        "tree": await command_tree(),
        "setting_names": sorted(setting_names()),
        "costs": {mode.value: cost for mode, cost in settings.quota.costs.items()},
        "env_example": env_example(),
        "quota_prices": _quota_prices(dict(settings.quota.costs)),
        "separate_modes": [
            build_parser().parse_args(["separate", m.value, "https://x.test/a.mp3"]).mode
            for m in Mode
        ],
        "pickers": {n: picker_steps(n) for n in range(1, MAX_FILES_TRIED + 1)},
    }


if __name__ == "__main__":
    import os

    env = json.loads(os.environ.get("PROBE_ENV", "{}"))
    print(json.dumps(asyncio.run(report(env))))
