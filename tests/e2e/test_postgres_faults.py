"""PostgreSQL's connections cut under a running bot (issue 14, item 4): every connection the
bot holds is terminated by the server, again and again, while members' requests go through
every step (reserved, queued, running, settled). The pool opens new ones; every member gets
one final answer; a request in the middle is retried or refunded, never charged twice, and
none is left in progress."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.e2e.stack import Stack, eventually, final_answer, running_stack
from tests.postgres import admin_url, fresh_database
from tests.standins.discord import InteractionRecord

pytestmark = pytest.mark.slow

CUTS_EVERY_S = 0.4


@contextlib.asynccontextmanager
async def cutting_connections(url: str) -> AsyncIterator[list[int]]:
    """Terminate every connection to the database of ``url`` every CUTS_EVERY_S, as a
    restarting server or a broken network does, until the block ends; yields the count."""
    name = urlsplit(url).path.lstrip("/")
    cut: list[int] = []

    def cut_all() -> int:
        with psycopg.connect(admin_url(), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            ).fetchall()
        return len(rows)

    async def keep_cutting() -> None:
        while True:
            cut.append(await asyncio.to_thread(cut_all))
            await asyncio.sleep(CUTS_EVERY_S)

    task = asyncio.create_task(keep_cutting())
    try:
        yield cut
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def ledger(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.encode()).fetchall()


async def test_connections_cut_again_and_again_lose_no_request_and_charge_once(
    tmp_path: Path,
) -> None:
    """16 members ask while every connection is cut every 0.4 s: each hears one final answer
    (stems, or a refusal or failure at no cost), none is left in progress, and exactly those
    with stems were charged, once each."""
    with fresh_database(admin_url()) as url:
        env = {"STEMBOT_DATABASE_URL": url, "STEMBOT_MAX_CONCURRENT_JOBS": "3"}
        async with running_stack(tmp_path / "unused.db", env, api_latency=0.3) as stack:
            interactions = await _requests_while_cutting(stack, url)
            await eventually(lambda: all(final_answer(i) for i in interactions), timeout_s=60)
            await eventually(
                lambda: (
                    not ledger(url, "SELECT 1 FROM requests WHERE status IN ('queued', 'running')")
                ),
                timeout_s=30,
            )
            told = [final_answer(i) for i in interactions]
            charged = ledger(
                url,
                "SELECT interaction_id, cost FROM requests WHERE cost > 0 AND status = 'succeeded'",
            )
            with_stems = {i.id for i in interactions if final_answer(i) == "stems"}
            assert {int(str(row[0])) for row in charged} == with_stems, told
            assert all(int(str(row[1])) == 1 for row in charged)
            assert told.count("stems") >= len(interactions) // 4, told
            assert len(stack.api.requests) >= len(with_stems)


async def _requests_while_cutting(stack: Stack, url: str) -> list[InteractionRecord]:
    interactions = []
    async with cutting_connections(url) as cut:
        for n in range(16):
            member = stack.discord.add_member(stack.guild, f"member {n}")
            interactions.append(await stack.stems("vocals", member=member))
            await asyncio.sleep(0.12)
        await asyncio.sleep(1.0)  # settles and refunds meet the cuts too
    assert len(cut) >= 5 and sum(cut) >= 5, cut
    return interactions
