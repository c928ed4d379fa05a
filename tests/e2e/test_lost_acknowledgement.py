"""A defer that reached Discord but whose answer the bot never read (under a burst's load the
HTTP client once failed reading a reply Discord had sent): the member is told, privately,
rather than left with "thinking..." for good."""

from __future__ import annotations

import logging
from typing import Any

import discord
import pytest

from tests.e2e.stack import Stack, eventually
from tests.standins.discord import EPHEMERAL

ALREADY_ACKNOWLEDGED = 40060


async def test_a_defer_whose_answer_was_lost_still_ends_in_a_private_answer(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_defer = discord.InteractionResponse.defer

    async def defer_then_lose_the_answer(self: Any, *args: Any, **kwargs: Any) -> Any:
        await real_defer(self, *args, **kwargs)
        self._response_type = None  # as if the reply had never been read
        raise AttributeError("'NoneType' object has no attribute 'getall'")

    monkeypatch.setattr(discord.InteractionResponse, "defer", defer_then_lose_the_answer)
    interaction = await stack.stems("vocals")
    await eventually(lambda: interaction.followups)

    (answer,) = interaction.followups
    assert answer.data["flags"] & EPHEMERAL
    assert "Something went wrong on stembot's side (incident" in answer.data["content"]
    assert interaction.view().original is None  # "thinking..." removed, not left for good
    codes = [c.code for c in interaction.calls if c.route.endswith("/callback")]
    assert codes == [None, ALREADY_ACKNOWLEDGED]  # the defer, then the refused first answer
    assert stack.ledger().ledger.get_request(1) is None  # nothing reserved, nothing charged
    assert [r for r in caplog.records if r.levelno == logging.WARNING] == []


async def test_a_refusal_before_the_defer_is_still_the_first_answer(stack: Stack) -> None:
    """The usual path is unchanged: an instant refusal is the interaction's response."""
    interaction = await stack.stems(
        "vocals", options={"file": stack.upload("notes.txt", "text/plain", b"not audio")}
    )
    await eventually(lambda: interaction.acknowledged)
    original = interaction.view().original
    assert original is not None and original["flags"] & EPHEMERAL
    assert interaction.followups == []
    assert stack.ledger().ledger.get_request(1) is None
