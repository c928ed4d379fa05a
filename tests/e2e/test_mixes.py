"""Free mixes from the result card's menu, end to end: the real bot, the loopback Discord and
the Soundverse stand-in, whose stems are tones (vocals 440, Guitar 299, Other 669, Drums 195,
Bass 119, Piano 1127 Hz), so a spectrum tells which stems a mix holds."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stembot.attachment_plan import REQUEST_OVERHEAD_BYTES
from stembot.bot.client import StemBot
from stembot.bot.mixes import NO_MEDIA, NOT_THIS_CHANNEL, RESULT_GONE
from stembot.bot.result_card import result_card
from stembot.config import load_settings
from stembot.errors import MixTooLargeError, UnknownMixError
from stembot.result_media import ResultMedia, StemMedia
from stembot.store import Store
from tests.audio_signals import level_at
from tests.e2e.stack import (
    API_KEY,
    MEDIA_ENV,
    WAV,
    Stack,
    bot_connected,
    eventually,
    running_stack,
    stack_env,
)
from tests.ledger_reads import totals
from tests.standins.discord import (
    BOT_DM,
    GUILD,
    Channel,
    DiscordEmulator,
    InteractionRecord,
    Member,
    MessageRecord,
)
from tests.standins.soundverse import SoundverseStandin
from tests.standins.stem_audio import STEM_TONES_HZ

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

UPDATE_MESSAGE = 7
MENU_PREFIX = "stems:mix:"


def media_env(cache_dir: Path) -> dict[str, str]:
    return {**MEDIA_ENV, "STEMBOT_CACHE_DIR": str(cache_dir)}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path / "stembot.db", media_env(tmp_path / "cache")) as running:
        yield running


# --- the card, a pick, and what the member gets -------------------------------------------------


async def with_menu(messages: Callable[[], list[MessageRecord]]) -> tuple[MessageRecord, str]:
    """The first of ``messages`` to carry the free-mix menu (once the result has its files),
    and the menu's custom_id."""

    def carrying() -> list[tuple[MessageRecord, str]]:
        return [
            (message, custom_id)
            for message in messages()
            for custom_id in message.custom_ids()
            if custom_id.startswith(MENU_PREFIX)
        ]

    await eventually(carrying, 30)
    return carrying()[0]


async def card_of(interaction: InteractionRecord) -> tuple[MessageRecord, str]:
    """The result card the interaction's message became, and its menu's custom_id."""
    return await with_menu(lambda: [m for m in [interaction.original] if m is not None])


async def post_card(
    discord: DiscordEmulator, bot: StemBot, store: Store, request_id: int, channel: Channel
) -> MessageRecord:
    """The bot posts request ``request_id``'s card (links only) in ``channel``: a card that
    was never sent there, as only a modified client could name."""
    found = store.ledger.stored_result(request_id)
    assert found is not None
    request, separation = found
    media = ResultMedia(tuple(StemMedia(stem.name) for stem in separation.stems))
    card = result_card(request.source_name, separation, media, None, request.id)
    await bot.get_partial_messageable(channel.id).send(view=card)
    return discord.channel_messages(channel)[-1]


async def pick(
    discord: DiscordEmulator,
    card: MessageRecord,
    menu: str,
    member: Member,
    value: str,
    context: str = GUILD,
) -> MessageRecord:
    """``member`` picks ``value`` in the card's menu: the card is acknowledged with an update
    that changes nothing (the menu is ready for the next pick) and the answer is one private
    followup, returned once it is final (a file, or a line saying why not)."""
    shown = card.data["components"]
    click = await discord.click(card, menu, member=member, values=[value], context=context)
    await eventually(lambda: _final(click), 60)
    assert click.ack_type == UPDATE_MESSAGE
    assert card.data["components"] == shown
    (answer,) = click.followups
    assert answer.ephemeral and not answer.loading
    return answer


def _final(click: InteractionRecord) -> bool:
    return bool(click.followups) and not click.followups[0].content.startswith("Mixing")


# --- the tests ----------------------------------------------------------------------------------


