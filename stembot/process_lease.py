"""This process's lease on a ledger shared with other bot processes (PostgreSQL).

The lease is renewed every ``heartbeat_s``; the database gives it ``lease_s`` more each time.
A process that could not renew it in time (frozen by SIGSTOP or a paused VM, or cut off from
the database for longer than the lease) has lost it for good: the other processes take over
its requests (refunding and telling their requesters, or delivering a result already
stored), and the ledger no longer lets it record or change any request. It notices by its
own clock as well: ``held()`` turns false once ``lease_s`` went by since the last renewal
was sent (the monotonic clock keeps running while a process is stopped), so what it would
still tell a requester after waking is not told; ``lost`` is then set and the process stops
(its supervisor starts it again, with a new lease).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class LeaseLostError(Exception):
    """This process lost its lease while it ran: it stopped, its requests taken over."""

    def __init__(self, lease_id: int) -> None:
        super().__init__(
            f"this process lost its lease {lease_id} on the ledger (frozen, or cut off from "
            "the database, for longer than STEMBOT_LEASE_S); the other processes took over its "
            "requests. Start it again."
        )


class LeaseRecord(Protocol):
    """Where leases are kept (stembot/store/postgres/leases.py)."""

    async def register(self, pid: int, host: str, shards: str, lease_s: float) -> int: ...

    async def renew(self, lease_id: int, lease_s: float) -> bool: ...

    async def end(self, lease_id: int) -> None: ...


class ProcessLease:
    """Taken with ``take``, renewed by ``keep`` (a task), given back by ``release``."""

    def __init__(
        self,
        record: LeaseRecord,
        lease_id: int,
        *,
        lease_s: float,
        heartbeat_s: float,
        sent_at: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._record = record
        self.id = lease_id
        self._lease_s = lease_s
        self._heartbeat_s = heartbeat_s
        self._clock = clock
        self._alive_until = sent_at + lease_s
        self.lost = asyncio.Event()

    @classmethod
    async def take(
        cls,
        record: LeaseRecord,
        *,
        shards: str,
        lease_s: float,
        heartbeat_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> ProcessLease:
        """Register this process (pid, host, the shards it runs) with a new lease."""
        sent_at = clock()
        lease_id = await record.register(os.getpid(), socket.gethostname(), shards, lease_s)
        log.info(
            "holding lease %s (renewed every %g s, lost after %g s)", lease_id, heartbeat_s, lease_s
        )
        return cls(
            record,
            lease_id,
            lease_s=lease_s,
            heartbeat_s=heartbeat_s,
            sent_at=sent_at,
            clock=clock,
        )

    @property
    def heartbeat_s(self) -> float:
        return self._heartbeat_s

    def held(self) -> bool:
        """Still ours by this process's own clock (False for good once not)."""
        if not self.lost.is_set() and self._clock() >= self._alive_until:
            self._lose(f"it was not renewed within its {self._lease_s:g} s")
        return not self.lost.is_set()

    async def keep(self) -> None:
        """Renew every heartbeat until lost (or cancelled). A database that cannot be reached
        is tried again at each beat: the lease is lost only once its time has run out."""
        while self.held():
            await asyncio.sleep(self._heartbeat_s)
            if not self.held():
                return
            sent_at = self._clock()
            try:
                renewed = await self._record.renew(self.id, self._lease_s)
            except Exception as error:
                log.warning("lease %s: could not renew it (%s); trying again", self.id, error)
                continue
            if not renewed:
                self._lose("the database says it expired")
                return
            self._alive_until = sent_at + self._lease_s

    async def release(self) -> None:
        """A clean stop: the lease ends now (the other processes need not wait for it)."""
        if self.lost.is_set():
            return
        try:
            await self._record.end(self.id)
        except Exception as error:
            log.warning("lease %s: could not end it (%s); it expires on its own", self.id, error)

    def _lose(self, why: str) -> None:
        log.error(
            "this process lost its lease %s (%s: it was frozen, or cut off from the database, "
            "for longer than STEMBOT_LEASE_S); the other processes take over its requests. "
            "Stopping.",
            self.id,
            why,
        )
        self.lost.set()
