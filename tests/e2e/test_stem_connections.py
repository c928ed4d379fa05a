"""`stembot run` gives stem downloads their own connections: a burst of big stem files being
fetched leaves members' links checked as fast as ever."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stembot.models import Mode, Separation, Stem
from tests.e2e.stack import MEDIA_ENV, eventually, is_result, running_stack

# Its server holds /slow/* links after a few bytes until released and serves /fast/* at once.
from tests.e2e.test_fair_probes import trickling_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

MiB = 1024 * 1024
# More stems being fetched at once than a guarded connector has connections (20).
HELD_STEMS = 24


async def test_stem_downloads_leave_link_checks_their_connections(tmp_path: Path) -> None:
    """Every connection stem downloads may have is held, yet a member's link is checked and
    split at once (on one shared connector the check would wait for a slot and time out)."""
    env = {
        **MEDIA_ENV,
        "STEMBOT_CACHE_DIR": str(tmp_path / "cache"),
        "STEMBOT_URL_PROBE_TIMEOUT_S": "5",
    }
    async with (
        running_stack(tmp_path / "stembot.db", env) as stack,
        trickling_server() as server,
    ):
        assert stack.bot.media is not None
        media = stack.bot.media
        stems = tuple(Stem(f"part{n}", f"{server.base}/slow/{n}.wav") for n in range(HELD_STEMS))
        separation = Separation(Mode.ALL, stems, datetime.now(UTC))

        async def prepare() -> None:
            async with media.prepare(
                stack.guild.id, "https://songs.example/a.mp3", separation, MiB
            ):
                pass

        preparing = asyncio.create_task(prepare())
        try:
            await eventually(lambda: server.open_slow >= 20)
            link = await stack.stems("vocals", options={"url": f"{server.base}/fast/song.wav"})
            assert is_result(await stack.answer(link, timeout_s=15))
            assert server.open_slow >= 20 and not server.release.is_set()
        finally:
            server.release.set()
            await preparing
