"""`stembot separate` end to end: a real subprocess against the stand-in in the test's loop."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import sys
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stembot.cli.separate import error_line, printable, render_table, stem_filename, waiting
from stembot.errors import SoundverseUnavailable
from stembot.models import Mode, Stem
from tests.soundverse_docs import DOCUMENTED_STEMS
from tests.standins.soundverse import NSFW_MESSAGE, Reply, SoundverseStandin

KEY = "sv-cli-key-5d1e-do-not-leak"
AUDIO = "https://cdn.example.com/song.mp3"


@dataclass
class Run:
    status: int
    stdout: str
    stderr: str


@pytest.fixture
async def standin() -> AsyncIterator[SoundverseStandin]:
    async with SoundverseStandin(api_key=KEY) as server:
        yield server


def clean_environment(**settings: str) -> dict[str, str]:
    """The current environment without stembot's settings, plus ``settings``."""
    prefixes = ("SOUNDVERSE_", "STEMBOT_", "DISCORD_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return {**env, **settings}


async def stembot(cwd: Path, *args: str, **settings: str) -> Run:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stembot",
        *args,
        cwd=cwd,
        env=clean_environment(**settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(), stderr.decode())


async def separate(standin: SoundverseStandin, cwd: Path, *args: str) -> Run:
    return await stembot(
        cwd,
        "separate",
        *args,
        SOUNDVERSE_API_BASE=standin.base_url,
        SOUNDVERSE_API_KEY=KEY,
        STEMBOT_API_TIMEOUT_S="10",
    )


# --- end to end ------------------------------------------------------------------------------


@pytest.mark.slow
async def test_table_lists_stems_in_api_order(standin, tmp_path) -> None:
    """Success prints a table of every stem and its URL, after a waiting line on stderr."""
    run = await separate(standin, tmp_path, "all", AUDIO)
    assert run.status == 0, run.stderr
    header, *rows = run.stdout.splitlines()
    assert header.split() == ["STEM", "URL"]
    assert [row.split()[0] for row in rows] == list(DOCUMENTED_STEMS[Mode.ALL])
    assert all(row.split()[1].startswith(standin.base_url) for row in rows)
    assert "waiting" in run.stderr
    [request] = standin.requests
    assert request.path == Mode.ALL.api_path and request.json() == {"audioUrl": AUDIO}


@pytest.mark.slow
async def test_json_output_parses_back(standin, tmp_path) -> None:
    """--json prints only a list of {name, url} objects."""
    run = await separate(standin, tmp_path, "instruments", AUDIO, "--json")
    assert run.status == 0, run.stderr
    stems = json.loads(run.stdout)
    assert [stem["name"] for stem in stems] == list(DOCUMENTED_STEMS[Mode.INSTRUMENTS])
    assert all(set(stem) == {"name", "url"} for stem in stems)


@pytest.mark.slow
async def test_download_writes_real_wav_files(standin, tmp_path) -> None:
    """--download saves each stem as NAME.wav, a readable WAV, and reports the bytes saved."""
    target = tmp_path / "stems"
    run = await separate(standin, tmp_path, "all", AUDIO, "--download", str(target))
    assert run.status == 0, run.stderr
    names = sorted(path.name for path in target.iterdir())
    assert names == sorted(f"{name}.wav" for name in DOCUMENTED_STEMS[Mode.ALL])
    for path in target.iterdir():
        with wave.open(str(path)) as wav:
            assert wav.getnframes() > 0
    assert run.stderr.count("bytes)") == 6
    assert standin.downloads == 6


@pytest.mark.slow
async def test_duplicate_stem_names_do_not_overwrite(standin, tmp_path) -> None:
    """Two stems with the same name are saved under two file names."""
    standin.fail_next(Reply.success("vocals"))
    run = await separate(standin, tmp_path, "vocals", AUDIO, "--download", str(tmp_path / "d"))
    assert run.status == 0, run.stderr
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["vocals-2.wav", "vocals.wav"]


@pytest.mark.slow
async def test_rejection_exits_1_with_one_line(standin, tmp_path) -> None:
    """An API rejection exits 1 with the API's message as the one error line, stdout empty."""
    standin.fail_next(Reply.nsfw())
    run = await separate(standin, tmp_path, "vocals", AUDIO)
    assert run.status == 1
    assert run.stdout == ""
    errors = [line for line in run.stderr.splitlines() if "waiting" not in line]
    assert errors == [f"stembot: {NSFW_MESSAGE}"]


@pytest.mark.slow
async def test_refused_key_names_the_setting_without_the_key(standin, tmp_path) -> None:
    """A refused key exits 1 with one line pointing at SOUNDVERSE_API_KEY, never the key."""
    wrong = "sv-wrong-cli-key-9090"
    run = await stembot(
        tmp_path,
        "separate",
        "vocals",
        AUDIO,
        SOUNDVERSE_API_BASE=standin.base_url,
        SOUNDVERSE_API_KEY=wrong,
    )
    assert run.status == 1
    errors = [line for line in run.stderr.splitlines() if "waiting" not in line]
    assert len(errors) == 1 and "SOUNDVERSE_API_KEY" in errors[0]
    assert wrong not in run.stderr + run.stdout


@pytest.mark.slow
async def test_non_http_url_exits_2_before_any_call(standin, tmp_path) -> None:
    """A file:// URL is refused with exit 2 and no API request."""
    run = await separate(standin, tmp_path, "vocals", "file:///etc/passwd")
    assert run.status == 2
    assert "http://" in run.stderr
    assert standin.requests == []


@pytest.mark.slow
async def test_missing_key_exits_2(standin, tmp_path) -> None:
    """Without SOUNDVERSE_API_KEY the settings error exits 2 and nothing is called."""
    run = await stembot(tmp_path, "separate", "vocals", AUDIO, SOUNDVERSE_API_BASE=standin.base_url)
    assert run.status == 2
    assert "SOUNDVERSE_API_KEY" in run.stderr
    assert standin.requests == []


@pytest.mark.slow
async def test_unreachable_soundverse_names_the_base_setting(tmp_path) -> None:
    """Nothing listening at SOUNDVERSE_API_BASE: one line that says so in operator terms
    (the address and the setting to check), exit 1, no traceback."""
    with socket.socket() as holder:  # a port that is surely closed: bound, never listening
        holder.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{holder.getsockname()[1]}"
        run = await stembot(
            tmp_path, "separate", "vocals", AUDIO, SOUNDVERSE_API_BASE=base, SOUNDVERSE_API_KEY=KEY
        )
    assert run.status == 1
    assert run.stdout == ""
    errors = [line for line in run.stderr.splitlines() if "waiting" not in line]
    assert len(errors) == 1, run.stderr
    assert errors[0].startswith(f"stembot: could not reach the Soundverse API at {base} (")
    assert "SOUNDVERSE_API_BASE" in errors[0]
    assert KEY not in run.stderr


@pytest.mark.slow
async def test_a_gateway_error_is_not_called_unreachable(standin, tmp_path) -> None:
    """A 503 from a reachable API says the API is unavailable, with the status, not that the
    address is wrong."""
    standin.fail_always(Reply.http_status(503))
    run = await separate(standin, tmp_path, "vocals", AUDIO)
    errors = [line for line in run.stderr.splitlines() if "waiting" not in line]
    assert run.status == 1
    assert errors == [
        f"stembot: the Soundverse API at {standin.base_url} is unavailable "
        "(HTTP 503); try again later."
    ]


def test_the_unavailable_line_reads_the_errors_facts_not_its_text() -> None:
    """Whether the API answered comes from the error's status, whatever its cause says."""
    base = "https://api.example"
    answered = SoundverseUnavailable(status=502)
    assert error_line(answered, base) == (
        f"the Soundverse API at {base} is unavailable (HTTP 502); try again later."
    )
    unreached = SoundverseUnavailable(unreachable_because="ClientConnectorError")
    unreached.__cause__ = Exception("HTTP 503, 0 bytes, text/html")  # prose that misleads
    assert error_line(unreached, base).startswith(
        f"could not reach the Soundverse API at {base} (ClientConnectorError). "
    )
    assert "(no connection)" in error_line(SoundverseUnavailable(), base)


# --- pieces ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, url, content_type, expected",
    [
        ("vocals", "https://h.example/x/vocals.wav", "", "vocals.wav"),
        ("Drums", "https://h.example/x/d?sig=1", "audio/mpeg", "Drums.mp3"),
        ("../../etc/passwd", "https://h.example/a.flac", "", "etc_passwd.flac"),
        ("..", "https://h.example/a", "text/plain", "stem.bin"),
        ("Bass", "https://h.example/bass.exe", "audio/wav; charset=x", "Bass.wav"),
    ],
)
def test_stem_filename_is_safe(name, url, content_type, expected) -> None:
    """File names keep no path parts from the server and take an audio suffix or .bin."""
    assert stem_filename(name, url, content_type) == expected


def test_table_neutralises_terminal_escapes() -> None:
    """Control characters in stem names cannot drive the terminal."""
    table = render_table([Stem("\x1b[2Jevil", "https://h.example/a.wav")])
    assert "\x1b" not in table and "?[2Jevil" in table
    assert printable("ok") == "ok"


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_spinner_on_tty_shows_elapsed_and_clears() -> None:
    """On a TTY the waiting line spins with elapsed seconds and is erased at the end."""
    stream = FakeTTY()
    async with waiting(stream, "Separating vocals", interval_s=0.01):
        await asyncio.sleep(0.05)
    text = stream.getvalue()
    assert "Separating vocals... 0s" in text
    assert text.endswith("\r\033[K")
