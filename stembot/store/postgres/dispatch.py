"""The API calls' queue shared by every process on one PostgreSQL ledger.

The ledger is the queue: a paid request still queued is a call waiting for its turn, and no
other copy of it exists (a queue library would deliver a call at least once: wrong for a paid
call that must run once). ``dispatch`` gives calls their turns in one short transaction
under an advisory lock, whichever process runs it: at most ``cap`` calls hold a slot at once
across all processes (``granted_at`` set, still queued or running), and servers take turns
as in one process's FairQueue (stembot/scheduling.py), their lanes' turn counters stored in
``call_lanes``: ranking each process's calls on its own would let a big server's crowd on
one process starve a small server's single call on another. A grant is told to the process
holding the call (LISTEN/NOTIFY on ``CALLS_CHANNEL``); that process makes the call.

Only calls of live processes (their lease alive) are given a turn: a dead process's calls are
recovered by the sweeps (leases.py), which frees their slots.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stembot.errors import StoreBusyError
from stembot.models import Mode
from stembot.store.postgres import inheritance
from stembot.store.postgres.connection import CALLS_CHANNEL, DISPATCH_LOCK, Conn, Database, lock
from stembot.store.postgres.inheritance import Inherited
from stembot.store.postgres.quotas import PostgresQuotas

_ALIVE = (
    "SELECT coalesce(array_agg(id), '{}'::bigint[]) FROM stembot_processes "
    "WHERE ended_at IS NULL AND expires_at > clock_timestamp()"
)
# A call waiting for its turn (the partial index requests_waiting_calls holds exactly these).
_WAITING = "r.pays_call AND r.status = 'queued' AND r.granted_at IS NULL"
_OF_THE_LIVE = " AND r.lease_id = ANY(%(alive)s)"
# The servers with calls waiting, one index probe each (a loose index scan).
_WAITING_GUILDS = (
    "WITH RECURSIVE g (guild_id) AS ("  # noqa: S608 (constant)
    f"(SELECT r.guild_id FROM requests AS r WHERE {_WAITING}{_OF_THE_LIVE} "
    "ORDER BY r.guild_id LIMIT 1) UNION ALL "
    "SELECT (SELECT r.guild_id FROM requests AS r "
    f"WHERE r.guild_id > g.guild_id AND {_WAITING}{_OF_THE_LIVE} "
    "ORDER BY r.guild_id LIMIT 1) FROM g WHERE g.guild_id IS NOT NULL) "
    "SELECT guild_id FROM g WHERE guild_id IS NOT NULL"
)
_OLDEST_CALLS = (
    "SELECT r.guild_id, min(r.id) FROM requests AS r "  # noqa: S608 (constant)
    f"WHERE r.guild_id = ANY(%(guilds)s) AND {_WAITING}{_OF_THE_LIVE} "
    "GROUP BY r.guild_id ORDER BY min(r.id)"
)
_OPEN_LANES = """
INSERT INTO call_lanes (guild_id, turn, seq, active)
SELECT g, %(serving)s, s, true FROM unnest(%(guilds)s::bigint[], %(seqs)s::bigint[]) AS x (g, s)
ON CONFLICT (guild_id) DO UPDATE
SET turn = greatest(call_lanes.turn, excluded.turn), seq = excluded.seq, active = true
"""
_FIRST_LANES = (
    "SELECT guild_id, turn, seq FROM call_lanes WHERE active ORDER BY turn, seq LIMIT %(free)s"
)
_FIRST_CALLS = (
    "SELECT l.g, c.id FROM unnest(%(guilds)s::bigint[]) AS l (g) CROSS JOIN LATERAL ("  # noqa: S608 (constant)
    f"SELECT r.id FROM requests AS r WHERE r.guild_id = l.g AND {_WAITING}{_OF_THE_LIVE} "
    "ORDER BY r.id LIMIT %(free)s) AS c"
)
_HOLDING_SLOTS = (
    "SELECT count(*) FROM requests "
    "WHERE pays_call AND granted_at IS NOT NULL AND status IN ('queued', 'running')"
)
_GRANT = (
    "UPDATE requests SET granted_at = clock_timestamp() "
    "WHERE id = ANY(%s) AND granted_at IS NULL AND status = 'queued' RETURNING id, lease_id"
)
_MOVE_LANES = """
UPDATE call_lanes AS l SET turn = x.turn, active = x.active
FROM unnest(%s::bigint[], %s::bigint[], %s::boolean[]) AS x (g, turn, active)
WHERE l.guild_id = x.g
"""
_NOTIFY = "SELECT pg_notify(%s, x) FROM unnest(%s::text[]) AS x"
_LANES_WAITING = (
    "SELECT l.guild_id, l.turn, l.seq, count(r.id) FROM call_lanes AS l "  # noqa: S608 (constant)
    f"JOIN requests AS r ON r.guild_id = l.guild_id AND {_WAITING} "
    "WHERE l.active GROUP BY l.guild_id, l.turn, l.seq"
)
_PLACES_IN_LANE = (
    "SELECT r.id, r.guild_id, (SELECT count(*) FROM requests AS o "  # noqa: S608 (constant)
    "WHERE o.guild_id = r.guild_id AND o.pays_call AND o.status = 'queued' "
    "AND o.granted_at IS NULL AND o.id < r.id) "
    f"FROM requests AS r WHERE r.id = ANY(%s) AND {_WAITING}"
)


@dataclass(frozen=True, slots=True)
class Grant:
    """A call given its turn: the paid request's id and the lease of the process holding it."""

    request_id: int
    lease_id: int


