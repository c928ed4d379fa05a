"""The metrics as Prometheus reads them: what each hook counts, under which labels, what the
live gauges read at a scrape, and that two Metrics never share a registry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stembot.errors import (
    InvalidSourceError,
    QuotaLimitReached,
    ShuttingDownError,
    SoundverseRateLimited,
    TooManyLinksError,
)
from stembot.metrics import Metrics, kind_of, refusal_reason
from stembot.models import Mode, QuotaLimit, Request, RequestStatus
from stembot.request_observer import Outcome
from stembot.shards import Shards, ShardState

SHARDS = 3
# A server id whose shard of 3 is 2: (id >> 22) % 3.
GUILD_ON_SHARD_2 = (5 << 22) | 12345


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by name and sorted labels."""
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def request(guild_id: int = GUILD_ON_SHARD_2, cost: int = 2) -> Request:
    now = datetime.now(UTC)
    return Request(
        id=7,
        guild_id=guild_id,
        channel_id=1,
        user_id=2,
        interaction_id=3,
        mode=Mode.ALL,
        source_name="song.wav",
        source_key="attachment:9",
        cost=cost,
        status=RequestStatus.QUEUED,
        created_at=now,
        started_at=None,
        finished_at=None,
        error=None,
    )


@dataclass
class ShardsNow:
    count: int | None = SHARDS
    states: tuple[ShardState, ...] = ()

    def read(self) -> Shards:
        return Shards(self.count, self.states)


@dataclass
class CallsNow:
    calls_waiting: int = 0
    calls_running: int = 0
    accepting: bool = True


def watched(shards: ShardsNow | None = None, calls: CallsNow | None = None) -> Metrics:
    metrics = Metrics()
    metrics.watch(shards or ShardsNow(), calls or CallsNow())
    return metrics


def test_requests_are_counted_by_outcome_and_shard_and_units_only_when_they_succeed() -> None:
    metrics = watched()
    metrics.request_ended(request(cost=2), Outcome.SUCCEEDED)
    metrics.request_ended(request(cost=0), Outcome.SUCCEEDED)  # a request that joined the call
    metrics.request_ended(request(cost=1), Outcome.FAILED)  # refunded
    metrics.request_ended(request(cost=0), Outcome.REUSED)
    assert value(metrics, "stembot_requests_total", outcome="succeeded", shard="2") == 2
    assert value(metrics, "stembot_requests_total", outcome="failed", shard="2") == 1
    assert value(metrics, "stembot_requests_total", outcome="reused", shard="2") == 1
    assert value(metrics, "stembot_units_spent_total", shard="2") == 2


def test_refusals_are_counted_as_requests_and_by_reason() -> None:
    metrics = watched()
    metrics.request_refused(
        GUILD_ON_SHARD_2, QuotaLimitReached(QuotaLimit.API_BUDGET, "spent", None)
    )
    metrics.request_refused(GUILD_ON_SHARD_2, InvalidSourceError())
    metrics.request_refused(0, ShuttingDownError())
    assert value(metrics, "stembot_requests_total", outcome="refused", shard="2") == 2
    assert value(metrics, "stembot_requests_total", outcome="refused", shard="0") == 1
    assert value(metrics, "stembot_refusals_total", reason="api_budget", shard="2") == 1
    assert value(metrics, "stembot_refusals_total", reason="invalid_source", shard="2") == 1
    assert value(metrics, "stembot_refusals_total", reason="shutting_down", shard="0") == 1


def test_reasons_and_kinds_are_short_closed_labels() -> None:
    assert refusal_reason(QuotaLimitReached(QuotaLimit.USER_ACTIVE, "busy", None)) == "user_active"
    assert refusal_reason(TooManyLinksError(2)) == "too_many_links"
    assert kind_of(SoundverseRateLimited(), drop="Soundverse") == "rate_limited"
    assert kind_of(TimeoutError()) == "timeout"


def test_before_the_shard_count_is_known_requests_carry_an_empty_shard() -> None:
    unwatched = Metrics()
    unwatched.request_ended(request(), Outcome.CANCELLED)
    assert value(unwatched, "stembot_requests_total", outcome="cancelled", shard="") == 1
    not_yet = watched(ShardsNow(count=None))
    not_yet.request_ended(request(), Outcome.INTERRUPTED)
    assert value(not_yet, "stembot_requests_total", outcome="interrupted", shard="") == 1


def test_deliveries_by_route_and_result_files_by_outcome() -> None:
    metrics = watched()
    for via in ("interaction", "interaction", "channel", "dm", "nowhere"):
        metrics.result_delivered(via)
    metrics.result_files("attached")
    metrics.result_files("failed")
    assert value(metrics, "stembot_result_deliveries_total", route="interaction") == 2
    assert value(metrics, "stembot_result_deliveries_total", route="nowhere") == 1
    assert value(metrics, "stembot_result_files_total", outcome="attached") == 1
    assert value(metrics, "stembot_result_files_total", outcome="failed") == 1


def test_api_calls_by_mode_and_outcome_with_their_latency() -> None:
    metrics = watched()
    metrics.api_call(Mode.VOCALS, "ok", 12.0)
    metrics.api_call(Mode.VOCALS, "rate_limited", 0.2)
    assert value(metrics, "stembot_api_calls_total", mode="vocals", outcome="ok") == 1
    assert value(metrics, "stembot_api_call_seconds_count", mode="vocals") == 2
    assert value(metrics, "stembot_api_call_seconds_sum", mode="vocals") == 12.2
    assert value(metrics, "stembot_api_call_seconds_bucket", mode="vocals", le="10.0") == 1


def test_live_gauges_are_read_at_each_scrape() -> None:
    shards = ShardsNow(states=(ShardState(0, True, 0.04, 12), ShardState(1, False, None, 7)))
    calls = CallsNow(calls_waiting=5, calls_running=2)
    metrics = watched(shards, calls)
    assert value(metrics, "stembot_calls_waiting") == 5
    assert value(metrics, "stembot_calls_running") == 2
    assert value(metrics, "stembot_accepting_requests") == 1
    assert value(metrics, "stembot_shard_count") == SHARDS
    assert value(metrics, "stembot_shard_connected", shard="0") == 1
    assert value(metrics, "stembot_shard_connected", shard="1") == 0
    assert value(metrics, "stembot_shard_latency_seconds", shard="0") == 0.04
    assert value(metrics, "stembot_shard_latency_seconds", shard="1") is None
    assert value(metrics, "stembot_shard_guilds", shard="1") == 7
    calls.calls_waiting, calls.accepting = 0, False
    shards.states = (ShardState(0, True, 0.05, 12), ShardState(1, True, 0.06, 7))
    assert value(metrics, "stembot_calls_waiting") == 0
    assert value(metrics, "stembot_accepting_requests") == 0
    assert value(metrics, "stembot_shard_connected", shard="1") == 1


def test_each_metrics_has_its_own_registry() -> None:
    """Two bots in one process (the tests run several) never count into each other."""
    first, second = watched(), watched()
    first.result_delivered("dm")
    assert value(first, "stembot_result_deliveries_total", route="dm") == 1
    assert value(second, "stembot_result_deliveries_total", route="dm") is None
    assert value(first, "stembot_info", version=__import__("stembot").__version__) == 1