async def test_a_mix_is_sent_privately_made_once_and_costs_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    """/stems all, then "Without Drums" by another member of the server: one private file
    holding every stem's tone but the drums'; "Instrumental" has no vocals; "Without Drums"
    again is the same file from the cache. No API call, no download, no ledger row, no unit,
    no public message."""
    card, menu = await card_of(await stack.stems("all"))
    calls, before, posts = stack.api_calls(), totals(stack.ledger()), len(stack.discord.messages)
    assert stack.api.downloads == 6  # the card's files: the mixes reuse them
    bob = stack.discord.add_member(stack.guild, "bob")

    without_drums = await pick(stack.discord, card, menu, bob, "without:Drums")
    assert "**Without Drums** of **song.wav**" in without_drums.content
    assert "no units" in without_drums.content
    assert list(without_drums.attached()) == ["Without_Drums.ogg"]
    assert tones_heard(without_drums, tmp_path) == set(STEM_TONES_HZ) - {"Drums"}
    instrumental = await pick(stack.discord, card, menu, stack.member, "instrumental")
    assert tones_heard(instrumental, tmp_path) == set(STEM_TONES_HZ) - {"vocals"}

    made = mixes_in_cache(tmp_path / "cache")
    again = await pick(stack.discord, card, menu, bob, "without:Drums")
    # Two encodings of one mix differ (Ogg streams get random serial numbers): the same bytes
    # and the same cached file mean it was made once.
    assert again.attached() == without_drums.attached()
    assert mixes_in_cache(tmp_path / "cache") == made and len(made) == 2

    assert stack.api.downloads == 6 and stack.api_calls() == calls
    assert totals(stack.ledger()) == before
    public = [m for m in list(stack.discord.messages.values())[posts:] if not m.ephemeral]
    assert public == []


def tones_heard(answer: MessageRecord, folder: Path) -> set[str]:
    """The stems whose tone the answer's one file holds (the others: more than 40 dB down)."""
    ((filename, data),) = answer.attached().items()
    path = folder / f"{answer.id}-{filename}"
    path.write_bytes(data)
    levels = {name: level_at(path, hz) for name, hz in STEM_TONES_HZ.items()}
    assert all(level > -3 or level < -40 for level in levels.values()), levels
    return {name for name, level in levels.items() if level > -3}


def mixes_in_cache(cache_dir: Path) -> dict[Path, int]:
    return {path: path.stat().st_ino for path in cache_dir.rglob("mix-*")}


async def test_refusals_are_private_specific_and_free(stack: Stack) -> None:
    """A mix the result does not offer (a modified client), a card naming a request of another
    channel, a mix too large for the upload limit the interaction gives, and a result no longer
    kept (here a moderator's refund forgot it): each gets its own private line, and nothing is
    spent."""
    card, menu = await card_of(await stack.stems("all"))
    request_id = int(menu.removeprefix(MENU_PREFIX))
    ledger = stack.ledger()
    calls, before = stack.api_calls(), totals(ledger)

    for forged in ("without:Kazoo", "without:vocals", ""):
        answer = await pick(stack.discord, card, menu, stack.member, forged)
        assert answer.content == UnknownMixError().user_message and not answer.attachments

    elsewhere = await stack.discord.add_channel(stack.guild, "elsewhere")
    copied = await post_card(stack.discord, stack.bot, ledger, request_id, elsewhere)
    answer = await pick(stack.discord, copied, menu, stack.member, "instrumental")
    assert answer.content == NOT_THIS_CHANNEL and not answer.attachments

    # The limit is the one Discord gives with the interaction: here too small for any copy.
    stack.guild.upload_limit = REQUEST_OVERHEAD_BYTES + 4 * 1024
    answer = await pick(stack.discord, card, menu, stack.member, "without:Bass")
    assert answer.content == MixTooLargeError().user_message and not answer.attachments
    stack.guild.upload_limit = None

    assert stack.api_calls() == calls
    assert totals(stack.ledger()) == before
    assert ledger.ledger.refund_by_moderator(request_id, stack.guild.id, datetime.now(UTC))
    answer = await pick(stack.discord, card, menu, stack.member, "instrumental")
    assert answer.content == RESULT_GONE and not answer.attachments


