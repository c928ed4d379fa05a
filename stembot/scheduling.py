"""A fair queue: guilds take turns, first come first served within a guild.

At a remix event one server can queue hundreds of requests; another server's single request
must still start at the next free slot instead of waiting behind them all.

Each guild's lane counts the turns it has had. ``pop`` serves the lane with the fewest turns
(the oldest lane on a tie). A lane that arrives late starts at the turn being served now (the
next one if it was already served in this turn), so it goes next without being owed a burst
of catch-up turns.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

ItemT = TypeVar("ItemT")


@dataclass(eq=False)
class _Lane(Generic[ItemT]):
    turn: int
    seq: int
    items: deque[tuple[Hashable, ItemT]] = field(default_factory=deque)

    @property
    def rank(self) -> tuple[int, int]:
        return (self.turn, self.seq)


class FairQueue(Generic[ItemT]):
    """Items grouped by a lane key (the guild); ``pop`` serves the lanes in turn."""

    def __init__(self) -> None:
        self._lanes: dict[Hashable, _Lane[ItemT]] = {}
        self._lane_of: dict[Hashable, Hashable] = {}
        self._serving_turn = 0
        # Lanes already served in the turn being served now, even if they have since emptied.
        self._served_this_turn: set[Hashable] = set()
        # A plain counter, not itertools.count: copies of a queue (tests take them) must work.
        self._next_lane_seq = 0

    def push(self, lane_key: Hashable, item_id: Hashable, item: ItemT) -> None:
        if item_id in self._lane_of:
            raise ValueError(f"item {item_id!r} is already queued")
        lane = self._lanes.get(lane_key)
        if lane is None:
            turn = self._serving_turn + (1 if lane_key in self._served_this_turn else 0)
            lane = self._lanes[lane_key] = _Lane(turn, self._next_lane_seq)
            self._next_lane_seq += 1
        lane.items.append((item_id, item))
        self._lane_of[item_id] = lane_key

    def __len__(self) -> int:
        """Items waiting, in every lane."""
        return len(self._lane_of)

    def pop(self) -> ItemT | None:
        """The next item in turn, or None when empty."""
        if not self._lanes:
            return None
        key, lane = min(self._lanes.items(), key=lambda entry: entry[1].rank)
        item_id, item = lane.items.popleft()
        del self._lane_of[item_id]
        if lane.turn != self._serving_turn:
            self._serving_turn = lane.turn
            self._served_this_turn.clear()
        self._served_this_turn.add(key)
        lane.turn += 1
        if not lane.items:
            del self._lanes[key]
        return item

    def remove(self, item_id: Hashable) -> ItemT | None:
        """Take a waiting item out (a cancel); None when it is not waiting."""
        key = self._lane_of.pop(item_id, None)
        if key is None:
            return None
        lane = self._lanes[key]
        index = _index_in_lane(lane, item_id)
        _, item = lane.items[index]
        del lane.items[index]
        if not lane.items:
            del self._lanes[key]
        return item

    def position(self, item_id: Hashable) -> int | None:
        """1-based place in the order ``pop`` would take items, or None when not waiting.

        Item k of a lane (0-based) goes out at turn ``lane.turn + k``; within a turn, older
        lanes go first.
        """
        key = self._lane_of.get(item_id)
        if key is None:
            return None
        lane = self._lanes[key]
        index = _index_in_lane(lane, item_id)
        my_turn = lane.turn + index
        ahead = index
        for other in self._lanes.values():
            if other is not lane:
                turns_before_mine = my_turn - other.turn + (1 if other.seq < lane.seq else 0)
                ahead += max(0, min(len(other.items), turns_before_mine))
        return ahead + 1


def _index_in_lane(lane: _Lane[ItemT], item_id: Hashable) -> int:
    return next(i for i, (queued_id, _) in enumerate(lane.items) if queued_id == item_id)
