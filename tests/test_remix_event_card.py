"""A remix event's card as Discord gets it: valid Components V2 within Discord's limits, the
buttons the bot answers (after any restart), the live counts, and the ended card."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from stembot.bot.remix_event_card import CardState, card_filename, event_card, track_file
from stembot.bot.remix_event_mixes import EventMixSelect
from stembot.bot.remix_event_takes import TakeButton
from stembot.models import Mode
from stembot.remix_event_models import EventCounts, EventSpend, RemixEvent, SourceRef
from stembot.result_media import mixes_for
from tests.standins.discord.spec import OpenAPISpec

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
IS_COMPONENTS_V2 = 1 << 15
COMPONENTS_MAX = 40
TEXT_MAX = 4000
ALL = ["vocals", "Guitar", "Other", "Drums", "Bass", "Piano"]
EVENT = RemixEvent(
    id=7,
    guild_id=1,
    channel_id=2,
    organiser_id=3,
    title="Spring remix",
    source_name="my song (final).wav",
    source_key="attachment:9",
    source_ref=SourceRef(2, 50, 51),
    modes=tuple(Mode),
    submissions=True,
    budget=None,
    prefetch=False,
    created_at=NOW,
    ends_at=NOW + timedelta(days=3),
    card_channel_id=2,
    card_message_id=50,
)
COSTS = {mode: mode.default_cost or 1 for mode in Mode}


def counts(
    members: int = 0, submissions: int = 0, units: int = 0, budget: int | None = None
) -> EventCounts:
    return EventCounts(members, submissions, EventSpend(1 if units else 0, units), budget)


def body(event: RemixEvent, state: CardState, now: datetime = NOW) -> dict[str, Any]:
    view = event_card(event, state, now)
    return {"flags": IS_COMPONENTS_V2, "components": view.to_components()}  # type: ignore[no-untyped-call]


def walk(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for component in components:
        found.append(component)
        found += walk(list(component.get("components") or []))
        if "accessory" in component:
            found.append(component["accessory"])
    return found


def texts(sent: dict[str, Any]) -> str:
    return "\n".join(c["content"] for c in walk(sent["components"]) if c["type"] == 10)


def interactive(sent: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["custom_id"]: c for c in walk(sent["components"]) if "custom_id" in c}


def full_state() -> CardState:
    return CardState(
        counts(members=120, submissions=4, units=4, budget=10),
        ready=frozenset({Mode.VOCALS, Mode.ALL}),
        separating=frozenset({Mode.INSTRUMENTS}),
        mixes={Mode.VOCALS: mixes_for(["vocals"]), Mode.ALL: mixes_for(ALL)},
        costs=COSTS,
        track_file=track_file(EVENT),
    )


def test_the_fullest_card_is_a_valid_v2_message_within_discords_limits(spec: OpenAPISpec) -> None:
    sent = body(EVENT, full_state())
    sent["attachments"] = [{"id": "0", "filename": card_filename(EVENT.source_name)}]
    assert spec.check("post", "/channels/{channel_id}/messages", sent) == []
    assert spec.check("patch", "/channels/{channel_id}/messages/{message_id}", sent) == []
    assert len(walk(sent["components"])) <= COMPONENTS_MAX
    assert len(texts(sent)) <= TEXT_MAX
    files = [c for c in walk(sent["components"]) if c["type"] == 13]
    assert [f["file"]["url"] for f in files] == ["attachment://my_song_final.wav"]


def test_the_buttons_and_menus_are_the_items_the_bot_answers() -> None:
    sent = body(EVENT, full_state())
    ids = interactive(sent)
    takes = [i for i in ids if i.startswith("stems-event:take:")]
    assert takes == [f"stems-event:take:7:{mode.value}" for mode in Mode]
    for custom_id in takes:
        assert TakeButton.__discord_ui_compiled_template__.fullmatch(custom_id)
    assert "stems-event:submit:7" in ids
    # Mixes only for ready modes that offer any (a single stem offers none).
    mixes = [i for i in ids if i.startswith("stems-event:mix:")]
    assert mixes == ["stems-event:mix:7:all"]
    assert EventMixSelect.__discord_ui_compiled_template__.fullmatch(mixes[0])
    assert not any(c.get("disabled") for c in ids.values())


def test_the_card_counts_and_says_what_each_mode_is_doing() -> None:
    state = CardState(
        counts(members=1, submissions=2, units=2, budget=5),
        ready=frozenset({Mode.VOCALS}),
        separating=frozenset({Mode.INSTRUMENTS}),
        failures={Mode.ALL: "The separation service refused this file."},
        costs=COSTS,
    )
    text = texts(body(EVENT, state))
    assert (
        "**1** member took stems · **2** remixes submitted · budget: **3** of 5 units left" in text
    )
    assert "**Vocals**: ready" in text and "**Instruments**: separating…" in text
    assert "**All stems**: not separated. The separation service refused this file." in text
    assert "Nobody was charged" in text
    assert "<t:" in text and "Remix event 7" in text


def test_a_spent_budget_disables_the_modes_it_can_no_longer_pay() -> None:
    state = CardState(counts(units=5, budget=5), ready=frozenset({Mode.VOCALS}), costs=COSTS)
    sent = body(EVENT, state)
    ids = interactive(sent)
    assert not ids["stems-event:take:7:vocals"].get("disabled")  # its stems exist: free
    assert ids["stems-event:take:7:instruments"]["disabled"]
    assert ids["stems-event:take:7:all"]["disabled"]
    assert "**budget spent**" in texts(sent)


def test_an_ended_event_disables_everything_and_says_so() -> None:
    ended = RemixEvent(**_fields(EVENT) | {"ended_at": NOW, "ended_by": 3})
    sent = body(ended, full_state(), NOW + timedelta(minutes=1))
    assert all(c.get("disabled") for c in interactive(sent).values())
    assert "has ended" in texts(sent)
    past_end = body(EVENT, CardState(counts()), NOW + timedelta(days=4))
    assert all(c.get("disabled") for c in interactive(past_end).values())


def test_without_submissions_there_is_no_submit_button() -> None:
    quiet = RemixEvent(**_fields(EVENT) | {"submissions": False})
    assert not any(
        i.startswith("stems-event:submit") for i in interactive(body(quiet, CardState(counts())))
    )


def test_what_members_chose_is_shown_defused() -> None:
    hostile = RemixEvent(
        **_fields(EVENT) | {"title": "@everyone **free** <@1>", "source_name": "[x](https://evil)"}
    )
    text = texts(body(hostile, CardState(counts())))
    assert "@everyone" not in text.replace("@\u200beveryone", "")
    assert "[x](https://evil)" not in text


def test_the_track_on_the_card_has_a_safe_file_name() -> None:
    assert card_filename("my song (final).wav") == "my_song_final.wav"
    assert card_filename("../../etc/passwd") == "passwd"
    assert card_filename("a.b.c d.MP3") == "a.b.c_d.MP3"
    assert card_filename("noextension") == "noextension"
    assert card_filename("...mp3") == "track.mp3"
    not_on_card = RemixEvent(**_fields(EVENT) | {"source_ref": SourceRef(2, 99, 51)})
    assert track_file(not_on_card) is None
    assert "original post" in texts(body(not_on_card, CardState(counts())))


def _fields(event: RemixEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in RemixEvent.__dataclass_fields__}
