"""`bench_audio --card`: the whole bot, from the API's answer to the card with its files.

The real bot runs as its own process (`python -m stembot run`, STEMBOT_ATTACH_STEMS=true,
``workers`` audio workers) against the loopback Discord (OpenAPI check off) and the Soundverse
stand-in, which serves every stem of `/stems all` (six) ``seconds`` long at 44.1 kHz stereo,
MP3 at 320 kb/s unless told WAV. Each run is one `/stems all` on a new track, so a new stored
result: its stems fetched, analysed, drawn and (where they do not fit) copied anew. A run's
time goes from the stand-in's answer (it answers at once, L = 0: the answer left within a
millisecond of the call's arrival) to the edit that gave the message its stems and picture.
Also measured: the links message after the same answer (it must not wait for the files), the
audio workers' CPU seconds per run and their peak memory (from /proc), the bot's own CPU.

Each boost level runs in a server of its own: 0 (10 MiB uploads: six 4-minute MP3 stems of
9.6 MB do not fit, so each gets a smaller copy made here) and 3 (100 MiB: the API's files go
as they are). A warm-up request with 3-second stems starts the workers first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from stembot.stem_media import COPY_FORMAT
from tests.benchmarks.bench_event import outcome_of, proc_sample, stop_bot
from tests.benchmarks.bot_workers import WorkerUsage, cpu_between, peak_kib, workers_of
from tests.benchmarks.event_audio import files_state
from tests.e2e.stack import API_KEY, WAV, BotProcess, description, stack_env
from tests.standins.discord import DiscordEmulator, Guild, InteractionRecord
from tests.standins.discord.rules import UPLOAD_LIMIT_BY_PREMIUM_TIER
from tests.standins.soundverse import STEMS_BY_PATH, SoundverseStandin
from tests.standins.stem_audio import AudioFormat

ALL_STEMS_PATH = "/v1/generate/stem-separation/all-stems"
ALL_STEMS = STEMS_BY_PATH[ALL_STEMS_PATH]
WARM_UP_SECONDS = 3.0
RUN_TIMEOUT_S = 600.0
TARGET_S = 10.0
MiB = 1024 * 1024


@dataclass(frozen=True)
class CardRun:
    links_ms: float  # the API's answer -> the links message
    card_s: float  # the API's answer -> the edit with the stems and the picture
    stems_attached: int
    copies: int  # stems attached as a smaller copy made here (not the API's file)
    attached_mb: float
    worker_cpu_s: float
    bot_cpu_s: float


async def measure_card(
    *, workers: int, audio_format: AudioFormat, seconds: float, runs: int, tiers: Sequence[int]
) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-card-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            discord = await stack.enter_async_context(DiscordEmulator(validate_spec=False))
            api = await stack.enter_async_context(SoundverseStandin(api_key=API_KEY))
            print(
                f"making the stand-in's {len(ALL_STEMS)} stems ({seconds:g} s {audio_format}) "
                f"before the bot starts ..."
            )
            for stems_seconds in (WARM_UP_SECONDS, seconds):
                api.serve_stems(audio_format, seconds=stems_seconds)
                await fetch_every_stem(api)
            env = {
                **stack_env(discord, api, Path(tmp) / "stembot.db"),
                "STEMBOT_ATTACH_STEMS": "true",
                "STEMBOT_AUDIO_WORKERS": str(workers),
            }
            bot = BotProcess(env, Path(tmp) / "stembot.log")
            await bot.start()
            try:
                await discord.wait_ready(timeout_s=30)
                guilds = {
                    tier: await discord.add_guild(f"Boost {tier}", premium_tier=tier)
                    for tier in tiers
                }
                api.serve_stems(audio_format, seconds=WARM_UP_SECONDS)
                await one_card(discord, api, guilds[tiers[0]], bot.pid)
                api.serve_stems(audio_format, seconds=seconds)
                print(
                    f"the card of a {seconds:g} s, {len(ALL_STEMS)}-stem {audio_format} result "
                    f"(44.1 kHz stereo), {workers} audio worker(s), load average "
                    f"{os.getloadavg()[0]:.1f}:"
                )
                for tier in tiers:
                    done = [
                        await one_card(discord, api, guilds[tier], bot.pid) for _ in range(runs)
                    ]
                    print_tier(tier, done)
                print(
                    f"largest worker's peak RSS {peak_kib(workers_of(bot.pid)) / 1024:.0f} MiB, "
                    f"the bot's {proc_sample(bot.pid).hwm_kib / 1024:.0f} MiB; "
                    f"target: the card within {TARGET_S:g} s of the API's answer"
                )
            finally:
                await stop_bot(bot)


async def fetch_every_stem(api: SoundverseStandin) -> None:
    """One call and every stem it gives, as the bot would fetch them: the stand-in encodes a
    stem on its first download and keeps it, so no timed run waits for an encoder."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as session:
        async with session.post(
            f"{api.base_url}{ALL_STEMS_PATH}", json={"audioUrl": "https://example.invalid/a.wav"}
        ) as answer:
            answer.raise_for_status()
            stems = await answer.json()

        async def fetch(url: str) -> None:
            async with session.get(url) as response:
                response.raise_for_status()
                await response.read()

        await asyncio.gather(*(fetch(stem["audioUrl"]) for stem in stems))


