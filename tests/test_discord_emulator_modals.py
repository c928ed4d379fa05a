"""The loopback Discord's modals: the bot shows one (callback type 9) with a Label holding a
Text Input or a File Upload, a member submits it (MODAL_SUBMIT) with text and files, and the
bot answers; Discord's limits on modals; ephemeral followups carrying files."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import discord
import pytest

from tests.act_bot import Probe, act_bot, eventually, files, run
from tests.act_fixtures import bot_fixture, emulator_fixture, guild_fixture, probe_fixture  # noqa: F401
from tests.discord_clients import emulated_discord
from tests.standins.discord import (
    EPHEMERAL,
    DiscordEmulator,
    Guild,
    InteractionRecord,
    SubmitRefusedError,
)
from tests.standins.discord.modals import submission

WAV = b"RIFF" + bytes(3000)


class RemixModal(discord.ui.Modal, title="Submit your remix"):
    """A title and one audio file, as the remix-event workflow asks for them."""

    def __init__(self, probe: Probe, *, chain: bool = False) -> None:
        super().__init__(custom_id="submit-remix")
        self.probe = probe
        self.chain = chain  # answer the submit with another modal
        self.name: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            custom_id="title", max_length=80
        )
        self.upload: discord.ui.FileUpload[RemixModal] = discord.ui.FileUpload(
            custom_id="remix", max_values=1
        )
        self.add_item(discord.ui.Label(text="Title", component=self.name))
        self.add_item(discord.ui.Label(text="Your remix", component=self.upload))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        try:
            if self.chain:
                await interaction.response.send_modal(RemixModal(self.probe))
                return
            (attachment,) = self.upload.values
            data = await attachment.read()
            self.probe.seen.append((self.name.value, attachment.filename, data))
            await interaction.response.send_message(
                f"Thanks for {self.name.value!r}", ephemeral=True
            )
            await interaction.followup.send(file=discord.File(io.BytesIO(data), "copy.wav"))
        except discord.HTTPException as error:
            self.probe.errors.append(error)


async def open_modal(
    emulator: DiscordEmulator, probe: Probe, guild: Guild, *, chain: bool = False
) -> InteractionRecord:
    async def show(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(RemixModal(probe, chain=chain))

    opened = await run(emulator, probe, guild, show)
    assert await emulator.acknowledged(opened) == 9
    return opened


async def test_a_member_submits_a_title_and_a_file_through_the_modal(emulator, bot, probe, guild):
    """The modal is kept numbered; the submit carries the text and the uploaded file, which
    the bot reads from the CDN; the bot answers the submit like any interaction."""
    opened = await open_modal(emulator, probe, guild)
    assert opened.modal is not None
    labels = opened.modal["components"]
    assert [(c["type"], c["component"]["type"]) for c in labels] == [(18, 4), (18, 19)]
    assert all(isinstance(c["id"], int) for c in labels)

    remix = emulator.upload_attachment(WAV, "my-remix.wav", "audio/wav")
    submitted = await emulator.submit_modal(opened, {"title": "Night mix", "remix": [remix]})
    answer = await emulator.final_message(submitted)

    assert answer is not None and answer["content"] == "Thanks for 'Night mix'"
    assert answer["flags"] & EPHEMERAL
    assert probe.seen == [("Night mix", "my-remix.wav", WAV)]
    data = submitted.payload["data"]
    assert submitted.payload["type"] == 5 and data["custom_id"] == "submit-remix"
    upload_answer = data["components"][1]["component"]
    assert upload_answer == {
        "type": 19,
        "id": labels[1]["component"]["id"],
        "custom_id": "remix",
        "values": [remix["id"]],
    }
    assert data["resolved"]["attachments"][remix["id"]]["ephemeral"] is True
    await submitted.wait_until(lambda r: bool(r.followups), 5)
    assert submitted.followups[0].file("copy.wav") == WAV


async def test_a_modal_cannot_answer_a_modal_submit(emulator, bot, probe, guild):
    """Discord offers MODAL for commands and components only: a modal in answer to a submit
    is refused (400 / 50035) even though the body itself is a valid modal."""
    opened = await open_modal(emulator, probe, guild, chain=True)
    remix = emulator.upload_attachment(WAV, "a.wav")
    submitted = await emulator.submit_modal(opened, {"title": "x", "remix": [remix]})
    await submitted.wait_until(lambda r: bool(r.calls), 5)
    (call,) = submitted.calls
    assert (call.status, call.code) == (400, 50035)
    assert not submitted.acknowledged
    await eventually(lambda: probe.errors)  # the bot learns of the refusal after the emulator
    (error,) = probe.errors
    assert isinstance(error, discord.HTTPException) and error.code == 50035


class RenameModal(discord.ui.Modal, title="Rename"):
    def __init__(self, probe: Probe) -> None:
        super().__init__(custom_id="rename")
        self.probe = probe
        self.name: discord.ui.TextInput[RenameModal] = discord.ui.TextInput(custom_id="name")
        self.add_item(discord.ui.Label(text="New name", component=self.name))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        try:
            await interaction.response.edit_message(content=self.name.value, view=None)
        except discord.HTTPException as error:
            self.probe.errors.append(error)


class RenameView(discord.ui.View):
    def __init__(self, probe: Probe) -> None:
        super().__init__(timeout=None)
        self.probe = probe

    @discord.ui.button(label="Rename", custom_id="rename-button")
    async def rename(
        self, interaction: discord.Interaction, _: discord.ui.Button[RenameView]
    ) -> None:
        await interaction.response.send_modal(RenameModal(self.probe))


async def test_a_modal_from_a_button_updates_the_buttons_message(emulator, bot, probe, guild):
    """The submit of a modal opened from a component carries that message, so the bot may
    answer by updating it (UPDATE_MESSAGE)."""

    async def post(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("old name", view=RenameView(probe))

    posted = await run(emulator, probe, guild, post)
    assert posted.original is not None
    click = await emulator.click(posted.original, "rename-button", member=posted.invoker)
    assert await emulator.acknowledged(click) == 9
    submitted = await emulator.submit_modal(click, {"name": "new name"})
    assert submitted.payload["message"]["id"] == str(posted.original.id)
    await emulator.final_message(submitted)
    assert posted.original.content == "new name" and posted.original.components == []
    assert not probe.errors


async def test_a_modal_from_a_command_cannot_update_a_message(emulator, bot, probe, guild):
    """Without a message behind the modal, UPDATE_MESSAGE is refused (400 / 50035)."""

    async def show(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(RenameModal(probe))

    opened = await run(emulator, probe, guild, show)
    submitted = await emulator.submit_modal(opened, {"name": "x"})
    await submitted.wait_until(lambda r: bool(r.calls), 5)
    await eventually(lambda: probe.errors)
    (error,) = probe.errors
    assert isinstance(error, discord.HTTPException)
    assert (error.status, error.code) == (400, 50035)


def _label(component: dict[str, Any], text: str = "Field") -> dict[str, Any]:
    return {"type": 18, "label": text, "component": component}


def _text_input(custom_id: str = "t", **fields: Any) -> dict[str, Any]:
    return {"type": 4, "custom_id": custom_id, "style": 1, **fields}


def _upload(custom_id: str = "f", **fields: Any) -> dict[str, Any]:
    return {"type": 19, "custom_id": custom_id, **fields}


def _modal(*components: dict[str, Any], title: str = "Form") -> dict[str, Any]:
    return {"type": 9, "data": {"custom_id": "m", "title": title, "components": list(components)}}


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        (_modal(_label(_text_input()), _label(_upload(max_values=10))), True),
        (_modal(*(_label(_text_input(f"t{i}")) for i in range(5))), True),
        (_modal(*(_label(_text_input(f"t{i}")) for i in range(6))), False),
        (_modal(_label(_text_input()), title="t" * 46), False),
        (_modal(_label(_text_input(), text="l" * 46)), False),
        (_modal(_upload()), False),
        (_modal(_label(_upload(min_values=3, max_values=2))), False),
        (_modal(_label(_upload(min_values=0))), False),
        (_modal(_label(_upload(min_values=0, required=False))), True),
        (_modal(_label(_upload(max_values=11))), False),
        (_modal(_label(_upload(file_types=["audio", "mp3"]))), False),
        (_modal(_label(_text_input("same")), _label(_upload("same"))), False),
        (_modal(_label(_text_input(min_length=10, max_length=5))), False),
        (_modal({"type": 1, "components": [_upload()]}), False),
    ],
)
async def test_discords_modal_limits_hold_without_the_openapi_description(body, accepted):
    """At most 5 top-level components, a title and labels of 45 characters, a File Upload only
    in a Label and with 0-10 files (at least one when required), unique custom ids."""
    async with emulated_discord(validate_spec=False) as emulator:
        probe = Probe()
        async with act_bot(emulator, probe) as _:
            guild = next(iter(emulator.guilds.values()))

            async def answer(interaction: discord.Interaction) -> None:
                url = f"{emulator.api_base}/interactions/{interaction.id}/{interaction.token}"
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(url + "/callback", json=body) as response,
                ):
                    probe.seen.append(response.status)

            opened = await run(emulator, probe, guild, answer)
    assert probe.seen == [204 if accepted else 400]
    assert (opened.modal is not None) is accepted


REMIX_MODAL = {
    "custom_id": "m",
    "title": "Remix",
    "components": [
        {"type": 18, "id": 1, "label": "Title", "component": _text_input("t", max_length=5)},
        {
            "type": 18,
            "id": 2,
            "label": "File",
            "component": _upload("f", max_values=2, file_types=["audio"]),
        },
        {"type": 18, "id": 3, "label": "Note", "component": _text_input("n", required=False)},
    ],
}


def _file(name: str, size: int = 10) -> dict[str, Any]:
    return {"id": "7", "filename": name, "size": size}


@pytest.mark.parametrize(
    "values",
    [
        {"f": [_file("a.wav")]},  # the required title left empty
        {"t": "too long", "f": [_file("a.wav")]},
        {"t": "ok", "f": []},
        {"t": "ok", "f": [_file("a.wav"), _file("b.wav"), _file("c.wav")]},
        {"t": "ok", "f": [_file("a.pdf")]},
        {"t": "ok", "f": [_file("a.wav", size=1001)]},
    ],
)
def test_the_members_client_sends_only_what_the_modal_allows(values):
    """Required inputs, text lengths, file counts, kinds and sizes are the client's to
    enforce; ``check=False`` sends them anyway, as a modified client could."""
    with pytest.raises(SubmitRefusedError):
        submission(REMIX_MODAL, values, upload_limit=1000)
    sent = submission(REMIX_MODAL, values, upload_limit=1000, check=False)
    assert [c["component"]["custom_id"] for c in sent["components"]] == ["t", "f", "n"]


def test_a_submit_names_every_input_and_resolves_the_files():
    sent = submission(
        REMIX_MODAL, {"t": "ok", "f": [_file("a.WAV"), _file("b.flac")]}, upload_limit=1000
    )
    title, upload, note = (c["component"] for c in sent["components"])
    assert title == {"type": 4, "id": 4, "custom_id": "t", "value": "ok"}
    assert upload["values"] == ["7", "7"] and note["value"] == ""
    assert set(sent["resolved"]["attachments"]) == {"7"}
    with pytest.raises(LookupError):
        submission(REMIX_MODAL, {"unknown": "x"}, upload_limit=1000)


async def test_ephemeral_followups_carry_files_only_for_the_member(emulator, bot, probe, guild):
    """A private deferral's first followup becomes the response; a second ephemeral followup
    is a message of its own; both keep their files on the CDN and neither is a channel
    message anyone else can fetch (404 / 10008)."""

    async def private_files(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.followup.send("stems", files=files(("vocals.wav", WAV)))
        extra = await interaction.followup.send(
            "mix", files=files(("mix.wav", WAV + b"m")), ephemeral=True, wait=True
        )
        try:
            await bot.http.get_message(interaction.channel_id, extra.id)
        except discord.NotFound as error:
            probe.seen.append(error.code)

    interaction = await run(emulator, probe, guild, private_files)
    assert not probe.errors, probe.errors
    original, (extra,) = interaction.original, interaction.followups
    assert original is not None
    assert original.ephemeral and extra.ephemeral and not original.loading
    assert original.file("vocals.wav") == WAV and extra.file("mix.wav") == WAV + b"m"
    async with aiohttp.ClientSession() as http, http.get(extra.attachments[0]["url"]) as got:
        assert await got.read() == WAV + b"m"
    assert probe.seen == [10008]
