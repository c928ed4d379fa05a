"""`stembot run` and `stembot sync`: build everything the bot uses, then start it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import discord

from stembot.address_policy import AddressPolicy
from stembot.audio.pool import AudioPool
from stembot.bot.client import StemBot
from stembot.bot.endpoints import use_discord_endpoints
from stembot.bot.quota_alerts import QuotaAlerts
from stembot.bot.remix_event_card_updates import CardUpdates
from stembot.bot.remix_event_closer import EventCloser
from stembot.bot.remix_event_desk import RemixEventDesk
from stembot.bot.remix_event_end import EventEnder
from stembot.bot.remix_event_source import TrackResolver
from stembot.bot.result_attachments import ResultFiles
from stembot.bot.shard_states import BotShards
from stembot.cli.ledger import (
    hold_ledger,
    identify_pacer_of,
    ledger_name,
    open_ledger,
    sharing_of,
    take_lease,
)
from stembot.config import Secret, Settings, load_settings
from stembot.guarded_connector import GuardedConnector
from stembot.health import Health
from stembot.http_endpoints import serving
from stembot.logs import configure_logging
from stembot.metrics import Metrics
from stembot.moderation import ModerationService
from stembot.process_lease import LeaseLostError, ProcessLease
from stembot.remix_events import RemixEventService
from stembot.retention import Retention
from stembot.sealed_sources import SourceSeal
from stembot.shared_probes import SharedProbes
from stembot.soundverse import SoundverseClient
from stembot.source_urls import redact_url
from stembot.stem_cache import StemCache
from stembot.stem_fetcher import StemFetcher
from stembot.stem_files import StemFiles
from stembot.stem_media import MediaService
from stembot.stem_service import StemService, utc_now
from stembot.store.interface import LedgerStore
from stembot.url_probe import UrlProbe

log = logging.getLogger(__name__)

EXIT_FAILED = 1
EXIT_BAD_SETTINGS = 2
# Discord's gateway close code: a shard would hold more than 2,500 servers.
SHARDING_REQUIRED = 4011


def register(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run",
        help="start the Discord bot",
        description="Start the Discord bot (settings from the environment and .env).",
    )
    run.set_defaults(handler=handle_run)
    sync = subparsers.add_parser(
        "sync",
        help="register the slash commands with Discord now, even if unchanged, then exit",
        description="Register the slash commands now (the bot otherwise syncs only changes).",
    )
    sync.set_defaults(handler=handle_sync)


def handle_run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    settings = load_settings(env, need_discord=True, need_soundverse=True)
    configure_logging(settings.log_level, secrets_of(settings))
    # Before anything reads the SQLite file: start-up recovery is only right for the one bot
    # (processes sharing a PostgreSQL ledger hold leases instead).
    with hold_ledger(settings):
        log_startup(settings, getattr(args, "env_file_read", None))
        if settings.database_url is None and not settings.db_path.exists():
            # Said out loud: a ledger that went missing must not be replaced unnoticed.
            log.warning("no database at %s: starting a new, empty ledger", settings.db_path)
        return run_reporting_discord_problems(settings, run_bot(settings))


def handle_sync(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    # Registering commands talks to Discord only: no Soundverse key needed.
    settings = load_settings(env, need_discord=True)
    configure_logging(settings.log_level, secrets_of(settings))
    log_startup(settings, getattr(args, "env_file_read", None))
    return run_reporting_discord_problems(settings, run_bot(settings, force_sync=True, stay=False))


def log_startup(settings: Settings, env_file: Path | None) -> None:
    """One line saying what this process will use, so a wrong path or base shows at once."""
    log.info(
        "starting with database %s, Discord %s (gateway %s), Soundverse %s, settings from %s",
        ledger_name(settings),
        redact_url(settings.discord_api_base),
        redact_url(settings.discord_gateway_url),
        redact_url(settings.soundverse_api_base),
        env_file if env_file is not None else "the environment only (no .env file read)",
    )


def run_reporting_discord_problems(settings: Settings, main: Coroutine[Any, Any, None]) -> int:
    """Run the bot; a refused token or an unreachable Discord is one line, not a traceback."""
    try:
        asyncio.run(main)
    except discord.LoginFailure:
        print(
            "stembot: Discord refused the bot token. Check DISCORD_TOKEN "
            "(Developer Portal -> your application -> Bot -> Reset Token).",
            file=sys.stderr,
        )
        return EXIT_BAD_SETTINGS
    except discord.ConnectionClosed as closed:
        if closed.code != SHARDING_REQUIRED:
            raise
        print(sharding_required_line(settings, closed.shard_id), file=sys.stderr)
        return EXIT_FAILED
    except LeaseLostError as lost:
        print(f"stembot: {lost}", file=sys.stderr)
        return EXIT_FAILED
    except (aiohttp.ClientConnectionError, discord.GatewayNotFound, OSError) as error:
        print(
            f"stembot: could not reach Discord at {settings.discord_api_base} "
            f"({type(error).__name__}). Check the network or DISCORD_API_BASE.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return 0


def sharding_required_line(settings: Settings, shard_id: int | None) -> str:
    """Discord's 4011: a shard would hold more than 2,500 servers."""
    fix = (
        f"raise STEMBOT_SHARD_COUNT (now {settings.shard_count}) on every process, or leave it "
        "empty to use Discord's recommendation"
        if settings.shard_count is not None
        else "start it again: it asks Discord for the recommended shard count at each start"
    )
    return (
        f"stembot: Discord requires more shards (close code 4011: shard {shard_id} would hold "
        f"more than 2,500 servers); {fix}."
    )


