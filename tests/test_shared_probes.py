"""A crowd pasting one link fetches it once (stembot/shared_probes.py), through the real
guarded probe against a real HTTP server on loopback that counts its GETs."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from stembot.errors import InvalidSourceError
from stembot.guarded_connector import GuardedConnector
from stembot.shared_probes import SharedProbes
from stembot.url_probe import UrlProbe
from tests.address_policies import allowing
from tests.standins.local_http import serving
from tests.test_url_probe import WAV


@dataclass
class Host:
    """Serves /audio/* as WAV (after ``hold`` is set) and /broken/* as 404 until fixed."""

    base: str = ""
    gets: Counter[str] = field(default_factory=Counter)
    hold: asyncio.Event = field(default_factory=asyncio.Event)
    fixed: bool = False


@pytest.fixture
async def host() -> AsyncIterator[Host]:
    served = Host()
    served.hold.set()

    async def audio(request: web.Request) -> web.Response:
        served.gets[request.path] += 1
        await served.hold.wait()
        return web.Response(body=WAV, headers={"Content-Type": "audio/wav"})

    async def broken(request: web.Request) -> web.Response:
        served.gets[request.path] += 1
        if not served.fixed:
            return web.Response(status=404)
        return web.Response(body=WAV, headers={"Content-Type": "audio/wav"})

    app = web.Application()
    app.router.add_get("/audio/{name}", audio)
    app.router.add_get("/broken/{name}", broken)
    async with serving(app) as served.base:
        yield served


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def probe() -> AsyncIterator[UrlProbe]:
    connector = GuardedConnector(allowing("127.0.0.1/32"))
    yield UrlProbe(connector, max_bytes=64 * 1024, timeout_s=5)
    await connector.close()


async def test_a_crowd_probing_one_link_at_once_fetches_it_once(
    host: Host, probe: UrlProbe
) -> None:
    shared = SharedProbes(probe)
    host.hold.clear()
    crowd = [asyncio.ensure_future(shared.probe(f"{host.base}/audio/song.wav")) for _ in range(50)]
    await asyncio.sleep(0.2)
    host.hold.set()
    answers = await asyncio.gather(*crowd)
    assert host.gets["/audio/song.wav"] == 1
    assert {a.url for a in answers} == {f"{host.base}/audio/song.wav"}
    assert {a.audio_format for a in answers} == {"wav"}


async def test_a_good_link_is_believed_for_a_while_then_fetched_again(
    host: Host, probe: UrlProbe
) -> None:
    clock = Clock()
    shared = SharedProbes(probe, remember_s=30, clock=clock)
    url = f"{host.base}/audio/song.wav"
    await shared.probe(url)
    clock.now += 29
    await shared.probe(url)
    assert host.gets["/audio/song.wav"] == 1
    clock.now += 2
    await shared.probe(url)
    assert host.gets["/audio/song.wav"] == 2


async def test_a_refused_link_is_not_remembered(host: Host, probe: UrlProbe) -> None:
    shared = SharedProbes(probe)
    url = f"{host.base}/broken/song.wav"
    with pytest.raises(InvalidSourceError):
        await shared.probe(url)
    host.fixed = True
    assert (await shared.probe(url)).audio_format == "wav"
    assert host.gets["/broken/song.wav"] == 2


async def test_one_member_giving_up_leaves_the_fetch_to_the_others(
    host: Host, probe: UrlProbe
) -> None:
    shared = SharedProbes(probe)
    host.hold.clear()
    url = f"{host.base}/audio/song.wav"
    leaving = asyncio.ensure_future(shared.probe(url))
    staying = asyncio.ensure_future(shared.probe(url))
    await asyncio.sleep(0.1)
    leaving.cancel()
    host.hold.set()
    assert (await staying).audio_format == "wav"
    assert host.gets["/audio/song.wav"] == 1


async def test_only_the_most_recent_links_are_kept(host: Host, probe: UrlProbe) -> None:
    shared = SharedProbes(probe, max_links=2)
    for name in ("a", "b", "c"):
        await shared.probe(f"{host.base}/audio/{name}.wav")
    await shared.probe(f"{host.base}/audio/c.wav")  # kept
    await shared.probe(f"{host.base}/audio/a.wav")  # forgotten: fetched again
    assert host.gets == Counter({"/audio/a.wav": 2, "/audio/b.wav": 1, "/audio/c.wav": 1})
    assert "127.0.0.1" not in repr(shared)