@dataclass(slots=True)
class _Lane:
    guild_id: int
    turn: int
    seq: int
    calls: deque[int]
    more: bool  # the lane may hold more calls than were read


@dataclass(frozen=True, slots=True)
class Word:
    """What a process said on the channel: ``grant`` (``lease_id``'s calls ``request_ids``
    were given their turn), ``started`` / ``ended`` (a call for ``key`` and ``mode``), or
    ``gone`` (the lease ``lease_id`` ended with queued calls for the others to take over)."""

    kind: str
    lease_id: int = 0
    request_ids: tuple[int, ...] = ()
    key: str = ""
    mode: Mode = Mode.VOCALS

    def payload(self) -> str:
        if self.kind == "grant":
            return f"grant {self.lease_id} {','.join(map(str, self.request_ids))}"
        if self.kind == "gone":
            return f"gone {self.lease_id}"
        # A source key is an attachment's id or a link's hash: never a link itself.
        return f"{self.kind} {self.mode.value} {self.key}"

    @classmethod
    def parse(cls, payload: str) -> Word | None:
        kind, _, rest = payload.partition(" ")
        first, _, second = rest.partition(" ")
        try:
            if kind == "grant":
                ids = tuple(int(i) for i in second.split(",") if i)
                return cls(kind, lease_id=int(first), request_ids=ids)
            if kind == "gone":
                return cls(kind, lease_id=int(first))
            if kind in ("started", "ended"):
                return cls(kind, key=second, mode=Mode(first))
        except ValueError:
            pass
        return None


