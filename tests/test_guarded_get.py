"""The guarded GET's own behaviour, beyond what the URL probe's and stem fetcher's tests show
through it: the cap's exact edge, no cookies across hops, no proxy from the environment, and
the stall limit on a single read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from stembot.guarded_connector import GuardedConnector
from stembot.guarded_get import BodyTooLargeError, GuardedGet
from tests.address_policies import allowing
from tests.standins.local_http import serving
from tests.static_resolver import StaticResolver

CAP = 1000


@dataclass
class Site:
    base: str = ""
    seen: list[Mapping[str, str]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> URL:
        # By name: cookie jars keep no cookies from a bare IP address.
        return URL(self.base).with_host("site.test").with_path(path)


def _app(site: Site) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/bytes/{n}")
    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=bytes(int(request.match_info["n"])))

    @routes.get("/chunked/{n}")
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(bytes(int(request.match_info["n"])))
        await response.write_eof()
        return response

    @routes.get("/set-cookie")
    async def set_cookie(request: web.Request) -> web.Response:
        response = web.Response(status=302, headers={"Location": "/echo"})
        response.set_cookie("session", "from-the-first-hop")
        return response

    @routes.get("/echo")
    async def echo(request: web.Request) -> web.Response:
        site.seen.append(dict(request.headers))
        return web.Response(body=b"site")

    @routes.get("/stall")
    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 100
        await response.prepare(request)
        await response.write(bytes(10))
        await site.release.wait()
        return response

    app = web.Application()
    app.add_routes(routes)
    return app


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    site = Site()
    async with serving(_app(site)) as site.base:
        try:
            yield site
        finally:
            site.release.set()


@pytest.fixture
async def connector() -> AsyncIterator[GuardedConnector]:
    resolver = StaticResolver({"site.test": ["127.0.0.1"]})
    connector = GuardedConnector(allowing("127.0.0.1/32"), resolver=resolver)
    yield connector
    await connector.close()


def _get(connector: GuardedConnector, stall_s: float | None = None) -> GuardedGet:
    return GuardedGet(connector, user_agent="test", max_bytes=CAP, timeout_s=60.0, stall_s=stall_s)


async def _read(get: GuardedGet, url: URL) -> bytes:
    async with get.open(url) as response:
        return b"".join([chunk async for chunk in get.body(response)])


@pytest.mark.parametrize("path", ["/bytes", "/chunked"])
async def test_a_body_of_exactly_the_cap_is_read_whole(site, connector, path):
    """The cap is inclusive, whether the size is declared or only counted."""
    assert len(await _read(_get(connector), site.url(f"{path}/{CAP}"))) == CAP


@pytest.mark.parametrize(
    ("path", "before_reading", "declared"),
    [("/bytes", True, CAP + 1), ("/chunked", False, None)],
)
async def test_one_byte_past_the_cap_is_refused(site, connector, path, before_reading, declared):
    """A declared size one past the cap is refused from the header; an undeclared one by the
    count."""
    with pytest.raises(BodyTooLargeError) as caught:
        await _read(_get(connector), site.url(f"{path}/{CAP + 1}"))
    assert (caught.value.before_reading, caught.value.declared) == (before_reading, declared)


async def test_a_cookie_from_one_hop_is_not_sent_on_the_next(site, connector):
    """Each GET keeps no cookies: a redirect's Set-Cookie does not follow the member's link."""
    assert await _read(_get(connector), site.url("/set-cookie")) == b"site"
    assert "Cookie" not in site.seen[0]


async def test_a_proxy_from_the_environment_is_not_used(site, connector, monkeypatch):
    """HTTP_PROXY would resolve the link past the guard: the GET goes to the site itself."""
    proxied: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        proxied.append(str(request.url))
        return web.Response(body=b"proxy")

    proxy_app = web.Application()
    proxy_app.router.add_route("*", "/{tail:.*}", proxy)
    async with serving(proxy_app) as proxy_base:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, proxy_base)
        body = await _read(_get(connector), site.url("/echo"))
    assert (body, proxied) == (b"site", [])


async def test_a_read_that_stalls_past_stall_s_ends_the_get(site, connector):
    """Within a long deadline, a body that stops arriving fails on the stall limit (aiohttp's
    read timeout), not on the deadline."""
    with pytest.raises(aiohttp.ServerTimeoutError):
        await _read(_get(connector, stall_s=0.1), site.url("/stall"))
