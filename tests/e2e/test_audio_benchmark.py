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