async def test_a_result_sent_by_dm_mixes_for_its_requester_alone(tmp_path: Path) -> None:
    """Past the 15 minutes with the channel refused, the result goes by DM with its menu: the
    requester's pick there gets the mix; anyone else's (a modified client) is refused."""
    env = media_env(tmp_path / "cache")
    async with running_stack(tmp_path / "stembot.db", env, api_latency=0.3) as stack:
        requested = await stack.stems("all")
        await stack.discord.acknowledged(requested)
        stack.discord.refuse_channel(stack.channel)
        stack.discord.age(requested, 16 * 60)
        sent, menu = await with_menu(lambda: stack.discord.dm_messages(stack.member))
        answer = await pick(stack.discord, sent, menu, stack.member, "without:Drums", BOT_DM)
        assert tones_heard(answer, tmp_path) == set(STEM_TONES_HZ) - {"Drums"}
        bob = stack.discord.add_member(stack.guild, "bob")
        answer = await pick(stack.discord, sent, menu, bob, "without:Drums", BOT_DM)
        assert answer.content == NOT_THIS_CHANNEL and not answer.attachments


@dataclass
class StoppedBot:
    """A result's card left by a bot that has stopped, and what the next bot starts on."""

    discord: DiscordEmulator
    api: SoundverseStandin
    env: dict[str, str]
    store: Store
    member: Member
    card: MessageRecord
    menu: str

    async def pick_in_a_new_bot(
        self, value: str, settings: Mapping[str, str] | None = None
    ) -> MessageRecord:
        """Start a bot (with ``settings`` changed) and pick ``value`` on the old card."""
        env = {**self.env, **(settings or {})}
        started = load_settings(env, need_discord=True, need_soundverse=True)
        async with bot_connected(self.discord, started):
            return await pick(self.discord, self.card, self.menu, self.member, value)


@contextlib.asynccontextmanager
async def card_of_a_stopped_bot(tmp_path: Path) -> AsyncIterator[StoppedBot]:
    """A bot answers `/stems all` with its card (its cache in ``tmp_path / "cache"``), stops."""
    async with DiscordEmulator() as discord, SoundverseStandin(api_key=API_KEY) as api:
        guild = await discord.add_guild()
        alice = discord.add_member(guild, "alice")
        env = {**stack_env(discord, api, tmp_path / "stembot.db"), **media_env(tmp_path / "cache")}
        settings = load_settings(env, need_discord=True, need_soundverse=True)
        store = Store.open(settings.db_path, settings.quota)
        try:
            async with bot_connected(discord, settings):
                channel = guild.default_channel
                track = discord.upload_attachment(WAV, "song.wav", "audio/wav", channel=channel)
                card, menu = await card_of(
                    await discord.slash(
                        "stems all", member=alice, channel=channel, options={"file": track}
                    )
                )
            yield StoppedBot(discord, api, env, store, alice, card, menu)
        finally:
            store.close()


async def test_the_menu_works_after_a_restart(tmp_path: Path) -> None:
    """The card from before a restart: the new process makes "Without Drums" from it."""
    async with card_of_a_stopped_bot(tmp_path) as earlier:
        calls, before = len(earlier.api.requests), totals(earlier.store)
        answer = await earlier.pick_in_a_new_bot("without:Drums")
        assert tones_heard(answer, tmp_path) == set(STEM_TONES_HZ) - {"Drums"}
        assert len(earlier.api.requests) == calls and totals(earlier.store) == before


async def test_stems_gone_offer_to_run_the_request_again(tmp_path: Path) -> None:
    """The stems left the cache and the API's links expired: the pick says so and how to get
    them again (a new request, the command clickable with its id); nothing is spent."""
    async with card_of_a_stopped_bot(tmp_path) as earlier:
        shutil.rmtree(tmp_path / "cache")
        earlier.api.expire_links()
        calls, before = len(earlier.api.requests), totals(earlier.store)
        answer = await earlier.pick_in_a_new_bot("without:Drums")
        command_id = earlier.discord.find_command("stems", 1, earlier.member.guild_id)["id"]
        assert "no longer available" in answer.content
        assert f"</stems all:{command_id}>" in answer.content
        assert "new request" in answer.content and "**song.wav**" in answer.content
        assert not answer.attachments
        assert len(earlier.api.requests) == calls and totals(earlier.store) == before


async def test_after_attachments_are_switched_off_a_pick_says_mixes_are_off(
    tmp_path: Path,
) -> None:
    """The operator set STEMBOT_ATTACH_STEMS=false after cards went out: a pick on one says
    free mixes are off on this bot (the links still work)."""
    async with card_of_a_stopped_bot(tmp_path) as earlier:
        answer = await earlier.pick_in_a_new_bot("without:Drums", {"STEMBOT_ATTACH_STEMS": "false"})
        assert answer.content == NO_MEDIA and not answer.attachments
