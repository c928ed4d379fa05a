"""How this bot process shares its ledger: alone (the SQLite file, one bot), or with other
processes on PostgreSQL, each holding a lease (stembot/process_lease.py).

The service asks three things of it: what a start-up recovers, what the periodic sweep
recovers (the requests of processes that are gone), and which of its requests it may still
tell the outcome of once it wrote it (only those it still holds: a process that lost its
lease tells nothing, the process that took its requests over does).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from stembot.models import Recovery, RequestStatus
from stembot.process_lease import ProcessLease
from stembot.store.interface import LedgerStore

log = logging.getLogger(__name__)


class Sharing(Protocol):
    @property
    def sweep_every_s(self) -> float | None:
        """How often to run ``sweep`` (None: never, nobody else shares the ledger)."""
        ...

    async def recover(self, now: datetime) -> Recovery:
        """At start-up: what stopped processes left owing, now this process's to tell."""
        ...

    async def sweep(self, now: datetime) -> Recovery:
        """Now and then: the same for processes found gone since."""
        ...

    async def kept(self, request_ids: Sequence[int], status: RequestStatus) -> set[int]:
        """Which of these requests, just moved to ``status``, this process may tell."""
        ...


class Alone:
    """The only bot on its ledger (the SQLite file, held by its lock): everything is its own."""

    def __init__(self, store: LedgerStore) -> None:
        self._store = store

    @property
    def sweep_every_s(self) -> float | None:
        return None

    async def recover(self, now: datetime) -> Recovery:
        return await self._store.ledger.recover(now)

    async def sweep(self, now: datetime) -> Recovery:
        return Recovery([], [])

    async def kept(self, request_ids: Sequence[int], status: RequestStatus) -> set[int]:
        return set(request_ids)


class LeasedLedger(Protocol):
    """What a shared ledger offers the lease holders (stembot/store/postgres/leases.py)."""

    async def recover_dead(self, me: int, now: datetime, *, unowned: bool = False) -> Recovery: ...

    async def held(
        self, lease_id: int, request_ids: Sequence[int], status: RequestStatus
    ) -> set[int]: ...


class Leased:
    """One of several processes on a PostgreSQL ledger, holding ``lease``."""

    def __init__(self, leases: LeasedLedger, lease: ProcessLease) -> None:
        self._leases = leases
        self._lease = lease

    @property
    def sweep_every_s(self) -> float | None:
        return self._lease.heartbeat_s

    async def recover(self, now: datetime) -> Recovery:
        # Requests of no lease at all are a bot's from before leases: recovered at a start.
        return await self._leases.recover_dead(self._lease.id, now, unowned=True)

    async def sweep(self, now: datetime) -> Recovery:
        if not self._lease.held():
            return Recovery([], [])
        return await self._leases.recover_dead(self._lease.id, now)

    async def kept(self, request_ids: Sequence[int], status: RequestStatus) -> set[int]:
        if not self._lease.held():
            log.warning("request(s) %s: this process lost its lease; not telling", request_ids)
            return set()
        try:
            return await self._leases.held(self._lease.id, request_ids, status)
        except Exception as error:
            # As on one process: the answer goes out even when the database cannot say.
            log.warning("request(s) %s: holder unknown (%s); telling", request_ids, error)
            return set(request_ids)
