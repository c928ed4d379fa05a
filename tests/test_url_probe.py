"""The guarded URL probe and its connector, against real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import socket
import wave
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from stembot.address_policy import AddressPolicy
from stembot.errors import InvalidSourceError, NotAudioSourceError
from stembot.guarded_connector import GuardedConnector
from stembot.url_probe import UrlProbe
from tests.address_policies import allowing
from tests.standins.local_http import serving
from tests.static_resolver import StaticResolver

MB = 1024 * 1024
MAX_BYTES = 64 * 1024
FORMATS = "mp3, wav, flac, ogg/opus, m4a/aac"


def _wav_bytes(seconds: float = 0.1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * int(8000 * seconds))
    return buffer.getvalue()


WAV = _wav_bytes()
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + b"\x00" * 400
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
HTML = b"<!DOCTYPE html><html><body>Share page</body></html>"


# ---------------------------------------------------------------------------------------------
# Local servers for the probe
# ---------------------------------------------------------------------------------------------


@dataclass
class Forbidden:
    """A server on 127.0.0.2 that must never be reached; it would serve audio if it were."""

    port: int
    connections: int = 0


@dataclass
class Site:
    port: int
    forbidden: Forbidden
    seen_headers: list[Mapping[str, str]] = field(default_factory=list)

    def url(self, path: str, host: str = "audio.test") -> str:
        return f"http://{host}:{self.port}{path}"


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


def _app(site: Site) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/song.wav")
    async def song_wav(request: web.Request) -> web.Response:
        site.seen_headers.append(dict(request.headers))
        return web.Response(body=WAV, content_type="audio/wav")

    @routes.get("/song.mp3")
    async def song_mp3(request: web.Request) -> web.Response:
        return web.Response(body=MP3, content_type="audio/mpeg")

    @routes.get("/download")
    async def download(request: web.Request) -> web.Response:
        return web.Response(
            body=WAV,
            content_type="application/octet-stream",
            headers={"Content-Disposition": 'attachment; filename="My Song.wav"'},
        )

    @routes.get("/raw-audio")
    async def raw_audio(request: web.Request) -> web.Response:
        return web.Response(body=b"\x01" * 300, content_type="audio/ogg")

    @routes.get("/page.mp3")
    async def page(request: web.Request) -> web.Response:
        return web.Response(body=HTML, content_type="text/html")

    @routes.get("/cover")
    async def cover(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    @routes.get("/empty.mp3")
    async def empty(request: web.Request) -> web.Response:
        return web.Response(body=b"", content_type="audio/mpeg")

    @routes.get("/status/{code}")
    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="no")

    @routes.get("/hops/{n}")
    async def hops(request: web.Request) -> web.Response:
        remaining = int(request.match_info["n"])
        return _redirect(f"/hops/{remaining - 1}" if remaining > 1 else "/song.wav")

    @routes.get("/slow-hops/{n}")
    async def slow_hops(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        remaining = int(request.match_info["n"])
        return _redirect(f"/slow-hops/{remaining - 1}" if remaining > 1 else "/song.wav")

    @routes.get("/to-private-literal")
    async def to_private_literal(request: web.Request) -> web.Response:
        return _redirect(f"http://127.0.0.2:{site.forbidden.port}/song.wav")

    @routes.get("/to-private-name")
    async def to_private_name(request: web.Request) -> web.Response:
        return _redirect(f"http://evil.test:{site.forbidden.port}/song.wav")

    @routes.get("/to-ftp")
    async def to_ftp(request: web.Request) -> web.Response:
        return _redirect("ftp://audio.test/song.wav")

    @routes.get("/to-credentials")
    async def to_credentials(request: web.Request) -> web.Response:
        return _redirect(f"http://user:pw@audio.test:{site.port}/song.wav")

    @routes.get("/declared-big")
    async def declared_big(request: web.Request) -> web.Response:
        return web.Response(body=b"\x00" * (MAX_BYTES + 1), content_type="audio/wav")

    @routes.get("/stream-big")
    async def stream_big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "audio/mpeg"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(50):  # 50 x 16 KiB = 12 x MAX_BYTES, bounded
            await response.write(MP3[:16] + b"\x00" * (16 * 1024 - 16))
        await response.write_eof()
        return response

    @routes.get("/gzip-bomb")
    async def gzip_bomb(request: web.Request) -> web.Response:
        return web.Response(
            body=GZIP_BOMB,
            headers={"Content-Type": "audio/wav", "Content-Encoding": "gzip"},
        )

    @routes.get("/trickle")
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        response.content_length = 1000
        await response.prepare(request)
        for _ in range(200):  # at most ~4 s, long after the client gave up
            await response.write(b"\x00")
            await asyncio.sleep(0.02)
        return response

    app = web.Application()
    app.add_routes(routes)
    return app


# A gzip body of ~16 KiB that inflates to 16 MiB of "audio".
GZIP_BOMB = gzip.compress(WAV[:44] + bytes(16 * MB), compresslevel=9)


async def _start_forbidden() -> tuple[Forbidden, asyncio.Server]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        forbidden.connections += 1
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nConnection: close\r\n"
            + f"Content-Length: {len(WAV)}\r\n\r\n".encode()
            + WAV
        )
        await writer.drain()
        writer.close()

    try:
        server = await asyncio.start_server(serve, "127.0.0.2", 0)
    except OSError:
        pytest.skip("127.0.0.2 is not a local address on this system")
    forbidden = Forbidden(port=server.sockets[0].getsockname()[1])
    return forbidden, server


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    forbidden, forbidden_server = await _start_forbidden()
    site = Site(port=0, forbidden=forbidden)
    try:
        async with serving(_app(site)) as base:
            site.port = int(base.rsplit(":", 1)[1])
            yield site
    finally:
        forbidden_server.close()
        await forbidden_server.wait_closed()


ProbeFactory = Callable[..., Awaitable[UrlProbe]]


@pytest.fixture
async def make_probe() -> AsyncIterator[ProbeFactory]:
    """Probes whose policy allows exactly 127.0.0.1 and whose DNS knows the test names."""
    connectors: list[GuardedConnector] = []

    async def make(
        *,
        policy: AddressPolicy | None = None,
        table: Mapping[str, Sequence[str]] | None = None,
        timeout_s: float = 2.0,
        max_redirects: int = 5,
    ) -> UrlProbe:
        connector = GuardedConnector(
            policy or allowing("127.0.0.1/32"),
            resolver=StaticResolver(
                table or {"audio.test": ["127.0.0.1"], "evil.test": ["127.0.0.2"]}
            ),
        )
        connectors.append(connector)
        return UrlProbe(
            connector, max_bytes=MAX_BYTES, timeout_s=timeout_s, max_redirects=max_redirects
        )

    yield make
    for connector in connectors:
        await connector.close()


async def _refusal(probe: UrlProbe, url: str) -> str:
    with pytest.raises(InvalidSourceError) as caught:
        await probe.probe(url)
    return caught.value.user_message


INVALID_LINK = (
    "That link, or one it redirects to, isn't a valid web address; check it and paste it again."
)
PRIVATE = (
    "That link points to a private or local network address, which stembot won't fetch. "
    "Use a public link or attach the file."
)


# ---------------------------------------------------------------------------------------------
# The probe
# ---------------------------------------------------------------------------------------------


async def test_probe_accepts_audio_and_keeps_the_users_url(site, make_probe):
    """A WAV link passes with its measured size; ``url`` is what the user gave."""
    probe = await make_probe()
    url = site.url("/song.wav")
    source = await probe.probe(f"  {url} ")
    assert (source.url, source.final_url, source.size, source.audio_format, source.filename) == (
        url,
        url,
        len(WAV),
        "wav",
        "song.wav",
    )


async def test_probe_asks_for_the_unencoded_file(site, make_probe):
    """The probe requests identity encoding so it counts the file, not a compression of it."""
    probe = await make_probe()
    await probe.probe(site.url("/song.wav"))
    assert site.seen_headers[0]["Accept-Encoding"] == "identity"


async def test_probe_recognises_audio_served_as_octet_stream(site, make_probe):
    """A download without an audio type or extension passes on its bytes, named by its header."""
    probe = await make_probe()
    source = await probe.probe(site.url("/download"))
    assert (source.audio_format, source.filename) == ("wav", "My Song.wav")


async def test_probe_trusts_an_audio_type_when_the_bytes_are_unknown(site, make_probe):
    """Unrecognised bytes with an audio content type pass on the type."""
    probe = await make_probe()
    assert (await probe.probe(site.url("/raw-audio"))).audio_format == "ogg"


async def test_probe_follows_redirects_within_the_limit(site, make_probe):
    """Five hops are followed; the API still gets the original URL."""
    probe = await make_probe(max_redirects=5)
    source = await probe.probe(site.url("/hops/5"))
    assert (source.url, source.final_url) == (site.url("/hops/5"), site.url("/song.wav"))


BAD_REDIRECT = (
    "That link redirects to an address stembot can't follow; paste the final link to the "
    "audio file or attach the file."
)
# Each link's fault, and the whole message that says what was wrong and what to do.
REFUSALS = {
    # Five hops are followed (above); a sixth is refused.
    "/hops/6": (
        "That link redirects more than 5 times; paste the final link to the audio file or "
        "attach the file."
    ),
    # Redirects to other schemes or to URLs with credentials are not followed.
    "/to-ftp": BAD_REDIRECT,
    "/to-credentials": BAD_REDIRECT,
    # 404/410 (an expired attachment URL, a deleted file) say the link no longer works.
    "/status/404": (
        "That link no longer works (the server answered 404 Not Found). Links can expire: "
        "paste a fresh link or attach the file."
    ),
    "/status/410": (
        "That link no longer works (the server answered 410 Gone). Links can expire: paste a "
        "fresh link or attach the file."
    ),
    # 403 means a login or an expired signature.
    "/status/403": (
        "That link needs a login or has expired (the server answered 403 Forbidden). Use a "
        "public link or attach the file."
    ),
    # A 503 is the server's trouble, not the user's link.
    "/status/503": (
        "The server for that link answered 503 Service Unavailable; try again later or attach "
        "the file."
    ),
    # The bytes outrank the extension: an HTML share page is not audio.
    "/page.mp3": (
        f"That link leads to a web page; link straight to the audio file ({FORMATS}) or "
        "attach the file."
    ),
    # A zero-byte body cannot be separated.
    "/empty.mp3": "That link leads to an empty file; check the link or attach the file.",
    # A Content-Length over the limit is refused with both sizes.
    "/declared-big": (
        "That file is 64.1 KB; the limit is 64 KB. "
        "Send a shorter clip or a compressed format such as mp3."
    ),
    # A chunked body is counted as it arrives and cut off past the limit.
    "/stream-big": (
        "That file is larger than the 64 KB limit. "
        "Send a shorter clip or a compressed format such as mp3."
    ),
}


@pytest.mark.parametrize(("path", "message"), REFUSALS.items(), ids=list(REFUSALS))
async def test_refusal_says_what_was_wrong(site, make_probe, path, message):
    """A link that cannot be used is refused with the message for its fault."""
    probe = await make_probe(max_redirects=5)
    assert await _refusal(probe, site.url(path)) == message


async def test_image_link_is_refused(site, make_probe):
    """A PNG is named as such, in the message and for a caller that words it for its own
    input (a submitted file)."""
    probe = await make_probe()
    with pytest.raises(NotAudioSourceError) as caught:
        await probe.probe(site.url("/cover"))
    assert caught.value.user_message.startswith("That link leads to a PNG image;")
    assert caught.value.what == "a PNG image"


async def test_gzip_bomb_is_counted_after_decoding(site, make_probe):
    """A 16 KiB gzip body that inflates to 16 MiB is refused as too large."""
    probe = await make_probe()
    message = await _refusal(probe, site.url("/gzip-bomb"))
    assert message.startswith("That file is larger than the 64 KB limit.")


async def test_body_longer_than_its_content_length_is_refused():
    """Bytes past the declared Content-Length break HTTP; the answer is refused, not trusted."""
    handled = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            head = b"HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nContent-Length: 1000\r\n\r\n"
            writer.write(head + WAV[:1000] + b"\x00" * (256 * 1024))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            handled.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connector = GuardedConnector(allowing("127.0.0.1/32"))
    probe = UrlProbe(connector, max_bytes=MAX_BYTES, timeout_s=2.0)
    try:
        message = await _refusal(probe, f"http://127.0.0.1:{port}/a.wav")
        await asyncio.wait_for(handled.wait(), 2.0)
    finally:
        await connector.close()
        server.close()
        await server.wait_closed()
    assert message == (
        "The server for that link sent a malformed answer; use another link or attach the file."
    )


async def test_trickling_server_is_beaten_by_the_overall_deadline(site, make_probe):
    """A byte every 20 ms keeps a socket read alive but not the probe's total deadline."""
    probe = await make_probe(timeout_s=0.5)
    assert await _refusal(probe, site.url("/trickle")) == (
        "That link took too long to answer (over 0.5 seconds). Try another host or attach the file."
    )


