"""What the bot counts for an operator's Prometheus: observed at a few hook points, never
threaded through the work, and served by /metrics (stembot/http_endpoints.py).

The counters are told by the service as requests end or are refused (``RequestObserver``), by
the Soundverse client wrapped in ``timed`` (each call's outcome and latency), and by the result
files as they are attached. What is true now (the queue's depth, the shards' connections) is
read when Prometheus scrapes, from the sources handed to ``watch``. Each ``Metrics`` has its
own registry, never prometheus_client's global one: two bots in one process (tests) count
apart. Labels are closed sets (outcomes, modes, routes, error kinds, shard ids): never an id,
a name, a link or anything a member typed.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from stembot import __version__
from stembot.call_queue import Separator
from stembot.errors import QuotaLimitReached, StembotError
from stembot.models import Mode, Request, Separation
from stembot.request_observer import Outcome
from stembot.shards import ShardSource, shard_of

# An API call takes seconds to minutes (STEMBOT_API_TIMEOUT_S is at most 14 minutes).
API_SECONDS_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0)
REFUSED = "refused"


class CallSource(Protocol):
    """The service's calls (StemService)."""

    @property
    def calls_waiting(self) -> int: ...

    @property
    def calls_running(self) -> int: ...

    @property
    def accepting(self) -> bool: ...


class Metrics:
    """The bot's counters and the live readings, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._shards: ShardSource | None = None
        Info("stembot", "The running stembot.", registry=registry).info({"version": __version__})
        self._requests = Counter(
            "stembot_requests",
            "Members' requests by how they ended (refused: before anything was charged), and the "
            "shard their server is on.",
            ["outcome", "shard"],
            registry=registry,
        )
        self._refusals = Counter(
            "stembot_refusals",
            "Refused requests by reason: the limit that refused them, or the kind of refusal.",
            ["reason", "shard"],
            registry=registry,
        )
        self._units = Counter(
            "stembot_units_spent",
            "Units charged for requests that succeeded (refunded ones are not counted).",
            ["shard"],
            registry=registry,
        )
        self._api_calls = Counter(
            "stembot_api_calls",
            "Soundverse API calls by mode and outcome (ok, or the kind of failure).",
            ["mode", "outcome"],
            registry=registry,
        )
        self._api_seconds = Histogram(
            "stembot_api_call_seconds",
            "How long each Soundverse API call took, retries included.",
            ["mode"],
            buckets=API_SECONDS_BUCKETS,
            registry=registry,
        )
        self._deliveries = Counter(
            "stembot_result_deliveries",
            "Results delivered by route: the interaction, else the channel with a mention, else "
            "a DM, else nowhere (logged).",
            ["route"],
            registry=registry,
        )
        self._result_files = Counter(
            "stembot_result_files",
            "Delivered results whose files were attached, left as links (nothing to attach), or "
            "failed (the links stand).",
            ["outcome"],
            registry=registry,
        )
        ProcessCollector(registry=registry)

    def watch(self, shards: ShardSource, calls: CallSource) -> None:
        """Read the shards and the calls at each scrape; label requests by shard from now on."""
        self._shards = shards
        self.registry.register(_Live(shards, calls))

    # --- RequestObserver ------------------------------------------------------------------

    def request_ended(self, request: Request, outcome: Outcome) -> None:
        shard = self._shard(request.guild_id)
        self._requests.labels(outcome.value, shard).inc()
        if outcome is Outcome.SUCCEEDED and request.cost:
            self._units.labels(shard).inc(request.cost)

    def request_refused(self, guild_id: int, refusal: StembotError) -> None:
        shard = self._shard(guild_id)
        self._requests.labels(REFUSED, shard).inc()
        self._refusals.labels(refusal_reason(refusal), shard).inc()

    def result_delivered(self, via: str) -> None:
        self._deliveries.labels(via or "nowhere").inc()

    # --- the other hooks --------------------------------------------------------------------

    def result_files(self, outcome: str) -> None:
        """A delivered result's files: "attached", "links_only" or "failed"."""
        self._result_files.labels(outcome).inc()

    def timed(self, separator: Separator) -> Separator:
        """``separator`` with each call counted and timed."""
        return _TimedSeparator(separator, self)

    def api_call(self, mode: Mode, outcome: str, seconds: float) -> None:
        self._api_calls.labels(mode.value, outcome).inc()
        self._api_seconds.labels(mode.value).observe(seconds)

    def _shard(self, guild_id: int) -> str:
        count = self._shards.count if self._shards is not None else None
        return str(shard_of(guild_id, count)) if count else ""


class _TimedSeparator:
    def __init__(self, separator: Separator, metrics: Metrics) -> None:
        self._separator = separator
        self._metrics = metrics

    async def separate(self, mode: Mode, audio_url: str) -> Separation:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await self._separator.separate(mode, audio_url)
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as error:
            outcome = kind_of(error, drop="Soundverse")
            raise
        finally:
            self._metrics.api_call(mode, outcome, time.perf_counter() - started)


class _Live:
    """The gauges read at each scrape."""

    def __init__(self, shards: ShardSource, calls: CallSource) -> None:
        self._shards = shards
        self._calls = calls

    def collect(self) -> Iterator[Metric]:
        calls = self._calls
        yield _gauge(
            "stembot_calls_waiting", "API calls queued in this process.", calls.calls_waiting
        )
        yield _gauge("stembot_calls_running", "API calls at the API now.", calls.calls_running)
        yield _gauge(
            "stembot_accepting_requests",
            "1 while the bot takes new requests, 0 once it is shutting down.",
            int(calls.accepting),
        )
        shards = self._shards.read()
        yield _gauge(
            "stembot_shard_count",
            "The whole bot's shard count (0: not known yet).",
            shards.count or 0,
        )
        connected = GaugeMetricFamily(
            "stembot_shard_connected",
            "1 while the shard's gateway connection is open.",
            labels=["shard"],
        )
        latency = GaugeMetricFamily(
            "stembot_shard_latency_seconds",
            "Gateway heartbeat latency of the shard (absent until its first heartbeat).",
            labels=["shard"],
        )
        guilds = GaugeMetricFamily(
            "stembot_shard_guilds", "Servers on the shard (Discord allows 2,500).", labels=["shard"]
        )
        for state in shards.states:
            shard = str(state.id)
            connected.add_metric([shard], int(state.connected))
            guilds.add_metric([shard], state.guilds)
            if state.latency_s is not None:
                latency.add_metric([shard], state.latency_s)
        yield from (connected, latency, guilds)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def refusal_reason(refusal: StembotError) -> str:
    """The limit that refused (guild_daily, user_active, api_budget...), else the refusal's
    kind (invalid_source, too_many_links, shutting_down, store_busy...)."""
    if isinstance(refusal, QuotaLimitReached):
        return refusal.limit.value
    return kind_of(refusal)


def kind_of(error: BaseException, *, drop: str = "") -> str:
    """An error's class as a label: SoundverseRateLimited -> rate_limited (drop="Soundverse"),
    TooManyLinksError -> too_many_links."""
    name = type(error).__name__.removeprefix(drop).removesuffix("Error") or "error"
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