async def one_card(
    discord: DiscordEmulator, api: SoundverseStandin, guild: Guild, pid: int
) -> CardRun:
    """One `/stems all` on a new track in ``guild``, timed from the API's answer to its card."""
    member = discord.add_member(guild, f"member-{len(api.requests)}")
    # A new attachment: a new source, so a new stored result with nothing cached.
    track = discord.upload_attachment(WAV, "track.wav", "audio/wav", channel=guild.default_channel)
    calls_before = len(api.requests)
    workers_before: dict[int, WorkerUsage] = workers_of(pid)
    bot_before = proc_sample(pid).cpu_s
    record = await discord.slash(
        "stems all", member=member, channel=guild.default_channel, options={"file": track}
    )
    await carded(record, RUN_TIMEOUT_S)
    (call,) = api.requests[calls_before:]
    # The stand-in's clock is monotonic, the emulator's is the wall clock; both run here.
    answered_at = call.received_at + (time.time() - time.monotonic())
    outcome = outcome_of(record)
    assert outcome.answered_at is not None
    state = files_state(record, outcome.answered_at)
    assert record.original is not None and state.files_at is not None
    attachments = record.original.attachments
    stems = [a for a in attachments if not str(a["filename"]).endswith(".png")]
    return CardRun(
        links_ms=(outcome.answered_at - answered_at) * 1000,
        card_s=state.files_at - answered_at,
        stems_attached=state.stems,
        copies=sum(str(a["filename"]).endswith(f".{COPY_FORMAT}") for a in stems),
        attached_mb=sum(int(a.get("size", 0)) for a in attachments) / 1e6,
        worker_cpu_s=cpu_between(workers_before, workers_of(pid)),
        bot_cpu_s=proc_sample(pid).cpu_s - bot_before,
    )


async def carded(record: InteractionRecord, timeout_s: float) -> None:
    """Wait until the result's message carries its files; raise if it settles without."""
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        outcome = outcome_of(record)
        if outcome.kind not in ("pending", "result"):
            raise RuntimeError(f"the request did not give a result: {outcome.kind}")
        if outcome.answered_at is not None:
            state = files_state(record, outcome.answered_at)
            if state.files_at is not None:
                return
            if state.settled_at is not None and record.original is not None:
                said = description(record.original.data)
                raise RuntimeError(f"the result's files could not be attached: {said[-300:]}")
        await asyncio.sleep(0.05)
    raise TimeoutError("the card did not come in time")


def print_tier(tier: int, runs: Sequence[CardRun]) -> None:
    limit = UPLOAD_LIMIT_BY_PREMIUM_TIER[tier] / MiB
    print(f"  boost level {tier} ({limit:g} MiB uploads):")
    for k, run in enumerate(runs, 1):
        print(
            f"    run {k}: links {run.links_ms:.0f} ms, card {run.card_s:.1f} s "
            f"({run.stems_attached} stems, {run.copies} smaller copies, {run.attached_mb:.1f} MB), "
            f"worker CPU {run.worker_cpu_s:.1f} s, bot CPU {run.bot_cpu_s:.2f} s"
        )

    def median(values: Sequence[float]) -> float:
        return statistics.median(values)

    print(
        f"    median of {len(runs)}: links {median([r.links_ms for r in runs]):.0f} ms, "
        f"card {median([r.card_s for r in runs]):.1f} s, "
        f"worker CPU {median([r.worker_cpu_s for r in runs]):.1f} s, "
        f"bot CPU {median([r.bot_cpu_s for r in runs]):.2f} s"
    )
