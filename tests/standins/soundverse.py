"""A local stand-in for the Soundverse Stem Separation API (v1), speaking its documented contract.

Used by tests and benchmarks (``async with SoundverseStandin() as api: api.base_url``) and by
developers who want to try the bot without spending credits::

    python -m tests.standins.soundverse --port 8765 --api-key dev-key [--latency 2]

Separation calls answer the documented lists with fresh stem URLs that point back at the
stand-in, which serves a real stem at each: a few seconds of 44.1 kHz stereo holding a tone of
the stem's own frequency (stem_audio.STEM_TONES_HZ), as WAV unless told otherwise. How the
stems of calls are served is a ``StemOptions`` (``serve_stems(...)`` for every later call,
``Reply.success(stems=...)`` for one): MP3 instead of WAV, stems that are silent, and stem
files that break (``StemFault``: 404, not audio, truncated, cut short, huge, a redirect to a
private address). Every file download is counted (``downloads``, ``downloaded``). Failures of
the call itself are injected on demand with
``Reply`` values: ``fail_next(reply, times=n)``, ``script(r1, r2, ...)`` or ``fail_always(reply)``;
``hold()`` keeps every call waiting (recorded, in flight) until ``release()``, so a test can
break something while a call runs.
Every API call is recorded in ``requests`` (without the Authorization header) and logged as one
line at INFO on the "tests.standins.soundverse" logger (the command line shows them on stderr).

What it checks: the path (one of the three modes), the
``Authorization: Bearer <key>`` header (401 otherwise), and the body: a JSON object with a
non-empty string ``audioUrl`` (400 otherwise). What it does not: it never fetches ``audioUrl``
(any URL "works"), separates nothing (every stem is the same short tone), charges no credits,
has no rate limits or outages unless a test scripts them, and its stem URLs expire only
when a test says so (``expire_links()``: 403, as a storage host answers an expired signed URL).
The format of the real API's stem files is not documented; the stand-in's URLs end in the
extension of what they serve (``.wav`` by default, ``.mp3`` on demand).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import errno
import io
import json
import logging
import math
import sys
import time
import uuid
import wave
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any
from urllib.parse import quote

from aiohttp import web

from tests.standins.stem_audio import MIME_TYPES, SECONDS, AudioFormat, stem_file

log = logging.getLogger(__name__)

DEFAULT_API_KEY = "standin-key"
NSFW_MESSAGE = "NSFW words detected. Please try again with a different prompt."
ARTIST_MESSAGE = "Artist name detected. Please try again with a different prompt."

STEMS_BY_PATH: dict[str, tuple[str, ...]] = {
    "/v1/generate/stem-separation/vocals": ("vocals",),
    "/v1/generate/stem-separation/instruments": ("Guitar", "Other", "Drums", "Bass", "Piano"),
    "/v1/generate/stem-separation/all-stems": (
        "vocals",
        "Guitar",
        "Other",
        "Drums",
        "Bass",
        "Piano",
    ),
}

_HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    "<body><h1>502 Bad Gateway</h1><hr><center>nginx</center></body></html>"
)


# Thousands of benchmark calls arrive at once; aiohttp's default backlog (128) would drop SYNs.
LISTEN_BACKLOG = 4096
# What a "huge" stem announces and streams (until the client stops reading).
HUGE_STEM_BYTES = 1024 * 1024 * 1024
_HUGE_CHUNK = 64 * 1024
_NOT_AUDIO_PAGE = (
    "<!DOCTYPE html><html><head><title>Sign in</title></head>"
    "<body><h1>Sign in to download this file</h1></body></html>"
)
_MISSING_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
    "<Message>The specified key does not exist.</Message></Error>"
)
_EXPIRED_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    "<Message>Request has expired</Message></Error>"
)


class StemFault(StrEnum):
    """How a stem file breaks when it is downloaded."""

    MISSING = "missing"  # 404 with a storage host's XML error
    NOT_AUDIO = "not_audio"  # 200 with an HTML page
    TRUNCATED = "truncated"  # Content-Length of the whole file, half of it, connection closed
    CUT_SHORT = "cut_short"  # a complete answer holding only the first half of the file
    HUGE = "huge"  # 1 GiB announced in Content-Length and streamed
    HUGE_UNANNOUNCED = "huge_unannounced"  # the same, chunked, with no Content-Length
    PRIVATE_REDIRECT = "private_redirect"  # 302 to the same path on 127.0.0.2 (not global)


@dataclass(frozen=True)
class StemOptions:
    """How the stem files of a call are served (build with ``StemOptions.of``)."""

    audio_format: AudioFormat = "wav"
    silent: frozenset[str] = frozenset()
    faults: Mapping[str, StemFault] = field(default_factory=dict)
    seconds: float = SECONDS

    @classmethod
    def of(
        cls,
        audio_format: AudioFormat = "wav",
        *,
        silent: Iterable[str] = (),
        faults: Mapping[str, StemFault] | None = None,
        seconds: float = SECONDS,
    ) -> StemOptions:
        """``silent``: stem names served silent; ``faults``: stem name -> how its file breaks."""
        if audio_format not in MIME_TYPES:
            raise ValueError(f"audio_format must be one of {sorted(MIME_TYPES)}")
        return cls(audio_format, frozenset(silent), dict(faults or {}), seconds)


@dataclass(frozen=True, slots=True)
class _IssuedStem:
    name: str
    options: StemOptions


@dataclass(frozen=True)
class Reply:
    """What the stand-in does for one separation call. Build one with the class methods."""

    kind: str = "success"
    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    extra_stems: tuple[str, ...] = ()
    hang_s: float = 0.0
    stems: StemOptions | None = None

    @classmethod
    def success(cls, *extra_stems: str, stems: StemOptions | None = None) -> Reply:
        """The documented list for the mode, plus any ``extra_stems`` appended; its files
        served as ``stems`` says (default: the stand-in's ``stem_options``)."""
        return cls(extra_stems=extra_stems, stems=stems)

    @classmethod
    def json(cls, body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Reply:
        return cls(kind="raw_json", status=status, body=body, headers=dict(headers or {}))

    @classmethod
    def nsfw(cls, status: int = 200) -> Reply:
        return cls.json({"success": False, "message": NSFW_MESSAGE}, status)

    @classmethod
    def artist(cls, status: int = 400) -> Reply:
        return cls.json({"success": False, "message": ARTIST_MESSAGE}, status)

    @classmethod
    def detail(cls, text: str = "Stem separation failed.", status: int = 500) -> Reply:
        return cls.json({"Detail": text}, status)

    @classmethod
    def http_status(cls, status: int, retry_after: str | None = None) -> Reply:
        """A bare status (401, 403, 429, 500, 502, ...) with a small JSON body."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return cls.json({"error": f"HTTP {status}"}, status, headers)

    @classmethod
    def html(cls, status: int = 502) -> Reply:
        return cls(
            kind="text", status=status, body=_HTML_PAGE, headers={"Content-Type": "text/html"}
        )

    @classmethod
    def not_json(cls, status: int = 200) -> Reply:
        return cls(kind="text", status=status, body="ok", headers={"Content-Type": "text/plain"})

    @classmethod
    def missing_url(cls) -> Reply:
        return cls.json([{"audioName": "vocals"}])

    @classmethod
    def non_http_url(cls) -> Reply:
        return cls.json([{"audioName": "vocals", "audioUrl": "file:///etc/passwd"}])

    @classmethod
    def empty_list(cls) -> Reply:
        return cls.json([])

    @classmethod
    def hang(cls, seconds: float = 3600.0) -> Reply:
        """Answer nothing for ``seconds`` (then succeed), to trip the client's timeout."""
        return cls(kind="hang", hang_s=seconds)

    @classmethod
    def reset(cls) -> Reply:
        """Read the whole request, then drop the connection without answering."""
        return cls(kind="reset")


@dataclass(slots=True)
class _CallNote:
    """What one call was answered, for its log line."""

    status: str = "-"
    answer: str = "no answer: the client went away"


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    path: str
    body: bytes
    headers: Mapping[str, str]
    received_at: float  # time.monotonic()

    def json(self) -> Any:
        return json.loads(self.body)


def make_wav(seconds: float = 0.1, rate: int = 8000, hz: float = 440.0) -> bytes:
    """A small, valid mono 16-bit WAV file holding a sine tone."""
    samples = array.array(
        "h",
        (int(8000 * math.sin(2 * math.pi * hz * n / rate)) for n in range(int(seconds * rate))),
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return buffer.getvalue()


class SoundverseStandin:
    """The stand-in server. ``async with`` starts it on ``host``:``port`` (0 = any free port)."""

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.latency = latency
        self.requests: list[RecordedRequest] = []
        self.downloads = 0
        # The path of every stem file downloaded, in order (a repeat shows a second fetch).
        self.downloaded: list[str] = []
        self.stem_options = StemOptions()
        # Separation calls being answered right now, and the most there ever were at once.
        self.in_flight = 0
        self.max_in_flight = 0
        self._host = host
        self._port = port
        self._script: deque[Reply] = deque()
        self._always: Reply | None = None
        self._issued: dict[str, _IssuedStem] = {}
        self._expired: set[str] = set()
        self._released = asyncio.Event()
        self._released.set()
        self._downloads_released = asyncio.Event()
        self._downloads_released.set()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- failure injection -------------------------------------------------------------------
    def fail_next(self, reply: Reply, times: int = 1) -> None:
        """Answer the next ``times`` separation calls with ``reply``."""
        self._script.extend([reply] * times)

    def script(self, *replies: Reply) -> None:
        """Answer the next calls with ``replies`` in order (then normally)."""
        self._script.extend(replies)

    def fail_always(self, reply: Reply | None) -> None:
        """Answer every call after the script with ``reply`` (None: succeed again)."""
        self._always = reply

    def serve_stems(
        self,
        audio_format: AudioFormat = "wav",
        *,
        silent: Iterable[str] = (),
        faults: Mapping[str, StemFault] | None = None,
        seconds: float = SECONDS,
    ) -> None:
        """Serve the stems of every later call this way (see ``StemOptions.of``)."""
        self.stem_options = StemOptions.of(
            audio_format, silent=silent, faults=faults, seconds=seconds
        )

    def expire_links(self) -> None:
        """Every stem URL issued so far stops working, as signed links do once they expire
        (403 with a storage host's error); later calls issue fresh ones."""
        self._expired.update(self._issued)

    def hold(self) -> None:
        """Keep every separation call waiting (recorded, in flight) until ``release()``."""
        self._released.clear()

    def release(self) -> None:
        """Let the held calls (and later ones) be answered."""
        self._released.set()

    def hold_downloads(self) -> None:
        """Keep every stem file download waiting (a slow storage host) until
        ``release_downloads()``; separation calls are still answered."""
        self._downloads_released.clear()

    def release_downloads(self) -> None:
        self._downloads_released.set()

    def clear(self) -> None:
        self._script.clear()
        self._always = None
        self.requests.clear()
        self.max_in_flight = self.in_flight

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application()
        for path in STEMS_BY_PATH:
            app.router.add_post(path, self._separate)
        app.router.add_get("/files/{token}/{name}", self._file)
        # handler_cancellation stops hung handlers when the client gives up; a short shutdown
        # keeps test teardown fast.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.2, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, backlog=LISTEN_BACKLOG)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SoundverseStandin:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- handlers ----------------------------------------------------------------------------
    async def _separate(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        self.requests.append(RecordedRequest(request.path, body, headers, time.monotonic()))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        note = _CallNote()
        try:
            response = await self._answer(body, request, note)
            note.status = str(response.status)
            return response
        finally:
            self.in_flight -= 1
            mode = request.path.rsplit("/", 1)[-1]
            log.info("separate %s -> %s: %s", mode, note.status, note.answer)

    async def _answer(
        self, body: bytes, request: web.Request, note: _CallNote
    ) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            note.answer = "wrong or missing API key"
            return web.json_response({"detail": "Invalid API key"}, status=401)
        problem = _body_problem(body)
        if problem:
            note.answer = f"bad body: {problem}"
            return web.json_response({"success": False, "message": problem}, status=400)
        if self.latency:
            await asyncio.sleep(self.latency)
        await self._released.wait()
        reply = self._next_reply()
        return await self._perform(reply, request, note)

    def _next_reply(self) -> Reply:
        if self._script:
            return self._script.popleft()
        return self._always or Reply.success()

    async def _perform(
        self, reply: Reply, request: web.Request, note: _CallNote
    ) -> web.StreamResponse:
        if reply.kind == "reset":
            note.answer = "connection dropped without an answer (scripted)"
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(3600)  # cancelled at once: the connection is gone
        if reply.kind == "hang":
            note.answer = f"held for {reply.hang_s:g} s (scripted), then no answer"
            await asyncio.sleep(reply.hang_s)
        if reply.kind == "raw_json":
            note.answer = f"scripted JSON {json.dumps(reply.body)[:80]}"
            return web.json_response(reply.body, status=reply.status, headers=reply.headers)
        if reply.kind == "text":
            note.answer = f"scripted text {reply.body[:40]!r}"
            return web.Response(text=reply.body, status=reply.status, headers=reply.headers)
        names = STEMS_BY_PATH[request.path] + reply.extra_stems
        note.answer = f"{len(names)} stem(s): {', '.join(names)}"
        options = reply.stems or self.stem_options
        return web.json_response([self._issue(name, options) for name in names])

    def _issue(self, name: str, options: StemOptions) -> dict[str, str]:
        token = uuid.uuid4().hex
        self._issued[token] = _IssuedStem(name, options)
        url = f"{self.base_url}/files/{token}/{quote(name)}.{options.audio_format}"
        return {"audioName": name, "audioUrl": url}

    async def _file(self, request: web.Request) -> web.StreamResponse:
        issued = self._issued.get(request.match_info["token"])
        if issued is None:
            raise web.HTTPNotFound()
        self.downloads += 1
        self.downloaded.append(request.path)
        await self._downloads_released.wait()
        if request.match_info["token"] in self._expired:
            return web.Response(status=403, text=_EXPIRED_BODY, content_type="application/xml")
        options = issued.options
        fault = options.faults.get(issued.name)
        if fault is StemFault.MISSING:
            return web.Response(status=404, text=_MISSING_BODY, content_type="application/xml")
        if fault is StemFault.NOT_AUDIO:
            return web.Response(text=_NOT_AUDIO_PAGE, content_type="text/html")
        if fault is StemFault.PRIVATE_REDIRECT:
            port = request.url.port
            raise web.HTTPFound(f"http://127.0.0.2:{port}{request.path_qs}")
        # Encoding takes a moment the first time (an MP3 above all); keep the loop free.
        data = await asyncio.to_thread(
            stem_file,
            issued.name,
            options.audio_format,
            silent=issued.name in options.silent,
            seconds=options.seconds,
        )
        mime = MIME_TYPES[options.audio_format]
        if fault is StemFault.CUT_SHORT:
            return web.Response(body=data[: len(data) // 2], content_type=mime)
        if fault is StemFault.TRUNCATED:
            return await _truncated(request, data, mime)
        if fault in (StemFault.HUGE, StemFault.HUGE_UNANNOUNCED):
            return await _huge(request, data, mime, announced=fault is StemFault.HUGE)
        return web.Response(body=data, content_type=mime)


async def _truncated(request: web.Request, data: bytes, mime: str) -> web.StreamResponse:
    """Announce the whole file, send half, and drop the connection."""
    response = web.StreamResponse(headers={"Content-Type": mime})
    response.content_length = len(data)
    await response.prepare(request)
    await response.write(data[: len(data) // 2])
    if request.transport is not None:
        request.transport.abort()
    return response


async def _huge(
    request: web.Request, data: bytes, mime: str, *, announced: bool
) -> web.StreamResponse:
    """The stem's bytes, then zeros, to HUGE_STEM_BYTES or until the client stops reading."""
    response = web.StreamResponse(headers={"Content-Type": mime})
    if announced:  # else no Content-Length: HTTP/1.1 sends it chunked
        response.content_length = HUGE_STEM_BYTES
    await response.prepare(request)
    zeros = bytes(_HUGE_CHUNK)
    sent = 0
    with contextlib.suppress(ConnectionError):
        await response.write(data[:HUGE_STEM_BYTES])
        sent = min(len(data), HUGE_STEM_BYTES)
        while sent < HUGE_STEM_BYTES:
            chunk = zeros[: HUGE_STEM_BYTES - sent]
            await response.write(chunk)
            sent += len(chunk)
        await response.write_eof()
    return response


def _body_problem(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return "The request body must be JSON."
    if not isinstance(payload, dict):
        return "The request body must be a JSON object."
    url = payload.get("audioUrl")
    if not isinstance(url, str) or not url:
        return "audioUrl is required."
    return None


async def _serve_forever(args: argparse.Namespace) -> None:
    async with SoundverseStandin(
        args.api_key, latency=args.latency, host=args.host, port=args.port
    ) as standin:
        print(f"Soundverse stand-in listening. Set SOUNDVERSE_API_BASE={standin.base_url}")
        print(f"and SOUNDVERSE_API_KEY={args.api_key}. Ctrl+C stops it.", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the local Soundverse API stand-in.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default="dev-key")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per separation")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s stand-in: %(message)s", stream=sys.stderr
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_forever(args))
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        print(
            f"stand-in: port {args.port} on {args.host} is in use; stop what holds it "
            "or pick another with --port",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