async def test_deadline_spans_all_redirect_hops(site, make_probe):
    """Hops of 0.2 s each are each within 0.5 s, yet the chain is cut off."""
    probe = await make_probe(timeout_s=0.5)
    message = await _refusal(probe, site.url("/slow-hops/4"))
    assert message.startswith("That link took too long to answer")


async def test_private_literal_url_is_refused_without_connecting(site, make_probe):
    """``http://127.0.0.2/...`` never reaches the server there."""
    probe = await make_probe()
    url = f"http://127.0.0.2:{site.forbidden.port}/song.wav"
    assert await _refusal(probe, url) == PRIVATE
    assert site.forbidden.connections == 0


@pytest.mark.parametrize("path", ["/to-private-literal", "/to-private-name"])
async def test_redirect_to_a_private_address_is_refused_without_connecting(site, make_probe, path):
    """A public hop redirecting to a non-allowed address, or to a name that resolves to one,
    is stopped at connect time."""
    probe = await make_probe()
    assert await _refusal(probe, site.url(path)) == PRIVATE
    assert site.forbidden.connections == 0


async def test_name_with_mixed_answers_is_refused_whole(site, make_probe):
    """One allowed and one forbidden answer (a rebinding pattern) refuses the name outright,
    even though the allowed address alone would serve the file."""
    probe = await make_probe(table={"mixed.test": ["127.0.0.1", "127.0.0.2"]})
    assert await _refusal(probe, site.url("/song.wav", host="mixed.test")) == PRIVATE
    assert site.seen_headers == []


