"""`stembot healthcheck`: exit 0 while the bot is healthy, 1 otherwise (Docker's HEALTHCHECK;
the image needs no curl).

With STEMBOT_HTTP_PORT set it asks the running bot's /healthz (every shard connected, the
database answering, still taking requests). Without it there is nothing to ask, so it does
what the image did before the endpoint existed: healthy while the container's main process
(PID 1) is a running `stembot run`, neither a zombie nor stopped.
"""

from __future__ import annotations

import argparse
import http.client
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stembot.config import load_settings
from stembot.errors import ConfigError

HEALTHY, UNHEALTHY = 0, 1
# Within the image HEALTHCHECK's --timeout (5 s), so the answer says why.
TIMEOUT_S = 4.0
# An address that listens everywhere is asked on the loopback of its family.
_LOOPBACK_OF = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104
CONTAINER_MAIN_PROCESS = Path("/proc/1")


def register(subparsers: Any) -> None:
    check = subparsers.add_parser(
        "healthcheck",
        help="exit 0 while the running bot is healthy, 1 otherwise (for Docker's HEALTHCHECK)",
        description=(
            "Ask the running bot's /healthz on STEMBOT_HTTP_HOST:STEMBOT_HTTP_PORT: exit 0 when "
            "every shard is connected and the database answers, 1 otherwise. Without "
            "STEMBOT_HTTP_PORT: exit 0 while the container's main process is `stembot run`."
        ),
    )
    check.set_defaults(handler=handle_healthcheck)


def handle_healthcheck(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    # Only 0 and 1 mean something to Docker: a settings problem is "unhealthy", said why.
    try:
        settings = load_settings(env)
    except ConfigError as error:
        print(f"unhealthy: {error.user_message}")
        return UNHEALTHY
    if settings.http_port is None:
        return _by_process(CONTAINER_MAIN_PROCESS)
    return ask_healthz(settings.http_host, settings.http_port)


def ask_healthz(host: str, port: int, timeout_s: float = TIMEOUT_S) -> int:
    """HEALTHY when /healthz answers 200; prints one line saying what it answered."""
    connection = http.client.HTTPConnection(_LOOPBACK_OF.get(host, host), port, timeout=timeout_s)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as error:
        print(f"unhealthy: no answer from /healthz on {host} port {port} ({_why(error)})")
        return UNHEALTHY
    finally:
        connection.close()
    report = _report(body)
    if report is None:
        print(f"unhealthy: port {port} answered {response.status}, but not as stembot does")
        return UNHEALTHY
    if response.status == 200 and report.get("status") == "ok":
        connected = ", ".join(map(str, report["shards"]["connected"]))
        print(f"healthy: shard(s) {connected} connected, database reachable")
        return HEALTHY
    problems = "; ".join(map(str, report.get("problems") or ["no reason given"]))
    print(f"unhealthy: /healthz answered {response.status}: {problems}")
    return UNHEALTHY


def _report(body: bytes) -> dict[str, Any] | None:
    """stembot's health report, or None for any other answer."""
    try:
        report = json.loads(body)
        connected = report["shards"]["connected"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(report, dict) or not isinstance(connected, list):
        return None
    return report


def _why(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return type(error).__name__


def _by_process(process: Path) -> int:
    if bot_process_running(process):
        print("healthy: stembot run is running (no STEMBOT_HTTP_PORT: process check only)")
        return HEALTHY
    print("unhealthy: the main process is not a running `stembot run`")
    return UNHEALTHY


def bot_process_running(process: Path) -> bool:
    """``process`` (a /proc/<pid> folder) runs `stembot run` and is not a zombie or stopped."""
    try:
        argv = (process / "cmdline").read_bytes().split(b"\0")
        stat = (process / "stat").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(b")", 1)[1].split()[0]
    is_bot = any(arg.endswith(b"/stembot") for arg in argv) and b"run" in argv
    return is_bot and state not in (b"Z", b"T", b"t")
