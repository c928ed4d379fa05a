"""The event benchmark still runs: a small burst beside the floor bot, the audio burst, and a
remix event's card beside the `/stems` burst."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stembot.bot.remix_event_card_updates import CARD_EDIT_INTERVAL_S
from tests.benchmarks import bench_event
from tests.standins.discord import InteractionRecord


def test_the_event_benchmark_compares_stembot_with_the_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--floor` at N=10: both bots answer every request, and the p99 ratio is reported."""
    out = tmp_path / "event.json"
    bench_event.main(["--n", "10", "--latency", "0.1", "--floor", "--json", str(out)])
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    (floor_run,) = report["floor_runs"]
    assert run["config"]["bot"] == "stembot" and run["outcomes"] == {"result": 10}
    assert floor_run["config"]["bot"] == "floor" and floor_run["outcomes"] == {"result": 10}
    (comparison,) = report["floor"]
    assert comparison["n"] == 10 and len(comparison["rounds"]) == 1
    ratio = comparison["stembot_p99_ms"] / comparison["floor_p99_ms"]
    assert comparison["p99_ratio"] == pytest.approx(ratio, abs=0.001)
    printed = capsys.readouterr().out
    assert "ack p50 / p99 / max (ms)" in printed  # the benchmark's own table
    assert f"{comparison['p99_ratio']:.2f}" in printed.split("stembot against the floor")[1]


def test_a_late_acknowledgement_counts_at_the_time_it_arrived() -> None:
    """Discord refused the ack (after 3 s): the latency still counts it, not only the acked."""
    on_time = InteractionRecord(1, "t1", "slash", {}, 100.0, 3.0, 900.0, 5, acked_at=100.5)
    late = InteractionRecord(2, "t2", "slash", {}, 100.0, 3.0, 900.0, late_ack_at=104.0)
    outcomes = [bench_event.outcome_of(on_time), bench_event.outcome_of(late)]
    assert [o.ack_sent_at for o in outcomes] == [100.5, 104.0]
    sample = bench_event.ProcSample(99.0, 1, 1, 0.0, 0.0)
    result = bench_event.summarise(
        bench_event.Config(2, 1.0, 8),
        outcomes,
        unique_pairs=1,
        first=100.0,
        dispatched=100.0,
        api_calls=0,
        call_starts=[],
        max_in_flight=0,
        baseline=sample,
        samples=[sample, bench_event.ProcSample(105.0, 1, 1, 0.02, 0.01)],
        granted=0,
        statuses={},
        harness_cpu_s=0.01,
        wall_s=5.0,
    )
    assert result.ack_ms["p99"] == 4000.0
    assert result.acked_within_3s_share == 0.5
    assert result.bot_cpu_ms_per_request_to_last_ack == 10.0


@pytest.mark.slow
def test_the_audio_burst_runs_links_only_and_with_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--audio` at N=6: a run without files and one with, the bot's loop lag from inside
    it, every result with its files and each stem fetched once per unique result."""
    out = tmp_path / "audio.json"
    bench_event.main(
        ["--audio", "--n", "6", "--latency", "0.1", "--stem-seconds", "2", "--json", str(out)]
    )
    report = json.loads(out.read_text())
    off, on = report["runs"]
    assert [off["config"]["files"]["attach"], on["config"]["files"]["attach"]] == [False, True]
    for run in (off, on):
        assert run["outcomes"] == {"result": 6}
        assert run["loop_lag"]["samples"] > 0
    assert off["files"] is None
    files = on["files"]
    assert files["with_files"] == files["results"] == files["stems_attached"] == 6
    assert files["stem_fetches"] == on["unique_pairs"]
    assert files["cache_hits"] == 6 - on["unique_pairs"]
    assert files["worker_cpu_s"] > 0 and files["worker_peak_rss_kib"] > 0
    (comparison,) = report["audio"]
    assert len(comparison["rounds"]) == 1 and comparison["rounds"][0]["first"] == "files off"
    assert comparison["on_lag_p99_ms"] == on["loop_lag"]["p99_ms"]
    printed = capsys.readouterr().out
    assert "files off against files on" in printed
    assert "stem fetches / stems attached (cache)" in printed


@pytest.mark.slow
def test_the_card_run_clicks_one_event_card_beside_the_stems_burst(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--card` at N=10: every click answered privately with its stems, one paid call per mode
    used, nothing public but the card and its throttled edits, and the `/stems` burst of the
    same N beside it for the ratio."""
    out = tmp_path / "card.json"
    bench_event.main(["--card", "--n", "10", "--latency", "0.1", "--json", str(out)])
    report = json.loads(out.read_text())
    card_run, burst_run = report["runs"]  # the card first in the first round
    assert card_run["config"]["card"] is not None and burst_run["config"]["card"] is None
    for run in (card_run, burst_run):
        assert run["outcomes"] == {"result": 10} and run["acked_within_3s_share"] == 1.0
    card = card_run["card"]
    assert card["clicks"] == {"vocals": 6, "instruments": 1, "all": 3}
    assert card["paid_calls"] == card["modes_used"] == card_run["api_calls"] == 3
    assert card["private_answers"] == 10 and card["dms"] == 0
    assert card["public_messages"] == 1 and card["card_settled"]
    assert card["card_edits"] >= 1
    assert card["card_edit_gap_min_s"] >= CARD_EDIT_INTERVAL_S - 0.05
    assert card_run["units_granted"] == 4  # vocals 1 + instruments 1 + all 2, the server's
    assert card_run["kib_per_held_request"] is not None
    (comparison,) = report["card"]
    assert comparison["n"] == 10 and [r["first"] for r in comparison["rounds"]] == ["card"]
    ratio = card_run["ack_ms"]["p99"] / burst_run["ack_ms"]["p99"]
    assert comparison["p99_ratio"] == pytest.approx(ratio, abs=0.001)
    printed = capsys.readouterr().out
    assert "card: public messages / card edits" in printed  # the table's card rows
    assert f"{comparison['p99_ratio']:.2f}" in printed.split("the card against")[1]
