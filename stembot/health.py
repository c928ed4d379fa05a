"""Whether this process is doing its job, as /healthz says it (stembot/http_endpoints.py) and
`stembot healthcheck` asks it: every shard it runs connected to Discord, its database
answering, and still taking requests (not shutting down)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from stembot.shards import ShardSource

log = logging.getLogger(__name__)

# A database that takes longer than this to answer one trivial read is not reachable enough.
DATABASE_TIMEOUT_S = 3.0


class Service(Protocol):
    @property
    def accepting(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class HealthReport:
    shards_expected: tuple[int, ...]
    shards_connected: tuple[int, ...]
    database_reachable: bool
    accepting: bool

    @property
    def healthy(self) -> bool:
        return (
            bool(self.shards_expected)
            and self.shards_connected == self.shards_expected
            and self.database_reachable
            and self.accepting
        )

    def problems(self) -> list[str]:
        """What is wrong, in words (empty when healthy)."""
        problems = []
        missing = [s for s in self.shards_expected if s not in self.shards_connected]
        if not self.shards_expected:
            problems.append("no shard started yet")
        elif missing:
            problems.append(f"shard(s) {', '.join(map(str, missing))} not connected")
        if not self.database_reachable:
            problems.append("database unreachable")
        if not self.accepting:
            problems.append("shutting down")
        return problems

    def body(self) -> dict[str, Any]:
        """The JSON /healthz answers with: small, no address, no secret."""
        return {
            "status": "ok" if self.healthy else "unavailable",
            "shards": {
                "expected": list(self.shards_expected),
                "connected": list(self.shards_connected),
            },
            "database": "reachable" if self.database_reachable else "unreachable",
            "accepting_requests": self.accepting,
            "problems": self.problems(),
        }


class Health:
    """Checks the shards, the database and the service when asked; says in the log when the
    answer changes (not at every probe)."""

    def __init__(
        self,
        shards: ShardSource,
        ping_database: Callable[[], Awaitable[None]],
        service: Service,
        *,
        database_timeout_s: float = DATABASE_TIMEOUT_S,
    ) -> None:
        self._shards = shards
        self._ping = ping_database
        self._service = service
        self._timeout_s = database_timeout_s
        self._last: HealthReport | None = None

    async def check(self) -> HealthReport:
        shards = self._shards.read()
        report = HealthReport(
            shards.expected,
            shards.connected,
            await self._database_reachable(),
            self._service.accepting,
        )
        self._log_change(report)
        return report

    async def _database_reachable(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._ping()
        except Exception as error:
            # The kind only: a driver's message may name the server.
            log.debug("health: the database did not answer (%s)", type(error).__name__)
            return False
        return True

    def _log_change(self, report: HealthReport) -> None:
        last, self._last = self._last, report
        if last is not None and last.healthy == report.healthy:
            return
        if report.healthy:
            log.info("health: ok (shard(s) %s connected)", _ids(report.shards_connected))
        elif last is not None:
            log.warning("health: unavailable: %s", "; ".join(report.problems()))


def _ids(shards: tuple[int, ...]) -> str:
    return ", ".join(map(str, shards))
