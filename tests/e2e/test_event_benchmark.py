"""The event benchmark still runs: a small burst, stembot and the floor bot side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks import bench_event


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
