"""Getting each request's answer to its requester, whatever happens to the interaction.

One status message per request, kept current (queued position, then processing) with at most
one edit per STATUS_EDIT_INTERVAL_S. The final answer edits that message while the interaction
token lives; after that (15 minutes), or if the edit fails, it is posted in the channel with a
mention; if that is refused, it goes by direct message; if even that fails, it is logged. A
result is never dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import discord

from stembot.bot import embeds
from stembot.bot.result_attachments import (
    DeliveredResult,
    InteractionResult,
    PostedResult,
    ResultFiles,
    ResultMessage,
    request_result,
)
from stembot.bot.views import cancel_view
from stembot.errors import StembotError
from stembot.models import Mode, QuotaStatus, Request, Separation

if TYPE_CHECKING:
    from stembot.stem_service import StemService

log = logging.getLogger(__name__)

STATUS_EDIT_INTERVAL_S = 5.0


@dataclass(frozen=True, slots=True)
class Answer:
    """What one message carries."""

    embed: discord.Embed
    view: discord.ui.View | None = None
    # The line above the embed when it has to go to the channel; a bare mention by default.
    channel_line: str | None = None


@dataclass(frozen=True, slots=True)
class Delivered:
    """Where an answer went: "interaction", "channel", "dm", or "" (nowhere, logged), and the
    message it went out in when the bot can edit that message later by itself."""

    via: str
    message: discord.Message | None = None


NOWHERE = Delivered("")


async def post_to_requester(
    client: discord.Client,
    guild_id: int,
    channel_id: int,
    user_id: int,
    answer: Answer,
    *,
    dm_first: bool = False,
) -> Delivered:
    """Post in the channel mentioning the user, else by DM (``dm_first``: the other way
    round, for an answer meant to stay private)."""
    routes = [_by_dm, _in_channel] if dm_first else [_in_channel, _by_dm]
    for route in routes:
        delivered = await route(client, guild_id, channel_id, user_id, answer)
        if delivered.via:
            return delivered
    log.error("could not reach user %s in channel %s nor by DM", user_id, channel_id)
    return NOWHERE


async def _in_channel(
    client: discord.Client, guild_id: int, channel_id: int, user_id: int, answer: Answer
) -> Delivered:
    mention = discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(user_id)])
    channel = client.get_partial_messageable(channel_id, guild_id=guild_id)
    try:
        message = await channel.send(
            content=answer.channel_line or f"<@{user_id}>",
            embed=answer.embed,
            view=answer.view or discord.utils.MISSING,
            allowed_mentions=mention,
        )
        return Delivered("channel", message)
    except discord.HTTPException as error:
        log.warning("posting in channel %s refused (%s)", channel_id, _why(error))
        return NOWHERE


async def _by_dm(
    client: discord.Client, guild_id: int, channel_id: int, user_id: int, answer: Answer
) -> Delivered:
    try:
        dm = await client.create_dm(discord.Object(user_id))
        message = await dm.send(embed=answer.embed, view=answer.view or discord.utils.MISSING)
        return Delivered("dm", message)
    except discord.HTTPException as error:
        log.warning("a DM to user %s refused (%s)", user_id, _why(error))
        return NOWHERE


def attach_files_soon(
    client: discord.Client,
    files: ResultFiles | None,
    result: DeliveredResult,
    delivered: Delivered,
    interaction: discord.Interaction | None = None,
) -> None:
    """The result's files added, in the background, to the message its links went out in (see
    bot/result_attachments.py); nothing without result files or a message to edit."""
    if files is None:
        return
    target: ResultMessage
    if delivered.via == "interaction" and interaction is not None:
        target = InteractionResult(interaction)
    elif delivered.message is not None:
        limit = upload_limit_of(client, delivered, result.guild_id)
        target = PostedResult(delivered.message, limit)
    else:
        return
    files.attach_soon(result, target)


def upload_limit_of(client: discord.Client, delivered: Delivered, guild_id: int) -> int:
    """A posted message's upload limit: its server's (boosts raise it), or Discord's default
    in a DM, where no interaction told it."""
    guild = client.get_guild(guild_id) if delivered.via == "channel" else None
    if guild is None:
        return discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
    return guild.filesize_limit


def _why(error: discord.HTTPException) -> str:
    return f"HTTP {error.status}, code {error.code}"


class RequestMessages:
    """The RequestListener for one slash-command request: its status message and final answer."""

    def __init__(
        self,
        client: discord.Client,
        interaction: discord.Interaction,
        service: StemService,
        mode: Mode,
        source_name: str,
        files: ResultFiles | None = None,
    ) -> None:
        self._client = client
        self._interaction = interaction
        self._service = service
        self._files = files
        self._mode = mode
        self._source_name = source_name
        self._request: Request | None = None
        self._acknowledged = asyncio.Event()
        self._changed = asyncio.Event()
        self._started_at: datetime | None = None
        self._finished = False
        self._edit_lock = asyncio.Lock()
        self._last_edit = float("-inf")
        self._status_task: asyncio.Task[None] | None = None

    # --- called by the cog --------------------------------------------------------------

    def acknowledged(self, request: Request) -> None:
        """The interaction was deferred and the request queued: start keeping the status current."""
        self._request = request
        self._acknowledged.set()
        if not self._finished and request.status.is_active:
            self._status_task = asyncio.create_task(
                self._keep_status_current(), name=f"status-{request.id}"
            )

    # --- RequestListener ----------------------------------------------------------------

    async def on_started(self, request: Request) -> None:
        self._started_at = discord.utils.utcnow()
        self._changed.set()

    async def on_succeeded(
        self, request: Request, separation: Separation, quota: QuotaStatus | None
    ) -> None:
        embed, view = embeds.result_message(self._source_name, separation, quota, request.id)
        line, _ = embeds.ready_mention(request.user_id, self._mode, self._source_name)
        delivered = await self._finish(request, Answer(embed, view, line))
        self._service.record_delivery(request.id, delivered.via or "nowhere")
        result = request_result(request, separation, self._source_name, quota)
        attach_files_soon(self._client, self._files, result, delivered, self._interaction)

    async def on_failed(
        self, request: Request, error: StembotError, quota: QuotaStatus | None
    ) -> None:
        embed = embeds.failed_embed(self._mode, self._source_name, error, quota)
        await self._finish(request, Answer(embed))

    async def on_cancelled(self, request: Request) -> None:
        """The requester's click on Cancel already answered on the message; just stop."""
        async with self._edit_lock:
            self._finished = True
            if self._status_task is not None:
                self._status_task.cancel()

    async def on_handed_over(self, request: Request) -> None:
        """Say the request stays queued through the restart (its answer comes by channel)."""
        await self._acknowledged.wait()
        async with self._edit_lock:
            self._finished = True
            if self._status_task is not None:
                self._status_task.cancel()
            if self._interaction.is_expired():
                return
            embed = embeds.handed_over_embed(self._mode, self._source_name)
            try:
                await self._interaction.edit_original_response(embed=embed, view=None)
            except discord.HTTPException as error:
                log.info("request %s: status edit failed (%s)", request.id, _why(error))

    # --- the status message -------------------------------------------------------------

    async def _keep_status_current(self) -> None:
        shown: object = None
        while not self._finished:
            state = self._status_state()
            if state != shown and _worth_showing(shown, state):
                await self._edit_status(state)
                shown = state
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), STATUS_EDIT_INTERVAL_S)
            loop_time = asyncio.get_running_loop().time()
            await asyncio.sleep(max(0.0, self._last_edit + STATUS_EDIT_INTERVAL_S - loop_time))

    def _status_state(self) -> tuple[str, object]:
        if self._started_at is not None or self._request is None:
            return ("processing", self._started_at)
        position = self._service.position(self._request.id)
        return ("queued", position) if position is not None else ("processing", None)

    async def _edit_status(self, state: tuple[str, object]) -> None:
        kind, value = state
        view: discord.ui.View | None = None
        if kind == "queued" and isinstance(value, int) and self._request is not None:
            embed = embeds.queued_embed(self._mode, self._source_name, value)
            view = cancel_view(self._request.id)
        else:
            started = value if isinstance(value, datetime) else discord.utils.utcnow()
            embed = embeds.processing_embed(self._mode, self._source_name, started)
        async with self._edit_lock:
            if self._finished or self._interaction.is_expired():
                return
            self._last_edit = asyncio.get_running_loop().time()
            try:
                await self._interaction.edit_original_response(embed=embed, view=view)
            except discord.HTTPException as error:
                log.info("request %s: status edit failed (%s)", self._request_id, _why(error))

    # --- the final answer ---------------------------------------------------------------

    async def _finish(self, request: Request, answer: Answer) -> Delivered:
        """Deliver the final answer."""
        self._request = request
        await self._acknowledged.wait()
        async with self._edit_lock:
            self._finished = True
            if self._status_task is not None:
                self._status_task.cancel()
            delivered = await self._deliver(request, answer)
        via = delivered.via or "nowhere (logged)"
        log.info("request %s answer delivered via %s", request.id, via)
        return delivered

    async def _deliver(self, request: Request, answer: Answer) -> Delivered:
        if not self._interaction.is_expired():
            try:
                await self._interaction.edit_original_response(
                    content=None, embed=answer.embed, view=answer.view
                )
                return Delivered("interaction")
            except discord.HTTPException as error:
                log.warning(
                    "request %s: editing the reply failed (%s); posting in the channel",
                    request.id,
                    _why(error),
                )
        return await post_to_requester(
            self._client, request.guild_id, request.channel_id, request.user_id, answer
        )

    @property
    def _request_id(self) -> int | None:
        return self._request.id if self._request else None


def _worth_showing(shown: object, state: tuple[str, object]) -> bool:
    """Every change near the front of the queue; far back, only a real step forward.

    Hundreds of queued requests re-rendered every few seconds would be noise for the users
    and load for Discord; a position of 143 vs 141 tells nobody anything.
    """
    kind, value = state
    if kind != "queued" or not isinstance(shown, tuple) or shown[0] != "queued":
        return True
    before, now = shown[1], value
    if not isinstance(before, int) or not isinstance(now, int):
        return True
    return now <= 10 or _rounded_position(now) != _rounded_position(before)


def _rounded_position(position: int) -> int:
    step = 10 if position <= 100 else 50
    return -(-position // step) * step