def secrets_of(settings: Settings) -> list[str]:
    secrets = [s.reveal() for s in (settings.discord_token, settings.soundverse_api_key) if s]
    if settings.database_url is not None and settings.database_url.password:
        secrets.append(settings.database_url.password)
    return secrets


@contextlib.asynccontextmanager
async def built_bot(settings: Settings, *, force_sync: bool = False) -> AsyncIterator[StemBot]:
    """Everything the bot uses, built once here and handed in; closed in reverse order."""
    use_discord_endpoints(settings.discord_api_base, settings.discord_gateway_url)
    # Only `stembot sync` comes here without a key, and it never calls the API.
    api_key = settings.soundverse_api_key or Secret("")
    metrics = Metrics()
    store = await open_ledger(settings)
    lease: ProcessLease | None = None
    try:
        # `stembot sync` serves nobody: it takes no lease and recovers nothing.
        lease = None if force_sync else await take_lease(store, settings)
        sharing = sharing_of(store, lease)
        policy = AddressPolicy(allow_private=settings.allow_private_urls)
        async with (
            aiohttp.ClientSession(raise_for_status=False) as api_session,
            # Members' URL probes and stem downloads each on their own connector: a burst of
            # big stem files must not take the connection slots members' links are checked in.
            GuardedConnector(policy) as probe_connector,
            GuardedConnector(policy) as stem_connector,
        ):
            soundverse = SoundverseClient(
                api_session,
                settings.soundverse_api_base,
                api_key,
                timeout_s=settings.api_timeout_s,
            )
            service = StemService(
                store,
                metrics.timed(soundverse),
                SharedProbes(
                    UrlProbe(
                        probe_connector,
                        max_bytes=settings.max_input_bytes,
                        timeout_s=settings.url_probe_timeout_s,
                    )
                ),
                max_concurrent_calls=settings.max_concurrent_jobs,
                max_input_bytes=settings.max_input_bytes,
                result_ttl_s=settings.result_ttl_s,
                probes_per_member=settings.url_probes_per_member,
                observer=metrics,
                sharing=sharing,
                # Queued calls' sources sealed in the ledger, for another process or the next
                # start to make (every process that makes calls holds the key).
                seal=SourceSeal(api_key.reveal()) if api_key.reveal() else None,
            )
            moderation = ModerationService(store, utc_now)
            bot = StemBot(
                service=service,
                moderation=moderation,
                sync_record=store.guilds,
                dev_guild_id=settings.dev_guild_id,
                shutdown_grace_s=settings.shutdown_grace_s,
                force_sync=force_sync,
                # `stembot sync` may run beside a live bot: it must not touch its requests.
                recover_requests=not force_sync,
                shard_count=settings.shard_count,
                shard_ids=settings.shard_ids,
                identify_pacer=identify_pacer_of(store),
            )
            service.after_charge(QuotaAlerts(bot, moderation).after_reservation)
            shards = BotShards(bot)
            metrics.watch(shards, service)
            endpoints = http_endpoints(
                settings, metrics, Health(shards, store.ping, service), serve=not force_sync
            )
            bot.remix = remix_event_desk(bot, store, service, settings)
            # `stembot sync` leaves the live bot's ledger to it. Pruning starts once the bot
            # is ready: the start-up recovery has then read what a crash left owing.
            with_media = settings.attach_stems and not force_sync
            cache = await open_stem_cache(settings) if with_media else None
            retention = Retention(
                store, 0 if force_sync else settings.retention_days, utc_now, cache=cache
            )
            # Without a cache the results keep their links only; the workers start on demand.
            pool = AudioPool(settings.audio_workers) if cache is not None else None
            if cache is not None and pool is not None:
                fetcher = StemFetcher(stem_connector, max_bytes=settings.max_stem_bytes)
                bot.media = MediaService(cache, StemFiles(cache, fetcher), pool)
                bot.result_files = ResultFiles(bot.media, observe=metrics.result_files)
            try:
                # The endpoints outlive the bot's close: /healthz says it is shutting down. The
                # lease outlives it too (the close's refunds are written under it), and so
                # does hearing the other processes (calls ridden on end during the close).
                async with (
                    endpoints,
                    kept(lease, bot),
                    sharing.running(),
                    bot,
                    retention.running(after=bot.wait_until_ready),
                ):
                    yield bot
            finally:
                # The bot's sends end first, then the audio jobs, then the files they held.
                if pool is not None:
                    await pool.close()
                if cache is not None:
                    await cache.close()
    finally:
        if lease is not None:
            await lease.release()
        await store.close()
    if lease is not None and lease.lost.is_set():
        raise LeaseLostError(lease.id)


