"""The Soundverse stand-in as a developer runs it: a log line per call, a clear busy port."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.standins.soundverse import Reply, SoundverseStandin

REPO = Path(__file__).resolve().parents[1]
KEY = "standin-log-key"


async def test_each_call_is_one_log_line_with_mode_status_and_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Success, a wrong key, a bad body and a scripted failure: four calls, four lines."""
    caplog.set_level(logging.INFO, logger="tests.standins.soundverse")
    async with SoundverseStandin(api_key=KEY) as api, aiohttp.ClientSession() as session:
        api.fail_next(Reply.http_status(503), times=1)
        calls = [
            ("all-stems", KEY, {"audioUrl": "https://x.example/a.mp3"}),
            ("vocals", KEY, {"audioUrl": "https://x.example/a.mp3"}),
            ("vocals", "wrong-key", {"audioUrl": "https://x.example/a.mp3"}),
            ("instruments", KEY, {"url": "https://x.example/a.mp3"}),
        ]
        for mode, key, body in calls:
            async with session.post(
                f"{api.base_url}/v1/generate/stem-separation/{mode}",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
            ) as response:
                await response.read()
    lines = [r.getMessage() for r in caplog.records if r.name == "tests.standins.soundverse"]
    assert lines == [
        'separate all-stems -> 503: scripted JSON {"error": "HTTP 503"}',
        "separate vocals -> 200: 1 stem(s): vocals",
        "separate vocals -> 401: wrong or missing API key",
        "separate instruments -> 400: bad body: audioUrl is required.",
    ]
    assert not any("wrong-key" in line or KEY in line for line in lines)


@pytest.mark.slow
def test_a_port_in_use_is_one_line_and_exit_status_1() -> None:
    """Started twice (or beside another server): one line saying so, not a traceback."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "tests.standins.soundverse", "--port", str(port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"stand-in: port {port} on 127.0.0.1 is in use; stop what holds it or pick another "
        "with --port"
    ]


def test_readme_says_what_the_standin_checks_and_what_it_does_not() -> None:
    """A developer trying the bot on the stand-in learns where it is laxer than the real API."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Trying the bot without spending credits") :]
    section = section[: section.index("\n## ")]
    for checked in ("Authorization: Bearer", "audioUrl", "401", "400"):
        assert checked in section
    assert re.search(r"does not[^.]*fetch", section)
    assert "port" in section and "in use" in section
