"""/stems end to end: the real bot over the loopback Discord and the Soundverse stand-in."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from stembot.models import RequestStatus
from tests.e2e.ledgers import BotLedger
from tests.e2e.stack import Stack, channel_posts, description, eventually, running_stack
from tests.standins.discord import EPHEMERAL
from tests.standins.soundverse import Reply


async def test_commands_are_registered_at_start(stack: Stack) -> None:
    """A new application gets /stems with its three modes and quota."""
    (stems,) = [c for c in stack.discord.commands[None] if c["name"] == "stems"]
    assert sorted(o["name"] for o in stems["options"]) == ["all", "instruments", "quota", "vocals"]


async def test_vocals_from_an_attachment_delivers_the_stem(
    stack_on_each_store: Stack, bot_ledger: BotLedger
) -> None:
    """An audio attachment gets a deferral, then an embed linking the vocals stem; the ledger
    (the SQLite file or PostgreSQL) holds the request, settled and charged."""
    stack = stack_on_each_store
    interaction = await stack.stems("vocals")
    final = await stack.answer(interaction)
    assert final is not None
    embed = final["embeds"][0]
    assert embed["title"].startswith("Vocals")
    assert "song.wav" in embed["title"]
    assert "**Vocals**" in description(final)
    buttons = [b for row in final["components"] for b in row["components"]]
    assert [b["label"] for b in buttons] == ["Vocals"]
    assert buttons[0]["url"].startswith(stack.api.base_url)
    assert embed["footer"]["text"].startswith("Request 1 · ")  # what a moderator refunds by
    async with bot_ledger.reading() as ledger:
        request = await ledger.ledger.get_request(1)
        assert request is not None and request.status is RequestStatus.SUCCEEDED
        status = await ledger.quotas.quota_status(stack.guild.id, stack.member.id, _now())
        assert status.guild_daily.used == 1


async def test_the_api_gets_the_attachment_url_exactly_as_discord_gave_it(stack: Stack) -> None:
    """The signed attachment URL reaches the API untouched; nothing is re-hosted."""
    attachment = stack.upload()
    interaction = await stack.stems("all", options={"file": attachment})
    await stack.answer(interaction)
    (call,) = stack.api.requests
    assert call.path == "/v1/generate/stem-separation/all-stems"
    assert call.json() == {"audioUrl": attachment["url"]}


async def test_all_mode_links_six_stems_and_charges_two_units(stack: Stack) -> None:
    """/stems all answers with six stems and the ledger charges its cost."""
    interaction = await stack.stems("all")
    final = await stack.answer(interaction)
    assert final is not None
    buttons = [b["label"] for row in final["components"] for b in row["components"]]
    assert buttons == ["Vocals", "Guitar", "Other", "Drums", "Bass", "Piano"]
    status = stack.ledger().quotas.quota_status(stack.guild.id, stack.member.id, _now())
    assert status.guild_daily.used == 2


async def test_a_url_source_is_probed_and_sent_to_the_api(stack: Stack) -> None:
    """A link to audio passes the probe and is handed to the API as the user gave it."""
    url = stack.upload("remote.wav")["url"]
    interaction = await stack.stems("instruments", options={"url": url})
    final = await stack.answer(interaction)
    assert final is not None
    assert "Guitar" in description(final)
    assert stack.api.requests[0].json() == {"audioUrl": url}


async def test_a_non_audio_attachment_is_refused_privately_at_no_cost(stack: Stack) -> None:
    """A PNG gets an ephemeral explanation; no API call, no quota used."""
    png = stack.upload("cover.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(64))
    interaction = await stack.stems("vocals", options={"file": png})
    assert "PNG" in await stack.refusal(interaction)
    assert stack.api_calls() == 0
    status = stack.ledger().quotas.quota_status(stack.guild.id, stack.member.id, _now())
    assert status.guild_daily.used == 0


async def test_neither_file_nor_url_is_refused(stack: Stack) -> None:
    """Giving no source says how to give one, privately, at no cost."""
    interaction = await stack.stems("vocals", options={})
    assert "file:" in await stack.refusal(interaction)
    assert stack.api_calls() == 0


async def test_a_link_that_is_not_audio_is_refused_after_the_probe(stack: Stack) -> None:
    """A URL leading to a web page: the thinking message is replaced by a private refusal."""
    page = stack.upload("page.html", "text/html", b"<!doctype html><html></html>")
    interaction = await stack.stems("vocals", options={"url": page["url"]})
    assert "web page" in await stack.refusal(interaction)
    assert interaction.view().original is None  # the public "thinking" message is gone
    assert stack.api_calls() == 0


async def test_an_api_rejection_is_shown_verbatim_and_refunded(
    stack_on_each_store: Stack, bot_ledger: BotLedger
) -> None:
    """The NSFW message reaches the user word for word, and the unit comes back."""
    stack = stack_on_each_store
    stack.api.fail_next(Reply.nsfw())
    interaction = await stack.stems("vocals")
    final = await stack.answer(interaction)
    assert final is not None
    assert "NSFW words detected" in description(final)
    async with bot_ledger.reading() as ledger:
        status = await ledger.quotas.quota_status(stack.guild.id, stack.member.id, _now())
        assert status.guild_daily.used == 0
        request = await ledger.ledger.get_request(1)
        assert request is not None and request.status is RequestStatus.FAILED


async def test_quota_exhausted_is_refused_with_the_reset_time(tmp_path: Path) -> None:
    """With a daily limit of 1, the second request is refused privately, no API call."""
    env = {"STEMBOT_GUILD_DAILY_LIMIT": "1", "STEMBOT_USER_DAILY_LIMIT": "5"}
    async with running_stack(tmp_path / "db.sqlite", env) as stack:
        first = await stack.stems("vocals")
        await stack.answer(first)
        second = await stack.stems("vocals")
        assert "daily limit resets at" in await stack.refusal(second)
        assert stack.api_calls() == 1


async def test_a_result_after_token_expiry_is_posted_in_the_channel(stack: Stack) -> None:
    """When the 15-minute token has run out, the result goes to the channel with a mention."""
    stack.api.latency = 0.3
    interaction = await stack.stems("vocals")
    await stack.discord.acknowledged(interaction)
    stack.discord.age(interaction, 16 * 60)
    await eventually(lambda: channel_posts(stack.discord, stack.channel))
    (posted,) = channel_posts(stack.discord, stack.channel)
    assert posted.content == f"<@{stack.member.id}> your stems for song.wav are ready (Vocals)."
    assert posted.embeds[0]["title"].startswith("Vocals")


async def test_the_dm_fallback_runs_when_the_channel_refuses(stack: Stack) -> None:
    """Token expired and channel posts refused: the result arrives by direct message."""
    stack.api.latency = 0.3
    stack.discord.refuse_channel(stack.channel)
    interaction = await stack.stems("vocals")
    await stack.discord.acknowledged(interaction)
    stack.discord.age(interaction, 16 * 60)
    await eventually(lambda: stack.discord.dm_messages(stack.member))
    (dm,) = stack.discord.dm_messages(stack.member)
    assert dm.embeds[0]["title"].startswith("Vocals")


async def test_quota_command_shows_what_is_left(stack: Stack) -> None:
    """/stems quota answers privately with the server's and the user's remaining units."""
    interaction = await stack.discord.slash(
        "stems quota", member=stack.member, channel=stack.channel
    )
    final = await stack.discord.final_message(interaction)
    assert final is not None and final["flags"] & EPHEMERAL
    text = str(final["embeds"][0])
    assert "50" in text and "<t:" in text


def _now() -> datetime:
    return datetime.now(UTC)