class PostgresCalls:
    """The shared queue's reads and writes; ``dispatch`` is one transaction."""

    def __init__(self, db: Database, quotas: PostgresQuotas) -> None:
        self._db = db
        self._quotas = quotas

    async def dispatch(self, cap: int) -> list[Grant]:
        """Give waiting calls their turns, up to ``cap`` holding a slot at once, and tell
        each process holding one (on commit). Returns every grant made, in turn order."""
        return await self._db.write(lambda conn: _dispatch(conn, cap))

    async def positions(self, request_ids: Sequence[int]) -> dict[int, int]:
        """Each waiting call's 1-based place in the order the dispatches will give turns
        (as FairQueue.position counts it); calls no longer waiting are left out."""
        if not request_ids:
            return {}

        async def read(conn: Conn) -> tuple[list[Any], list[Any]]:
            cursor = await conn.execute(_LANES_WAITING.encode())
            waiting = await cursor.fetchall()
            cursor = await conn.execute(_PLACES_IN_LANE.encode(), (list(request_ids),))
            return waiting, await cursor.fetchall()

        waiting, mine = await self._db.read(read, one_snapshot=False)
        lanes = {row[0]: (row[1], row[2], row[3]) for row in waiting}
        return {
            request_id: place
            for request_id, guild_id, index in mine
            if (place := _place(lanes, guild_id, index)) is not None
        }

    async def granted_to(self, lease_id: int) -> list[int]:
        """The calls of ``lease_id`` given a turn and not started yet (a grant whose word
        was lost with a connection)."""
        found = await self._db.fetch_all(
            "SELECT id FROM requests WHERE lease_id = %s AND pays_call "
            "AND granted_at IS NOT NULL AND status = 'queued'",
            (lease_id,),
        )
        return [row[0] for row in found]

    async def in_flight(self, key: str, mode: Mode) -> bool | None:
        """Whether the paid call for this source and mode is running (False: queued), or
        None when no call for them is in flight."""
        row = await self._first(
            "SELECT status FROM requests WHERE source_key = %s AND mode = %s "
            "AND pays_call AND status IN ('queued', 'running')",
            (key, mode.value),
        )
        return None if row is None else row[0] == "running"

    async def last_outcome(self, key: str, mode: Mode) -> tuple[str, str | None] | None:
        """The status and error of the last paid call for this source and mode."""
        row = await self._first(
            "SELECT status, error FROM requests WHERE source_key = %s AND mode = %s "
            "AND pays_call ORDER BY id DESC LIMIT 1",
            (key, mode.value),
        )
        return None if row is None else (row[0], row[1])

    async def inherit(
        self, key: str, mode: Mode, heirs: Sequence[tuple[int, Sequence[int]]], now: datetime
    ) -> Inherited | None:
        """The call for this source and mode, whose payer cancelled before it ran, taken on
        by the first of ``heirs`` (request id, role ids) that may pay (inheritance.py); None
        when none may. Raises CallInFlightError when another process's heir was first."""
        try:
            return await inheritance.inherit(self._db, self._quotas, key, mode, heirs, now)
        except StoreBusyError:
            # The answer may have been lost with its connection, the change made all the same.
            paying = await inheritance.paying(self._db, key, mode)
            if paying is None or paying.request_id not in dict(heirs):
                raise
            return paying

    async def _first(self, sql: str, params: tuple[object, ...]) -> tuple[Any, ...] | None:
        return await self._db.fetch_one(sql.encode(), params)

    async def tell(self, word: Word) -> None:
        """Tell every listening process (NOTIFY on ``CALLS_CHANNEL``)."""

        async def work(conn: Conn) -> None:
            await conn.execute(_NOTIFY, (CALLS_CHANNEL, [word.payload()]))

        await self._db.write(work, atomic=False)


async def _dispatch(conn: Conn, cap: int) -> list[Grant]:
    await lock(conn, DISPATCH_LOCK)
    alive = await _one(conn, _ALIVE, None)
    cursor = await conn.execute("SELECT serving_turn, next_seq FROM call_turns")
    state = await cursor.fetchone()
    assert state is not None
    serving, next_seq = int(state[0]), int(state[1])
    next_seq = await _open_and_close_lanes(conn, alive, serving, next_seq)
    free = cap - int(await _one(conn, _HOLDING_SLOTS, None))
    grants: list[Grant] = []
    if free > 0:
        lanes = await _first_lanes(conn, alive, free)
        picked, serving = _take_turns(lanes, free, serving)
        if picked:
            cursor = await conn.execute(_GRANT, (picked,))
            holders = {row[0]: row[1] for row in await cursor.fetchall()}
            grants = [Grant(i, holders[i]) for i in picked if i in holders]
        await conn.execute(
            _MOVE_LANES,
            (
                [lane.guild_id for lane in lanes],
                [lane.turn for lane in lanes],
                [bool(lane.calls) or lane.more for lane in lanes],
            ),
        )
    await conn.execute(
        "UPDATE call_turns SET serving_turn = %s, next_seq = %s", (serving, next_seq)
    )
    if grants:
        await conn.execute(_NOTIFY, (CALLS_CHANNEL, _grant_payloads(grants)))
    return grants


