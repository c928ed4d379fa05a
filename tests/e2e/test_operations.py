"""The operator's view of the real bot over the stand-ins (STEMBOT_HTTP_PORT): /metrics moves
with requests, refusals, failures and deliveries; /healthz is 200 while every shard is
connected and the database answers, 503 when Discord's gateway is down, the database file is
gone or the bot is shutting down; `stembot healthcheck` exits 0 or 1 accordingly; a port in use
is one line and exit status 1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.stack import (
    API_KEY,
    Stack,
    eventually,
    is_result,
    run_stembot,
    running_stack,
)
from tests.postgres import fresh_database, let_in
from tests.standins.soundverse import Reply

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def operated_stack(tmp_path: Path, **env: str) -> AsyncIterator[tuple[Stack, int]]:
    """The bot with its HTTP endpoints on a free port of 127.0.0.1 (the default host)."""
    port = free_port()
    settings = {"STEMBOT_HTTP_PORT": str(port), **env}
    async with running_stack(tmp_path / "stembot.db", settings) as stack:
        yield stack, port


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


async def scrape(port: int) -> Samples:
    status, text = await get(port, "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def at(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def healthz(port: int) -> tuple[int, dict[str, Any]]:
    status, text = await get(port, "/healthz")
    return status, json.loads(text)


async def health_becomes(port: int, status: int, timeout_s: float = 20.0) -> dict[str, Any]:
    """Ask /healthz until it answers ``status``; that answer's body."""
    body: dict[str, Any] = {}

    async def answered() -> bool:
        nonlocal body
        now, body = await healthz(port)
        return now == status

    async with asyncio.timeout(timeout_s):
        while not await answered():  # noqa: ASYNC110 - asking another process over HTTP
            await asyncio.sleep(0.1)
    return body


async def healthcheck(port: int) -> tuple[int, str]:
    """`stembot healthcheck` as Docker runs it, in its own process."""
    return await run_stembot({"STEMBOT_HTTP_PORT": str(port)}, "healthcheck")


async def test_metrics_move_with_requests_refusals_failures_and_deliveries(
    tmp_path: Path,
) -> None:
    """A result, a file of the wrong type, a member past their daily units and a call the
    API rejects: each is counted under its outcome, with the API calls, their latency, the
    units spent and the delivery route; the live gauges read the queue and the shard."""
    async with operated_stack(tmp_path, STEMBOT_USER_DAILY_LIMIT="1") as (stack, port):
        before = await scrape(port)
        assert at(before, "stembot_requests_total", outcome="succeeded", shard="0") == 0

        assert is_result(await stack.answer(await stack.stems("vocals")))
        wrong_type = {"file": stack.upload("notes.txt", "text/plain", b"not audio")}
        await stack.refusal(await stack.stems("vocals", options=wrong_type))
        await stack.refusal(await stack.stems("instruments"))  # alice's one unit is spent
        stack.api.fail_next(Reply.artist())
        bob = stack.discord.add_member(stack.guild, "bob")
        assert not is_result(await stack.answer(await stack.stems("vocals", member=bob)))
        await eventually(lambda: stack.api_calls() == 2)

        after = await scrape(port)
        assert at(after, "stembot_requests_total", outcome="succeeded", shard="0") == 1
        assert at(after, "stembot_requests_total", outcome="refused", shard="0") == 2
        assert at(after, "stembot_requests_total", outcome="failed", shard="0") == 1
        assert at(after, "stembot_refusals_total", reason="invalid_source", shard="0") == 1
        assert at(after, "stembot_refusals_total", reason="user_daily", shard="0") == 1
        assert at(after, "stembot_units_spent_total", shard="0") == 1
        assert at(after, "stembot_api_calls_total", mode="vocals", outcome="ok") == 1
        assert at(after, "stembot_api_calls_total", mode="vocals", outcome="rejected") == 1
        assert at(after, "stembot_api_call_seconds_count", mode="vocals") == 2
        assert at(after, "stembot_result_deliveries_total", route="interaction") == 1
        assert at(after, "stembot_calls_waiting") == 0
        assert at(after, "stembot_calls_running") == 0
        assert at(after, "stembot_shard_connected", shard="0") == 1
        assert at(after, "stembot_shard_guilds", shard="0") == 1
        assert at(after, "stembot_accepting_requests") == 1


