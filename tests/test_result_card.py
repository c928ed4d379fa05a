"""The result card (Components V2) and the free mixes a result offers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from stembot.bot.result_card import COMPONENTS_MAX, attached_names, result_card
from stembot.models import Mode, Separation, Stem
from stembot.result_media import ResultMedia, StemMedia, mix_by_key, mixes_for
from tests.standins.discord.spec import OpenAPISpec

INSTRUMENTS = ["Guitar", "Other", "Drums", "Bass", "Piano"]
ALL = ["vocals", *INSTRUMENTS]
IS_COMPONENTS_V2 = 1 << 15
EDIT_ORIGINAL = "/webhooks/{webhook_id}/{webhook_token}/messages/@original"


def separation(names: list[str], mode: Mode = Mode.ALL, url_length: int = 40) -> Separation:
    def url(name: str) -> str:
        base = f"https://stems.example/{name}.mp3?sig="
        return base + "x" * max(1, url_length - len(base))

    return Separation(mode, tuple(Stem(n, url(n)) for n in names), datetime.now(UTC))


def card_body(sep: Separation, media: ResultMedia) -> dict[str, Any]:
    view = result_card("song.mp3", sep, media, None, request_id=12)
    return {
        "flags": IS_COMPONENTS_V2,
        "components": view.to_components(),  # type: ignore[no-untyped-call]
        "attachments": [{"id": i, "filename": n} for i, n in enumerate(attached_names(media))],
    }


def count_components(components: list[dict[str, Any]]) -> int:
    total = 0
    for component in components:
        total += 1
        total += count_components(component.get("components", []))
        if "accessory" in component:
            total += 1
    return total


def references(components: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for component in components:
        for item in component.get("items", []):
            found.add(item["media"]["url"])
        if component.get("type") == 13:  # File
            found.add(component["file"]["url"])
        found |= references(component.get("components", []))
    return {url.removeprefix("attachment://") for url in found}


def test_a_single_stem_offers_no_mix() -> None:
    assert mixes_for(["vocals"]) == ()


def test_instruments_offer_all_five_together_and_each_one_left_out() -> None:
    mixes = mixes_for(INSTRUMENTS)
    assert [m.label for m in mixes] == ["Instrumental"] + [f"Without {n}" for n in INSTRUMENTS]
    assert mixes[0].stems == tuple(INSTRUMENTS)
    without_drums = mix_by_key(INSTRUMENTS, "without:Drums")
    assert without_drums is not None
    assert without_drums.stems == ("Guitar", "Other", "Bass", "Piano")


def test_all_stems_offer_the_instrumental_once_and_no_mix_of_nothing() -> None:
    mixes = mixes_for(ALL)
    labels = [m.label for m in mixes]
    assert labels == ["Instrumental"] + [f"Without {n}" for n in INSTRUMENTS]
    assert "Without vocals" not in labels  # that is the instrumental
    assert mixes[0].stems == tuple(INSTRUMENTS)
    assert all(len(m.stems) >= 1 for m in mixes)
    assert mix_by_key(ALL, "without:vocals") is None


def test_the_full_card_is_a_valid_v2_message_within_discords_limits(spec: OpenAPISpec) -> None:
    """Six attached stems, the picture, the mixes: valid for Discord, every reference uploaded."""
    media = ResultMedia(tuple(StemMedia(n, attachment=f"{n}.ogg") for n in ALL), "stems.png")
    body = card_body(separation(ALL), media)
    assert spec.check("patch", EDIT_ORIGINAL, body) == []
    assert "content" not in body and "embeds" not in body
    assert count_components(body["components"]) <= COMPONENTS_MAX
    assert references(body["components"]) == set(attached_names(media))
    assert len(attached_names(media)) <= 10  # Discord's files per message


def test_silent_link_only_and_compressed_stems_say_so(spec: OpenAPISpec) -> None:
    media = ResultMedia(
        (
            StemMedia("vocals", attachment="vocals.mp3"),
            StemMedia("Guitar", attachment="Guitar.ogg", compressed=True),
            StemMedia("Other"),
            StemMedia("Drums", attachment="Drums.mp3"),
            StemMedia("Bass", attachment="Bass.mp3"),
            StemMedia("Piano", silent=True, attachment="Piano.mp3"),
        ),
        picture=None,
        note="Other stays a link: together the files are over this channel's upload limit.",
    )
    body = card_body(separation(ALL), media)
    assert spec.check("patch", EDIT_ORIGINAL, body) == []
    text = str(body["components"])
    assert "**Piano** · silent" in text
    assert "**Other** · link only" in text
    assert "**Guitar** · a smaller copy is attached" in text
    assert "upload limit" in text


def test_a_link_too_long_for_a_button_is_a_masked_link_in_the_text(spec: OpenAPISpec) -> None:
    sep = separation(INSTRUMENTS, Mode.INSTRUMENTS, url_length=600)
    media = ResultMedia(tuple(StemMedia(n) for n in INSTRUMENTS))
    body = card_body(sep, media)
    assert spec.check("patch", EDIT_ORIGINAL, body) == []
    assert "[full quality](https://stems.example/Guitar.mp3" in str(body["components"])
