"""The result as a Components V2 card: the picture, a line per stem with its full-quality
link, the stems attached as files Discord plays inline, the free mixes, and the request's
footer. Used where the result can carry attachments (an edit of the interaction's message);
the plain embed of embeds.py stays where it cannot.

With the V2 flag a message has no content and no embeds, at most 40 components, and every
``attachment://`` reference must be uploaded in the same request (the caller sends the files).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import discord

from stembot.bot.embeds import (
    BUTTON_URL_MAX,
    DONE_COLOUR,
    MEDIA_NOTE_MAX,
    STEM_NAME_MAX,
    masked_link,
    quota_left_text,
    request_title,
    safe_text,
    stem_display_name,
    stem_notes,
    timestamp,
)
from stembot.bot.mixes import MixSelect
from stembot.models import QuotaStatus, Separation, Stem
from stembot.result_media import Mix, ResultMedia, StemMedia

COMPONENTS_MAX = 40

# The free-mix menu of a result offering these mixes: a member's request's (MixSelect), or a
# remix event's mode's.
MixMenu = Callable[[Sequence[Mix]], discord.ui.Item[Any]]


def result_card(
    source_name: str,
    separation: Separation,
    media: ResultMedia,
    quota: QuotaStatus | None,
    request_id: int,
) -> discord.ui.LayoutView:
    """A member's request's card; the caller uploads the files ``media`` names with it."""
    return stems_card(
        source_name,
        separation,
        media,
        footer=footer_line(separation, quota, f"Request {request_id}"),
        menu=lambda mixes: mix_menu(request_id, mixes),
    )


def stems_card(
    source_name: str, separation: Separation, media: ResultMedia, *, footer: str, menu: MixMenu
) -> discord.ui.LayoutView:
    """The card of any result: ``footer`` its last line, ``menu`` its free mixes."""
    view = discord.ui.LayoutView(timeout=None)
    container = discord.ui.Container[Any](accent_colour=DONE_COLOUR)
    container.add_item(
        discord.ui.TextDisplay[Any](f"### {request_title(separation.mode, source_name)}")
    )
    if media.picture is not None:
        container.add_item(
            discord.ui.MediaGallery[Any](
                discord.MediaGalleryItem(
                    f"attachment://{media.picture}", description="Waveform of each stem"
                )
            )
        )
    by_name = {stem.name: stem for stem in media.stems}
    for position, stem in enumerate(separation.stems, start=1):
        container.add_item(_stem_row(stem, by_name.get(stem.name), position))
    for shown in media.stems:
        if shown.attachment is not None:
            container.add_item(discord.ui.File[Any](f"attachment://{shown.attachment}"))
    if media.note:
        container.add_item(discord.ui.TextDisplay[Any](safe_text(media.note, MEDIA_NOTE_MAX)))
    mixes = media.mixes
    if mixes:
        container.add_item(discord.ui.ActionRow[Any](menu(mixes)))
    container.add_item(discord.ui.TextDisplay[Any](footer))
    view.add_item(container)
    return view


def attached_names(media: ResultMedia) -> list[str]:
    """The files the card refers to, in the order they should be uploaded."""
    names = [stem.attachment for stem in media.stems if stem.attachment is not None]
    return names if media.picture is None else [media.picture, *names]


def _stem_row(stem: Stem, shown: StemMedia | None, position: int) -> discord.ui.Item[Any]:
    name = safe_text(stem_display_name(stem.name, position), STEM_NAME_MAX)
    text = f"**{name}**{stem_notes(shown)}"
    if len(stem.url) > BUTTON_URL_MAX:  # too long for a button: a masked link in the text
        return discord.ui.TextDisplay[Any](f"{text} · {masked_link('full quality', stem.url)}")
    button = discord.ui.Button[Any](label="Full quality", url=stem.url)
    return discord.ui.Section[Any](discord.ui.TextDisplay[Any](text), accessory=button)


def mix_menu(request_id: int, mixes: Sequence[Mix]) -> MixSelect:
    """The free mixes of request ``request_id``'s result: the persistent item that answers its
    picks (so no view is kept in memory per message)."""
    return MixSelect(request_id, mixes)


def footer_line(separation: Separation, quota: QuotaStatus | None, head: str | None) -> str:
    """The card's last line: ``head`` (the request), what is left, when the links were issued."""
    parts = [] if head is None else [head]
    if quota is not None:
        parts.append(quota_left_text(quota))
    parts.append(f"links issued {timestamp(separation.issued_at, 'R')}, download them soon")
    return "-# " + " · ".join(parts)
