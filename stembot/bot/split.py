"""The "Split stems" message command: split an audio file someone posted, in two clicks.

At a remix event the organiser posts the track once; everyone right-clicks it, picks a mode
(and the file, if the message has several), and the normal request flow runs. Identical
requests share one API call (see StemService), so a crowd costs one call per mode.
"""

from __future__ import annotations

from collections import OrderedDict
from re import Match
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from stembot.bot.stems import attachment_input, start_request
from stembot.bot.tree import reply_privately
from stembot.errors import InvalidSourceError
from stembot.jobs import AttachmentInput, StemService
from stembot.models import Mode

# Buttons and a select hold 25 options: every mode for up to eight files.
MAX_FILES = 8
_REMEMBERED = 5_000


class PickedFiles:
    """The audio files offered in recent pickers, by attachment id (most recent kept).

    A picker's buttons carry only ids; the files' signed URLs live here. After a restart the
    picker says it expired instead of guessing.
    """

    def __init__(self, limit: int = _REMEMBERED) -> None:
        self._files: OrderedDict[int, AttachmentInput] = OrderedDict()
        self._limit = limit

    def remember(self, file: AttachmentInput) -> None:
        self._files[file.id] = file
        self._files.move_to_end(file.id)
        while len(self._files) > self._limit:
            self._files.popitem(last=False)

    def get(self, attachment_id: int) -> AttachmentInput | None:
        return self._files.get(attachment_id)


EXPIRED = "This menu has expired. Use **Apps → Split stems** on the message again."


class SplitCog(commands.Cog):
    def __init__(self, bot: commands.Bot, service: StemService) -> None:
        self._bot = bot
        self._service = service
        self.picked = PickedFiles()
        self._menu = app_commands.guild_only(
            app_commands.ContextMenu(name="Split stems", callback=self.split_stems)
        )

    async def cog_load(self) -> None:
        self._bot.tree.add_command(self._menu)

    async def cog_unload(self) -> None:
        self._bot.tree.remove_command(self._menu.name, type=self._menu.type)

    async def split_stems(self, interaction: discord.Interaction, message: discord.Message) -> None:
        usable: list[AttachmentInput] = []
        refusal: InvalidSourceError | None = None
        for attachment in message.attachments:
            file = attachment_input(attachment)
            try:
                self._service.check_attachment(file)
            except InvalidSourceError as error:
                refusal = refusal or error
                continue
            usable.append(file)
        if not usable:
            why = f" {refusal.user_message}" if refusal else ""
            await reply_privately(
                interaction, f"That message has no audio file stembot can split.{why}"
            )
            return
        for file in usable[:MAX_FILES]:
            self.picked.remember(file)
        await interaction.response.send_message(
            picker_text(usable), view=picker_view(usable[:MAX_FILES]), ephemeral=True
        )

    async def run_pick(
        self, interaction: discord.Interaction, mode: Mode, attachment_id: int
    ) -> None:
        file = self.picked.get(attachment_id)
        if file is None:
            await reply_privately(interaction, EXPIRED)
            return
        source = self._service.check_attachment(file)
        await start_request(self._bot, self._service, interaction, mode, source)


def picker_text(files: list[AttachmentInput]) -> str:
    if len(files) == 1:
        return f"Split **{discord.utils.escape_markdown(files[0].filename)}** into…"
    extra = f" (the first {MAX_FILES} are offered)" if len(files) > MAX_FILES else ""
    return f"This message has {len(files)} audio files{extra}. Pick a file and what to split:"


def picker_view(files: list[AttachmentInput]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    if len(files) == 1:
        for mode in Mode:
            view.add_item(ModeButton(mode, files[0].id))
    else:
        view.add_item(FileAndModeSelect(files))
    return view


def _split_cog(interaction: discord.Interaction) -> SplitCog | None:
    client = interaction.client
    cog = client.get_cog("SplitCog") if isinstance(client, commands.Bot) else None
    return cog if isinstance(cog, SplitCog) else None


async def _run_pick(interaction: discord.Interaction, mode: Mode, attachment_id: int) -> None:
    cog = _split_cog(interaction)
    if cog is None:
        await reply_privately(interaction, EXPIRED)
        return
    await cog.run_pick(interaction, mode, attachment_id)


class ModeButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"stems:split:(?P<mode>[a-z]+):(?P<attachment>[0-9]+)",
):
    def __init__(self, mode: Mode, attachment_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=mode.label,
                style=discord.ButtonStyle.primary,
                custom_id=f"stems:split:{mode.value}:{attachment_id}",
            )
        )
        self.mode = mode
        self.attachment_id = attachment_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Match[str], /
    ) -> ModeButton:
        return cls(Mode(match["mode"]), int(match["attachment"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await _run_pick(interaction, self.mode, self.attachment_id)


class FileAndModeSelect(
    discord.ui.DynamicItem[discord.ui.Select[Any]], template=r"stems:split-pick"
):
    """One pick among (file, mode) pairs; the values carry ``mode:attachment_id``."""

    def __init__(self, files: list[AttachmentInput] | None = None) -> None:
        options = [
            discord.SelectOption(
                label=f"{mode.label} · {file.filename}"[:100], value=f"{mode.value}:{file.id}"
            )
            for file in files or []
            for mode in Mode
        ]
        super().__init__(
            discord.ui.Select(
                custom_id="stems:split-pick",
                placeholder="Pick a file and what to split",
                options=options or [discord.SelectOption(label="-", value="-")],
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Match[str], /
    ) -> FileAndModeSelect:
        return cls()

    async def callback(self, interaction: discord.Interaction) -> None:
        picked = self.item.values[0] if self.item.values else ""
        mode_text, _, attachment = picked.partition(":")
        if mode_text not in {m.value for m in Mode} or not attachment.isdigit():
            await reply_privately(interaction, EXPIRED)
            return
        await _run_pick(interaction, Mode(mode_text), int(attachment))
