"""The stems of stored results as local files: from the cache, else fetched once.

What the delivery and the mixes use (not wired in yet): ``holding(result, stem)`` gives a file
that stays on disk for the block, fetched through the guarded StemFetcher at most once however
many ask at the same time (the cache's single-flight).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path

from stembot.cache_keys import CacheItem, ResultKey
from stembot.models import Stem
from stembot.stem_cache import CachedFile, StemCache
from stembot.stem_fetcher import StemFetcher


class StemFiles:
    """Stem files of stored results, cached in ``cache`` and fetched by ``fetcher``."""

    def __init__(self, cache: StemCache, fetcher: StemFetcher) -> None:
        self._cache = cache
        self._fetcher = fetcher

    def holding(self, result: ResultKey, stem: Stem) -> AbstractAsyncContextManager[CachedFile]:
        """``async with files.holding(result, stem) as cached:`` the stem's file on disk;
        a StemFetchError when it is not cached and cannot be fetched."""

        async def fetch(path: Path) -> str:
            return (await self._fetcher.fetch(stem, path)).audio_format

        return self._cache.holding(result, CacheItem.stem(stem.name), fetch)
