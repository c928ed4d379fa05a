"""The gateway: HELLO, heartbeats, IDENTIFY -> READY -> GUILD_CREATE, RESUME, op 7, zlib-stream.

A session outlives its websocket: dispatches sent while the bot is away are buffered and
replayed on RESUME, as Discord does.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

DISPATCH, HEARTBEAT, IDENTIFY, RESUME, RECONNECT, INVALID_SESSION, HELLO, HEARTBEAT_ACK = (
    0,
    1,
    2,
    6,
    7,
    9,
    10,
    11,
)
HEARTBEAT_INTERVAL_MS = 41_250
AUTHENTICATION_FAILED = 4004
UNKNOWN_ERROR = 4000
_REPLAY_BUFFER = 20_000


def _dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))


class Connection:
    """One websocket; serialises sends because a zlib stream must stay in order."""

    def __init__(self, ws: web.WebSocketResponse, path: str, compress: bool) -> None:
        self.ws = ws
        self.path = path
        self._compressor = zlib.compressobj() if compress else None
        self._lock = asyncio.Lock()

    @property
    def compressed(self) -> bool:
        return self._compressor is not None

    async def send(self, text: str) -> None:
        async with self._lock:
            if self.ws.closed:
                return
            if self._compressor is None:
                await self.ws.send_str(text)
            else:
                data = self._compressor.compress(text.encode())
                data += self._compressor.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(data)


@dataclass
class Session:
    id: str
    seq: int = 0
    connection: Connection | None = None
    replay: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=_REPLAY_BUFFER))
    resumes: int = 0

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        text = _dumps({"op": DISPATCH, "t": event, "s": self.seq, "d": data})
        self.replay.append((self.seq, text))
        if self.connection is not None:
            await self.connection.send(text)


@dataclass
class GatewayEvent:
    """A line of the gateway log: which path a client used for what."""

    path: str
    op: str


class Gateway:
    """Gateway sessions of the emulated bot user."""

    def __init__(
        self,
        token: str,
        ready_payload: Callable[[Session], dict[str, Any]],
        guild_payloads: Callable[[], list[dict[str, Any]]],
    ) -> None:
        self._token = token
        self._ready_payload = ready_payload
        self._guild_payloads = guild_payloads
        self.sessions: dict[str, Session] = {}
        self.current: Session | None = None
        self.log: list[GatewayEvent] = []
        self._ready = asyncio.Event()
        self._handlers: dict[
            int, Callable[[Connection, Any, Session | None], Awaitable[Session | None]]
        ] = {HEARTBEAT: self._heartbeat, IDENTIFY: self._identify, RESUME: self._resume}

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        connection = Connection(ws, request.path, request.query.get("compress") == "zlib-stream")
        session: Session | None = None
        await connection.send(
            _dumps({"op": HELLO, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}})
        )
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                handler = self._handlers.get(frame.get("op"))
                if handler is not None:
                    session = await handler(connection, frame.get("d"), session)
        finally:
            if session is not None and session.connection is connection:
                session.connection = None
        return ws

    async def _heartbeat(
        self, connection: Connection, _: Any, session: Session | None
    ) -> Session | None:
        await connection.send(_dumps({"op": HEARTBEAT_ACK, "d": None}))
        return session

    async def _identify(
        self, connection: Connection, data: Any, _: Session | None
    ) -> Session | None:
        self.log.append(GatewayEvent(connection.path, "IDENTIFY"))
        if data.get("token") != self._token:
            await connection.ws.close(code=AUTHENTICATION_FAILED, message=b"Authentication failed.")
            return None
        session = Session(id=secrets.token_hex(16), connection=connection)
        self.sessions[session.id] = session
        self.current = session
        await session.dispatch("READY", self._ready_payload(session))
        for guild in self._guild_payloads():
            await session.dispatch("GUILD_CREATE", guild)
        self._ready.set()
        return session

    async def _resume(self, connection: Connection, data: Any, _: Session | None) -> Session | None:
        self.log.append(GatewayEvent(connection.path, "RESUME"))
        session = self.sessions.get(data.get("session_id", ""))
        if data.get("token") != self._token or session is None:
            await connection.send(_dumps({"op": INVALID_SESSION, "d": False}))
            return None
        session.connection = connection
        session.resumes += 1
        last_seen = data.get("seq") or 0
        for seq, text in list(session.replay):
            if seq > last_seen:
                await connection.send(text)
        await session.dispatch("RESUMED", {})
        self.current = session
        return session

    async def wait_ready(self, timeout_s: float) -> Session:
        await asyncio.wait_for(self._ready.wait(), timeout_s)
        assert self.current is not None
        return self.current

    def live_session(self) -> Session:
        if self.current is None:
            raise RuntimeError("no bot has identified on the gateway yet")
        return self.current

    async def send_op(self, op: int, data: Any) -> None:
        session = self.live_session()
        if session.connection is not None:
            await session.connection.send(_dumps({"op": op, "d": data}))

    async def drop(self) -> None:
        """Close the socket the way a network failure or a Discord restart does."""
        session = self.live_session()
        if session.connection is not None:
            await session.connection.ws.close(code=UNKNOWN_ERROR, message=b"Unknown error.")

    async def close_all(self) -> None:
        for session in self.sessions.values():
            if session.connection is not None:
                await session.connection.ws.close(code=1001, message=b"emulator stopping")
