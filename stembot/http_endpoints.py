"""The optional HTTP server (STEMBOT_HTTP_PORT): /metrics for Prometheus and /healthz for
Docker, an orchestrator or a load balancer. Off by default; on 127.0.0.1 unless
STEMBOT_HTTP_HOST says otherwise. It serves only what the bot already knows: a scrape reads
counters and live gauges, a health probe checks the shards and asks the database one trivial
read."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client.aiohttp import make_aiohttp_handler

from stembot.errors import HttpPortError
from stembot.health import Health
from stembot.metrics import Metrics

log = logging.getLogger(__name__)

HEALTHY, UNHEALTHY = 200, 503


@contextlib.asynccontextmanager
async def serving(host: str, port: int, metrics: Metrics, health: Health) -> AsyncIterator[None]:
    """Serve both endpoints until the block ends; HttpPortError when the address is taken."""
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    app.router.add_get("/healthz", _healthz_of(health))
    # No access log: a scrape every few seconds would drown the requests' lines.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as error:
        await runner.cleanup()
        raise HttpPortError(host, port, error.strerror or type(error).__name__) from None
    log.info("serving /metrics and /healthz on %s port %d", host, port)
    try:
        yield
    finally:
        await runner.cleanup()


def _healthz_of(health: Health) -> Handler:
    async def healthz(request: web.Request) -> web.Response:
        report = await health.check()
        return web.json_response(
            report.body(),
            status=HEALTHY if report.healthy else UNHEALTHY,
            headers={"Cache-Control": "no-store"},
        )

    return healthz
