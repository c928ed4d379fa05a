"""The "Split stems" message command: split an audio file someone posted, in two clicks.

At a remix event the organiser posts the track once; everyone right-clicks it, picks a mode
(and the file, if the message has several), and the normal request flow runs. Identical
requests share one API call (see StemService), so a crowd costs one call per mode.

The picker fits Discord's 25 options whatever the number of modes and files: one file gets a
button per mode; several get one select of every (file, mode) pair while those fit, and
otherwise a select of the files whose pick turns the picker into that file's mode buttons.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from re import Match
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from stembot.bot import embeds
from stembot.bot.guild_only import answer_if_elsewhere
from stembot.bot.requests import start_attachment_request, usable_audio
from stembot.bot.tree import reply_privately
from stembot.errors import InvalidSourceError
from stembot.models import Mode
from stembot.request_inputs import AttachmentInput
from stembot.stem_service import StemService

# Discord: a select holds at most 25 options, a message at most 25 buttons (5 rows of 5).
OPTIONS_MAX = 25
SELECT_LABEL_MAX = 100
# Pickers remembered per server, and servers remembered (least recently used forgotten).
_PICKERS_PER_SERVER = 200
_SERVERS = 2_000


@dataclass(frozen=True, slots=True)
class Picker:
    """One picker shown: where, to whom, and the files it offered (by attachment id)."""

    guild_id: int
    user_id: int
    files: dict[int, AttachmentInput]


class Pickers:
    """The pickers shown recently, by server, each under its own id (its interaction's id).

    A picker's components carry only its id and an attachment id; the files' signed URLs live
    here. A click counts only in the picker's own server, by the member it was shown to, for a
    file and mode it offered: a hand-made custom_id or select value from elsewhere finds
    nothing. After a restart the picker says it expired instead of guessing. One busy server
    can only push out its own old pickers.
    """

    def __init__(self, per_server: int = _PICKERS_PER_SERVER, servers: int = _SERVERS) -> None:
        self._servers: OrderedDict[int, OrderedDict[int, Picker]] = OrderedDict()
        self._per_server = per_server
        self._max_servers = servers

    def remember(self, picker_id: int, picker: Picker) -> None:
        shown = self._servers.setdefault(picker.guild_id, OrderedDict())
        self._servers.move_to_end(picker.guild_id)
        shown[picker_id] = picker
        while len(shown) > self._per_server:
            shown.popitem(last=False)
        while len(self._servers) > self._max_servers:
            self._servers.popitem(last=False)

    def get(self, guild_id: int, picker_id: int) -> Picker | None:
        shown = self._servers.get(guild_id)
        return None if shown is None else shown.get(picker_id)


EXPIRED = "This menu has expired. Use **Apps → Split stems** on the message again."
NOT_YOURS = (
    "This menu was opened by someone else. Use **Apps → Split stems** on the message yourself."
)
NOT_OFFERED = "That is not one of the choices this menu offered. Pick one from the menu."


class SplitCog(commands.Cog):
    def __init__(self, bot: commands.Bot | commands.AutoShardedBot, service: StemService) -> None:
        self._bot = bot
        self._service = service
        self.pickers = Pickers()
        self._menu = app_commands.guild_only(
            app_commands.ContextMenu(name="Split stems", callback=self.split_stems)
        )

    async def cog_load(self) -> None:
        self._bot.tree.add_command(self._menu)

    async def cog_unload(self) -> None:
        self._bot.tree.remove_command(self._menu.name, type=self._menu.type)

    async def split_stems(self, interaction: discord.Interaction, message: discord.Message) -> None:
        usable, refusal = usable_audio(self._service, message.attachments)
        if not usable:
            assert interaction.guild_id is not None  # guild_only (checked by the tree)
            self._service.refused(interaction.guild_id, refusal or InvalidSourceError())
            why = f" {refusal.user_message}" if refusal else ""
            await reply_privately(
                interaction, f"That message has no audio file stembot can split.{why}"
            )
            return
        offered = usable[:OPTIONS_MAX]
        assert interaction.guild_id is not None  # guild_only (checked by the tree)
        self.pickers.remember(
            interaction.id,
            Picker(interaction.guild_id, interaction.user.id, {f.id: f for f in offered}),
        )
        await interaction.response.send_message(
            picker_text(usable), view=picker_view(interaction.id, offered), ephemeral=True
        )

    async def show_modes(
        self, interaction: discord.Interaction, picker_id: int | None, attachment: str
    ) -> None:
        """A file picked from the files select: the picker now offers that file's modes."""
        file = await self._offered_file(interaction, picker_id, attachment)
        if file is not None:
            await interaction.response.edit_message(
                content=picker_text([file]), view=mode_buttons(picker_id, file)
            )

    async def run_pick(
        self,
        interaction: discord.Interaction,
        picker_id: int | None,
        mode_text: str,
        attachment: str,
    ) -> None:
        file = await self._offered_file(interaction, picker_id, attachment)
        if file is None:
            return
        if mode_text not in _MODES:
            await reply_privately(interaction, NOT_OFFERED)
            return
        source = self._service.check_attachment(file)
        await start_attachment_request(
            self._bot, self._service, interaction, Mode(mode_text), source
        )

    async def _offered_file(
        self, interaction: discord.Interaction, picker_id: int | None, attachment: str
    ) -> AttachmentInput | None:
        """The file a click on a picker names, if that picker offered it to this member;
        otherwise the member is told why and None comes back."""
        picker = None
        if picker_id is not None and interaction.guild_id is not None:
            picker = self.pickers.get(interaction.guild_id, picker_id)
        if picker is None:
            await reply_privately(interaction, EXPIRED)
            return None
        if interaction.user.id != picker.user_id:
            await reply_privately(interaction, NOT_YOURS)
            return None
        file = picker.files.get(int(attachment)) if attachment.isdigit() else None
        if file is None:
            await reply_privately(interaction, NOT_OFFERED)
        return file


_MODES = frozenset(mode.value for mode in Mode)


def picker_text(files: list[AttachmentInput]) -> str:
    if len(files) == 1:
        name = embeds.safe_text(files[0].filename, embeds.SOURCE_NAME_MAX)
        return f"Split **{name or 'this file'}** into…"
    offered = min(len(files), OPTIONS_MAX)
    extra = f" (the first {offered} are offered)" if len(files) > offered else ""
    if _pairs_fit(offered):
        return f"This message has {len(files)} audio files{extra}. Pick a file and what to split:"
    return f"This message has {len(files)} audio files{extra}. Pick one, then what to split:"


def picker_view(picker_id: int, files: list[AttachmentInput]) -> discord.ui.View:
    """One file: its mode buttons. Several: one pick of a (file, mode) pair when every pair
    fits in a select, else a pick of the file first."""
    if len(files) == 1:
        return mode_buttons(picker_id, files[0])
    view = discord.ui.View(timeout=None)
    if _pairs_fit(len(files)):
        view.add_item(FileAndModeSelect(picker_id, files))
    else:
        view.add_item(FileSelect(picker_id, files))
    return view


def mode_buttons(picker_id: int | None, file: AttachmentInput) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for mode in Mode:
        view.add_item(ModeButton(mode.value, picker_id, file.id))
    return view


def _pairs_fit(file_count: int) -> bool:
    return file_count * len(Mode) <= OPTIONS_MAX


def _split_cog(interaction: discord.Interaction) -> SplitCog | None:
    client = interaction.client
    if not isinstance(client, (commands.Bot, commands.AutoShardedBot)):
        return None
    cog = client.get_cog("SplitCog")
    return cog if isinstance(cog, SplitCog) else None


async def _run_pick(
    interaction: discord.Interaction, picker_id: int | None, mode_text: str, attachment: str
) -> None:
    cog = _split_cog(interaction)
    if cog is None:
        await reply_privately(interaction, EXPIRED)
        return
    await cog.run_pick(interaction, picker_id, mode_text, attachment)


def _option_label(mode: Mode, file: AttachmentInput) -> str:
    head = f"{mode.label} · "
    return head + _file_label(file, SELECT_LABEL_MAX - len(head))


def _file_label(file: AttachmentInput, limit: int = SELECT_LABEL_MAX) -> str:
    return embeds.label_text(file.filename, limit) or "this file"


def file_options(files: list[AttachmentInput]) -> list[discord.SelectOption]:
    """A select's options naming ``files`` (by attachment id); a placeholder without any
    (the item that only answers picks)."""
    options = [discord.SelectOption(label=_file_label(f), value=str(f.id)) for f in files]
    return options or [discord.SelectOption(label="-", value="-")]


def _picker_id(match: Match[str]) -> int | None:
    """None for a picker made before pickers had ids (it can only have expired)."""
    return int(match["picker"]) if match["picker"] else None


class ModeButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"stems:split:(?P<mode>[-_a-z0-9]+):(?:(?P<picker>[0-9]+):)?(?P<attachment>[0-9]+)",
):
    def __init__(self, mode_text: str, picker_id: int | None, attachment_id: int) -> None:
        label = Mode(mode_text).label if mode_text in _MODES else "?"
        picker = "" if picker_id is None else f"{picker_id}:"
        super().__init__(
            discord.ui.Button(
                label=label,
                style=discord.ButtonStyle.primary,
                custom_id=f"stems:split:{mode_text}:{picker}{attachment_id}",
            )
        )
        self.mode_text = mode_text
        self.picker_id = picker_id
        self.attachment_id = attachment_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Match[str], /
    ) -> ModeButton:
        return cls(match["mode"], _picker_id(match), int(match["attachment"]))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await answer_if_elsewhere(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        await _run_pick(interaction, self.picker_id, self.mode_text, str(self.attachment_id))


class FileAndModeSelect(
    discord.ui.DynamicItem[discord.ui.Select[Any]],
    template=r"stems:split-pick(?::(?P<picker>[0-9]+))?",
):
    """One pick among (file, mode) pairs; the values carry ``mode:attachment_id``."""

    def __init__(
        self, picker_id: int | None = None, files: list[AttachmentInput] | None = None
    ) -> None:
        options = [
            discord.SelectOption(label=_option_label(mode, file), value=f"{mode.value}:{file.id}")
            for file in files or []
            for mode in Mode
        ]
        custom_id = "stems:split-pick" if picker_id is None else f"stems:split-pick:{picker_id}"
        super().__init__(
            discord.ui.Select(
                custom_id=custom_id,
                placeholder="Pick a file and what to split",
                options=options or [discord.SelectOption(label="-", value="-")],
            )
        )
        self.picker_id = picker_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Match[str], /
    ) -> FileAndModeSelect:
        return cls(_picker_id(match))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await answer_if_elsewhere(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        picked = self.item.values[0] if len(self.item.values) == 1 else ""
        mode_text, _, attachment = picked.partition(":")
        await _run_pick(interaction, self.picker_id, mode_text, attachment)


class FileSelect(
    discord.ui.DynamicItem[discord.ui.Select[Any]],
    template=r"stems:split-file:(?P<picker>[0-9]+)",
):
    """The first of two picks when the (file, mode) pairs would not fit in one select: the
    file; its value is the attachment id."""

    def __init__(self, picker_id: int, files: list[AttachmentInput] | None = None) -> None:
        super().__init__(
            discord.ui.Select(
                custom_id=f"stems:split-file:{picker_id}",
                placeholder="Pick a file",
                options=file_options(files or []),
            )
        )
        self.picker_id = picker_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Match[str], /
    ) -> FileSelect:
        return cls(int(match["picker"]))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await answer_if_elsewhere(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        picked = self.item.values[0] if len(self.item.values) == 1 else ""
        cog = _split_cog(interaction)
        if cog is None:
            await reply_privately(interaction, EXPIRED)
            return
        await cog.show_modes(interaction, self.picker_id, picked)
