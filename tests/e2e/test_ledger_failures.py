"""The database fails under a running bot: nobody is left waiting, the operator is told.

Every failure here is real, made the way it happens outside: the bot process's file-size
limit cut to nothing (writes fail with "disk I/O error" as on a full or failing disk), a page
of the ledger overwritten with garbage, the file deleted or replaced. None of them is a mock.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import signal
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stembot.bot import client as bot_client
from stembot.config import QuotaPolicy
from stembot.errors import DatabaseReplacedError, StoreFailedError
from stembot.models import RequestStatus
from stembot.store import Store
from tests.e2e.stack import (
    API_KEY,
    WAV,
    BotProcess,
    eventually,
    is_result,
    running_stack,
    stack_env,
    vocals,
)
from tests.standins.discord import DiscordEmulator, InteractionRecord
from tests.standins.soundverse import SoundverseStandin


def _answered_with_stems(interaction: InteractionRecord) -> bool:
    return is_result(interaction.view().original or {})


@pytest.mark.slow
async def test_a_disk_error_when_the_api_answers_still_delivers_to_everyone(
    tmp_path: Path,
) -> None:
    """The settle fails with a real I/O error: payer and joiner get their stems, the log says
    which request, and once the disk recovers the ledger catches up and requests run again."""
    db = tmp_path / "stembot.db"
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY) as api:
        guild = await discord.add_guild()
        alice, bob, carol = (discord.add_member(guild, n) for n in ("alice", "bob", "carol"))
        bot = BotProcess(stack_env(discord, api, db), tmp_path / "bot.log", log_through_pipe=True)
        await bot.start()
        try:
            await discord.wait_ready(timeout_s=20)
            ledger = Store.open(db, QuotaPolicy())
            track = discord.upload_attachment(WAV, "song.wav", "audio/wav")
            api.hold()
            paying = await vocals(discord, guild, alice, track)
            await eventually(lambda: len(api.requests) == 1)
            joining = await vocals(discord, guild, bob, track)
            await eventually(lambda: ledger.ledger.get_request(2) is not None)
            # From now on every write of the bot process past the first byte of a file fails.
            resource.prlimit(bot.pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
            api.release()
            await eventually(lambda: _answered_with_stems(paying) and _answered_with_stems(joining))
            await eventually(lambda: "settling request 1 failed" in bot.log_text())
            resource.prlimit(
                bot.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
            later = await vocals(discord, guild, carol, track)
            await eventually(lambda: _answered_with_stems(later))
        finally:
            bot.signal(signal.SIGTERM)
            assert await bot.wait() == 0, bot.log_text()
        assert re.search(r" ERROR .*settling request 1 failed.*disk I/O error", bot.log_text())
        # The retried writes landed before the later request: it was answered from the stored
        # result, so the API was called once and alice, who paid, is charged once.
        assert len(api.requests) == 1
        statuses = [ledger.ledger.get_request(n).status for n in (1, 2, 3)]  # type: ignore[union-attr]
        assert statuses == [RequestStatus.SUCCEEDED] * 3
        assert ledger.quotas.quota_status(guild.id, None, datetime.now(UTC)).guild_daily.used == 1
        ledger.close()


def _corrupt_the_requests_table(db: Path) -> None:
    """Overwrite the ledger table's root page with garbage, as a failing disk would."""
    connection = sqlite3.connect(db, isolation_level=None)
    try:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
        (root,) = connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'requests'"
        ).fetchone()
        (page_size,) = connection.execute("PRAGMA page_size").fetchone()
        with db.open("r+b") as file:
            file.seek((root - 1) * page_size)
            file.write(b"\xff" * page_size)
        # A commit of its own makes the bot's connection read its pages from the file again.
        connection.execute(
            "INSERT OR REPLACE INTO command_digests (scope, digest) VALUES ('test', '')"
        )
    finally:
        connection.close()


def _replace_with_an_empty_database(db: Path) -> None:
    other = db.with_name("other.db")
    sqlite3.connect(other).close()
    os.replace(other, db)


BREAKS: dict[str, tuple[Callable[[Path], None], str]] = {
    "a corrupt page": (_corrupt_the_requests_table, StoreFailedError().user_message),
    "the file deleted": (os.unlink, DatabaseReplacedError().user_message),
    "the file replaced": (_replace_with_an_empty_database, DatabaseReplacedError().user_message),
}


@pytest.mark.parametrize("fault", BREAKS.keys())
async def test_a_broken_database_during_a_call_still_delivers_and_refuses_the_next_clearly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    """Broken while the API works: both requesters get the stems, an ERROR names the request,
    and an identical request after it gets a clear private answer instead of joining a
    call that is over."""
    breaking, refusal = BREAKS[fault]
    async with running_stack(tmp_path / "stembot.db") as stack:
        bob, carol = (stack.discord.add_member(stack.guild, n) for n in ("bob", "carol"))
        track = stack.upload()
        stack.api.hold()
        paying = await stack.stems("vocals", options={"file": track})
        await eventually(lambda: stack.api_calls() == 1)
        joining = await stack.stems("vocals", member=bob, options={"file": track})
        await eventually(lambda: stack.ledger().ledger.get_request(2) is not None)
        breaking(stack.settings.db_path)
        stack.api.release()
        for interaction in (paying, joining):
            assert is_result(await stack.answer(interaction))
        later = await stack.stems("vocals", member=carol, options={"file": track})
        assert await stack.refusal(later) == refusal
        assert stack.api_calls() == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(m.startswith("settling request 1 failed") for m in errors), errors


async def test_a_database_deleted_while_idle_stops_new_requests_and_is_not_recreated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Noticed by the periodic check without any request; then members are told privately,
    nothing is spent, and no fresh ledger appears in its place."""
    monkeypatch.setattr(bot_client, "LEDGER_CHECK_INTERVAL_S", 0.1)
    db = tmp_path / "stembot.db"
    async with running_stack(db) as stack:
        os.unlink(db)

        def noticed() -> bool:
            return any(
                r.levelno == logging.ERROR
                and "was deleted while stembot was running" in r.getMessage()
                for r in caplog.records
            )

        await eventually(noticed, timeout_s=5)
        interaction = await stack.stems("vocals")
        assert await stack.refusal(interaction) == DatabaseReplacedError().user_message
        assert stack.api_calls() == 0
        assert not db.exists()
    assert not db.exists()
