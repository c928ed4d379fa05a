"""`stembot run` builds the media service: the audio pool, the stem cache in STEMBOT_CACHE_DIR
and the stem fetcher on the guarded connector; STEMBOT_ATTACH_STEMS=false leaves it out."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from stembot.models import Mode, Separation, Stem
from tests.e2e.stack import API_KEY, MEDIA_ENV, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

MiB = 1024 * 1024


async def test_the_bot_is_built_with_a_working_media_service(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    env = {**MEDIA_ENV, "STEMBOT_CACHE_DIR": str(cache_dir)}
    async with running_stack(tmp_path / "stembot.db", env) as stack:
        assert stack.bot.media is not None
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                stack.api.base_url + Mode.ALL.api_path,
                json={"audioUrl": "https://songs.example/a.mp3"},
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as answer,
        ):
            listed = await answer.json()
        separation = Separation(
            Mode.ALL, tuple(Stem(s["audioName"], s["audioUrl"]) for s in listed), datetime.now(UTC)
        )
        async with stack.bot.media.prepare(
            stack.guild.id, "https://songs.example/a.mp3", separation, 10 * MiB
        ) as prepared:
            assert len(prepared.files) == 7
            assert all(upload.path.is_relative_to(cache_dir) for upload in prepared.files)
        assert stack.api.downloads == 6


async def test_links_only_when_attaching_is_turned_off(tmp_path: Path) -> None:
    """STEMBOT_ATTACH_STEMS=false: no cache folder, no audio workers, links only."""
    cache_dir = tmp_path / "cache"
    env = {"STEMBOT_ATTACH_STEMS": "false", "STEMBOT_CACHE_DIR": str(cache_dir)}
    async with running_stack(tmp_path / "stembot.db", env) as stack:
        assert stack.bot.media is None
    assert not cache_dir.exists()
