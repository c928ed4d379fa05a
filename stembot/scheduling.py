"""A fair queue: round-robin between guilds, first come first served within a guild.

At a remix event one server can queue hundreds of requests; another server's single request
must still start at the next free slot instead of waiting behind them all.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

ItemT = TypeVar("ItemT")


class FairQueue(Generic[ItemT]):
    """Items grouped by a lane key (the guild); ``pop`` takes one lane at a time in turn."""

    def __init__(self) -> None:
        # The order of the lanes is the round-robin order; the head lane goes next.
        self._lanes: OrderedDict[Hashable, deque[tuple[Hashable, ItemT]]] = OrderedDict()
        self._lane_of: dict[Hashable, Hashable] = {}

    def __len__(self) -> int:
        return len(self._lane_of)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._lane_of

    def push(self, lane: Hashable, item_id: Hashable, item: ItemT) -> None:
        if item_id in self._lane_of:
            raise ValueError(f"item {item_id!r} is already queued")
        self._lanes.setdefault(lane, deque()).append((item_id, item))
        self._lane_of[item_id] = lane

    def pop(self) -> ItemT | None:
        """The next item in round-robin order, or None when empty."""
        if not self._lanes:
            return None
        lane, items = next(iter(self._lanes.items()))
        item_id, item = items.popleft()
        del self._lane_of[item_id]
        if items:
            self._lanes.move_to_end(lane)
        else:
            del self._lanes[lane]
        return item

    def remove(self, item_id: Hashable) -> ItemT | None:
        """Take a waiting item out (a cancel); None when it is not waiting."""
        lane = self._lane_of.pop(item_id, None)
        if lane is None:
            return None
        items = self._lanes[lane]
        index = self._index_in_lane(items, item_id)
        _, item = items[index]
        del items[index]
        if not items:
            del self._lanes[lane]
        return item

    def position(self, item_id: Hashable) -> int | None:
        """1-based place in the order ``pop`` would take items, or None when not waiting.

        Item k of a lane (0-based) goes out in round k; within a round, lanes go in ring order.
        """
        lane = self._lane_of.get(item_id)
        if lane is None:
            return None
        index = next(
            i for i, (queued_id, _) in enumerate(self._lanes[lane]) if queued_id == item_id
        )
        ahead = 0
        before_own_lane = True
        for other, items in self._lanes.items():
            if other == lane:
                before_own_lane = False
                ahead += index
            else:
                # Lanes before ours in the ring get one extra turn in our round.
                ahead += min(len(items), index + 1 if before_own_lane else index)
        return ahead + 1

    @staticmethod
    def _index_in_lane(items: deque[tuple[Hashable, ItemT]], item_id: Hashable) -> int:
        return next(i for i, (queued_id, _) in enumerate(items) if queued_id == item_id)

    def __iter__(self) -> Iterator[ItemT]:
        """Every waiting item, in no promised order."""
        for items in self._lanes.values():
            for _, item in items:
                yield item
