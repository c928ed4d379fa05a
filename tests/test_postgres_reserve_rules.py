"""The check a reservation makes on the PostgreSQL server (stembot_fits, migration 0007) is
``quota_rules``' own: for every snapshot, policy and cost, the server grants exactly what
``enforce`` and ``enforce_budget`` let through. A request the server refuses is then told
why by ``quota_rules``, and one it grants is one ``quota_rules`` grants (reserving.py)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from stembot.config import QuotaPolicy
from stembot.errors import QuotaLimitReached
from stembot.quota_rules import enforce, enforce_budget
from stembot.store.postgres.migrations import MIGRATIONS
from stembot.store.postgres.reserving import policy_limits
from stembot.store.quotas import snapshot_of
from tests.postgres import admin_url, fresh_database
from tests.test_store import NOW

_FITS = """
SELECT stembot_fits(daily, monthly, user_daily, active, today, month, user_today, user_active,
                    role_allowance, calls, cost, policy, budget)
FROM jsonb_to_recordset(%s::jsonb) AS c (daily integer, monthly integer, user_daily integer,
  active integer, today bigint, month bigint, user_today bigint, user_active bigint,
  role_allowance integer, calls bigint, cost integer, policy integer[], budget integer)
"""


@dataclasses.dataclass(frozen=True)
class Case:
    overrides: tuple[int | None, int | None, int | None, int | None]
    usage: tuple[int, int, int, int]  # today, month, the member's today, their active
    role_allowance: int | None
    calls: int
    cost: int
    policy: QuotaPolicy

    def python_grants(self) -> bool:
        seen = snapshot_of(self.policy, (False, *self.overrides, *self.usage, self.role_allowance))
        try:
            enforce(seen, self.cost, NOW)
            enforce_budget(self.policy.api_daily_budget, self.calls, NOW)
        except QuotaLimitReached:
            return False
        return True

    def as_json(self) -> dict[str, Any]:
        names = ("daily", "monthly", "user_daily", "active")
        return {
            **dict(zip(names, self.overrides, strict=True)),
            **dict(zip(("today", "month", "user_today", "user_active"), self.usage, strict=True)),
            "role_allowance": self.role_allowance,
            "calls": self.calls,
            "cost": self.cost,
            "policy": policy_limits(self.policy),
            "budget": self.policy.api_daily_budget,
        }


def _some(rng: random.Random) -> int | None:
    return None if rng.random() < 0.3 else rng.randint(0, 6)


def _cases(count: int) -> Iterator[Case]:
    """Small numbers, so that every edge (0 switches off, equal to the limit, a ceiling under
    an override, a role allowance over the server's day) comes up often."""
    rng = random.Random(14)
    for _ in range(count):
        policy = QuotaPolicy(
            guild_daily_limit=rng.randint(0, 6),
            guild_monthly_limit=rng.randint(0, 8),
            user_daily_limit=rng.randint(0, 6),
            user_active_jobs=rng.randint(1, 3),
            max_guild_daily_limit=_some(rng),
            max_guild_monthly_limit=_some(rng),
            api_daily_budget=_some(rng),
        )
        yield Case(
            overrides=(_some(rng), _some(rng), _some(rng), _some(rng)),
            usage=(rng.randint(0, 3), rng.randint(0, 4), rng.randint(0, 3), rng.randint(0, 2)),
            role_allowance=_some(rng),
            calls=rng.randint(0, 4),
            cost=rng.randint(0, 2),
            policy=policy,
        )


@pytest.fixture(scope="module")
def migrated_url() -> Iterator[str]:
    with fresh_database(admin_url()) as url, psycopg.connect(url, autocommit=True) as conn:
        for _, sql in MIGRATIONS:
            conn.execute(sql.encode())
        yield url


def test_the_server_grants_exactly_what_quota_rules_grant(migrated_url: str) -> None:
    cases = list(_cases(5000))
    with psycopg.connect(migrated_url) as conn:
        rows = conn.execute(_FITS, (Jsonb([case.as_json() for case in cases]),)).fetchall()
    granted = [row[0] for row in rows]
    disagreements = [c for c, sql in zip(cases, granted, strict=True) if sql != c.python_grants()]
    assert not disagreements, disagreements[:3]
    assert 200 < sum(granted) < len(granted) - 200  # both answers come up often
