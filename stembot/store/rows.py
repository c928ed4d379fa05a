"""One place turns a row of ``requests`` (or ``results``) into a value and back, for every
part of the store that reads or writes one."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from stembot.models import Mode, NewRequest, Request, RequestStatus, Separation, Stem
from stembot.windows import parse_stamp

REQUEST_COLUMNS = (
    "id, guild_id, channel_id, user_id, interaction_id, mode, source_name, source_key, "
    "cost, status, created_at, started_at, finished_at, error, refunded_by_moderator"
)
SELECT_REQUEST = f"SELECT {REQUEST_COLUMNS} FROM requests WHERE id = ?"  # noqa: S608 (constant)
# The same columns of ``requests AS q``, for reads that join it to another table.
Q_REQUEST_COLUMNS = ", ".join(f"q.{column}" for column in REQUEST_COLUMNS.split(", "))


def request(row: Sequence[Any]) -> Request:
    created_at = parse_stamp(row[10])
    assert created_at is not None  # NOT NULL in the schema
    return Request(
        id=row[0],
        guild_id=row[1],
        channel_id=row[2],
        user_id=row[3],
        interaction_id=row[4],
        mode=Mode(row[5]),
        source_name=row[6],
        source_key=row[7],
        cost=row[8],
        status=RequestStatus(row[9]),
        created_at=created_at,
        started_at=parse_stamp(row[11]),
        finished_at=parse_stamp(row[12]),
        error=row[13],
        refunded_by_moderator=bool(row[14]),
    )


def new_request(
    request_id: int,
    asked: NewRequest,
    cost: int,
    status: RequestStatus,
    created: str | datetime,
    finished: str | datetime | None,
) -> Request:
    """The request a reservation just recorded, as a read of its row would give it."""
    return request(
        (
            request_id,
            asked.guild_id,
            asked.channel_id,
            asked.user_id,
            asked.interaction_id,
            asked.mode.value,
            asked.source_name,
            asked.source_key,
            cost,
            status.value,
            created,
            None,
            finished,
            None,
            False,
        )
    )


def separation(mode: Mode, stems: str, issued: str | datetime) -> Separation:
    issued_at = parse_stamp(issued)
    assert issued_at is not None
    stored = tuple(Stem(name=s["name"], url=s["url"]) for s in json.loads(stems))
    return Separation(mode=mode, stems=stored, issued_at=issued_at)


def stems(separation: Separation) -> str:
    """The ``stems`` column of ``results`` for a separation; ``separation`` reads it back."""
    return json.dumps([{"name": s.name, "url": s.url} for s in separation.stems])
