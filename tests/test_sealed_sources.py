"""A queued call's source sealed for the ledger (stembot/sealed_sources.py): it opens only with
the same API key and for its own row, and holds nothing of the link in the clear; and the
ledger keeps it exactly while the call is queued, on both stores."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import timedelta

from stembot.models import Mode, RequestStatus
from stembot.sealed_sources import SourceSeal
from tests.store_backends import Backend
from tests.test_store import BOB, GUILD, NOW, new_request, separation

URL = "https://cdn.discordapp.com/attachments/1/2/song.wav?ex=65a&is=65b&hm=0123456789abcdef"
KEY = "attachment:2"


def test_a_sealed_source_opens_with_the_same_key_for_its_own_row() -> None:
    """Sealed and opened again, by another process holding the same API key."""
    sealed = SourceSeal("sv-key").seal(URL, KEY, "vocals")
    assert SourceSeal("sv-key").open(sealed, KEY, "vocals") == URL


def test_the_sealed_value_holds_nothing_of_the_link() -> None:
    """Neither the link, its query, its host nor its path shows in the text or its bytes,
    and sealing twice gives two different values (a fresh nonce each time)."""
    seal = SourceSeal("sv-key")
    sealed = seal.seal(URL, KEY, "vocals")
    raw = base64.urlsafe_b64decode(sealed)
    for part in (URL, "hm=0123456789abcdef", "cdn.discordapp.com", "song.wav", "attachments"):
        assert part not in sealed
        assert part.encode() not in raw
    assert seal.seal(URL, KEY, "vocals") != sealed
    assert "sv-key" not in repr(seal)


def test_another_key_or_another_row_cannot_open_it() -> None:
    """A rotated API key, a value moved onto another source or mode, or an altered value:
    None, never an error and never a wrong link."""
    sealed = SourceSeal("sv-key").seal(URL, KEY, "vocals")
    assert SourceSeal("sv-key-rotated").open(sealed, KEY, "vocals") is None
    assert SourceSeal("sv-key").open(sealed, "attachment:3", "vocals") is None
    assert SourceSeal("sv-key").open(sealed, KEY, "all") is None
    flipped = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    assert SourceSeal("sv-key").open(flipped, KEY, "vocals") is None
    assert SourceSeal("sv-key").open("not base64 at all!", KEY, "vocals") is None
    assert SourceSeal("sv-key").open("", KEY, "vocals") is None


# --- the ledger keeps it while queued, on both stores --------------------------------------


def _sealed(backend: Backend, request_id: int) -> str | None:
    (row,) = backend.rows("SELECT sealed_source FROM requests WHERE id = ?", (request_id,))
    return None if row[0] is None else str(row[0])


async def test_the_ledger_keeps_a_paid_calls_sealed_source_only_while_it_is_queued(
    backend: Backend,
) -> None:
    """Written with the paid row (never a rider's), gone once the call runs or the request
    ends (settled, refunded, cancelled), whichever statement moves it."""
    store = backend.store
    await store.guilds.set_limits(GUILD, active_requests=5)
    asked = [replace(new_request(), sealed_source=f"sealed-{n}") for n in range(4)]
    running, settled, refunded, queued = [await store.ledger.reserve(a, NOW) for a in asked]
    rider = await store.ledger.reserve_joined(
        replace(new_request(user=BOB, source_key=queued.source_key), sealed_source="rider"),
        NOW,
        running=False,
    )
    assert [_sealed(backend, r.id) for r in (running, settled, refunded, queued, rider)] == [
        "sealed-0",
        "sealed-1",
        "sealed-2",
        "sealed-3",
        None,
    ]
    await store.ledger.mark_all_running([running.id], NOW)
    await store.ledger.settle(settled.id, separation(), settled.source_key, NOW)
    await store.ledger.refund_all([refunded.id], RequestStatus.FAILED, "no", NOW)
    assert [_sealed(backend, r.id) for r in (running, settled, refunded, queued)] == [
        None,
        None,
        None,
        "sealed-3",
    ]


async def test_a_handed_over_charge_takes_the_sealed_source_with_it(backend: Backend) -> None:
    """The payer cancels: the heir pays, and its row now keeps the call's sealed source."""
    store = backend.store
    payer = await store.ledger.reserve(replace(new_request(), sealed_source="sealed"), NOW)
    heir = await store.ledger.reserve_joined(
        new_request(user=BOB, source_key=payer.source_key), NOW, running=False
    )
    assert await store.ledger.hand_over_charge(payer.id, [(heir.id, ())], NOW) is not None
    assert [_sealed(backend, r.id) for r in (payer, heir)] == [None, "sealed"]


async def test_recovery_hands_over_queued_sealed_calls_with_their_riders(
    backend: Backend,
) -> None:
    """A start-up after a stop: a queued paid call whose source is sealed comes back handed
    over, with the requests waiting on it, all still queued and charged; a queued call with
    no seal, a running one, and a rider of a running call are interrupted as before."""
    store = backend.store
    await store.guilds.set_limits(GUILD, active_requests=9)
    kept = await store.ledger.reserve(replace(new_request(), sealed_source="sealed"), NOW)
    rider = await store.ledger.reserve_joined(
        new_request(user=BOB, source_key=kept.source_key), NOW, running=False
    )
    unsealed = await store.ledger.reserve(new_request(), NOW)
    running = await store.ledger.reserve(replace(new_request(), sealed_source="gone"), NOW)
    await store.ledger.mark_all_running([running.id], NOW)
    running_rider = await store.ledger.reserve_joined(
        new_request(user=BOB, source_key=running.source_key), NOW, running=True
    )
    other_call = await store.ledger.reserve(
        replace(new_request(mode=Mode.ALL, source_key=kept.source_key), sealed_source="all"), NOW
    )

    recovery = await store.ledger.recover(NOW + timedelta(minutes=1))
    (call, other_mode) = recovery.handed_over
    assert (call.payer.id, call.sealed_source, [r.id for r in call.riders]) == (
        kept.id,
        "sealed",
        [rider.id],
    )
    assert (other_mode.payer.id, other_mode.riders) == (other_call.id, ())
    assert sorted(r.id for r in recovery.interrupted) == sorted(
        [unsealed.id, running.id, running_rider.id]
    )
    for request in (kept, rider, other_call):
        found = await store.ledger.get_request(request.id)
        assert found is not None and found.status is RequestStatus.QUEUED
    assert _sealed(backend, kept.id) == "sealed"