@pytest.mark.parametrize(
    "host",
    ["localhost", "2130706433", "127.1", "0x7f000001", "017700000001", "[::ffff:127.0.0.1]"],
)
async def test_disguised_loopback_never_reaches_the_server(site, host):
    """Decimal, short, hex, octal, mapped and named forms of 127.0.0.1 are all refused."""
    connector = GuardedConnector(AddressPolicy())  # the real resolver: these need no DNS
    probe = UrlProbe(connector, max_bytes=MAX_BYTES, timeout_s=2.0)
    try:
        message = await _refusal(probe, f"http://{host}:{site.port}/song.wav")
    finally:
        await connector.close()
    assert message in (PRIVATE, INVALID_LINK)
    assert site.seen_headers == []


async def test_loopback_is_refused_by_the_default_policy(site, make_probe):
    """Without an exception for tests, even the audio server on 127.0.0.1 is private."""
    probe = await make_probe(policy=AddressPolicy())
    assert await _refusal(probe, site.url("/song.wav")) == PRIVATE


async def test_allow_private_reaches_private_addresses(site, make_probe):
    """With STEMBOT_ALLOW_PRIVATE_URLS the same redirect is followed."""
    probe = await make_probe(policy=AddressPolicy(allow_private=True))
    source = await probe.probe(site.url("/to-private-name"))
    assert (source.audio_format, site.forbidden.connections) == ("wav", 1)


