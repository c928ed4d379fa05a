"""The guarded stem fetcher, against real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import io
import logging
import math
import struct
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from stembot.address_policy import AddressPolicy
from stembot.errors import (
    StemAddressRefusedError,
    StemFetchError,
    StemGoneError,
    StemNotAudioError,
    StemTooLargeError,
    StemTruncatedError,
    StemUnavailableError,
    StemUnreachableError,
)
from stembot.guarded_connector import GuardedConnector
from stembot.models import Stem
from stembot.stem_fetcher import StemFetcher
from tests.address_policies import allowing
from tests.standins.local_http import serving

MAX_BYTES = 256 * 1024
SIGNATURE = "X-Amz-Signature=0123456789abcdefSECRET"


def wav_bytes(seconds: float = 1.0, frequency: float = 440.0, rate: int = 22_050) -> bytes:
    """A stereo 16-bit tone: real audio any decoder reads."""
    frames = bytearray()
    for n in range(int(seconds * rate)):
        sample = int(12_000 * math.sin(2 * math.pi * frequency * n / rate))
        frames += struct.pack("<hh", sample, sample)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return buffer.getvalue()


WAV = wav_bytes()  # about 86 KiB: several network chunks, under MAX_BYTES
HTML = b"<!DOCTYPE html><html><body>AccessDenied, but with 200</body></html>" + b" " * 200


@dataclass
class Forbidden:
    """A server on 127.0.0.2 that serves a stem; the default test policy must never reach it."""

    port: int = 0
    connections: int = 0


@dataclass
class Site:
    base: str
    forbidden: Forbidden
    sent: dict[str, int]

    def stem(self, path: str, name: str = "vocals") -> Stem:
        return Stem(name=name, url=f"{self.base}{path}?{SIGNATURE}")


def _app(forbidden: Forbidden, sent: dict[str, int]) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/vocals.wav")
    async def vocals(request: web.Request) -> web.Response:
        return web.Response(body=WAV, content_type="audio/wav")

    @routes.get("/status/{code}")
    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="no")

    @routes.get("/page.mp3")
    async def page(request: web.Request) -> web.Response:
        return web.Response(body=HTML, content_type="audio/mpeg")

    @routes.get("/endless.wav")
    async def endless(request: web.Request) -> web.StreamResponse:
        # No Content-Length: only counting the bytes can stop this one.
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        await response.prepare(request)
        sent["endless"] = 0
        block = WAV[:44] + b"\x00" * (64 * 1024 - 44)
        try:
            for _ in range(50 * 16):  # 50 MiB if nobody stops it
                await response.write(block)
                sent["endless"] += len(block)
        except (ConnectionError, RuntimeError):
            pass
        return response

    @routes.get("/declared-huge.wav")
    async def declared_huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        response.content_length = 2 * 1024**3
        await response.prepare(request)
        sent["declared"] = 0
        try:
            for _ in range(50 * 16):
                await response.write(b"\x00" * 64 * 1024)
                sent["declared"] += 64 * 1024
        except (ConnectionError, RuntimeError):
            pass
        return response

    @routes.get("/to-private")
    async def to_private(request: web.Request) -> web.Response:
        location = f"http://127.0.0.2:{forbidden.port}/vocals.wav?{SIGNATURE}"
        return web.Response(status=302, headers={"Location": location})

    @routes.get("/to-ftp")
    async def to_ftp(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "ftp://files.example/a.wav"})

    @routes.get("/trickle.wav")
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        response.content_length = len(WAV)
        await response.prepare(request)
        try:
            for i in range(0, len(WAV), 100):
                await response.write(WAV[i : i + 100])
                await asyncio.sleep(0.02)
        except (ConnectionError, RuntimeError):
            pass
        return response

    app = web.Application()
    app.add_routes(routes)
    return app


async def _raw_server(
    host: str, body: bytes, declared: int, on_connect: list[int]
) -> asyncio.Server:
    """Answers every request with ``declared`` as Content-Length and ``body``, then closes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        on_connect.append(1)
        try:
            await reader.readuntil(b"\r\n\r\n")
            head = "HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\n"
            head += f"Content-Length: {declared}\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, host, 0)


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    forbidden = Forbidden()
    connections: list[int] = []
    private = await _raw_server("127.0.0.2", WAV, len(WAV), connections)
    forbidden.port = private.sockets[0].getsockname()[1]
    sent: dict[str, int] = {}
    try:
        async with serving(_app(forbidden, sent)) as base:
            found = Site(base, forbidden, sent)
            yield found
    finally:
        forbidden.connections = len(connections)
        private.close()
        await private.wait_closed()


