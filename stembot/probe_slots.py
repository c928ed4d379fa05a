"""Fair URL probes: each member has only a few links being checked at once.

Every probe goes through one shared connector, whose connection limit is the bot's probe
slots. Without a cap per member, one member pasting many slow links would hold every slot,
and everyone else's check would wait until those links gave up. A member's extra links are
refused at once (nothing fetched, nothing spent) with a message saying to wait.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from stembot.errors import TooManyLinksError


class ProbeSlots:
    """How many links each member (by user id, across servers) has being checked now."""

    def __init__(self, per_member: int) -> None:
        if per_member < 1:
            raise ValueError("per_member must be at least 1")
        self.per_member = per_member
        self._open: Counter[int] = Counter()

    @contextlib.contextmanager
    def take(self, user_id: int) -> Iterator[None]:
        """Hold one of ``user_id``'s slots; TooManyLinksError if they are all in use."""
        if self._open[user_id] >= self.per_member:
            raise TooManyLinksError(self.per_member)
        self._open[user_id] += 1
        try:
            yield
        finally:
            self._open[user_id] -= 1
            if not self._open[user_id]:
                del self._open[user_id]
