"""A member's reservation on the PostgreSQL ledger in one statement: ``stembot_reserve``
(migration 0007; with its paid call's sealed source since 0008) takes the guild's lock (and
the bot-wide budget's, for a paid call), reads the usage, checks it and inserts the request,
all in the statement's own transaction. One round trip and one commit, where BEGIN, the lock,
the read, the insert and COMMIT were five.

The server decides whether the request fits (``stembot_fits``, the rules of
``stembot.quota_rules`` written in SQL and held equal to them by a test); what a refusal tells
the member is still ``quota_rules``', from the very usage the server read under the lock.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from stembot import quota_rules
from stembot.config import QuotaPolicy
from stembot.errors import DuplicateRequestError, ShuttingDownError, StoreFailedError
from stembot.models import NewRequest, Request, RequestStatus
from stembot.store import rows
from stembot.store.postgres.connection import Conn
from stembot.store.postgres.quotas import window_bounds
from stembot.store.quotas import snapshot_of

log = logging.getLogger(__name__)

_RESERVE = (
    b"SELECT * FROM stembot_reserve(%(guild)s, %(channel)s, %(user)s, %(interaction)s, "
    b"%(roles)s::bigint[], %(mode)s, %(name)s, %(key)s, %(cost)s, %(status)s, %(created)s, "
    b"%(finished)s, %(paid)s, %(lease)s, %(day)s, %(day_end)s, %(month)s, %(month_end)s, "
    b"%(today)s, %(policy)s::integer[], %(budget)s, %(sealed)s)"
)
# The usage columns come first, as stembot_usage and the quota reads give them.
_CALLS_TODAY, _FITS, _ID = 10, 11, 12


def policy_limits(policy: QuotaPolicy) -> list[int | None]:
    """The policy as stembot_fits takes it: defaults, then the operator's ceilings."""
    return [
        policy.guild_daily_limit,
        policy.guild_monthly_limit,
        policy.user_daily_limit,
        policy.user_active_jobs,
        policy.max_guild_daily_limit,
        policy.max_guild_monthly_limit,
    ]


async def reserve(
    conn: Conn,
    policy: QuotaPolicy,
    asked: NewRequest,
    cost: int,
    status: RequestStatus,
    now: datetime,
    *,
    paid: bool,
    lease: int | None,
) -> Request:
    """Record ``asked`` if it fits every limit, in one statement (autocommit: its own
    transaction). Raises DuplicateRequestError, QuotaLimitReached naming the binding limit,
    ShuttingDownError once ``lease`` is dead; a second paid call in flight is the unique
    index's UniqueViolation, for the caller to name."""
    budget = policy.api_daily_budget if paid else None
    cursor = await conn.execute(
        _RESERVE,
        {
            **row_values(asked, cost, status, now, paid=paid, lease=lease),
            "roles": list(asked.role_ids),
            "policy": policy_limits(policy),
            "budget": budget,
            **window_bounds(now),
        },
    )
    row = await cursor.fetchone()
    assert row is not None  # the function always returns its one row
    if row[_FITS]:
        return recorded(row[_ID], asked, cost, status, now, lease)
    seen = snapshot_of(policy, row)
    if seen.duplicate:
        raise DuplicateRequestError()
    quota_rules.enforce(seen, cost, now)
    quota_rules.enforce_budget(budget, row[_CALLS_TODAY] or 0, now)
    # Only a disagreement between stembot_fits and quota_rules gets here: a bug.
    log.error("the ledger refused request %s, which quota_rules let through", asked.interaction_id)
    raise StoreFailedError()


def row_values(
    asked: NewRequest,
    cost: int,
    status: RequestStatus,
    created: datetime,
    *,
    paid: bool,
    lease: int | None,
) -> dict[str, Any]:
    """A new request's columns, as the statements recording one name them."""
    return {
        "guild": asked.guild_id,
        "channel": asked.channel_id,
        "user": asked.user_id,
        "interaction": asked.interaction_id,
        "mode": asked.mode.value,
        "name": asked.source_name,
        "key": asked.source_key,
        "cost": cost,
        "status": status.value,
        "created": created,
        "finished": None if status.is_active else created,
        "paid": paid,
        "lease": lease,
        # Only a queued paid call keeps its source, sealed, to be handed over.
        "sealed": asked.sealed_source if paid and status is RequestStatus.QUEUED else None,
    }


def recorded(
    new_id: int | None,
    asked: NewRequest,
    cost: int,
    status: RequestStatus,
    created: datetime,
    lease: int | None,
) -> Request:
    """The request just recorded as ``new_id``; None: its ``lease`` was no longer alive."""
    if new_id is None:
        log.error("not recording a request: this process's lease %s is no longer alive", lease)
        raise ShuttingDownError()
    finished = None if status.is_active else created
    return rows.new_request(new_id, asked, cost, status, created, finished)
