"""A crash and a graceful stop: nothing lost, everything refunded once, nothing re-run."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stembot.config import QuotaPolicy
from stembot.models import JobStatus
from stembot.store import Store
from tests.e2e.stack import (
    API_KEY,
    WAV,
    BotProcess,
    channel_posts,
    eventually,
    new_gateway_session,
    stack_env,
)
from tests.standins.discord import DiscordEmulator
from tests.standins.soundverse import SoundverseStandin

pytestmark = pytest.mark.slow


async def test_sigkill_mid_job_is_reported_and_refunded_after_restart(tmp_path: Path) -> None:
    """A bot killed while the API works is told of on restart: notice in channel, one refund."""
    db = tmp_path / "stembot.db"
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY, latency=60) as api:
        guild = await discord.add_guild()
        member = discord.add_member(guild, "alice")
        env = stack_env(discord, api, db)
        first = BotProcess(env, tmp_path / "bot.log")
        await first.start()
        try:
            await discord.wait_ready(timeout_s=20)
            session = discord.gateway.current
            attachment = discord.upload_attachment(WAV, "song.wav", "audio/wav")
            interaction = await discord.slash(
                "stems vocals",
                member=member,
                channel=guild.default_channel,
                options={"file": attachment},
            )
            await discord.acknowledged(interaction)
            await eventually(lambda: len(api.requests) == 1)
        finally:
            first.signal(signal.SIGKILL)
            await first.wait()
        api.latency = 0
        second = BotProcess(env, tmp_path / "bot.log")
        await second.start()
        try:
            await new_gateway_session(discord, session)
            await eventually(lambda: channel_posts(discord, guild.default_channel))
        finally:
            second.signal(signal.SIGTERM)
            assert await second.wait() == 0, second.log_text()
        (notice,) = channel_posts(discord, guild.default_channel)
        assert notice.content == f"<@{member.id}>"
        assert "not charged" in str(notice.embeds[0]).lower()
        assert len(api.requests) == 1  # nothing re-run behind the user's back
    store = Store.open(db, QuotaPolicy())
    job = store.get_job(1)
    assert job is not None and job.status is JobStatus.INTERRUPTED
    assert store.quota_status(guild.id, member.id, datetime.now(UTC)).guild_daily.used == 0
    assert store.recover_interrupted(datetime.now(UTC)) == []


async def test_sigterm_interrupts_queued_jobs_and_exits_cleanly(tmp_path: Path) -> None:
    """SIGTERM with one job running and one queued: both are answered and refunded; exit 0."""
    db = tmp_path / "stembot.db"
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY, latency=60) as api:
        guild = await discord.add_guild()
        alice, bob = discord.add_member(guild, "alice"), discord.add_member(guild, "bob")
        env = {
            **stack_env(discord, api, db),
            "STEMBOT_MAX_CONCURRENT_JOBS": "1",
            "STEMBOT_API_TIMEOUT_S": "60",
            "STEMBOT_SHUTDOWN_GRACE_S": "0.5",
        }
        bot = BotProcess(env, tmp_path / "bot.log")
        await bot.start()
        await discord.wait_ready(timeout_s=20)
        interactions = []
        for member in (alice, bob):
            attachment = discord.upload_attachment(WAV, "song.wav", "audio/wav")
            interactions.append(
                await discord.slash(
                    "stems vocals",
                    member=member,
                    channel=guild.default_channel,
                    options={"file": attachment},
                )
            )
            await discord.acknowledged(interactions[-1])
        await eventually(lambda: len(api.requests) == 1)
        bot.signal(signal.SIGTERM)
        assert await bot.wait() == 0, bot.log_text()
        for interaction in interactions:
            final = interaction.view().original
            assert final is not None and "restarted" in str(final["embeds"][0]).lower()
    store = Store.open(db, QuotaPolicy())
    statuses = {store.get_job(n).status for n in (1, 2)}  # type: ignore[union-attr]
    assert statuses == {JobStatus.INTERRUPTED}
    assert store.quota_status(guild.id, None, datetime.now(UTC)).guild_daily.used == 0


async def test_a_cancel_button_from_before_a_crash_still_answers(tmp_path: Path) -> None:
    """After a restart, Cancel on an old status message gets an answer, not "did not respond"."""
    db = tmp_path / "stembot.db"
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY, latency=60) as api:
        guild = await discord.add_guild()
        alice, bob = discord.add_member(guild, "alice"), discord.add_member(guild, "bob")
        env = {**stack_env(discord, api, db), "STEMBOT_MAX_CONCURRENT_JOBS": "1"}
        first = BotProcess(env, tmp_path / "bot.log")
        await first.start()
        try:
            await discord.wait_ready(timeout_s=20)
            session = discord.gateway.current
            for member in (alice, bob):
                attachment = discord.upload_attachment(WAV, f"{member.id}.wav", "audio/wav")
                queued = await discord.slash(
                    "stems vocals",
                    member=member,
                    channel=guild.default_channel,
                    options={"file": attachment},
                )
            await eventually(lambda: "Cancel" in str(queued.view().original), timeout_s=15)
        finally:
            first.signal(signal.SIGKILL)
            await first.wait()
        second = BotProcess(env, tmp_path / "bot.log")
        await second.start()
        try:
            await new_gateway_session(discord, session)
            assert queued.original is not None
            (cancel,) = [
                c["custom_id"]
                for row in queued.original.components
                for c in row["components"]
                if c.get("label") == "Cancel"
            ]
            click = await discord.click(queued.original, cancel, member=bob)
            await discord.acknowledged(click)
            await eventually(lambda: click.view().original or click.view().followups)
        finally:
            second.signal(signal.SIGTERM)
            assert await second.wait() == 0, second.log_text()
        answer = click.view().original or click.view().followups[0]
        assert "already ended" in answer["content"]
        assert len(api.requests) == 1
