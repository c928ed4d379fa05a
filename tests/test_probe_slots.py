"""Each member's probe slots: a few at once, given back however the probe ends."""

from __future__ import annotations

import pytest

from stembot.errors import TooManyLinksError
from stembot.probe_slots import ProbeSlots

ALICE, BOB = 1, 2


def open_for(slots: ProbeSlots, user_id: int) -> int:
    """The member's slots in use (none listed: none)."""
    return slots._open[user_id]


def test_a_member_past_their_slots_is_refused_and_others_are_not() -> None:
    slots = ProbeSlots(per_member=2)
    with slots.take(ALICE), slots.take(ALICE):
        with pytest.raises(TooManyLinksError, match="2 links being checked"), slots.take(ALICE):
            pass
        with slots.take(BOB):
            assert (open_for(slots, ALICE), open_for(slots, BOB)) == (2, 1)
    assert open_for(slots, ALICE) == 0


def test_a_slot_is_given_back_when_the_probe_fails() -> None:
    slots = ProbeSlots(per_member=1)
    with pytest.raises(RuntimeError), slots.take(ALICE):
        raise RuntimeError("the link's server hung up")
    with slots.take(ALICE):
        assert open_for(slots, ALICE) == 1
