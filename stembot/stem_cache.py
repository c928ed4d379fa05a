"""The bounded on-disk cache of fetched stems and mixes (STEMBOT_CACHE_DIR, STEMBOT_CACHE_MAX_MB).

File system only, no table: the files are the index. A file's name comes from its key
(stembot/cache_keys.py), so at start-up a scan of the folder rebuilds the index, and its
modification time (touched on each use) orders it least recently used first. A database
index would have to agree with the files after every crash; here there is nothing to agree.

- Files appear whole or not at all: each is made in ``.partial/`` (emptied at start-up),
  synced, then renamed into place.
- One making per file (single-flight): however many ask at once, the first starts it and all
  await the same task; a failure reaches them all and is not cached.
- Bounded by total size: after each addition the least recently used files go until the total
  fits. A file held by a caller (``holding``) is never removed under it: the total may pass the
  cap by the files in use, and comes back under as they are let go. Downloads under way sit in
  ``.partial/`` and are counted once they land.
- Pruned with the ledger's retention: a result's folder names when it was issued.

The index lives on the event loop; every file operation runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from stembot.cache_keys import (
    EXTENSION,
    FILE_NAME,
    FOLDER_NAME,
    CacheItem,
    ResultKey,
    issued_prefix,
)

log = logging.getLogger(__name__)

PARTIAL_FOLDER: Final = ".partial"

# (result folder, item file stem): a file whatever its extension.
Ident = tuple[str, str]
# Writes the file at the path it is given and returns its extension (its format, e.g. "wav").
Make = Callable[[Path], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class CachedFile:
    """A file in the cache, valid while the ``holding`` block that gave it lasts."""

    path: Path
    size: int
    extension: str


@dataclass(frozen=True, slots=True)
class _Entry:
    extension: str
    size: int


class StemCache:
    """Stems and mixes of stored results on disk, at most ``max_bytes`` of them not in use.

    Built with ``await StemCache.open(directory, max_bytes)``; ``await close()`` at the end.
    """

    def __init__(self, directory: Path, max_bytes: int, found: list[tuple[Ident, _Entry]]) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes >= 1 required")
        self._directory = directory
        self._partial = directory / PARTIAL_FOLDER
        self._max_bytes = max_bytes
        self._index: OrderedDict[Ident, _Entry] = OrderedDict(found)
        self._total = sum(entry.size for _, entry in found)
        self._pins: Counter[Ident] = Counter()
        self._flights: dict[Ident, asyncio.Task[CachedFile]] = {}
        self._removals: dict[Ident, asyncio.Task[None]] = {}

    @classmethod
    async def open(cls, directory: Path, max_bytes: int) -> StemCache:
        """The cache in ``directory`` (created if missing), its index read from the files."""
        found = await asyncio.to_thread(_scan, directory)
        cache = cls(directory, max_bytes, found)
        cache._evict()  # the cap may have been lowered since the files were made
        log.info(
            "stem cache at %s: %d files, %.1f of %.1f MB",
            directory,
            len(found),
            cache.total_bytes / 1024 / 1024,
            max_bytes / 1024 / 1024,
        )
        return cache

    @property
    def total_bytes(self) -> int:
        return self._total

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    def has(self, result: ResultKey, item: CacheItem) -> bool:
        return (result.folder, item.file_stem) in self._index

    @contextlib.asynccontextmanager
    async def holding(
        self, result: ResultKey, item: CacheItem, make: Make
    ) -> AsyncIterator[CachedFile]:
        """The file of ``item`` of ``result``: from the cache, else made once by ``make``
        (whoever else asks meanwhile awaits the same making). It stays on disk until the
        block ends; a failure of ``make`` is raised here and nothing is kept."""
        ident = (result.folder, item.file_stem)
        self._pins[ident] += 1
        try:
            yield await self._get(ident, make)
        finally:
            self._pins[ident] -= 1
            if self._pins[ident] == 0:
                del self._pins[ident]
                self._evict()

    async def prune_issued_before(self, before: datetime) -> int:
        """Remove the files of results issued before ``before`` (retention's cutoff), except
        those in use (the next pruning or eviction takes them). Returns how many went."""
        cutoff = issued_prefix(before)
        old = [
            ident
            for ident in self._index
            if ident[0][: len(cutoff)] < cutoff and self._pins[ident] == 0
        ]
        for ident in old:
            self._remove(ident)
        await self._removed()
        return len(old)

    async def close(self) -> None:
        """Wait for the removals under way (makings belong to their callers)."""
        await self._removed()

    # --- getting and making ------------------------------------------------------------------

    async def _get(self, ident: Ident, make: Make) -> CachedFile:
        entry = self._index.get(ident)
        if entry is not None:
            path = self._path(ident, entry.extension)
            self._index.move_to_end(ident)
            try:
                # The use is remembered across restarts as the file's modification time.
                await asyncio.to_thread(os.utime, path)
                return CachedFile(path, entry.size, entry.extension)
            except FileNotFoundError:
                log.warning("stem cache: %s vanished from the disk; making it again", path)
                if ident in self._index:
                    self._forget(ident)
        flight = self._flights.get(ident)
        if flight is None:
            flight = asyncio.create_task(self._make(ident, make), name=f"cache {ident[1]}")
            flight.add_done_callback(_retrieve)
            self._flights[ident] = flight
        # Shielded: one caller giving up does not cancel the making for the others.
        return await asyncio.shield(flight)

    async def _make(self, ident: Ident, make: Make) -> CachedFile:
        try:
            removal = self._removals.get(ident)
            if removal is not None:
                # An eviction of the same name must not delete the new file; a failed one
                # leaves an old copy that the rename below replaces.
                with contextlib.suppress(OSError):
                    await removal
            partial = self._partial / f"{uuid.uuid4().hex}.part"
            try:
                extension = await make(partial)
                if not EXTENSION.fullmatch(extension):
                    raise ValueError(f"not a file extension: {extension!r}")
                path = self._path(ident, extension)
                size = await asyncio.to_thread(_commit, partial, path)
            except BaseException:
                await asyncio.to_thread(_unlink, partial)
                raise
        finally:
            del self._flights[ident]
        self._index[ident] = _Entry(extension, size)
        self._total += size
        self._evict()
        return CachedFile(path, size, extension)

    # --- removing ----------------------------------------------------------------------------

    def _evict(self) -> None:
        """Remove least recently used files not in use until the total fits the cap."""
        while self._total > self._max_bytes:
            victim = next((ident for ident in self._index if self._pins[ident] == 0), None)
            if victim is None:
                return
            self._remove(victim)

    def _remove(self, ident: Ident) -> None:
        """Take ``ident`` out of the index now and delete its file in a thread."""
        entry = self._forget(ident)
        path = self._path(ident, entry.extension)
        removal = asyncio.get_running_loop().create_task(asyncio.to_thread(_delete, path))
        self._removals[ident] = removal
        removal.add_done_callback(lambda done: self._removal_done(ident, done))
        removal.add_done_callback(_retrieve)

    def _removal_done(self, ident: Ident, removal: asyncio.Task[None]) -> None:
        # Only its own entry: a later removal of the same name may have replaced it.
        if self._removals.get(ident) is removal:
            del self._removals[ident]

    def _forget(self, ident: Ident) -> _Entry:
        entry = self._index.pop(ident)
        self._total -= entry.size
        return entry

    async def _removed(self) -> None:
        # Waits only for removals still running: a finished one is never waited on again
        # (seen once in CI on Python 3.12: a finished entry left behind made this spin).
        while pending := [r for r in self._removals.values() if not r.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    def _path(self, ident: Ident, extension: str) -> Path:
        folder, item = ident
        return self._directory / folder / f"{item}.{extension}"


def _retrieve(task: asyncio.Task[object]) -> None:
    """Collect a background task's outcome (its awaiters, if any, got it too); a failed file
    deletion is only logged."""
    error = None if task.cancelled() else task.exception()
    if isinstance(error, OSError):
        log.warning("stem cache: %s", error)


# --- file operations, run in threads ---------------------------------------------------------


def _commit(partial: Path, path: Path) -> int:
    """Sync ``partial`` and rename it to ``path``; its size. Synced first so that a crash
    never leaves a named file with missing content for the next start to trust."""
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    for _attempt in range(3):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(partial, path)
            return size
        except FileNotFoundError:
            continue  # the folder was removed as it emptied, between mkdir and rename
    raise FileNotFoundError(f"could not place {path.name} in {path.parent}")


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _delete(path: Path) -> None:
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # only when empty: the result's other files keep it


def _scan(directory: Path) -> list[tuple[Ident, _Entry]]:
    """Every cached file, least recently used first; parts of interrupted makings deleted."""
    partial = directory / PARTIAL_FOLDER
    partial.mkdir(parents=True, exist_ok=True)
    for leftover in partial.iterdir():
        leftover.unlink(missing_ok=True)
    found: dict[Ident, tuple[float, _Entry, Path]] = {}
    for folder in directory.iterdir():
        if not (FOLDER_NAME.fullmatch(folder.name) and folder.is_dir()):
            continue  # not ours: never touched
        for file in folder.iterdir():
            match = FILE_NAME.fullmatch(file.name)
            if match is None or not file.is_file():
                continue
            stat = file.stat()
            ident = (folder.name, match["item"])
            entry = _Entry(match["ext"], stat.st_size)
            earlier = found.get(ident)
            if earlier is not None:
                # The same item in two formats (made, evicted, made again as another):
                # the newer stands.
                older = file if earlier[0] > stat.st_mtime else earlier[2]
                older.unlink(missing_ok=True)
                if older is earlier[2]:
                    found[ident] = (stat.st_mtime, entry, file)
                continue
            found[ident] = (stat.st_mtime, entry, file)
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
    ordered = sorted(found.items(), key=lambda item: item[1][0])
    return [(ident, entry) for ident, (_, entry, _) in ordered]
