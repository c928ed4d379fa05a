"""The loopback Discord with files: uploads kept and served, Discord's limits on files and
request size (10 files, 413 / 40005), and the Components V2 rules, driven by real discord.py."""

from __future__ import annotations

import asyncio
import struct
import zlib
from typing import Any

import aiohttp
import discord
import pytest

from tests.act_bot import Probe, bot_channel, files, run
from tests.act_fixtures import bot_fixture, emulator_fixture, guild_fixture, probe_fixture  # noqa: F401
from tests.standins.discord import DiscordEmulator, Guild, MessageRecord
from tests.standins.discord.components_v2 import IS_COMPONENTS_V2

MiB = 1024 * 1024
WAV = b"RIFF" + bytes(2000)


def png(width: int, height: int) -> bytes:
    """A tiny valid PNG of ``width`` x ``height`` (grey)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PICTURE = png(6, 4)


def stem_card(*names: str, picture: str | None = "waveform.png") -> discord.ui.LayoutView:
    """A Components V2 card: a container with a text, a File per stem and the picture."""
    view = discord.ui.LayoutView(timeout=None)
    container: discord.ui.Container[discord.ui.LayoutView] = discord.ui.Container()
    container.add_item(discord.ui.TextDisplay("## Stems ready"))
    if picture is not None:
        container.add_item(
            discord.ui.MediaGallery(discord.MediaGalleryItem(f"attachment://{picture}"))
        )
    for name in names:
        container.add_item(discord.ui.File(f"attachment://{name}"))
    view.add_item(container)
    return view


def latest(emulator: DiscordEmulator, guild: Guild) -> MessageRecord:
    return emulator.channel_messages(guild.default_channel)[-1]


def http_error(probe: Probe) -> discord.HTTPException:
    (error,) = probe.errors
    assert isinstance(error, discord.HTTPException), error
    return error


# --- files are kept, named and served ----------------------------------------------------------


async def test_uploaded_files_are_kept_with_the_message_and_served(emulator, bot, probe, guild):
    """A response with two files: the record holds their bytes; the attachments carry filename,
    the content type Discord names from the extension, size, a PNG's size, and a CDN url."""

    async def action(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            "two files", files=files(("vocals.wav", WAV), ("waveform.png", PICTURE))
        )

    interaction = await run(emulator, probe, guild, action)
    message = interaction.original
    assert not probe.errors and message is not None
    assert message.attached() == {"vocals.wav": WAV, "waveform.png": PICTURE}
    wav, picture = message.attachments
    assert (wav["filename"], wav["content_type"], wav["size"]) == (
        "vocals.wav",
        "audio/x-wav",
        len(WAV),
    )
    assert (picture["content_type"], picture["width"], picture["height"]) == ("image/png", 6, 4)
    async with aiohttp.ClientSession() as http, http.get(wav["url"]) as got:
        assert got.status == 200 and await got.read() == WAV
    assert emulator.cdn_file(picture["url"]) == PICTURE
    assert [u.filename for u in emulator.sent_bodies[-1].uploads] == ["vocals.wav", "waveform.png"]


