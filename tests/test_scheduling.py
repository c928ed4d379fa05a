"""The fair queue: guilds take turns, FIFO within a guild, positions match pop order."""

from __future__ import annotations

import copy
import random
from typing import TypeVar

import pytest

from stembot.scheduling import FairQueue

T = TypeVar("T")


def waiting(queue: FairQueue[T]) -> list[T]:
    """Every waiting item, in no promised order."""
    return [item for lane in queue._lanes.values() for _, item in lane.items]


def drain(queue: FairQueue[T]) -> list[T]:
    out: list[T] = []
    while (item := queue.pop()) is not None:
        out.append(item)
    return out


def test_one_guild_is_first_in_first_out() -> None:
    """Requests from one guild leave in the order they came."""
    queue: FairQueue[str] = FairQueue()
    for n in range(5):
        queue.push("g1", n, f"g1-{n}")
    assert drain(queue) == [f"g1-{n}" for n in range(5)]


def test_a_busy_guild_cannot_starve_another() -> None:
    """A guild with 100 waiting requests lets another guild's request go second."""
    queue: FairQueue[str] = FairQueue()
    for n in range(100):
        queue.push("busy", n, f"busy-{n}")
    queue.push("quiet", "q", "quiet-0")
    assert drain(queue)[:3] == ["busy-0", "quiet-0", "busy-1"]


def test_positions_match_the_order_items_leave() -> None:
    """For random pushes across guilds, each item's position is where pop really takes it."""
    rng = random.Random(7)
    queue: FairQueue[int] = FairQueue()
    for n in range(300):
        queue.push(rng.choice("abcde"), n, n)
        if rng.random() < 0.2:
            queue.pop()
    expected = {item: queue.position(item) for item in waiting(queue)}
    leaving = drain(queue)
    assert {item: place + 1 for place, item in enumerate(leaving)} == expected


def test_removed_item_leaves_and_others_move_up() -> None:
    """A cancelled request is gone and those behind it move up one place."""
    queue: FairQueue[str] = FairQueue()
    for n in range(3):
        queue.push("g", n, f"g-{n}")
    assert queue.remove(1) == "g-1"
    assert queue.remove(1) is None
    assert queue.position(2) == 2
    assert drain(queue) == ["g-0", "g-2"]


def test_the_same_item_cannot_be_queued_twice() -> None:
    """Pushing an id that is already waiting is refused."""
    queue: FairQueue[str] = FairQueue()
    queue.push("g", 1, "first")
    with pytest.raises(ValueError):
        queue.push("h", 1, "again")


def test_a_guild_arriving_after_the_flood_started_goes_next() -> None:
    """A busy guild already being served does not get a second turn before a newcomer."""
    queue: FairQueue[str] = FairQueue()
    for n in range(5):
        queue.push("busy", n, f"busy-{n}")
    assert queue.pop() == "busy-0"
    queue.push("quiet", "q", "quiet-0")
    assert queue.position("q") == 1
    assert drain(queue)[:2] == ["quiet-0", "busy-1"]


def test_positions_hold_across_lanes_that_empty_and_return() -> None:
    """Lanes that run dry and come back keep positions equal to the real pop order."""
    rng = random.Random(11)
    queue: FairQueue[int] = FairQueue()
    for n in range(400):
        queue.push(rng.choice("ab") if n % 50 < 25 else rng.choice("cde"), n, n)
        for _ in range(rng.choice((0, 0, 1, 2))):
            queue.pop()
        if rng.random() < 0.1:
            expected = {item: queue.position(item) for item in waiting(queue)}
            leaving = drain(copy.deepcopy(queue))
            assert {item: place + 1 for place, item in enumerate(leaving)} == expected
