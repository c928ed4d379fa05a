"""Point discord.py at the REST API and gateway named in the settings.

Operators set ``DISCORD_API_BASE`` / ``DISCORD_GATEWAY_URL`` to reach Discord through a REST or
gateway proxy; the tests set them to the loopback emulator. What discord.py 2.7 reads:

- REST: every route, the interaction callbacks and webhooks included, is built from the class
  attribute ``discord.http.Route.BASE`` when the ``Route`` is created.
- Gateway, first connect: a plain ``Client``/``commands.Bot`` connects to
  ``DiscordWebSocket.DEFAULT_GATEWAY`` (it never asks ``GET /gateway/bot``); so does a
  re-IDENTIFY after an INVALID_SESSION. An ``AutoShardedClient`` without a shard count asks
  ``GET /gateway/bot`` (through ``Route.BASE``) and connects where that answer says; StemBot
  (an AutoShardedBot) therefore asks for the count itself and hands it over, so that its shards
  connect to ``DEFAULT_GATEWAY`` too.
- Gateway, RESUME: goes to ``resume_gateway_url`` from the READY event, not to the configured
  URL. A gateway proxy must therefore rewrite ``resume_gateway_url`` in READY to its own
  address (dedicated gateway proxies do; the test emulator does). A proxy that passes READY
  through unchanged sends every resume straight to Discord, and if Discord is unreachable from
  the bot, discord.py retries that resume without end.
"""

from __future__ import annotations

from typing import NamedTuple

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route


class DiscordEndpoints(NamedTuple):
    api_base: str
    gateway_url: str


def current_discord_endpoints() -> DiscordEndpoints:
    """The endpoints discord.py uses right now (process-wide class attributes)."""
    return DiscordEndpoints(Route.BASE, str(DiscordWebSocket.DEFAULT_GATEWAY))


def use_discord_endpoints(api_base: str, gateway_url: str) -> DiscordEndpoints:
    """Make discord.py use ``api_base`` (".../api/v10") and ``gateway_url`` (ws:// or wss://).

    Process-wide: call it once, from the entry point, before the client logs in. Returns the
    endpoints in use before the call, so a test can put them back.
    """
    previous = current_discord_endpoints()
    Route.BASE = api_base.rstrip("/")
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    return previous
