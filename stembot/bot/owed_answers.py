"""Answers owed to requesters whose interaction is gone (its token died with an earlier
process): a result that succeeded before a restart, and the outcome of a queued call this
process took over from a stopped process or an earlier start (stembot/handed_over.py).
Posted in the request's channel with a mention, else sent by DM (delivery.post_to_requester).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord

from stembot.bot import embeds
from stembot.bot.delivery import Answer, attach_files_soon, post_to_requester
from stembot.bot.result_attachments import ResultFiles, request_result
from stembot.errors import StembotError
from stembot.models import QuotaStatus, Request, Separation

if TYPE_CHECKING:
    from stembot.stem_service import StemService

log = logging.getLogger(__name__)


async def deliver_owed(
    client: discord.Client,
    service: StemService,
    files: ResultFiles | None,
    request: Request,
    separation: Separation,
    quota: QuotaStatus | None = None,
) -> None:
    """A result through the channel with a mention (else a DM), its delivery noted, and its
    files attached in the background."""
    embed, view = embeds.result_message(request.source_name, separation, quota, request.id)
    line, _ = embeds.ready_mention(request.user_id, request.mode, request.source_name)
    delivered = await post_to_requester(
        client, request.guild_id, request.channel_id, request.user_id, Answer(embed, view, line)
    )
    service.record_delivery(request.id, delivered.via or "nowhere")
    log.info("request %s: owed result delivered via %s", request.id, delivered.via or "nowhere")
    result = request_result(request, separation, request.source_name, quota)
    attach_files_soon(client, files, result, delivered)


class OwedAnswers:
    """The RequestListener of requests taken over: each outcome through the channel."""

    def __init__(
        self, client: discord.Client, service: StemService, files: ResultFiles | None
    ) -> None:
        self._client = client
        self._service = service
        self._files = files

    def __call__(self, request: Request) -> OwedAnswers:
        return self  # one for every request: nothing of its own to keep

    async def on_started(self, request: Request) -> None:
        return None

    async def on_succeeded(
        self, request: Request, separation: Separation, quota: QuotaStatus | None
    ) -> None:
        await deliver_owed(self._client, self._service, self._files, request, separation, quota)

    async def on_failed(
        self, request: Request, error: StembotError, quota: QuotaStatus | None
    ) -> None:
        answer = Answer(embeds.failed_embed(request.mode, request.source_name, error, quota))
        delivered = await post_to_requester(
            self._client, request.guild_id, request.channel_id, request.user_id, answer
        )
        log.info("request %s: failure told via %s", request.id, delivered.via or "nowhere")

    async def on_cancelled(self, request: Request) -> None:
        return None

    async def on_handed_over(self, request: Request) -> None:
        return None  # left queued again: the next process answers it