async def test_unknown_host_is_reported(make_probe):
    """A name that does not resolve says the server could not be found."""
    probe = await make_probe()
    assert await _refusal(probe, "http://nowhere.test/song.mp3") == (
        "stembot couldn't find the server for that link; check the address or attach the file."
    )


async def test_closed_port_is_reported(make_probe):
    """Nothing listening means the server could not be reached."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    probe = await make_probe()
    assert await _refusal(probe, f"http://audio.test:{port}/song.mp3") == (
        "stembot couldn't connect to the server for that link; check the link, try again "
        "later, or attach the file."
    )


async def test_signed_query_never_reaches_messages_or_logs(site, make_probe, caplog):
    """A refusal of a signed link neither shows nor logs its signature."""
    probe = await make_probe()
    caplog.set_level(logging.DEBUG, logger="stembot")
    message = await _refusal(probe, site.url("/status/404?sig=SECRET123"))
    assert "SECRET123" not in message
    assert "SECRET123" not in caplog.text
    assert "refused source url" in caplog.text


async def test_probe_requires_a_guarded_connector():
    """A plain connector would skip the address guard, so it is rejected."""
    connector = aiohttp.TCPConnector()
    try:
        with pytest.raises(TypeError):
            UrlProbe(connector, max_bytes=MAX_BYTES)
    finally:
        await connector.close()
