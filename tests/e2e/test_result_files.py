"""A result's files end to end: the links go out first, then the same message becomes the
card with the stems attached (playable, decoding to the right stems), the picture, silent stems
flagged and the free mixes; what cannot be attached stays a link, said in one line."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from PIL import Image

from tests.audio_signals import level_at
from tests.e2e.stack import (
    MEDIA_ENV,
    Stack,
    channel_posts,
    description,
    eventually,
    running_stack,
    used_today,
)
from tests.standins.discord import InteractionRecord, MessageRecord
from tests.standins.discord.components_v2 import IS_COMPONENTS_V2, walk
from tests.standins.soundverse import StemFault
from tests.standins.stem_audio import STEM_TONES_HZ

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

MiB = 1024 * 1024
AUDIBLE_DB = -1.0  # the stem's own tone is the strongest thing in it


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path / "stembot.db", MEDIA_ENV) as stack:
        yield stack


async def with_files(interaction: InteractionRecord, timeout_s: float = 30.0) -> MessageRecord:
    """The interaction's message once it carries files (the card) or says it cannot."""

    def done() -> bool:
        original = interaction.original
        return original is not None and (
            bool(original.attachments) or "could not be attached" in _text(original.data)
        )

    await eventually(done, timeout_s)
    assert interaction.original is not None
    return interaction.original


def _text(message: dict[str, Any]) -> str:
    """Every text a member reads on the message: embeds and V2 text displays."""
    texts = [description(message)] if message.get("embeds") else []
    texts += [str(node.get("content") or "") for _, node in walk(message.get("components") or [])]
    return "\n".join(texts)


def decoded_tone_levels(data: bytes, path: Path) -> dict[str, float]:
    path.write_bytes(data)
    return {name: level_at(path, hz) for name, hz in STEM_TONES_HZ.items()}


async def test_all_gives_six_playable_stems_a_picture_and_flags_the_silent_one(
    stack: Stack, tmp_path: Path
) -> None:
    stack.api.serve_stems(silent={"Piano"})
    interaction = await stack.stems("all")
    message = await with_files(interaction)
    # The links went out first, as an embed; the files came with a later edit of the same message.
    states = [state for _, state in message.history]
    links_at = next(i for i, state in enumerate(states) if "**Drums**" in _text(state))
    card_at = next(i for i, state in enumerate(states) if state["flags"] & IS_COMPONENTS_V2)
    assert links_at < card_at and not states[links_at]["attachments"]
    assert message.flags & IS_COMPONENTS_V2
    files = message.attached()
    assert list(files) == ["stems.png", *(f"{name}.wav" for name in STEM_TONES_HZ)]
    with Image.open(io.BytesIO(files["stems.png"])) as picture:
        assert picture.format == "PNG"
    for name, hz in STEM_TONES_HZ.items():
        data, rate = sf.read(io.BytesIO(files[f"{name}.wav"]))
        assert rate == 44_100 and data.ndim == 2
        if name != "Piano":
            assert level_at(_saved(tmp_path, name, files), hz) > AUDIBLE_DB
    text = _text(message.data)
    piano_line = next(line for line in text.splitlines() if "Piano" in line)
    assert "silent" in piano_line
    assert sum("silent" in line for line in text.splitlines()) == 1
    # Free mixes offered, but not "Without Piano": it would change nothing.
    (menu,) = [node for _, node in walk(message.components) if node.get("type") == 3]
    labels = [option["label"] for option in menu["options"]]
    assert labels[0] == "Instrumental" and "Without Drums" in labels
    assert "Without Piano" not in labels
    assert stack.api.downloads == 6
    # The menu is answered by its persistent handler: no view kept in memory per result.
    assert stack.bot.persistent_views == []


def _saved(folder: Path, name: str, files: dict[str, bytes]) -> Path:
    path = folder / f"{name}.wav"
    path.write_bytes(files[f"{name}.wav"])
    return path


