"""The free-mix menu the result card draws is the one the bot answers after any restart."""

from __future__ import annotations

from datetime import UTC, datetime

import discord

from stembot.bot.mixes import MixSelect
from stembot.bot.result_card import result_card
from stembot.models import Mode, Separation, Stem
from stembot.result_media import ResultMedia, StemMedia, mix_by_key

NAMES = ("vocals", "Guitar", "Other", "Drums", "Bass", "Piano")


def test_the_cards_menu_is_answered_by_the_mix_select() -> None:
    """The card's select has the custom_id MixSelect answers (carrying the request id) and
    offers only mix keys a pick can name."""
    stems = tuple(Stem(name, f"https://stems.example/{name}.wav") for name in NAMES)
    separation = Separation(Mode.ALL, stems, datetime.now(UTC))
    card = result_card("song.wav", separation, ResultMedia(tuple(map(StemMedia, NAMES))), None, 42)
    (mix_select,) = [item for item in card.walk_children() if isinstance(item, MixSelect)]
    menu = mix_select.item
    assert isinstance(menu, discord.ui.Select)
    match = MixSelect.__discord_ui_compiled_template__.fullmatch(menu.custom_id)
    assert match is not None and match["request_id"] == "42"
    values = [option.value for option in menu.options]
    assert values[:2] == ["instrumental", "without:Guitar"] and len(values) == 6
    assert all(mix_by_key(NAMES, value) is not None for value in values)
