"""What a result carries besides its links, made from its stems: the files to attach, the
picture, the silent stems, and the free mixes. Plain values in and out, no Discord.

Every file is an item of the stem cache (stembot/stem_cache.py), keyed by the stored result:
the stems as fetched, the picture and its analysis, the smaller copies and the mixes. So each is
made once however many ask at the same time (the cache's single-flight), later asks read it
from the disk, and after a restart the files are still there. The decoding, drawing, encoding
and mixing run in the audio pool (stembot/audio/pool.py) under the asking guild's turn.

The files handed out stay on disk while the caller sends them: ``prepare`` and ``mix`` are
async context managers that hold every file they give until their block ends.

    async with media.prepare(guild_id, source_key, separation, limit_bytes) as prepared:
        ...upload prepared.files with a card drawn from prepared.media...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from stembot.attachment_plan import (
    REQUEST_OVERHEAD_BYTES,
    AttachmentPlan,
    Choice,
    FetchedStem,
    Planned,
    plan_attachments,
)
from stembot.audio.pool import AudioPool
from stembot.audio.stem_analysis import StemAnalysis
from stembot.audio.tasks import StemFile, analyse_stem, compress_to_fit, draw_picture, mix_to_fit
from stembot.cache_keys import CacheItem, ResultKey
from stembot.errors import (
    MixStemsGoneError,
    MixStemsUnavailableError,
    MixTooLargeError,
    StembotError,
    StemFetchError,
    StemGoneError,
    UnknownMixError,
)
from stembot.models import Separation, Stem
from stembot.result_media import Mix, ResultMedia, StemMedia, mix_by_key
from stembot.stem_cache import CachedFile, StemCache
from stembot.stem_files import StemFiles

log = logging.getLogger(__name__)

# Formats Discord plays inside the message; another one (m4a, aac) gets a copy made here.
PLAYS_INLINE: Final = frozenset({"mp3", "ogg", "wav", "flac", "opus"})
PICTURE_NAME: Final = "stems.png"
COPY_FORMAT: Final = "ogg"  # what stembot.audio.encoding writes
NOT_ATTACHED: Final = "The files could not be attached ({why}); the links still work."
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Upload:
    """A file to send with the message: its name there and where it is on disk."""

    filename: str
    path: Path
    size: int


@dataclass(frozen=True, slots=True)
class PreparedMedia:
    """The card's media and the files its ``attachment://`` names refer to, picture first."""

    media: ResultMedia
    files: tuple[Upload, ...]

    @property
    def total_bytes(self) -> int:
        return sum(upload.size for upload in self.files)


@dataclass(frozen=True, slots=True)
class PreparedMix:
    mix: Mix
    file: Upload


@dataclass(frozen=True, slots=True)
class StemSummary:
    """What the card and the plan need from a stem's analysis (cached as JSON)."""

    name: str
    seconds: float
    silent: bool


