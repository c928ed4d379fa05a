"""The bot process names the audio jobs but runs none: the audio libraries that only the
workers use are not imported by it (numpy is: sqlite-utils imports it whenever installed)."""

from __future__ import annotations

import subprocess
import sys


def test_the_bot_process_does_not_import_soundfile_or_pillow() -> None:
    probe = (
        "import sys, stembot.cli.run, stembot.bot.client, stembot.stem_media; "
        "print(' '.join(m for m in ('soundfile', 'PIL') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == []
