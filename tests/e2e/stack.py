"""The real bot, started through its own entry point, against the loopback Discord and the
local Soundverse stand-in. Used by the end-to-end tests and the event benchmark."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stembot.bot.client import StemBot
from stembot.bot.endpoints import current_discord_endpoints, use_discord_endpoints
from stembot.cli.run import built_bot
from stembot.config import Settings, load_settings
from stembot.models import RequestStatus
from stembot.store import Store
from tests.standins.discord import (
    EPHEMERAL,
    LOADING,
    Channel,
    DiscordEmulator,
    Guild,
    InteractionRecord,
    Member,
    MessageRecord,
)
from tests.standins.soundverse import SoundverseStandin, make_wav

API_KEY = "sv-test-key-0123456789"
WAV = make_wav()


@dataclass
class Stack:
    discord: DiscordEmulator
    api: SoundverseStandin
    bot: StemBot
    settings: Settings
    guild: Guild
    channel: Channel
    member: Member
    _ledgers: list[Store] = field(default_factory=list)

    def ledger(self) -> Store:
        """A second connection to the bot's database, for reading what it recorded (a new one
        each time, so it sees a replaced file; all closed with the stack)."""
        store = Store.open(self.settings.db_path, self.settings.quota)
        self._ledgers.append(store)
        return store

    def close_ledgers(self) -> None:
        while self._ledgers:
            self._ledgers.pop().close()

    def upload(
        self, filename: str = "song.wav", content_type: str = "audio/wav", data: bytes = WAV
    ) -> dict[str, Any]:
        return self.discord.upload_attachment(data, filename, content_type, channel=self.channel)

    async def stems(
        self,
        mode: str = "vocals",
        *,
        member: Member | None = None,
        options: dict[str, Any] | None = None,
        age_s: float = 0.0,
    ) -> InteractionRecord:
        """Run `/stems <mode>` with ``options`` (default: a fresh WAV attachment)."""
        return await self.discord.slash(
            f"stems {mode}",
            member=member or self.member,
            channel=self.channel,
            options={"file": self.upload()} if options is None else options,
            age_s=age_s,
        )

    async def answer(
        self, interaction: InteractionRecord, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """The message the user finally sees once the request is over (status updates skipped)."""
        await eventually(lambda: _is_answer(interaction), timeout_s)
        original = interaction.view().original
        assert original is not None
        return original

    async def refusal(self, interaction: InteractionRecord, timeout_s: float = 10.0) -> str:
        """The private (ephemeral) text the user got instead of a result; fails if public."""
        await eventually(lambda: _private_texts(interaction), timeout_s)
        (text,) = _private_texts(interaction)
        view = interaction.view()
        public = [m for m in [view.original, *view.followups] if m and not m["flags"] & EPHEMERAL]
        assert not public, f"a refusal left public messages: {public}"
        return text

    def api_calls(self) -> int:
        return len(self.api.requests)


# --- what a test asks of a message or the ledger ----------------------------------------


def description(message: dict[str, Any]) -> str:
    embeds = message.get("embeds") or []
    return str(embeds[0].get("description", "")) if embeds else ""


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for row in message.get("components") or [] for c in row.get("components", [])]


def is_result(message: dict[str, Any]) -> bool:
    """Stems delivered: link buttons only, and not a status that promises an update."""
    links = buttons(message)
    return bool(links) and all(b.get("url") for b in links) and not _promises_update(message)


def used_today(stack: Stack, member_id: int | None = None) -> int:
    """Units the stack's guild has been charged today, from the bot's own ledger."""
    status = stack.ledger().quotas.quota_status(stack.guild.id, member_id, datetime.now(UTC))
    return status.guild_daily.used


def request_status(stack: Stack, request_id: int) -> RequestStatus | None:
    request = stack.ledger().ledger.get_request(request_id)
    return None if request is None else request.status


def acked_in_time(interaction: InteractionRecord) -> bool:
    return interaction.acked_at is not None and interaction.acked_at <= interaction.ack_deadline


def _promises_update(message: dict[str, Any]) -> bool:
    return STATUS_PROMISE in description(message)


def channel_posts(discord: DiscordEmulator, channel: Channel) -> list[MessageRecord]:
    """Plain messages in a channel (type 0), not the interaction responses that live there."""
    return [m for m in discord.channel_messages(channel) if m.data.get("type", 0) == 0]


def _private_texts(interaction: InteractionRecord) -> list[str]:
    view = interaction.view()
    messages = [m for m in [view.original, *view.followups] if m is not None]
    return [str(m.get("content", "")) for m in messages if m.get("flags", 0) & EPHEMERAL]


def _is_answer(interaction: InteractionRecord) -> bool:
    """Not "thinking", not a status that promises an update."""
    original = interaction.view().original
    if original is None or original.get("flags", 0) & LOADING:
        return False
    return not _promises_update(original)


STATUS_PROMISE = "I'll update this message"


def final_answer(interaction: InteractionRecord) -> str | None:
    """What the member was finally told: "stems", "failed" (refunded) or "refused", or None
    while it is still thinking or promising an update."""
    view = interaction.view()
    if any(m["flags"] & EPHEMERAL for m in view.followups if m):
        return "refused"
    original = view.original
    if original is None or original.get("flags", 0) & LOADING:
        return None
    if original.get("flags", 0) & EPHEMERAL:
        return "refused"
    if is_result(original):
        return "stems"
    return None if STATUS_PROMISE in description(original) else "failed"


async def vocals(
    discord: DiscordEmulator, guild: Guild, member: Member, track: Mapping[str, Any]
) -> InteractionRecord:
    """`/stems vocals` with an uploaded ``track``, run by ``member`` in the server's channel."""
    return await discord.slash(
        "stems vocals", member=member, channel=guild.default_channel, options={"file": track}
    )


