"""A TCP proxy in front of the test PostgreSQL server that cuts a connection where a real
network does at the worst moment: right after the server committed a transaction, before the
client hears so (the commit stands, its answer is lost).

It reads the server's side of the wire protocol message by message (a type byte and a
length), so the client must not ask for TLS or GSS encryption first (``sslmode=disable``,
``gssencmode=disable``, which ``url`` adds). Everything else passes through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

_HEADER = 5  # a message's type byte and its length (which counts itself, not the type)


class PostgresProxy:
    def __init__(self, server_url: str) -> None:
        parts = urlsplit(server_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 5432
        self._server: asyncio.Server | None = None
        self._cuts_asked: list[bytes] = []
        self.cut = 0
        self._connections: set[asyncio.Task[object]] = set()

    def url(self, database_url: str) -> str:
        """``database_url`` reached through the proxy."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        parts = urlsplit(database_url)
        netloc = parts.netloc.rsplit("@", 1)
        where = f"127.0.0.1:{port}"
        netloc_new = f"{netloc[0]}@{where}" if len(netloc) == 2 else where
        query = "&".join(filter(None, [parts.query, "sslmode=disable&gssencmode=disable"]))
        return urlunsplit(parts._replace(netloc=netloc_new, query=query))

    def cut_after_next(self, tag: bytes = b"COMMIT") -> None:
        """The next statement the server completes with ``tag`` (a transaction's COMMIT, or
        a statement run alone, committed as it completes: b"SELECT"...) is not answered:
        its connection is cut instead."""
        self._cuts_asked.append(tag)

    def cut_all(self) -> None:
        """Cut every connection now, whatever is on the wire."""
        for connection in list(self._connections):
            connection.cancel()
            self.cut += 1

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PostgresProxy]:
        """Listening on a port of its own until the block ends; then every connection cut."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield self
        finally:
            self._server.close()
            for connection in list(self._connections):
                connection.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        this = asyncio.current_task()
        assert this is not None
        self._connections.add(this)
        server_in, server_out = await asyncio.open_connection(self._host, self._port)
        pumps = [
            asyncio.create_task(_copy(client_in, server_out)),
            asyncio.create_task(self._answers(server_in, client_out)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._connections.discard(this)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for writer in (client_out, server_out):
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

    async def _answers(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The server's messages to the client, one by one; a completion asked to be cut is
        not passed on, and the connection ends."""
        while True:
            header = await reader.readexactly(_HEADER)
            body = await reader.readexactly(int.from_bytes(header[1:], "big") - 4)
            if header[:1] == b"C" and self._cuts_asked and body.startswith(self._cuts_asked[0]):
                self._cuts_asked.pop(0)
                self.cut += 1
                return
            writer.write(header + body)
            await writer.drain()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
