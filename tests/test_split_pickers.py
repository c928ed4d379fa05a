"""The picker memory: each server's pickers are its own."""

from __future__ import annotations

from stembot.bot.split import Picker, Pickers
from stembot.request_inputs import AttachmentInput

SERVER_A, SERVER_B = 111, 222


def picker(guild_id: int, attachment_id: int = 7) -> Picker:
    file = AttachmentInput(attachment_id, "https://cdn/x.wav", "x.wav", "audio/wav", 10)
    return Picker(guild_id, user_id=5, files={attachment_id: file})


def test_a_picker_is_found_only_in_its_own_server() -> None:
    pickers = Pickers()
    shown = picker(SERVER_A)
    pickers.remember(1, shown)
    assert pickers.get(SERVER_A, 1) is shown
    assert pickers.get(SERVER_B, 1) is None


def test_a_busy_server_pushes_out_only_its_own_old_pickers() -> None:
    pickers = Pickers(per_server=3)
    pickers.remember(1, picker(SERVER_A))
    for picker_id in range(100, 110):
        pickers.remember(picker_id, picker(SERVER_B))
    assert pickers.get(SERVER_A, 1) is not None
    assert [pickers.get(SERVER_B, i) is not None for i in (106, 107, 108, 109)] == [
        False,
        True,
        True,
        True,
    ]


def test_the_least_recently_used_server_is_forgotten_first() -> None:
    pickers = Pickers(servers=2)
    pickers.remember(1, picker(SERVER_A))
    pickers.remember(2, picker(SERVER_B))
    pickers.remember(3, picker(SERVER_A))
    pickers.remember(4, picker(333))
    assert pickers.get(SERVER_B, 2) is None
    assert pickers.get(SERVER_A, 1) is not None