async def test_files_and_a_layout_view_are_accepted_on_every_message_route(
    emulator, bot, probe, guild
):
    """Callback, followup, edit of the original, channel post and channel edit all take a
    LayoutView whose File and MediaGallery components show files of the same request; Discord
    stores the V2 flag and resolves each attachment:// to the attachment."""
    sent: list[discord.Message] = []

    async def action(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            view=stem_card("a.wav"), files=files(("a.wav", WAV), ("waveform.png", PICTURE))
        )
        await interaction.edit_original_response(
            view=stem_card("b.wav"),
            attachments=files(("b.wav", WAV + b"b"), ("waveform.png", PICTURE)),
        )
        sent.append(
            await interaction.followup.send(
                view=stem_card("c.wav", picture=None), files=files(("c.wav", WAV)), wait=True
            )
        )
        channel = interaction.channel
        assert isinstance(channel, discord.TextChannel)
        posted = await channel.send(
            view=stem_card("d.wav"), files=files(("d.wav", WAV), ("waveform.png", PICTURE))
        )
        sent.append(
            await posted.edit(
                view=stem_card("e.wav", picture=None), attachments=files(("e.wav", WAV))
            )
        )

    interaction = await run(emulator, probe, guild, action)
    assert not probe.errors, probe.errors
    original = interaction.original
    assert original is not None and original.flags & IS_COMPONENTS_V2
    assert list(original.attached()) == ["b.wav", "waveform.png"]
    assert original.file("b.wav") == WAV + b"b"
    (container,) = original.components
    gallery, file_component = container["components"][1:]
    b_wav = original.attachments[0]
    assert file_component["file"]["url"] == b_wav["url"]
    assert (file_component["name"], file_component["size"]) == ("b.wav", len(WAV) + 1)
    assert gallery["items"][0]["media"]["attachment_id"] == original.attachments[1]["id"]
    followup, edited = sent
    assert [a.filename for a in followup.attachments] == ["c.wav"]
    assert [a.filename for a in edited.attachments] == ["e.wav"]
    assert edited.flags.components_v2 and latest(emulator, guild).file("e.wav") == WAV
    routes = {(b.method, b.route) for b in emulator.sent_bodies if b.uploads}
    assert routes == {
        ("POST", "/interactions/{interaction_id}/{interaction_token}/callback"),
        ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original"),
        ("POST", "/webhooks/{webhook_id}/{webhook_token}"),
        ("POST", "/channels/{channel_id}/messages"),
        ("PATCH", "/channels/{channel_id}/messages/{message_id}"),
    }


async def test_an_edit_keeps_the_listed_attachments_and_drops_the_rest(emulator, bot, guild):
    """Editing with an `attachments` list keeps the listed files and adds the new ones; the
    others leave the message."""
    channel = bot_channel(bot, guild)
    message = await channel.send(files=files(("a.wav", b"a"), ("b.wav", b"b")))
    kept = message.attachments[0]
    edited = await message.edit(attachments=[kept, *files(("c.wav", b"c"))])
    assert [a.filename for a in edited.attachments] == ["a.wav", "c.wav"]
    assert edited.attachments[0].id == kept.id
    assert latest(emulator, guild).attached() == {"a.wav": b"a", "c.wav": b"c"}
    cleared = await message.edit(attachments=[])
    assert cleared.attachments == [] and latest(emulator, guild).attached() == {}


# --- Discord's limits on files ------------------------------------------------------------------


async def raw_post(emulator: DiscordEmulator, path: str, form: aiohttp.FormData) -> tuple[int, Any]:
    return await raw_send(emulator, "POST", path, form)


async def raw_send(
    emulator: DiscordEmulator, method: str, path: str, form: aiohttp.FormData
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bot {emulator.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, emulator.api_base + path, data=form, headers=headers) as answer,
    ):
        return answer.status, await answer.json()


def multipart(payload: dict[str, Any], count: int, size: int = 10) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("payload_json", discord.utils._to_json(payload), content_type="application/json")
    for index in range(count):
        form.add_field(f"files[{index}]", bytes(size), filename=f"{index}.wav")
    return form


async def test_eleven_files_on_a_message_are_refused(emulator, bot, guild):
    """Ten files go through; an eleventh is refused with 400 / 50035 (discord.py itself stops
    `files` at ten, so the request is built by hand)."""
    path = f"/channels/{guild.default_channel.id}/messages"
    status, body = await raw_post(emulator, path, multipart({"content": "ten"}, 10))
    assert status == 200 and len(body["attachments"]) == 10
    status, body = await raw_post(emulator, path, multipart({"content": "eleven"}, 11))
    assert (status, body["code"]) == (400, 50035)
    assert "10 or fewer" in str(body["errors"]["attachments"])


async def test_an_edit_that_would_leave_eleven_files_is_refused(emulator, bot, guild):
    """Six files on the message, five more in an edit without an `attachments` list (which
    adds them): eleven, refused. The limit counts the message, not the request."""
    message = await bot_channel(bot, guild).send(
        files=files(*((f"{i}.wav", b"x") for i in range(6)))
    )
    path = f"/channels/{message.channel.id}/messages/{message.id}"
    status, body = await raw_send(emulator, "PATCH", path, multipart({"content": "more"}, 5))
    assert (status, body["code"]) == (400, 50035)
    assert len(latest(emulator, guild).attachments) == 6
    status, body = await raw_send(emulator, "PATCH", path, multipart({"content": "more"}, 4))
    assert status == 200 and len(body["attachments"]) == 10