@pytest.fixture
async def fetcher() -> AsyncIterator[StemFetcher]:
    """A fetcher whose guard allows exactly 127.0.0.1 (where the tests' site is)."""
    connector = GuardedConnector(allowing("127.0.0.1/32"))
    yield StemFetcher(connector, max_bytes=MAX_BYTES, timeout_s=2.0)
    await connector.close()


async def _failure(fetcher: StemFetcher, stem: Stem, destination: Path) -> StemFetchError:
    with pytest.raises(StemFetchError) as caught:
        await fetcher.fetch(stem, destination)
    return caught.value


async def test_a_stem_is_written_whole_with_its_sniffed_format(site, fetcher, tmp_path):
    """The file on disk is the server's bytes; the format comes from them."""
    destination = tmp_path / "vocals.part"
    fetched = await fetcher.fetch(site.stem("/vocals.wav"), destination)
    assert (fetched.size, fetched.audio_format) == (len(WAV), "wav")
    assert destination.read_bytes() == WAV


@pytest.mark.parametrize("status", [404, 403, 410])
async def test_an_expired_or_missing_link_is_gone(site, fetcher, tmp_path, status):
    """404/410 and the 403 of an expired signed link say the link no longer works."""
    error = await _failure(fetcher, site.stem(f"/status/{status}"), tmp_path / "x")
    assert isinstance(error, StemGoneError)
    assert (error.stem, error.status) == ("vocals", status)
    assert "link no longer works" in error.user_message


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_a_server_error_is_unavailable(site, fetcher, tmp_path, status):
    """5xx and 429 are the server's trouble, not a dead link."""
    error = await _failure(fetcher, site.stem(f"/status/{status}"), tmp_path / "x")
    assert isinstance(error, StemUnavailableError)
    assert error.status == status


async def test_bytes_that_are_not_audio_are_refused_whatever_the_label(site, fetcher, tmp_path):
    """A web page served as audio/mpeg at a .mp3 path is named for what it is."""
    error = await _failure(fetcher, site.stem("/page.mp3"), tmp_path / "x")
    assert isinstance(error, StemNotAudioError)
    assert error.what == "a web page"


async def test_a_stream_past_the_cap_is_stopped_at_the_cap(site, fetcher, tmp_path):
    """No Content-Length: counting stops the download; the server sent far less than its 50 MiB
    and the file holds no more than the cap."""
    destination = tmp_path / "endless.part"
    error = await _failure(fetcher, site.stem("/endless.wav"), destination)
    assert isinstance(error, StemTooLargeError)
    assert (error.limit_bytes, error.declared_bytes) == (MAX_BYTES, None)
    assert destination.stat().st_size <= MAX_BYTES
    await asyncio.sleep(0.05)
    assert site.sent["endless"] < 16 * 1024 * 1024


async def test_a_declared_size_past_the_cap_is_refused_before_reading(site, fetcher, tmp_path):
    """A Content-Length of 2 GiB is refused from the headers: nothing is written."""
    destination = tmp_path / "huge.part"
    error = await _failure(fetcher, site.stem("/declared-huge.wav"), destination)
    assert isinstance(error, StemTooLargeError)
    assert error.declared_bytes == 2 * 1024**3
    assert not destination.exists()


