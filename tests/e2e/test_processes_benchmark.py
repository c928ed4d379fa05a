"""The several-process benchmark still runs (tests/benchmarks/bench_processes.py): a small
burst on two processes beside two floor bots, its figures in the table and the JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks import bench_processes
from tests.postgres import admin_url

pytestmark = pytest.mark.slow


def test_the_processes_benchmark_measures_both_fleets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin_url()  # skips, saying why, without a PostgreSQL server
    out = tmp_path / "processes.json"
    bench_processes.main(
        [
            *("--n", "24", "--servers", "6", "--processes", "2", "--latency", "0.2"),
            *("--concurrency", "2", "--daily-limit", "100", "--json", str(out)),
        ]
    )
    report = json.loads(out.read_text())
    (run,) = report["stembot"]
    (floor,) = report["floor"]
    assert run["outcomes"] == {"result": 24} and floor["outcomes"] == {"result": 24}
    assert run["most_calls_of_one_source"] == 1 and run["api_max_in_flight"] <= 2
    assert run["over_grant_units"] == 0 and len(report["ack_p99_over_floor"]) == 2
    printed = capsys.readouterr().out
    assert "ack p99 over floor, per process" in printed
