"""The second step of a result: its stems as files Discord plays, its picture and its free
mixes, added by editing the message whose links already went out.

The links never wait for this: the message is edited once the files are ready (fetched once
per stored result, the picture drawn and smaller copies made in the audio workers). Where the
result went through the interaction, the edit turns it into the Components V2 card
(bot/result_card.py). Where it went to the channel or a DM (the interaction's 15 minutes were
over, or it was refused), the message keeps its embed and gains the files: a V2 message can
have no ``content``, and that message's content is the mention that tells the requester, and
what shows in their notification. If nothing could be attached, the embed says so in one line
and the links stand. Nothing here is charged and nothing here can fail the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import discord

from stembot.bot import embeds
from stembot.bot.result_card import MixMenu, footer_line, mix_menu, stems_card
from stembot.models import QuotaStatus, Request, Separation
from stembot.result_media import ResultMedia, StemMedia
from stembot.stem_media import NOT_ATTACHED, MediaService, PreparedMedia, Upload

log = logging.getLogger(__name__)

ROWS_MAX = 5
# Uploads of result files at once: each holds open files and buffers while it streams, and at
# an event hundreds of results gain their files within seconds of each other.
UPLOADS_AT_ONCE = 8
# What became of a result's files.
ATTACHED, LINKS_ONLY, FAILED = "attached", "links_only", "failed"


@dataclass(frozen=True, slots=True)
class DeliveredResult:
    """A result whose links went out: what to draw again with its files. A member's request's
    (``request_result``) or a remix event's stems of a mode, sent to a member who took them."""

    separation: Separation
    source_name: str
    guild_id: int
    source_key: str
    quota: QuotaStatus | None
    # How the log names it ("request 12", "remix event 3 vocals").
    name: str
    # The request's id for the footers ("Request 12"); None for an event's stems.
    request_id: int | None
    # The free-mix menu offering some mixes of it.
    menu: MixMenu


def request_result(
    request: Request, separation: Separation, source_name: str, quota: QuotaStatus | None
) -> DeliveredResult:
    """A member's request's result, its mixes picked from MixSelect (``stems:mix:<id>``)."""
    return DeliveredResult(
        separation,
        source_name,
        request.guild_id,
        request.source_key,
        quota,
        f"request {request.id}",
        request.id,
        lambda mixes: mix_menu(request.id, mixes),
    )


class ResultMessage(Protocol):
    """The message a result went out in, as far as adding its files goes."""

    @property
    def upload_limit(self) -> int:
        """Bytes one request may upload to it (the whole request, files and body)."""
        ...

    async def show(self, result: DeliveredResult, prepared: PreparedMedia) -> None:
        """Edit the message to carry ``prepared``; raises discord.HTTPException if refused."""
        ...


class InteractionResult:
    """The interaction's own message: edited into the V2 card while the token lives."""

    def __init__(self, interaction: discord.Interaction) -> None:
        self._interaction = interaction

    @property
    def upload_limit(self) -> int:
        # Discord sends it with every interaction: the channel's limit for this bot.
        return self._interaction.filesize_limit

    async def show(self, result: DeliveredResult, prepared: PreparedMedia) -> None:
        if self._interaction.is_expired():
            log.info("%s: the interaction expired before its files", result.name)
            return
        if not prepared.files:
            embed, view = _embed_answer(result, prepared.media)
            await self._interaction.edit_original_response(embed=embed, view=view)
            return
        head = None if result.request_id is None else f"Request {result.request_id}"
        card = stems_card(
            result.source_name,
            result.separation,
            prepared.media,
            footer=footer_line(result.separation, result.quota, head),
            menu=result.menu,
        )
        files = await _opened(prepared.files)
        with _closing(files):
            await self._interaction.edit_original_response(
                content=None, embed=None, view=card, attachments=files
            )


class PostedResult:
    """A message posted in the channel or by DM: keeps its embed and mention, gains files."""

    def __init__(self, message: discord.Message, upload_limit: int) -> None:
        self._message = message
        self._upload_limit = upload_limit

    @property
    def upload_limit(self) -> int:
        return self._upload_limit

    async def show(self, result: DeliveredResult, prepared: PreparedMedia) -> None:
        embed, view = _embed_answer(result, prepared.media)
        files = await _opened(prepared.files)
        with _closing(files):
            await self._message.edit(embed=embed, view=view, attachments=files)