async def test_metrics_show_no_secret_no_name_and_no_link(tmp_path: Path) -> None:
    async with operated_stack(tmp_path) as (stack, port):
        url = f"{stack.api.base_url}/files/private-track.mp3?signature=s3cr3t"
        await stack.refusal(await stack.stems("vocals", options={"url": url}))
        assert is_result(await stack.answer(await stack.stems("vocals")))
        _, text = await get(port, "/metrics")
        _, health = await get(port, "/healthz")
    for secret in (API_KEY, stack.discord.token, "private-track", "s3cr3t", "song.wav"):
        assert secret not in text and secret not in health
    assert str(stack.guild.id) not in text and str(stack.member.id) not in text


@pytest.mark.slow
async def test_healthz_follows_the_gateway_and_the_healthcheck_command_exits_accordingly(
    tmp_path: Path,
) -> None:
    """Connected: 200 and exit 0. Discord's gateway down (the socket closed, reconnections
    refused): 503 naming the shard, exit 1. Back up: the bot reconnects, 200 again."""
    async with operated_stack(tmp_path) as (stack, port):
        body = await health_becomes(port, 200)
        assert body == {
            "status": "ok",
            "shards": {"expected": [0], "connected": [0]},
            "database": "reachable",
            "accepting_requests": True,
            "problems": [],
        }
        status, said = await healthcheck(port)
        assert (status, said.strip()) == (0, "healthy: shard(s) 0 connected, database reachable")

        await stack.discord.take_gateway_down()
        body = await health_becomes(port, 503)
        assert body["shards"] == {"expected": [0], "connected": []}
        assert body["problems"] == ["shard(s) 0 not connected"]
        status, said = await healthcheck(port)
        assert (status, said.strip()) == (
            1,
            "unhealthy: /healthz answered 503: shard(s) 0 not connected",
        )

        stack.discord.bring_gateway_up()
        await health_becomes(port, 200, timeout_s=60)
        assert is_result(await stack.answer(await stack.stems("vocals")))


async def test_healthz_is_503_when_the_database_file_is_gone(tmp_path: Path) -> None:
    async with operated_stack(tmp_path) as (stack, port):
        await health_becomes(port, 200)
        other = tmp_path / "other.db"
        sqlite3.connect(other).close()
        os.replace(other, stack.settings.db_path)
        body = await health_becomes(port, 503)
        assert body["database"] == "unreachable"
        assert body["problems"] == ["database unreachable"]


async def test_healthz_follows_postgresql_going_away_and_coming_back(
    tmp_path: Path, postgres_url: str
) -> None:
    """The bot on PostgreSQL: 200; the server lets nobody in and ends the bot's sessions: 503
    "database unreachable"; it lets them in again: the pool reconnects, 200 again."""
    with fresh_database(postgres_url) as url:
        async with operated_stack(tmp_path, STEMBOT_DATABASE_URL=url) as (_, port):
            await health_becomes(port, 200)
            let_in(url, allowed=False)
            body = await health_becomes(port, 503)
            assert body["problems"] == ["database unreachable"]
            let_in(url, allowed=True)
            await health_becomes(port, 200)


async def test_while_shutting_down_healthz_says_so_and_the_running_call_finishes(
    tmp_path: Path,
) -> None:
    """SIGTERM's path (bot.close): no new requests, /healthz 503 "shutting down" while the
    running separation is given its grace, and its result still reaches the member."""
    async with operated_stack(tmp_path, STEMBOT_SHUTDOWN_GRACE_S="20") as (stack, port):
        stack.api.hold()
        running = await stack.stems("vocals")
        await eventually(lambda: stack.api_calls() == 1)
        closing = asyncio.create_task(stack.bot.close())
        body = await health_becomes(port, 503)
        assert body["accepting_requests"] is False and "shutting down" in body["problems"]
        metrics = await scrape(port)
        assert at(metrics, "stembot_accepting_requests") == 0
        assert at(metrics, "stembot_calls_running") == 1
        stack.api.release()
        await closing
        assert is_result(await stack.answer(running))


@pytest.mark.slow
async def test_a_port_in_use_is_one_line_and_exit_status_1(tmp_path: Path) -> None:
    with held_port() as port:
        status, output = await run_stembot(
            {
                "DISCORD_TOKEN": "token",
                "SOUNDVERSE_API_KEY": "key",
                "STEMBOT_DB_PATH": str(tmp_path / "stembot.db"),
                "STEMBOT_HTTP_PORT": str(port),
            },
            "run",
        )
    assert status == 1
    [line] = [line for line in output.splitlines() if line.startswith("stembot:")]
    assert line.startswith(f"stembot: cannot serve /metrics and /healthz on 127.0.0.1:{port} (")
    assert "Traceback" not in output


@contextlib.contextmanager
def held_port() -> Iterator[int]:
    """A port another program is listening on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]