class MediaService:
    """Attachments, picture and free mixes of stored results, from ``files`` (the fetched
    stems) and ``cache``, worked on in ``pool``."""

    def __init__(self, cache: StemCache, files: StemFiles, pool: AudioPool) -> None:
        self._cache = cache
        self._files = files
        self._pool = pool
        # Analyses made with a picture, until their JSON is written (see _picture).
        self._fresh: dict[tuple[str, tuple[str, ...]], tuple[StemSummary, ...]] = {}

    # --- the result's attachments ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def prepare(
        self, guild_id: int, source_key: str, separation: Separation, limit_bytes: int
    ) -> AsyncIterator[PreparedMedia]:
        """The result's media within ``limit_bytes`` for the whole upload, its files held for
        the block. A stem that cannot be fetched or read leaves every stem a link, with a
        note saying so: never an exception for the caller (nothing here is charged)."""
        result = ResultKey.of(source_key, separation)
        async with AsyncExitStack() as held:
            try:
                prepared = await self._prepare(held, guild_id, result, separation, limit_bytes)
            except (StembotError, OSError) as error:
                log.info("result media of %s not attached: %s", result.folder, _reason(error))
                await held.aclose()
                prepared = _links_only(separation, error)
            yield prepared

    async def _prepare(
        self,
        held: AsyncExitStack,
        guild_id: int,
        result: ResultKey,
        separation: Separation,
        limit_bytes: int,
    ) -> PreparedMedia:
        stems = await self._hold_stems(held, result, separation.stems)
        picture, summaries = await self._picture(held, guild_id, result, stems)
        plan = _plan(stems, summaries, limit_bytes, picture.size)
        made = await self._copies(held, guild_id, result, stems, plan)
        uploads = [Upload(PICTURE_NAME, picture.path, picture.size)]
        attached: dict[str, Upload] = {}
        names = _filenames(list(stems))
        for planned in plan.stems:
            file = (
                stems[planned.name] if planned.choice is Choice.ORIGINAL else made.get(planned.name)
            )
            if file is not None:
                upload = Upload(f"{names[planned.name]}.{file.extension}", file.path, file.size)
                attached[planned.name] = upload
                uploads.append(upload)
        media = ResultMedia(
            stems=tuple(
                StemMedia(
                    name=name,
                    silent=summaries[name].silent,
                    attachment=attached[name].filename if name in attached else None,
                    compressed=name in made and name in attached,
                )
                for name in stems
            ),
            picture=PICTURE_NAME,
            note=_note(plan, made),
        )
        return PreparedMedia(media, tuple(uploads))

    async def _hold_stems(
        self, held: AsyncExitStack, result: ResultKey, stems: Sequence[Stem]
    ) -> dict[str, CachedFile]:
        """Every stem on disk (fetched at most once per result), held by ``held``; the first
        failure is raised once all have settled."""
        outcomes = await asyncio.gather(
            *(held.enter_async_context(self._files.holding(result, stem)) for stem in stems),
            return_exceptions=True,
        )
        files: dict[str, CachedFile] = {}
        for stem, outcome in zip(stems, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            files[stem.name] = outcome
        return files

    async def _picture(
        self, held: AsyncExitStack, guild_id: int, result: ResultKey, stems: dict[str, CachedFile]
    ) -> tuple[CachedFile, dict[str, StemSummary]]:
        """The PNG and each stem's summary: analysed once per result, both cached."""
        names = tuple(stems)
        inputs = tuple(StemFile(name, file.path) for name, file in stems.items())
        fresh_key = (result.folder, names)

        async def draw(partial: Path) -> str:
            analyses = await self._analyse(guild_id, inputs)
            self._fresh[fresh_key] = _summaries(analyses)
            await self._pool.run(guild_id, draw_picture, analyses, partial)
            return "png"

        async def summarise(partial: Path) -> str:
            summaries = self._fresh.pop(fresh_key, None)
            if summaries is None:  # the picture was cached without its analysis: redo that
                summaries = _summaries(await self._analyse(guild_id, inputs))
            await asyncio.to_thread(_write_summaries, partial, summaries)
            return "json"

        try:
            picture = await held.enter_async_context(
                self._cache.holding(result, CacheItem.picture(names), draw)
            )
            analysis = await held.enter_async_context(
                self._cache.holding(result, CacheItem.analysis(names), summarise)
            )
        finally:
            self._fresh.pop(fresh_key, None)
        summaries = await asyncio.to_thread(_read_summaries, analysis.path)
        return picture, {summary.name: summary for summary in summaries}

    async def _analyse(self, guild_id: int, inputs: Sequence[StemFile]) -> tuple[StemAnalysis, ...]:
        """Each stem decoded once, in as many workers as the pool has."""
        jobs = (self._pool.run(guild_id, analyse_stem, stem) for stem in inputs)
        return tuple(await asyncio.gather(*jobs))

    async def _copies(
        self,
        held: AsyncExitStack,
        guild_id: int,
        result: ResultKey,
        stems: dict[str, CachedFile],
        plan: AttachmentPlan,
    ) -> dict[str, CachedFile]:
        """The smaller copies the plan asks for (cached by budget); a stem whose copy cannot
        be made within its budget is left out (a link)."""
        wanted = [p for p in plan.stems if p.choice is Choice.SMALLER_COPY]
        copies = await asyncio.gather(
            *(self._copy(held, guild_id, result, stems[p.name], p) for p in wanted)
        )
        return {p.name: copy for p, copy in zip(wanted, copies, strict=True) if copy is not None}

    async def _copy(
        self,
        held: AsyncExitStack,
        guild_id: int,
        result: ResultKey,
        stem: CachedFile,
        planned: Planned,
    ) -> CachedFile | None:
        async def encode(partial: Path) -> str:
            made = await self._pool.run(
                guild_id, compress_to_fit, stem.path, partial, planned.budget_bytes
            )
            if made is None:
                raise _NoFit()
            return COPY_FORMAT

        item = CacheItem("stem", (planned.name,), f"{COPY_FORMAT}<={planned.budget_bytes}")
        try:
            return await held.enter_async_context(self._cache.holding(result, item, encode))
        except _NoFit:
            return None

    # --- free mixes --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def mix(
        self,
        guild_id: int,
        source_key: str,
        separation: Separation,
        mix_key: str,
        limit_bytes: int,
    ) -> AsyncIterator[PreparedMix]:
        """The mix ``mix_key`` names, encoded to fit ``limit_bytes``, held for the block; made
        once per result and limit. Raises a MixUnavailableError: UnknownMixError,
        MixStemsGoneError (the stems' links expired: only a new request helps),
        MixStemsUnavailableError, MixTooLargeError; or an AudioError."""
        chosen = mix_by_key([stem.name for stem in separation.stems], mix_key)
        if chosen is None:
            raise UnknownMixError()
        result = ResultKey.of(source_key, separation)
        budget = limit_bytes - REQUEST_OVERHEAD_BYTES
        stems = [stem for stem in separation.stems if stem.name in chosen.stems]

        async def make(partial: Path) -> str:
            async with AsyncExitStack() as held:
                try:
                    files = await self._hold_stems(held, result, stems)
                except StemGoneError:
                    raise MixStemsGoneError() from None
                except StemFetchError as error:
                    raise MixStemsUnavailableError(error) from None
                paths = [files[stem.name].path for stem in stems]
                outcome = await self._pool.run(guild_id, mix_to_fit, paths, partial, budget)
            if outcome.path is None:
                raise MixTooLargeError()
            return COPY_FORMAT

        item = CacheItem.mix(chosen.stems, f"{COPY_FORMAT}<={budget}")
        async with self._cache.holding(result, item, make) as file:
            filename = f"{_filename(chosen.label)}.{file.extension}"
            yield PreparedMix(chosen, Upload(filename, file.path, file.size))