@contextlib.asynccontextmanager
async def kept(lease: ProcessLease | None, bot: StemBot) -> AsyncIterator[None]:
    """Renew ``lease`` while the bot runs; a lease lost stops the bot (`stembot run` then
    exits with status 1, and its supervisor starts it again with a new lease)."""
    if lease is None:
        yield
        return

    stopping: list[asyncio.Future[None]] = []

    async def keep() -> None:
        await lease.keep()
        if lease.lost.is_set():
            # A task of its own: the close must not be cut short with the keeper.
            stopping.append(asyncio.ensure_future(bot.close()))

    keeper = asyncio.create_task(keep(), name="lease")
    try:
        yield
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        await asyncio.gather(*stopping)


def http_endpoints(
    settings: Settings, metrics: Metrics, health: Health, *, serve: bool
) -> AbstractAsyncContextManager[None]:
    """/metrics and /healthz while the bot runs, when STEMBOT_HTTP_PORT asks for them."""
    if settings.http_port is None or not serve:
        return contextlib.nullcontext()
    return serving(settings.http_host, settings.http_port, metrics, health)


def remix_event_desk(
    bot: StemBot, store: LedgerStore, service: StemService, settings: Settings
) -> RemixEventDesk:
    """Remix events: the service (its paid calls through ``service``, the track read again
    from Discord), the card's throttled edits, the end and the auto-close."""
    cards = CardUpdates(bot, service.costs)
    events = RemixEventService(
        store,
        service,
        TrackResolver(bot, service),
        result_ttl_s=settings.result_ttl_s,
        on_change=cards.on_change,
    )
    ender = EventEnder(bot, events, cards)
    return RemixEventDesk(events, cards, ender, EventCloser(events, ender))


async def open_stem_cache(settings: Settings) -> StemCache | None:
    """The stem cache, or None (logged) when its folder cannot be used: nothing the bot does
    today depends on it, so it must not stop the bot from starting."""
    try:
        return await StemCache.open(settings.cache_path, settings.cache_max_bytes)
    except OSError as error:
        log.error(
            "the stem cache at %s cannot be used (%s); set STEMBOT_CACHE_DIR to a writable folder",
            settings.cache_path.absolute(),
            error.strerror or type(error).__name__,
        )
        return None


async def run_bot(settings: Settings, *, force_sync: bool = False, stay: bool = True) -> None:
    assert settings.discord_token is not None
    async with built_bot(settings, force_sync=force_sync) as bot:
        if not stay:
            # login() runs setup_hook, which syncs (forced here); nothing else is started.
            await bot.login(settings.discord_token.reveal())
            return
        stop_on_signals(bot)
        await bot.start(settings.discord_token.reveal())
    log.info("stopped")


def stop_on_signals(bot: StemBot) -> None:
    """SIGTERM/SIGINT: stop taking requests, finish or mark running requests, close cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(bot.close()))