def stack_env(discord: DiscordEmulator, api: SoundverseStandin, db_path: Path) -> dict[str, str]:
    return {
        "DISCORD_TOKEN": discord.token,
        "DISCORD_API_BASE": discord.api_base,
        "DISCORD_GATEWAY_URL": discord.gateway_url,
        "SOUNDVERSE_API_KEY": API_KEY,
        "SOUNDVERSE_API_BASE": api.base_url,
        "STEMBOT_DB_PATH": str(db_path),
        # Every server here is on loopback.
        "STEMBOT_ALLOW_PRIVATE_URLS": "true",
        "STEMBOT_API_TIMEOUT_S": "5",
        # Links only unless a test is about the files (MEDIA_ENV): most tests read the links
        # result, which the files would replace a moment later.
        "STEMBOT_ATTACH_STEMS": "false",
    }


# A stack whose results gain their files, picture and mixes (one audio worker).
MEDIA_ENV: dict[str, str] = {"STEMBOT_ATTACH_STEMS": "true", "STEMBOT_AUDIO_WORKERS": "1"}


async def run_stembot(
    env: Mapping[str, str],
    *args: str,
    env_file: str | Path = os.devnull,
    cwd: Path | None = None,
    timeout_s: float = 60.0,
) -> tuple[int, str]:
    """Run one `stembot` command as an operator would, to its end: exit status and everything
    it printed (stdout and stderr together)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stembot",
        "--env-file",
        str(env_file),
        *args,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


@contextlib.asynccontextmanager
async def running_stack(
    db_path: Path,
    env: Mapping[str, str] | None = None,
    *,
    api_latency: float = 0.0,
    discord: DiscordEmulator | None = None,
) -> AsyncIterator[Stack]:
    """Start both stand-ins and the real bot; stop and close everything afterwards."""
    previous = current_discord_endpoints()
    emulator = discord or DiscordEmulator()
    async with emulator, SoundverseStandin(api_key=API_KEY, latency=api_latency) as api:
        guild = await emulator.add_guild("Remix club")
        member = emulator.add_member(guild, "alice")
        settings = load_settings(
            {**stack_env(emulator, api, db_path), **(env or {})},
            need_discord=True,
            need_soundverse=True,
        )
        try:
            async with built_bot(settings) as bot:
                runner = asyncio.create_task(bot.start(emulator.token))
                await _ready_or_raise(emulator, runner)
                stack = Stack(emulator, api, bot, settings, guild, guild.default_channel, member)
                try:
                    yield stack
                finally:
                    stack.close_ledgers()
                    await bot.close()
                    await runner
        finally:
            use_discord_endpoints(*previous)


@contextlib.asynccontextmanager
async def bot_connected(emulator: DiscordEmulator, settings: Settings) -> AsyncIterator[StemBot]:
    """The real bot built from ``settings`` on an already running emulator, which may have
    served an earlier bot (a restart on the same Discord); stopped and closed afterwards."""
    previous = current_discord_endpoints()
    earlier = emulator.gateway.current
    try:
        async with built_bot(settings) as bot:
            runner = asyncio.create_task(bot.start(emulator.token))
            await _ready_or_raise(emulator, runner)
            new_session = asyncio.create_task(new_gateway_session(emulator, earlier))
            await asyncio.wait({new_session, runner}, return_when=asyncio.FIRST_COMPLETED)
            if runner.done():
                new_session.cancel()
                runner.result()
                raise RuntimeError("the bot stopped before it was ready")
            new_session.result()
            try:
                yield bot
            finally:
                await bot.close()
                await runner
    finally:
        use_discord_endpoints(*previous)


async def _ready_or_raise(emulator: DiscordEmulator, runner: asyncio.Task[None]) -> None:
    """Wait for READY; if the bot dies first, raise its error instead of timing out."""
    ready = asyncio.create_task(emulator.wait_ready())
    await asyncio.wait({ready, runner}, return_when=asyncio.FIRST_COMPLETED)
    if runner.done():
        ready.cancel()
        runner.result()
        raise RuntimeError("the bot stopped before it was ready")
    ready.result()


class BotProcess:
    """The bot as a real OS process (`python -m stembot run`), for crash and signal tests."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        log_through_pipe: bool = False,
        module: str = "stembot",
    ) -> None:
        """``log_through_pipe``: the bot writes its log to a pipe that this process copies to
        ``log_path``, so that a limit on the bot's file writes does not silence its log.
        ``module``: run this one instead (the event benchmark's floor bot), the same way."""
        self._env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        self._module = module
        self._log_path = log_path
        self._log_through_pipe = log_through_pipe
        self._copier: asyncio.Task[None] | None = None
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, *args: str) -> None:
        """Start `stembot run` (or the command ``args``)."""
        log = self._log_path.open("ab")
        out: Any = asyncio.subprocess.PIPE if self._log_through_pipe else log
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self._module,
            "--env-file",
            os.devnull,
            *(args or ("run",)),
            env=self._env,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT if self._log_through_pipe else log,
            stdin=asyncio.subprocess.DEVNULL,
        )
        log.close()
        if self._log_through_pipe:
            self._copier = asyncio.create_task(self._copy_log())

    async def _copy_log(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with self._log_path.open("ab") as log:
            async for line in self.process.stdout:
                log.write(line)
                log.flush()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait(self, timeout_s: float = 20.0) -> int:
        assert self.process is not None
        status = await asyncio.wait_for(self.process.wait(), timeout_s)
        if self._copier is not None:
            await asyncio.wait_for(self._copier, timeout_s)
        return status

    def log_text(self) -> str:
        return self._log_path.read_text(errors="replace")


async def eventually(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Wait until ``condition()`` is true: the bot's effects arrive over the wire, later."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling what another task or process changes
            await asyncio.sleep(0.02)


async def new_gateway_session(
    emulator: DiscordEmulator, old: object, timeout_s: float = 20.0
) -> None:
    """Wait until a client other than ``old`` has identified (a restarted bot)."""
    gateway = emulator.gateway
    await eventually(lambda: gateway.current is not None and gateway.current is not old, timeout_s)
