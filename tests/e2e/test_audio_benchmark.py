"""The audio benchmark still runs: short stems, one worker, every phase reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks import bench_audio


@pytest.mark.slow
def test_the_audio_benchmark_runs_every_phase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """3-second WAV stems: analysis, copies, both mixes and the loop lag are printed."""
    bench_audio.main(
        ["--seconds", "3", "--format", "wav", "--workers", "1", "--workdir", str(tmp_path)]
    )
    printed = capsys.readouterr().out
    for line in ("analyse + draw", "encode each stem", "mix Instrumental", "mix Without Drums"):
        assert line in printed
    assert "silent: ['Piano']" in printed
    assert "event-loop lag" in printed


@pytest.mark.slow
def test_the_card_benchmark_times_the_whole_bot(capsys: pytest.CaptureFixture[str]) -> None:
    """`--card` with 2-second stems: one run per boost level, from the answer to the card."""
    bench_audio.main(
        ["--card", "--seconds", "2", "--format", "wav", "--workers", "1", "--runs", "1"]
    )
    printed = capsys.readouterr().out
    assert "boost level 0 (10 MiB uploads)" in printed
    assert "boost level 3 (100 MiB uploads)" in printed
    assert printed.count("(6 stems, 0 smaller copies") == 2
    assert "largest worker's peak RSS" in printed
