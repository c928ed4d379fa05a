"""The guard: connections only to addresses the policy (stembot/address_policy.py) permits.

It lives in the connector, not in the probe, because only there is the address that is about
to be connected known: the resolver refuses a name if any of its answers is not allowed, and
the socket factory refuses every non-allowed address the instant before a socket is made for it
(which also covers IP literals, which aiohttp never sends to the resolver). So there is no gap
between checking an address and connecting to it, on every redirect hop.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from stembot.address_policy import AddressPolicy

_BLOCKED_MARKER: Final = "address refused by stembot's URL policy"


class BlockedAddressError(OSError):
    """A connection to an address the policy forbids was stopped before it was made."""

    def __init__(self, address: str) -> None:
        # The address is for logs only; users get a fixed message.
        super().__init__(errno.EACCES, f"{_BLOCKED_MARKER}: {address}")


class GuardedResolver(AbstractResolver):
    """Resolves through ``inner`` and fails the lookup when any answer is not allowed.

    All or nothing: a name that answers with one public and one private address is refused,
    since that mix is how a rebinding attack looks.
    """

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            if not self._policy.permits(answer["host"]):
                raise BlockedAddressError(answer["host"])
        return answers

    async def close(self) -> None:
        """The inner resolver belongs to whoever passed it in (ThreadedResolver holds nothing)."""


class GuardedConnector(aiohttp.TCPConnector):
    """A TCPConnector that connects only to addresses ``policy`` permits.

    Built by the entry point (inside the running loop): one shared by the URL probes, one by
    the stem downloads, so big downloads never hold a probe's connection slot. Its
    connections are never reused: each GET is one request to a host stembot did not choose,
    and a server that sends more than its Content-Length must not poison a pooled connection.
    """

    def __init__(self, policy: AddressPolicy, *, resolver: AbstractResolver | None = None) -> None:
        self._policy = policy
        super().__init__(
            resolver=GuardedResolver(policy, resolver),
            socket_factory=self._guarded_socket,
            force_close=True,
            limit=20,
        )

    def _guarded_socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """Refuse the exact address about to be connected, whatever produced it."""
        family, type_, proto, _, sockaddr = addr_info
        host = str(sockaddr[0])
        if not self._policy.permits(host):
            raise BlockedAddressError(host)
        return socket.socket(family=family, type=type_, proto=proto)


def is_blocked(error: BaseException) -> bool:
    """Whether the guard stopped ``error``'s connection, however aiohttp wrapped it."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BlockedAddressError) or _BLOCKED_MARKER in str(current):
            return True
        inner = current.os_error if isinstance(current, aiohttp.ClientConnectorError) else None
        current = inner or current.__cause__ or current.__context__
    return False