class _NoFit(Exception):
    """Even the smallest copy is over the budget (nothing is cached)."""


def _plan(
    stems: dict[str, CachedFile],
    summaries: dict[str, StemSummary],
    limit_bytes: int,
    picture_bytes: int,
) -> AttachmentPlan:
    """Every stem as the API made it when all fit; otherwise the silent ones give their room
    to the stems worth hearing and stay links (flagged silent either way)."""
    every = [_fetched(stems[name], summaries[name]) for name in stems]
    plan = plan_attachments(every, limit_bytes, picture_bytes=picture_bytes)
    if all(p.choice is Choice.ORIGINAL for p in plan.stems):
        return plan
    audible = [stem for stem in every if not summaries[stem.name].silent]
    return plan_attachments(audible, limit_bytes, picture_bytes=picture_bytes)


def _fetched(file: CachedFile, summary: StemSummary) -> FetchedStem:
    return FetchedStem(
        summary.name, file.size, summary.seconds, plays_inline=file.extension in PLAYS_INLINE
    )


def _note(plan: AttachmentPlan, made: dict[str, CachedFile]) -> str | None:
    """The plan's note, and which smaller copies could not be made within their budget."""
    failed = [p.name for p in plan.stems if p.choice is Choice.SMALLER_COPY and p.name not in made]
    if not failed:
        return plan.note
    extra = f"{', '.join(failed)}: link only (no copy small enough for this channel)."
    return f"{plan.note} {extra}" if plan.note else extra


def _links_only(separation: Separation, error: BaseException) -> PreparedMedia:
    media = ResultMedia(
        stems=tuple(StemMedia(stem.name) for stem in separation.stems),
        note=NOT_ATTACHED.format(why=_reason(error)),
    )
    return PreparedMedia(media, ())


def _reason(error: BaseException) -> str:
    if isinstance(error, StemFetchError):
        return f"the {error.stem} file could not be fetched"
    if isinstance(error, StembotError):
        return error.user_message.rstrip(".")
    return "stembot could not store them"


def _filename(name: str) -> str:
    """A name Discord keeps as it is in ``attachment://`` (letters, digits, - and _)."""
    return _UNSAFE.sub("_", name).strip("_") or "stem"


def _filenames(names: Sequence[str]) -> dict[str, str]:
    """A distinct file name per stem, even for names that differ only in unsafe characters."""
    given: dict[str, str] = {}
    taken: set[str] = {PICTURE_NAME.rsplit(".", 1)[0]}
    for name in names:
        base = candidate = _filename(name)
        count = 1
        while candidate.casefold() in taken:
            count += 1
            candidate = f"{base}_{count}"
        taken.add(candidate.casefold())
        given[name] = candidate
    return given


def _summaries(analyses: Sequence[StemAnalysis]) -> tuple[StemSummary, ...]:
    return tuple(StemSummary(a.name, a.duration_s, a.silent) for a in analyses)


def _write_summaries(path: Path, summaries: Sequence[StemSummary]) -> None:
    rows = [{"name": s.name, "seconds": s.seconds, "silent": s.silent} for s in summaries]
    path.write_text(json.dumps(rows), encoding="utf-8")


def _read_summaries(path: Path) -> tuple[StemSummary, ...]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    return tuple(
        StemSummary(str(row["name"]), float(row["seconds"]), bool(row["silent"])) for row in rows
    )