class ResultFiles:
    """Adds the files to delivered results in the background, so neither the API call's slot
    nor the next request's links wait for them, with a bounded number of uploads at once."""

    def __init__(
        self,
        media: MediaService,
        uploads_at_once: int = UPLOADS_AT_ONCE,
        observe: Callable[[str], None] | None = None,
    ) -> None:
        self.media = media
        # Told each result's outcome: "attached", "links_only" or "failed" (the metrics).
        self._observe = observe or (lambda outcome: None)
        self._uploads = asyncio.Semaphore(uploads_at_once)
        self._tasks: set[asyncio.Task[None]] = set()

    def attach_soon(self, result: DeliveredResult, message: ResultMessage) -> None:
        task = asyncio.create_task(
            self._attach(result, message), name=f"result-files-{result.name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attach(self, result: DeliveredResult, message: ResultMessage) -> None:
        outcome = FAILED
        try:
            outcome = await attach_files(self.media, result, message, self._uploads)
        except Exception:
            log.exception("%s: attaching its files failed", result.name)
        finally:
            self._observe(outcome)

    async def close(self, grace_s: float) -> None:
        """Give the files being attached ``grace_s`` to go out; the rest keep their links."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))


async def attach_files(
    media: MediaService,
    result: DeliveredResult,
    message: ResultMessage,
    uploads: asyncio.Semaphore | None = None,
) -> str:
    """Add the result's files to ``message``; on any refusal the links result stands with a
    line saying the files could not be attached. ATTACHED, LINKS_ONLY (nothing could be
    attached) or FAILED."""
    limit = message.upload_limit
    async with media.prepare(
        result.guild_id, result.source_key, result.separation, limit
    ) as prepared:
        try:
            async with uploads or contextlib.nullcontext():
                await message.show(result, prepared)
        except (discord.HTTPException, OSError) as error:
            log.warning("%s: its files were not attached (%s)", result.name, _why(error))
            await _say_not_attached(message, result, prepared.media, error)
            return FAILED
    log.info("%s: %d file(s) attached", result.name, len(prepared.files))
    return ATTACHED if prepared.files else LINKS_ONLY


async def _say_not_attached(
    message: ResultMessage,
    result: DeliveredResult,
    media: ResultMedia,
    error: discord.HTTPException | OSError,
) -> None:
    if isinstance(error, OSError):
        why = "stembot could not read them"
    elif error.status == 413:
        why = "they were too large for this channel"
    else:
        why = "Discord refused the upload"
    links_only = ResultMedia(
        stems=tuple(StemMedia(stem.name, silent=stem.silent) for stem in media.stems),
        note=NOT_ATTACHED.format(why=why),
    )
    with contextlib.suppress(discord.HTTPException):
        await message.show(result, PreparedMedia(links_only, ()))


def _why(error: discord.HTTPException | OSError) -> str:
    if isinstance(error, discord.HTTPException):
        return f"HTTP {error.status}, code {error.code}"
    return error.strerror or type(error).__name__


def _embed_answer(
    result: DeliveredResult, media: ResultMedia
) -> tuple[discord.Embed, discord.ui.View]:
    """The links embed with the files' notes, and the free mixes under the link buttons."""
    embed, view = embeds.result_message(
        result.source_name, result.separation, result.quota, result.request_id, media=media
    )
    mixes = media.mixes
    rows_used = 1 + max((item.row or 0 for item in view.children), default=-1)
    if mixes and media.picture is not None and rows_used < ROWS_MAX:
        menu = result.menu(mixes)
        menu.row = rows_used
        view.add_item(menu)
    return embed, view


async def _opened(uploads: Sequence[Upload]) -> list[discord.File]:
    """The files, opened off the event loop; aiohttp reads them in its executor."""

    def open_all() -> list[discord.File]:
        opened: list[discord.File] = []
        try:
            for upload in uploads:
                opened.append(discord.File(upload.path, filename=upload.filename))
        except OSError:
            for file in opened:
                file.close()
            raise
        return opened

    return await asyncio.to_thread(open_all)


@contextlib.contextmanager
def _closing(files: list[discord.File]) -> Iterator[list[discord.File]]:
    try:
        yield files
    finally:
        for file in files:
            file.close()
