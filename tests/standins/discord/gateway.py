"""The gateway: HELLO, heartbeats, IDENTIFY -> READY -> GUILD_CREATE, RESUME, op 7, zlib-stream.

A session outlives its websocket: dispatches sent while the bot is away are buffered and
replayed on RESUME, as Discord does. Sessions are sharded (sharding.py): each IDENTIFY names its
``shard``, gets that shard's guilds only, and a guild's events go to the session of its shard
(``dispatch``); the session start limit, IDENTIFY pacing and 4011 are checked on IDENTIFY.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .sharding import (
    INVALID_SHARD,
    MAX_GUILDS_PER_SHARD,
    SHARDING_REQUIRED,
    IdentifyPacing,
    SessionStartLimit,
    Shard,
    parse_shard,
    shard_of,
)

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
    shard: Shard = (0, 1)
    seq: int = 0
    connection: Connection | None = None
    replay: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=_REPLAY_BUFFER))
    resumes: int = 0

    def dispatched(self, event: str) -> list[dict[str, Any]]:
        """The data of each ``event`` sent to this session (the last 20,000 dispatches)."""
        frames = (json.loads(text) for _, text in self.replay)
        return [frame["d"] for frame in frames if frame["t"] == event]

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        text = _dumps({"op": DISPATCH, "t": event, "s": self.seq, "d": data})
        self.replay.append((self.seq, text))
        if self.connection is not None:
            await self.connection.send(text)


@dataclass
class GatewayEvent:
    """A line of the gateway log: which path a client used for what; for an IDENTIFY, the
    shard it asked for, what became of it ("ready", "rate limited", "sharding required",
    "invalid shard", "authentication failed", "token reset") and when (``time.monotonic()``)."""

    path: str
    op: str
    shard: Shard | None = field(default=None, compare=False)
    outcome: str = field(default="", compare=False)
    at: float = field(default_factory=time.monotonic, compare=False)


class Gateway:
    """Gateway sessions of the emulated bot user."""

    def __init__(
        self,
        token: str,
        ready_payload: Callable[[Session], dict[str, Any]],
        guild_payloads: Callable[[Shard], list[dict[str, Any]]],
        *,
        limits: SessionStartLimit | None = None,
        identify_window_s: float | None = None,
        max_guilds_per_shard: int = MAX_GUILDS_PER_SHARD,
    ) -> None:
        self.token = token
        self._ready_payload = ready_payload
        self._guild_payloads = guild_payloads
        self.limits = limits or SessionStartLimit()
        self.pacing = IdentifyPacing(identify_window_s)
        self.max_guilds_per_shard = max_guilds_per_shard
        self.sessions: dict[str, Session] = {}
        # The session each shard's events go to (the last one identified or resumed for it).
        self.routes: dict[Shard, Session] = {}
        self.current: Session | None = None
        self.log: list[GatewayEvent] = []
        # An outage: while set, every connection is refused (HTTP 503) before the websocket.
        self.refusing = False
        self._ready = asyncio.Event()
        self._changed = asyncio.Condition()
        self._handlers: dict[
            int, Callable[[Connection, Any, Session | None], Awaitable[Session | None]]
        ] = {HEARTBEAT: self._heartbeat, IDENTIFY: self._identify, RESUME: self._resume}

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        if self.refusing:
            raise web.HTTPServiceUnavailable()
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
        event = GatewayEvent(connection.path, "IDENTIFY")
        self.log.append(event)
        if data.get("token") != self.token:
            event.outcome = "authentication failed"
            await connection.ws.close(code=AUTHENTICATION_FAILED, message=b"Authentication failed.")
            return None
        shard = event.shard = parse_shard(data)
        if shard is None:
            event.outcome = "invalid shard"
            await connection.ws.close(code=INVALID_SHARD, message=b"Invalid shard.")
            return None
        if not self.pacing.admit(shard[0], self.limits.max_concurrency):
            event.outcome = "rate limited"
            await connection.send(_dumps({"op": INVALID_SESSION, "d": False}))
            return None
        if not self.limits.take():
            event.outcome = "token reset"
            await self._reset_token(connection)
            return None
        guilds = self._guild_payloads(shard)
        if len(guilds) > self.max_guilds_per_shard:
            event.outcome = "sharding required"
            await connection.ws.close(code=SHARDING_REQUIRED, message=b"Sharding required.")
            return None
        event.outcome = "ready"
        session = Session(id=secrets.token_hex(16), shard=shard, connection=connection)
        self.sessions[session.id] = session
        self.current = session
        await self._route(session)
        await session.dispatch("READY", self._ready_payload(session))
        for guild in guilds:
            await session.dispatch("GUILD_CREATE", guild)
        self._ready.set()
        return session

    async def _reset_token(self, connection: Connection) -> None:
        """Past the session start limit Discord ends every session and resets the token."""
        self.token = secrets.token_urlsafe(24)
        await self.close_all(code=AUTHENTICATION_FAILED, message=b"Authentication failed.")
        await connection.ws.close(code=AUTHENTICATION_FAILED, message=b"Authentication failed.")

    async def _route(self, session: Session) -> None:
        """``session`` takes its shard's events; sessions of another shard count that are gone
        take none any more (a bot that changed its shard count)."""
        for shard, other in list(self.routes.items()):
            if shard[1] != session.shard[1] and other.connection is None:
                del self.routes[shard]
        self.routes[session.shard] = session
        async with self._changed:
            self._changed.notify_all()

    def sessions_for(self, guild_id: int | None) -> list[Session]:
        """The sessions a guild's events go to (None: events without a guild, shard 0)."""
        return [
            session
            for (shard_id, num_shards), session in self.routes.items()
            if shard_id == (0 if guild_id is None else shard_of(guild_id, num_shards))
        ]

    async def dispatch(self, event: str, data: dict[str, Any], guild_id: int | None) -> None:
        """Send ``event`` to the session(s) of ``guild_id``'s shard (None: shard 0)."""
        for session in self.sessions_for(guild_id):
            await session.dispatch(event, data)

    async def _resume(self, connection: Connection, data: Any, _: Session | None) -> Session | None:
        self.log.append(GatewayEvent(connection.path, "RESUME"))
        session = self.sessions.get(data.get("session_id", ""))
        if data.get("token") != self.token or session is None:
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
        await self._route(session)
        return session

    async def wait_ready(self, timeout_s: float) -> Session:
        await asyncio.wait_for(self._ready.wait(), timeout_s)
        assert self.current is not None
        return self.current

    async def wait_shards(self, num_shards: int, timeout_s: float) -> list[Session]:
        """Wait until every shard of ``num_shards`` has a connected session; those, by id."""

        def connected() -> list[Session] | None:
            found = [self.routes.get((i, num_shards)) for i in range(num_shards)]
            if all(s is not None and s.connection is not None for s in found):
                return [s for s in found if s is not None]
            return None

        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: connected() is not None)
        sessions = connected()
        assert sessions is not None
        return sessions

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

    async def close_all(self, code: int = 1001, message: bytes = b"emulator stopping") -> None:
        for session in self.sessions.values():
            if session.connection is not None:
                await session.connection.ws.close(code=code, message=message)
