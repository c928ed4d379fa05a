"""Fair URL probes: one member's slow links cannot hold the probe slots everyone shares."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from stembot.errors import TooManyLinksError
from tests.e2e.stack import WAV, eventually, is_result, running_stack
from tests.standins.discord import InteractionRecord
from tests.standins.local_http import serving

# More slow links than the shared connector has slots (20).
SLOW_LINKS = 25


@dataclass
class TricklingServer:
    """Serves /slow/* a few bytes at a time, holding the rest until released; /fast/* at once."""

    base: str
    release: asyncio.Event = field(default_factory=asyncio.Event)
    open_slow: int = 0
    most_open_slow: int = 0


@contextlib.asynccontextmanager
async def trickling_server() -> AsyncIterator[TricklingServer]:
    server = TricklingServer("")

    async def slow(request: web.Request) -> web.StreamResponse:
        server.open_slow += 1
        server.most_open_slow = max(server.most_open_slow, server.open_slow)
        try:
            response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
            await response.prepare(request)
            await response.write(WAV[:16])
            await server.release.wait()
            await response.write(WAV[16:])
            await response.write_eof()
            return response
        finally:
            server.open_slow -= 1

    async def fast(request: web.Request) -> web.Response:
        return web.Response(body=WAV, headers={"Content-Type": "audio/wav"})

    app = web.Application()
    app.router.add_get("/slow/{name}", slow)
    app.router.add_get("/fast/{name}", fast)
    async with serving(app) as server.base:
        try:
            yield server
        finally:
            server.release.set()


def private_text(interaction: InteractionRecord) -> str:
    """The private line the user was answered with ("" while none)."""
    view = interaction.view()
    texts = [m["content"] for m in [view.original, *view.followups] if m and m["flags"] & 64]
    return str(texts[0]) if texts else ""


async def test_one_members_slow_links_leave_others_checks_fast(tmp_path: Path) -> None:
    """alice pastes 25 links that trickle; she has 2 being checked, the rest are refused at
    no cost, and bob's link is checked and split while hers are still held."""
    env = {"STEMBOT_URL_PROBE_TIMEOUT_S": "120", "STEMBOT_URL_PROBES_PER_MEMBER": "2"}
    async with running_stack(tmp_path / "db.sqlite", env) as stack, trickling_server() as server:
        alices = await asyncio.gather(
            *(
                stack.stems("vocals", options={"url": f"{server.base}/slow/{n}.wav"})
                for n in range(SLOW_LINKS)
            )
        )

        def refused() -> list[InteractionRecord]:
            return [i for i in alices if private_text(i)]

        await eventually(lambda: server.open_slow >= 2)
        await asyncio.sleep(0.2)  # every link of hers that will be fetched is being fetched
        bob = stack.discord.add_member(stack.guild, "bob")
        bobs = await stack.stems("vocals", member=bob, options={"url": f"{server.base}/fast/b.wav"})
        assert is_result(await stack.answer(bobs, timeout_s=15))
        assert server.open_slow == 2 and not server.release.is_set()  # alice's still held
        await eventually(lambda: len(refused()) == SLOW_LINKS - 2)
        assert server.most_open_slow == 2
        texts = {private_text(i) for i in refused()}
        assert texts == {TooManyLinksError(2).user_message}
        assert [r.json()["audioUrl"] for r in stack.api.requests] == [f"{server.base}/fast/b.wav"]
        server.release.set()
        # Released, her checked links go on as usual (the second waits on her request limit).
        checked = [i for i in alices if i not in refused()]
        await eventually(lambda: any(is_result(i.view().original or {}) for i in checked))
