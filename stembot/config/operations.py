"""Settings of running the bot: its log level, and /metrics and /healthz over HTTP."""

from __future__ import annotations

from dataclasses import dataclass

from stembot.config import kinds
from stembot.config.declaring import setting
from stembot.config.kinds import Kind
from stembot.config.storage import STORAGE

_OPERATIONS = "Operations (metrics and health over HTTP)"

# fmt: off
# (One setting to a few lines: name, default, kind and section, then its help.)


@dataclass(frozen=True)
class OperationsSettings:
    """Operations: logs, metrics and health."""

    log_level: str = setting(
        "STEMBOT_LOG_LEVEL", "INFO", Kind(kinds.log_level, "one of " + ", ".join(kinds.LOG_LEVELS)),
        STORAGE, ", ".join(kinds.LOG_LEVELS[:-1]) + f" or {kinds.LOG_LEVELS[-1]}.",
    )
    http_port: int | None = setting(
        "STEMBOT_HTTP_PORT", None, Kind(kinds.port, "a TCP port number from 1 to 65535"),
        _OPERATIONS,
        "Serve /metrics (Prometheus) and /healthz (200 or 503) on this port; empty = no HTTP "
        "server. The Docker image sets 8080 for its health check.",
    )
    http_host: str = setting(
        "STEMBOT_HTTP_HOST", "127.0.0.1",
        Kind(kinds.http_host, "an address or host name to listen on"),
        _OPERATIONS,
        "The address /metrics and /healthz listen on: 127.0.0.1 keeps them on this machine "
        "(or container); 0.0.0.0 lets a Prometheus elsewhere scrape them.",
    )

# fmt: on