async def _open_and_close_lanes(conn: Conn, alive: list[int], serving: int, next_seq: int) -> int:
    """A server whose first call is waiting gets a lane at the turn being served (the next
    one if it was served in this turn: its counter is already past it), behind the lanes
    already open; a server with nothing waiting any more leaves the turns. Returns the next
    lane age."""
    cursor = await conn.execute(_WAITING_GUILDS.encode(), {"alive": alive})
    waiting = [row[0] for row in await cursor.fetchall()]
    cursor = await conn.execute("SELECT guild_id FROM call_lanes WHERE active")
    open_lanes = {row[0] for row in await cursor.fetchall()}
    new = [guild for guild in waiting if guild not in open_lanes]
    if new:
        cursor = await conn.execute(_OLDEST_CALLS.encode(), {"guilds": new, "alive": alive})
        arrived = [row[0] for row in await cursor.fetchall()]
        seqs = list(range(next_seq, next_seq + len(arrived)))
        next_seq += len(arrived)
        await conn.execute(_OPEN_LANES, {"serving": serving, "guilds": arrived, "seqs": seqs})
    gone = list(open_lanes - set(waiting))
    if gone:
        await conn.execute("UPDATE call_lanes SET active = false WHERE guild_id = ANY(%s)", (gone,))
    return next_seq


async def _first_lanes(conn: Conn, alive: list[int], free: int) -> list[_Lane]:
    """The ``free`` lanes first in turn, each with up to ``free`` of its calls: ``free``
    turns can only go to them."""
    cursor = await conn.execute(_FIRST_LANES, {"free": free})
    lanes = [_Lane(row[0], row[1], row[2], deque(), False) for row in await cursor.fetchall()]
    cursor = await conn.execute(
        _FIRST_CALLS.encode(),
        {"guilds": [lane.guild_id for lane in lanes], "alive": alive, "free": free},
    )
    by_guild = {lane.guild_id: lane for lane in lanes}
    for guild_id, request_id in await cursor.fetchall():
        by_guild[guild_id].calls.append(request_id)
    for lane in lanes:
        lane.more = len(lane.calls) == free
    return lanes


def _take_turns(lanes: list[_Lane], free: int, serving: int) -> tuple[list[int], int]:
    """FairQueue.pop ``free`` times over the lanes: the fewest turns first, the older lane
    on a tie. Moves each lane's turn on; returns the calls picked and the turn served."""
    heap = [(lane.turn, lane.seq, index) for index, lane in enumerate(lanes) if lane.calls]
    heapq.heapify(heap)
    picked: list[int] = []
    while heap and len(picked) < free:
        _, _, index = heapq.heappop(heap)
        lane = lanes[index]
        picked.append(lane.calls.popleft())
        serving = lane.turn
        lane.turn += 1
        if lane.calls:
            heapq.heappush(heap, (lane.turn, lane.seq, index))
    return picked, serving


def _place(lanes: dict[int, tuple[int, int, int]], guild_id: int, index: int) -> int | None:
    """FairQueue.position over stored lanes: the calls of every lane served before this one's
    turn comes, and this lane's own calls ahead of it."""
    if guild_id not in lanes:
        return None
    turn, seq, _ = lanes[guild_id]
    my_turn = turn + index
    ahead = index
    for other, (other_turn, other_seq, count) in lanes.items():
        if other != guild_id:
            before_mine = my_turn - other_turn + (1 if other_seq < seq else 0)
            ahead += max(0, min(count, before_mine))
    return ahead + 1


def _grant_payloads(grants: list[Grant]) -> list[str]:
    by_lease: dict[int, list[int]] = {}
    for grant in grants:
        by_lease.setdefault(grant.lease_id, []).append(grant.request_id)
    return [
        Word("grant", lease_id=lease, request_ids=tuple(ids)).payload()
        for lease, ids in by_lease.items()
    ]


async def _one(conn: Conn, sql: str, params: Any) -> Any:
    cursor = await conn.execute(sql.encode(), params)
    row = await cursor.fetchone()
    assert row is not None
    return row[0]
