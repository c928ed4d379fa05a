"""`stembot healthcheck` against what can answer on its port: stembot's /healthz healthy or
not, another program, nothing at all; and settings it cannot read. Docker reads only 0 and 1.
(Against the real bot: tests/e2e/test_operations.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from stembot.cli import main
from stembot.cli.healthcheck import ask_healthz

HEALTHY_BODY = {
    "status": "ok",
    "shards": {"expected": [0, 1], "connected": [0, 1]},
    "database": "reachable",
    "accepting_requests": True,
    "problems": [],
}
UNHEALTHY_BODY = {
    **HEALTHY_BODY,
    "status": "unavailable",
    "database": "unreachable",
    "problems": ["database unreachable"],
}


@contextlib.asynccontextmanager
async def answering(status: int, body: Any, *, host: str = "127.0.0.1") -> AsyncIterator[int]:
    """An HTTP server on a free port whose /healthz answers ``status`` with ``body``."""

    async def healthz(request: web.Request) -> web.Response:
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def check(port: int, host: str = "127.0.0.1") -> int:
    return await asyncio.to_thread(ask_healthz, host, port, 5.0)


async def test_healthy_answer_exits_0_and_says_which_shards(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with answering(200, HEALTHY_BODY) as port:
        assert await check(port) == 0
    assert capsys.readouterr().out == "healthy: shard(s) 0, 1 connected, database reachable\n"


async def test_unhealthy_answer_exits_1_with_its_problems(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with answering(503, UNHEALTHY_BODY) as port:
        assert await check(port) == 1
    assert capsys.readouterr().out == "unhealthy: /healthz answered 503: database unreachable\n"


@pytest.mark.parametrize(
    ("status", "body"), [(200, "OK"), (200, {"status": "ok"}), (404, "Not Found")]
)
async def test_another_program_on_the_port_is_not_healthy(
    capsys: pytest.CaptureFixture[str], status: int, body: Any
) -> None:
    async with answering(status, body) as port:
        assert await check(port) == 1
    assert "but not as stembot does" in capsys.readouterr().out


async def test_nothing_listening_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as holder:  # bound, never listening: connections are refused
        holder.bind(("127.0.0.1", 0))
        assert await check(holder.getsockname()[1]) == 1
    assert capsys.readouterr().out.startswith("unhealthy: no answer from /healthz on 127.0.0.1")


async def test_a_bot_listening_everywhere_is_asked_on_the_loopback() -> None:
    async with answering(200, HEALTHY_BODY, host="127.0.0.1") as port:
        assert await check(port, host="0.0.0.0") == 0


def test_settings_it_cannot_read_exit_1_not_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Docker keeps exit status 2 for itself: a bad setting is "unhealthy", said why."""
    assert main(["healthcheck"], env={"STEMBOT_HTTP_PORT": "eighty"}) == 1
    out = capsys.readouterr().out
    assert out.startswith("unhealthy: invalid settings")
    assert "STEMBOT_HTTP_PORT must be a TCP port number from 1 to 65535" in out


def test_without_the_port_it_checks_the_main_process(capsys: pytest.CaptureFixture[str]) -> None:
    """No STEMBOT_HTTP_PORT: the container's PID 1 must be `stembot run`; here it is not."""
    assert main(["healthcheck"], env={}) == 1
    assert capsys.readouterr().out == "unhealthy: the main process is not a running `stembot run`\n"
