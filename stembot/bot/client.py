"""The bot: an AutoShardedBot that is handed everything it uses (advanced_startup pattern).

It runs the shards ``shard_ids`` of ``shard_count`` (None: all of Discord's recommended count,
asked once at connect) on connections to the configured gateway, and every IDENTIFY goes
through the IdentifyGate (identify.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

import discord
import yarl
from discord.ext import commands

from stembot.bot import embeds
from stembot.bot.admin import AdminCog
from stembot.bot.delivery import Answer, post_to_requester
from stembot.bot.identify import IdentifyGate, IdentifyPacer, LocalIdentifyPacer, SessionStartLimit
from stembot.bot.mixes import MixSelect
from stembot.bot.owed_answers import OwedAnswers, deliver_owed
from stembot.bot.remix_event_cog import RemixEventCog, TrackSelect
from stembot.bot.remix_event_desk import RemixEventDesk
from stembot.bot.remix_event_mixes import EventMixSelect
from stembot.bot.remix_event_submissions import RemoveButton, SubmitButton, on_submission_modal
from stembot.bot.remix_event_takes import TakeAnswer, TakeButton
from stembot.bot.remix_event_vote import VoteChoice
from stembot.bot.result_attachments import ResultFiles
from stembot.bot.split import FileAndModeSelect, FileSelect, ModeButton, SplitCog
from stembot.bot.stems import StemsCog
from stembot.bot.sync import SyncRecord, sync_if_changed
from stembot.bot.tree import StemTree
from stembot.bot.views import CancelButton
from stembot.models import Recovery, Request, Separation
from stembot.moderation import ModerationService
from stembot.remix_event_models import Take
from stembot.remix_events import RemixEventService
from stembot.stem_media import MediaService
from stembot.stem_service import StemService

log = logging.getLogger(__name__)

# How often the bot checks that its database file is still the one it opened (one stat).
LEDGER_CHECK_INTERVAL_S = 5.0


class StemBot(commands.AutoShardedBot):
    def __init__(
        self,
        *,
        service: StemService,
        moderation: ModerationService,
        sync_record: SyncRecord,
        dev_guild_id: int | None,
        shutdown_grace_s: float,
        force_sync: bool = False,
        recover_requests: bool = True,
        shard_count: int | None = None,
        shard_ids: Sequence[int] | None = None,
        identify_pacer: IdentifyPacer | None = None,
    ) -> None:
        super().__init__(
            shard_count=shard_count,
            # None runs every shard: discord.py's default, though its annotation says a list.
            shard_ids=None if shard_ids is None else list(shard_ids),  # type: ignore[arg-type]
            command_prefix=commands.when_mentioned,
            help_command=None,
            # No privileged intents: slash commands need only the guilds intent.
            intents=discord.Intents(guilds=True),
            tree_cls=StemTree,
            # Nothing here waits on the guild cache; don't hold on_ready back for it.
            guild_ready_timeout=0,
            chunk_guilds_at_startup=False,
            member_cache_flags=discord.MemberCacheFlags.none(),
            max_messages=None,
            # Sent with every message and edit (discord.py merges it into interaction
            # responses, followups and channel posts): names and texts users chose never
            # ping anyone. The one intended ping, the requester's, is allowed where it is sent.
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.service = service
        self.moderation = moderation
        # Attachments, picture and free mixes of results (None: links only).
        self.media: MediaService | None = None
        self.result_files: ResultFiles | None = None
        # Remix events (None: a bot built without them).
        self.remix: RemixEventDesk | None = None
        self._sync_record = sync_record
        self._dev_guild = discord.Object(dev_guild_id) if dev_guild_id else None
        self._force_sync = force_sync
        self._shutdown_grace_s = shutdown_grace_s
        self._recover_requests = recover_requests
        self._recovery: Recovery | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._count_from_discord = shard_count is None
        self._identify_gate = IdentifyGate(
            self._session_start_limit,
            lambda: self.shard_count or 1,
            identify_pacer or LocalIdentifyPacer(),
        )

    async def connect(self, *, reconnect: bool = True) -> None:
        # Asked here rather than by discord.py so that the shards connect to the configured
        # gateway (DISCORD_GATEWAY_URL), not to the URL in Discord's answer.
        if self._count_from_discord:
            self.shard_count, _, _ = await self.http.get_bot_gateway()
        shards = self.shard_ids if self.shard_ids is not None else range(self.shard_count)
        log.info(
            "connecting shard(s) %s of %d", ", ".join(map(str, shards)) or "none", self.shard_count
        )
        await super().connect(reconnect=reconnect)

    async def launch_shard(
        self, gateway: yarl.URL, shard_id: int, *, initial: bool = False
    ) -> None:
        # Before the connection opens: a wait of hours must not hold an idle socket.
        await self._identify_gate.wait_for_starts(shard_id)
        await super().launch_shard(gateway, shard_id, initial=initial)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        await self._identify_gate.before_identify(shard_id or 0)

    async def _session_start_limit(self) -> SessionStartLimit:
        _, _, limit = await self.http.get_bot_gateway()
        return SessionStartLimit.from_discord(limit)

    @property
    def remix_events(self) -> RemixEventService | None:
        """The remix event service (what the submissions and the vote find on the client)."""
        return None if self.remix is None else self.remix.events

    async def setup_hook(self) -> None:
        await self.add_cog(StemsCog(self, self.service))
        await self.add_cog(AdminCog(self.moderation))
        await self.add_cog(SplitCog(self, self.service))
        if self.remix is not None:
            await self.add_cog(RemixEventCog(self, self.remix, self.service))
        self.add_dynamic_items(CancelButton, ModeButton, FileAndModeSelect, FileSelect, MixSelect)
        self.add_dynamic_items(TakeButton, EventMixSelect, TrackSelect)
        self.add_dynamic_items(SubmitButton, RemoveButton, VoteChoice)
        self.add_listener(on_submission_modal, "on_interaction")
        if self._dev_guild is not None:
            self.tree.copy_global_to(guild=self._dev_guild)
        await sync_if_changed(self.tree, self._sync_record, self._dev_guild, force=self._force_sync)
        if self._recover_requests:
            # Settled before the gateway connects; the requesters hear once the bot is ready.
            self._recovery = await self.service.recover(self._owed_answers())
            await self._resume_takes()
        self._watcher = asyncio.create_task(self._watch_ledger(), name="ledger-watch")
        if self._recover_requests and self.service.sweep_every_s is not None:
            self._sweeper = asyncio.create_task(self._sweep(), name="ledger-sweep")

    async def _resume_takes(self) -> None:
        """Members' takes a restart left waiting get their event's call again; their stems
        go by DM (the clicks' private messages died with the old process)."""
        remix = self.remix
        if remix is None:
            return

        def answer(take: Take) -> TakeAnswer:
            assert remix is not None
            return TakeAnswer(self, remix, take.event_id, take.mode, take.user_id, None)

        await remix.events.resume(answer)

    def _owed_answers(self) -> OwedAnswers:
        """Who answers the requests of queued calls taken over (their interactions are gone)."""
        return OwedAnswers(self, self.service, self.result_files)

    async def on_ready(self) -> None:
        log.info("connected as %s to %d server(s)", self.user, len(self.guilds))
        if self._recovery is not None:
            recovery, self._recovery = self._recovery, None
            self._spawn(self._settle_recovery(recovery))
        if self.remix is not None and self._recover_requests:
            # Events past their end close now, also those that ended while the bot was away.
            self.remix.closer.start()

    async def _settle_recovery(self, recovery: Recovery, found_by: str = "start-up") -> None:
        await self._tell_interrupted(recovery.interrupted)
        await self._deliver_owed(recovery.undelivered)
        log.info(
            "%s: %d interrupted request(s) told and refunded, %d owed result(s) delivered, "
            "%d queued call(s) taken over",
            found_by,
            len(recovery.interrupted),
            len(recovery.undelivered),
            len(recovery.handed_over),
        )

    async def _tell_interrupted(self, requests: list[Request]) -> None:
        for request in requests:
            answer = Answer(embeds.interrupted_embed(request.mode, request.source_name))
            delivered = await post_to_requester(
                self, request.guild_id, request.channel_id, request.user_id, answer
            )
            via = delivered.via or "nowhere"
            log.info("request %s: interruption notice sent via %s", request.id, via)

    async def _deliver_owed(self, owed: list[tuple[Request, Separation]]) -> None:
        """Results that succeeded before a crash but never reached their requester: the
        interaction token died with the old process, so the channel with a mention, else DM."""
        for request, separation in owed:
            await deliver_owed(self, self.service, self.result_files, request, separation)

    async def _watch_ledger(self) -> None:
        while True:
            await asyncio.sleep(LEDGER_CHECK_INTERVAL_S)
            try:
                await self.service.check_ledger()
            except Exception:
                log.exception("checking the database failed")

    async def _sweep(self) -> None:
        """Other processes share the ledger: tell the requesters of those found gone, as the
        start-up does for a crash of this one."""
        while True:
            await self.service.sweep_due()
            try:
                recovery = await self.service.sweep(self._owed_answers())
                # Their members' takes waiting for an event's call, too.
                await self._resume_takes()
            except Exception:
                log.exception("looking for the requests of stopped processes failed")
                continue
            if recovery.interrupted or recovery.undelivered or recovery.handed_over:
                self._spawn(self._settle_recovery(recovery, "a stopped process's requests"))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Stop taking requests, let running requests finish or mark them, then disconnect."""
        await self.service.shutdown(grace_s=self._shutdown_grace_s)
        if self.remix is not None:
            # After the service: the answers of calls that finished in its grace still go out.
            await self.remix.events.close(self._shutdown_grace_s)
            await self.remix.closer.stop()
            await self.remix.cards.close()
        if self.result_files is not None:
            await self.result_files.close(self._shutdown_grace_s)
        for task in (self._watcher, self._sweeper):
            if task is not None:
                task.cancel()
        await super().close()