async def test_a_download_shorter_than_declared_is_truncated(fetcher, tmp_path):
    """The connection closes after 40,000 of 100,000 declared bytes."""
    connections: list[int] = []
    server = await _raw_server("127.0.0.1", WAV[:40_000], 100_000, connections)
    port = server.sockets[0].getsockname()[1]
    try:
        stem = Stem("drums", f"http://127.0.0.1:{port}/drums.wav?{SIGNATURE}")
        error = await _failure(fetcher, stem, tmp_path / "drums.part")
    finally:
        server.close()
        await server.wait_closed()
    assert isinstance(error, StemTruncatedError)
    assert (error.stem, error.expected_bytes) == ("drums", 100_000)
    assert error.received_bytes <= 40_000


async def test_a_redirect_to_a_private_address_is_refused_without_connecting(
    site, fetcher, tmp_path
):
    """The guard checks every hop: the server on 127.0.0.2 is never reached."""
    error = await _failure(fetcher, site.stem("/to-private"), tmp_path / "x")
    assert isinstance(error, StemAddressRefusedError)
    await asyncio.sleep(0.05)
    assert site.forbidden.connections == 0


async def test_with_private_addresses_allowed_the_same_redirect_is_followed(site, tmp_path):
    """STEMBOT_ALLOW_PRIVATE_URLS's policy reaches 127.0.0.2: the refusal above was the guard."""
    connector = GuardedConnector(AddressPolicy(allow_private=True))
    try:
        fetched = await StemFetcher(connector, max_bytes=MAX_BYTES).fetch(
            site.stem("/to-private"), tmp_path / "vocals.part"
        )
    finally:
        await connector.close()
    assert (fetched.size, fetched.audio_format) == (len(WAV), "wav")


async def test_the_default_policy_refuses_loopback_stem_links(site, tmp_path):
    """A stem link at a local address is refused like a member's link."""
    connector = GuardedConnector(AddressPolicy())
    try:
        fetcher = StemFetcher(connector, max_bytes=MAX_BYTES)
        error = await _failure(fetcher, site.stem("/vocals.wav"), tmp_path / "x")
    finally:
        await connector.close()
    assert isinstance(error, StemAddressRefusedError)


async def test_a_redirect_to_another_scheme_is_refused(site, fetcher, tmp_path):
    """Only http(s) hops are followed."""
    error = await _failure(fetcher, site.stem("/to-ftp"), tmp_path / "x")
    assert isinstance(error, StemAddressRefusedError)


async def test_a_trickling_server_is_beaten_by_the_deadline(site, tmp_path):
    """A chunk every 20 ms keeps the socket alive but not the fetch's total deadline."""
    connector = GuardedConnector(allowing("127.0.0.1/32"))
    try:
        fetcher = StemFetcher(connector, max_bytes=MAX_BYTES, timeout_s=0.3)
        error = await _failure(fetcher, site.stem("/trickle.wav"), tmp_path / "x")
    finally:
        await connector.close()
    assert isinstance(error, StemUnreachableError)
    assert error.because == "timed out"


async def test_the_signed_link_reaches_no_log_error_or_repr(site, fetcher, tmp_path, caplog):
    """Failures are logged with the link redacted; errors and stems never show it."""
    caplog.set_level(logging.DEBUG)
    stem = site.stem("/status/404")
    error = await _failure(fetcher, stem, tmp_path / "x")
    shown = " ".join(
        [caplog.text, str(error), repr(error), error.user_message, repr(stem), str(vars(error))]
    )
    assert "SECRET" not in shown
    assert "/status/404?<redacted>" in caplog.text


async def test_a_wav_cut_short_in_a_complete_answer_is_truncated(fetcher, tmp_path):
    """Content-Length agrees with the half that is sent, but the WAV header names the whole."""
    connections: list[int] = []
    half = WAV[: len(WAV) // 2]
    server = await _raw_server("127.0.0.1", half, len(half), connections)
    port = server.sockets[0].getsockname()[1]
    try:
        stem = Stem("bass", f"http://127.0.0.1:{port}/bass.wav")
        error = await _failure(fetcher, stem, tmp_path / "bass.part")
    finally:
        server.close()
        await server.wait_closed()
    assert isinstance(error, StemTruncatedError)
    assert (error.expected_bytes, error.received_bytes) == (len(WAV), len(half))