async def test_the_links_stay_on_the_card(stack: Stack) -> None:
    """Each stem keeps its full-quality link on the card beside its attached file."""
    interaction = await stack.stems("instruments")
    message = await with_files(interaction)
    links = [node["url"] for _, node in walk(message.components) if node.get("style") == 5]
    assert len(links) == 5 and all(url.startswith(stack.api.base_url) for url in links)


async def test_a_stem_that_cannot_be_fetched_leaves_the_links_and_one_line(stack: Stack) -> None:
    stack.api.serve_stems(faults={"Drums": StemFault.MISSING})
    interaction = await stack.stems("all")
    message = await with_files(interaction)
    assert not message.attachments
    assert not message.flags & IS_COMPONENTS_V2
    assert "The files could not be attached (the Drums file could not be fetched)" in _text(
        message.data
    )
    labels = [b["label"] for row in message.components for b in row["components"]]
    assert [label.lower() for label in labels] == [n.lower() for n in STEM_TONES_HZ]
    assert used_today(stack) == 2  # the call's own cost, nothing more


async def test_over_the_upload_limit_smaller_copies_then_links_and_the_card_says_so(
    stack: Stack,
) -> None:
    """Each 60-second WAV is ~10 MiB: at a 2 MiB channel limit the stems get smaller Ogg copies
    within it, and the one that cannot fit even at the lowest bitrate stays a link; the card
    says which and why."""
    stack.guild.upload_limit = 2 * MiB
    stack.api.serve_stems(seconds=60)
    interaction = await stack.stems("all")
    message = await with_files(interaction, timeout_s=90)
    total = sum(len(data) for data in message.attached().values())
    assert total <= 2 * MiB
    copies = [name for name in message.attached() if name.endswith(".ogg")]
    text = _text(message.data)
    assert len(copies) == 5 and "upload limit" in text
    linked_only = [name for name in STEM_TONES_HZ if f"{name}.ogg" not in message.attached()]
    assert len(linked_only) == 1
    for name in linked_only:
        line = next(line for line in text.lower().splitlines() if f"**{name.lower()}**" in line)
        assert "link only" in line


async def test_after_the_fifteen_minutes_the_channel_post_gains_the_files(tmp_path: Path) -> None:
    """Delivered through the channel (the token expired): the post keeps its mention and embed
    (V2 would drop the mention) and gains the files, the picture as its image and the mixes."""
    async with running_stack(tmp_path / "stembot.db", MEDIA_ENV, api_latency=0.3) as stack:
        interaction = await stack.stems("all")
        await stack.discord.acknowledged(interaction)
        stack.discord.age(interaction, 16 * 60)

        def posted_with_files() -> list[MessageRecord]:
            posts = channel_posts(stack.discord, stack.channel)
            return [post for post in posts if post.attachments]

        await eventually(posted_with_files, 30)
        (post,) = posted_with_files()
        assert f"<@{stack.member.id}>" in post.content
        assert not post.flags & IS_COMPONENTS_V2
        (embed,) = post.embeds
        assert embed["image"]["url"].endswith("stems.png")
        assert list(post.attached()) == ["stems.png", *(f"{n}.wav" for n in STEM_TONES_HZ)]
        assert any(cid.startswith("stems:mix:") for cid in post.custom_ids())
        assert stack.bot.persistent_views == []
        assert "attached" in description(post.data)


async def test_the_next_requests_links_do_not_wait_for_a_results_files(tmp_path: Path) -> None:
    """One API call at a time and the first result's stems slow to download: the second
    request's call runs and its links arrive while the first result still waits for its files
    (the files are added in the background, not in the call's slot)."""
    env = {**MEDIA_ENV, "STEMBOT_MAX_CONCURRENT_JOBS": "1"}
    async with running_stack(tmp_path / "stembot.db", env) as stack:
        stack.api.hold_downloads()
        first = await stack.stems("vocals")
        await stack.answer(first)
        second = await stack.stems("vocals")
        links = await stack.answer(second)
        assert "**Vocals**" in description(links)
        assert first.original is not None and not first.original.attachments
        stack.api.release_downloads()
        assert (await with_files(first)).attachments
        assert (await with_files(second)).attachments