async def test_a_request_over_the_upload_limit_is_refused_with_413_40005(
    emulator, bot, probe, guild
):
    """The interaction says the guild's limit (interaction.filesize_limit); two files each
    under it but together over it are refused: discord.py raises HTTPException 413 / 40005."""
    guild.upload_limit = 3000
    seen: list[int] = []

    async def action(interaction: discord.Interaction) -> None:
        seen.append(interaction.filesize_limit)
        await interaction.response.defer()
        await interaction.followup.send(files=files(("a.wav", bytes(1600)), ("b.wav", bytes(1600))))

    interaction = await run(emulator, probe, guild, action)
    assert seen == [3000]
    error = http_error(probe)
    assert (error.status, error.code) == (413, 40005)
    assert interaction.followups == []


async def test_a_boosted_guild_takes_larger_uploads(emulator, bot, guild):
    """Unboosted, 11 MiB in one channel post is refused; at boost level 2 (50 MiB, which the
    bot learns from GUILD_UPDATE) the same post goes through."""
    channel = bot_channel(bot, guild)
    assert channel.guild.filesize_limit == 10 * MiB
    big = bytes(11 * MiB)
    with pytest.raises(discord.HTTPException) as refused:
        await channel.send(files=files(("big.wav", big)))
    assert (refused.value.status, refused.value.code) == (413, 40005)
    await emulator.set_premium_tier(guild, 2)
    async with asyncio.timeout(5):
        while channel.guild.filesize_limit != 50 * MiB:  # noqa: ASYNC110 - the bot's cache
            await asyncio.sleep(0.005)
    message = await channel.send(files=files(("big.wav", big)))
    assert message.attachments[0].size == len(big)
    assert emulator.upload_limit_for(guild) == 50 * MiB
    boosted = await emulator.add_guild("Boosted", premium_tier=3)
    assert emulator.upload_limit_for(boosted) == 100 * MiB


# --- the Components V2 rules --------------------------------------------------------------------


def v2_body(*components: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"flags": IS_COMPONENTS_V2, "components": list(components), **fields}


def text(content: str = "hi") -> dict[str, Any]:
    return {"type": 10, "content": content}


def container(*children: dict[str, Any]) -> dict[str, Any]:
    return {"type": 17, "components": list(children)}


def file_component(name: str) -> dict[str, Any]:
    return {"type": 13, "file": {"url": f"attachment://{name}"}}


@pytest.mark.parametrize(
    ("body", "uploads", "complaint"),
    [
        (v2_body(text(), content="legacy"), 0, "'content' field cannot be used"),
        (v2_body(text(), embeds=[{"title": "legacy"}]), 0, "'embeds' field cannot be used"),
        (v2_body(container(*[text()] * 20), container(*[text()] * 20)), 0, "40 or fewer"),
        (v2_body(file_component("missing.wav")), 1, "Unknown attachment reference 'missing.wav'"),
        (v2_body(text("x" * 2001), text("x" * 2000)), 0, "4000 characters"),
        ({"components": [text()]}, 0, "need the IS_COMPONENTS_V2 message flag"),
    ],
    ids=["content", "embeds", "42-components", "unknown-attachment", "text-4001", "no-flag"],
)
async def test_components_v2_rules_are_enforced(emulator, bot, guild, body, uploads, complaint):
    """Each V2 rule broken once: 400 / 50035 naming it, nothing posted."""
    path = f"/channels/{guild.default_channel.id}/messages"
    before = len(emulator.channel_messages(guild.default_channel))
    status, answer = await raw_post(emulator, path, multipart(body, uploads))
    assert (status, answer["code"]) == (400, 50035), answer
    assert complaint in str(answer["errors"])
    assert len(emulator.channel_messages(guild.default_channel)) == before
    assert emulator.take_spec_violations() == []


async def test_forty_components_and_referenced_uploads_pass(emulator, bot, guild):
    """The same shapes within the rules go through: 40 components, the file uploaded."""
    path = f"/channels/{guild.default_channel.id}/messages"
    body = v2_body(container(*[text()] * 19), container(*[text()] * 18), file_component("0.wav"))
    status, answer = await raw_post(emulator, path, multipart(body, 1))
    assert status == 200, answer
    assert answer["components"][2]["file"]["attachment_id"] == answer["attachments"][0]["id"]


async def test_a_v2_message_keeps_its_flag_and_takes_no_content_on_edit(emulator, bot, guild):
    """Editing a V2 message to add content, or to drop the flag, is refused."""
    channel = bot_channel(bot, guild)
    message = await channel.send(
        view=stem_card("a.wav"), files=files(("a.wav", WAV), ("waveform.png", PICTURE))
    )
    with pytest.raises(discord.HTTPException) as refused:
        await message.edit(content="now with text")
    assert refused.value.code == 50035 and "'content' field" in refused.value.text
    path = f"/channels/{message.channel.id}/messages/{message.id}"
    status, body = await raw_send(
        emulator, "PATCH", path, multipart({"flags": 0, "components": []}, 0)
    )
    assert (status, body["code"]) == (400, 50035) and "cannot be removed" in str(body)
    assert latest(emulator, guild).flags & IS_COMPONENTS_V2


async def test_an_edit_may_show_a_file_the_message_keeps(emulator, bot, guild):
    """On edit, attachment:// may name a file the message keeps, not only a new upload."""
    message = await bot_channel(bot, guild).send(
        view=stem_card("a.wav"), files=files(("a.wav", WAV), ("waveform.png", PICTURE))
    )
    edited = await message.edit(view=stem_card("a.wav"), attachments=message.attachments)
    assert [a.filename for a in edited.attachments] == ["a.wav", "waveform.png"]
    with pytest.raises(discord.HTTPException) as refused:
        await message.edit(view=stem_card("a.wav"), attachments=message.attachments[1:])
    assert "Unknown attachment reference 'a.wav'" in refused.value.text


async def test_the_same_file_on_many_messages_is_kept_once(emulator, bot, guild):
    """Ten posts carrying the same stem hold one copy of its bytes (a burst of results with
    the same stems must not fill the emulator's memory)."""
    channel = bot_channel(bot, guild)
    for n in range(10):
        await channel.send(files=files((f"{n}.wav", bytes(WAV))))
    kept = [m.file(f"{n}.wav") for n, m in enumerate(emulator.channel_messages(channel.id))]
    assert all(data == WAV for data in kept)
    assert len({id(data) for data in kept}) == 1


async def test_a_deferral_cannot_carry_the_v2_flag_but_its_edit_can(emulator, bot, probe, guild):
    """Discord takes IS_COMPONENTS_V2 on the message that replaces "thinking...", not on the
    deferral itself."""
    interaction = await emulator.slash("act", member=emulator.add_member(guild, "bob"))
    url = f"{emulator.api_base}/interactions/{interaction.id}/{interaction.token}/callback"
    async with aiohttp.ClientSession() as http:
        body = {"type": 5, "data": {"flags": IS_COMPONENTS_V2}}
        async with http.post(url, json=body) as refused:
            assert refused.status == 400 and "deferred" in await refused.text()
        async with http.post(url, json={"type": 5}) as deferred:
            assert deferred.status == 204
        edit = f"{emulator.api_base}/webhooks/{emulator.application_id}/{interaction.token}"
        card = v2_body(text("ready"))
        async with http.patch(f"{edit}/messages/@original", json=card) as edited:
            assert edited.status == 200
    assert interaction.original is not None and interaction.original.flags & IS_COMPONENTS_V2


async def test_a_channel_message_is_fetched_and_only_the_bots_own_is_edited(emulator, bot, guild):
    """GET a channel message returns its files; editing a member's message is refused with
    403 / 50005, as Discord does."""
    channel = bot_channel(bot, guild)
    sent = await channel.send(files=files(("a.wav", WAV)))
    fetched = await channel.fetch_message(sent.id)
    assert [(a.filename, a.size) for a in fetched.attachments] == [("a.wav", len(WAV))]
    member = emulator.add_member(guild, "carol")
    theirs = await emulator.post_user_message(guild.default_channel, member, "mine")
    message = await channel.fetch_message(theirs.id)
    with pytest.raises(discord.Forbidden) as refused:
        await message.edit(content="not yours")
    assert refused.value.code == 50005
