"""What stembot shows in Discord: result, status, quota and mention messages, within limits."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import discord
import pytest

from stembot.bot import embeds
from stembot.bot.embeds import (
    failed_embed,
    interrupted_embed,
    processing_embed,
    queued_embed,
    quota_embed,
    quota_left_text,
    ready_mention,
    result_message,
    safe_text,
)
from stembot.errors import (
    InvalidSourceError,
    QuotaExceededError,
    RequestInterruptedError,
    SoundverseOutcomeUnknown,
    SoundverseRejected,
    SoundverseUnavailable,
)
from stembot.models import Mode, QuotaStatus, Separation, Stem, WindowStatus
from tests.message_limits import MessageLimitError, check_message_limits

ISSUED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DAY_END = datetime(2025, 3, 2, tzinfo=UTC)
MONTH_END = datetime(2025, 4, 1, tzinfo=UTC)
COSTS = {Mode.VOCALS: 1, Mode.INSTRUMENTS: 1, Mode.ALL: 2}
ALL_NAMES = ("vocals", "Guitar", "Other", "Drums", "Bass", "Piano")
INJECTION = "**x** @everyone @here <@123456789012345678> [click](https://evil.example) `c`"


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


def stems(names: tuple[str, ...] | list[str], url_length: int = 60) -> tuple[Stem, ...]:
    result = []
    for i, name in enumerate(names):
        base = f"https://cdn.example/{i}/stem.wav?sig="
        result.append(Stem(name=name, url=base + "s" * max(0, url_length - len(base))))
    return tuple(result)


def separation(mode: Mode, stem_list: tuple[Stem, ...]) -> Separation:
    return Separation(mode=mode, stems=stem_list, issued_at=ISSUED)


def quota(user: bool = True, daily_limit: int = 50) -> QuotaStatus:
    return QuotaStatus(
        guild_daily=WindowStatus(used=8, limit=daily_limit, remaining=42, resets_at=DAY_END),
        guild_monthly=WindowStatus(used=80, limit=500, remaining=420, resets_at=MONTH_END),
        user_daily=WindowStatus(used=3, limit=10, remaining=7, resets_at=DAY_END) if user else None,
        user_active_requests=1 if user else None,
        user_active_limit=2,
    )


def buttons(view: discord.ui.View) -> list[dict[str, Any]]:
    return [child for row in view.to_components() for child in row["components"]]


def stem_lines(embed: discord.Embed) -> list[str]:
    return [line for line in (embed.description or "").split("\n") if line.startswith("**")]


def assert_every_stem_accounted_for(embed: discord.Embed, view: discord.ui.View, sep: Separation):
    """Each stem is linked in the text or a button, or the embed says it could not be shown."""
    description = embed.description or ""
    button_urls = {b["url"] for b in buttons(view)}
    lines = stem_lines(embed)
    for stem, line in zip(sep.stems, lines, strict=False):
        in_text = embeds.masked_link("download", stem.url) in line
        assert in_text or stem.url in button_urls or "too long" in line, line
        if not in_text:
            assert stem.url in button_urls or "⚠️" in line
    hidden = sep.stems[len(lines) :]
    if hidden:
        assert f"…and {len(hidden)} more stems" in description
        lost = sum(1 for stem in hidden if stem.url not in button_urls)
        if lost:
            assert f"⚠️ {lost} not shown" in description


# --- result_message -------------------------------------------------------------------------


def test_result_title_names_mode_and_source():
    """The title is the mode's label and the source's name."""
    embed, _ = result_message("mysong.mp3", separation(Mode.VOCALS, stems(["vocals"])))
    assert embed.title == "Vocals · mysong.mp3"


def test_result_lists_each_stem_with_its_link_in_api_order():
    """One line per stem, in the API's order, each linking its URL."""
    sep = separation(Mode.ALL, stems(ALL_NAMES))
    embed, _ = result_message("song.wav", sep)
    lines = stem_lines(embed)
    assert [line.split("**")[1] for line in lines] == [
        "Vocals", "Guitar", "Other", "Drums", "Bass", "Piano"
    ]  # fmt: skip
    for stem, line in zip(sep.stems, lines, strict=True):
        assert line.endswith(f"[download]({stem.url})")


def test_result_keeps_unknown_stem_names_and_names_blank_ones():
    """A stem the docs don't list keeps its own name; a blank name gets a numbered one."""
    embed, view = result_message("a.mp3", separation(Mode.ALL, stems(["Synth pad", " "])))
    assert [line.split("**")[1] for line in stem_lines(embed)] == ["Synth pad", "Stem 2"]
    assert [b["label"] for b in buttons(view)] == ["Synth pad", "Stem 2"]


def test_result_footer_shows_quota_left():
    """The footer tells what is left today and this month, for the server and the user."""
    embed, _ = result_message("a.mp3", separation(Mode.VOCALS, stems(["vocals"])), quota())
    assert embed.footer.text == quota_left_text(quota())
    assert "42/50 today" in embed.footer.text
    assert "420/500 this month" in embed.footer.text
    assert "you: 7/10 today" in embed.footer.text


def test_result_without_quota_has_no_footer():
    """No quota given, no footer."""
    embed, _ = result_message("a.mp3", separation(Mode.VOCALS, stems(["vocals"])))
    assert "footer" not in embed.to_dict()


def test_result_notes_when_links_were_issued():
    """The issue time appears as a relative Discord timestamp and as the embed's timestamp."""
    embed, _ = result_message("a.mp3", separation(Mode.VOCALS, stems(["vocals"])))
    assert f"<t:{unix(ISSUED)}:R>" in (embed.description or "")
    assert embed.timestamp == ISSUED


def test_result_view_is_persistent_and_only_links():
    """The view never times out and holds only link buttons (no custom ids to route)."""
    _, view = result_message("a.mp3", separation(Mode.ALL, stems(ALL_NAMES)))
    assert view.timeout is None
    assert view.is_persistent()
    for button in buttons(view):
        assert button["style"] == discord.ButtonStyle.link.value
        assert "custom_id" not in button


def test_result_buttons_follow_stems_five_per_row():
    """Buttons carry the stems' names and URLs in order, five to a row."""
    sep = separation(Mode.ALL, stems(ALL_NAMES))
    _, view = result_message("a.mp3", sep)
    rows = view.to_components()
    assert [len(row["components"]) for row in rows] == [5, 1]
    assert [b["url"] for b in buttons(view)] == [s.url for s in sep.stems]
    assert [b["label"] for b in buttons(view)][:2] == ["Vocals", "Guitar"]


def test_result_url_with_parentheses_stays_one_link():
    """A ')' in a URL is percent-encoded in the text link; the button keeps the URL as given."""
    url = "https://cdn.example/a(1).wav?x=<y>"
    embed, view = result_message("a.mp3", separation(Mode.VOCALS, (Stem("vocals", url),)))
    assert "[download](https://cdn.example/a%281%29.wav?x=%3Cy%3E)" in (embed.description or "")
    assert buttons(view)[0]["url"] == url


# --- hostile input --------------------------------------------------------------------------


def test_long_source_name_is_cut_to_fit_the_title():
    """A 300-character source name is shortened with an ellipsis; the title stays <= 256."""
    embed, view = result_message("n" * 300, separation(Mode.ALL, stems(ALL_NAMES)))
    assert embed.title is not None
    assert len(embed.title) <= 256
    assert embed.title.startswith("All stems · nnn")
    assert embed.title.endswith("…")
    check_message_limits([embed], view)


def test_forty_stems_fill_at_most_five_rows_of_five():
    """40 stems: 25 buttons in 5 rows of 5, and every stem still listed or counted."""
    sep = separation(Mode.ALL, stems([f"Stem{i}" for i in range(40)]))
    embed, view = result_message("a.mp3", sep, quota())
    assert [len(row["components"]) for row in view.to_components()] == [5, 5, 5, 5, 5]
    check_message_limits([embed], view)
    assert_every_stem_accounted_for(embed, view, sep)
    assert len(stem_lines(embed)) == 40  # short names and URLs: all fit in the text


def test_long_urls_never_become_buttons_and_are_reported():
    """2,000-character URLs get no button; those the text can't hold are flagged, not dropped."""
    sep = separation(Mode.ALL, stems(ALL_NAMES, url_length=2000))
    embed, view = result_message("a.mp3", sep, quota())
    assert buttons(view) == []
    check_message_limits([embed], view)
    assert_every_stem_accounted_for(embed, view, sep)
    linked = [line for line in stem_lines(embed) if "[download](" in line]
    flagged = [line for line in stem_lines(embed) if "⚠️ link too long" in line]
    assert len(linked) >= 1
    assert len(linked) + len(flagged) == 6


def test_url_too_long_for_a_button_is_still_linked_in_text():
    """A 600-character URL cannot be a button but still gets a text link."""
    sep = separation(Mode.VOCALS, stems(["vocals"], url_length=600))
    embed, view = result_message("a.mp3", sep)
    assert buttons(view) == []
    assert f"[download]({sep.stems[0].url})" in (embed.description or "")


def test_links_for_buttonless_stems_are_preferred_when_room_is_short():
    """With room for few text links, stems that have no button get them first."""
    long_ones = stems(["Long1", "Long2"], url_length=1800)
    short_ones = stems([f"S{i}" for i in range(5)], url_length=500)
    sep = separation(Mode.ALL, short_ones + long_ones)
    embed, view = result_message("a.mp3", sep)
    description = embed.description or ""
    assert all(f"({s.url})" in description for s in long_ones)
    assert [b["url"] for b in buttons(view)] == [s.url for s in short_ones]
    check_message_limits([embed], view)


@pytest.mark.parametrize("stem_count", [1, 6, 25, 26, 40, 200])
@pytest.mark.parametrize("url_length", [40, 511, 512, 513, 2000])
def test_limits_hold_and_nothing_is_dropped(stem_count, url_length):
    """Any number of stems with any URL length: within limits, each stem shown or reported."""
    names = [f"{INJECTION} {i} " + "y" * 200 for i in range(stem_count)]
    sep = separation(Mode.ALL, stems(names, url_length=url_length))
    embed, view = result_message("s" * 300 + INJECTION, sep, quota())
    check_message_limits([embed], view)
    assert_every_stem_accounted_for(embed, view, sep)
    assert all(len(b["url"]) <= 512 for b in buttons(view))
    assert all(len(row["components"]) <= 5 for row in view.to_components())
    assert all(0 < len(b["label"]) <= 80 for b in buttons(view))


def test_markdown_and_mentions_in_names_are_neutralised():
    """Injected markdown is escaped and @everyone/@here/user mentions cannot resolve."""
    short = "**x** `c` [k](u) @everyone @here"
    embed, _ = result_message(INJECTION, separation(Mode.ALL, stems([short])))
    title, line = embed.title or "", stem_lines(embed)[0]
    for text in (title, line):
        assert "\\*\\*x\\*\\*" in text
        assert "\\`c\\`" in text
        assert "@everyone" not in text
        assert "@here" not in text
    assert "<@123456789012345678>" not in title
    assert "\\[click\\](" in title
    assert "\\[k\\](u)" in line


def test_trailing_backslash_in_a_name_cannot_escape_our_markup():
    """A name ending in a backslash is escaped, so the bold around it still closes."""
    embed, _ = result_message("a.mp3", separation(Mode.VOCALS, stems(["evil\\"])))
    assert stem_lines(embed)[0].startswith("**evil\\\\** · ")


def test_newlines_in_names_cannot_start_markdown_blocks():
    """A name with line breaks stays on one line, so it cannot open a header or quote."""
    name = "song\n# Big header\n> quote\r\n-# small"
    embed, _ = result_message(name, separation(Mode.VOCALS, stems([name])))
    assert "\n" not in (embed.title or "")
    for line in (embed.description or "").split("\n"):
        assert not line.startswith(("#", ">", "-#"))


def test_safe_text_never_exceeds_its_limit_or_splits_an_escape():
    """Random hostile text, escaped and cut, always fits and never ends in a lone backslash."""
    rng = random.Random(7)
    alphabet = "*_~|`>#@[]()\\ \nab" + "é😀"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        if rng.random() < 0.3:
            text += " @everyone"
        limit = rng.randint(1, 120)
        result = safe_text(text, limit)
        assert len(result) <= limit
        assert "@everyone" not in result
        trailing = len(result) - len(result.rstrip("\\"))
        assert trailing % 2 == 0, result


# --- status embeds --------------------------------------------------------------------------


def test_queued_embed_shows_position_and_promise():
    """Queued: the position, and that the message will be updated when work starts."""
    embed = queued_embed(Mode.INSTRUMENTS, "song.mp3", 3)
    assert embed.title == "Instruments · song.mp3"
    assert "**#3** in the queue" in (embed.description or "")
    assert "I'll update this message when it starts" in (embed.description or "")
    assert embed.colour == embeds.QUEUED_COLOUR


def test_queued_embed_first_in_line_says_next():
    """Position 1 reads as being next."""
    assert "next in the queue" in (queued_embed(Mode.VOCALS, "a", 1).description or "")


def test_processing_embed_counts_up_from_start():
    """Processing: mode and source, and when it started as a relative timestamp."""
    started = ISSUED - timedelta(minutes=2)
    embed = processing_embed(Mode.ALL, "track.flac", started)
    assert embed.title == "All stems · track.flac"
    assert f"<t:{unix(started)}:R>" in (embed.description or "")
    assert embed.colour == embeds.PROCESSING_COLOUR


def test_naive_start_time_is_read_as_utc():
    """A naive datetime is taken as UTC, not the machine's local time."""
    embed = processing_embed(Mode.VOCALS, "a", ISSUED.replace(tzinfo=None))
    assert f"<t:{unix(ISSUED)}:R>" in (embed.description or "")


def test_failed_embed_gives_message_next_step_and_not_charged():
    """Failed: the error's user message, what to do next, and that nothing was charged."""
    error = InvalidSourceError("That file is a PDF, not audio.")
    embed = failed_embed(Mode.VOCALS, "doc.pdf", error, quota())
    description = embed.description or ""
    assert description.startswith("That file is a PDF, not audio.")
    assert "You were not charged." in description
    assert embed.fields[0].name == "What now"
    assert "Fix the file or link" in (embed.fields[0].value or "")
    assert embed.footer.text == quota_left_text(quota())
    assert embed.colour == embeds.FAILED_COLOUR


def test_failed_quota_embed_says_when_to_retry():
    """A quota refusal points at the window's reset as a relative timestamp."""
    error = QuotaExceededError("This server used all 50 units today.", resets_at=DAY_END)
    embed = failed_embed(Mode.ALL, "a.mp3", error)
    assert f"<t:{unix(DAY_END)}:R>" in (embed.fields[0].value or "")


@pytest.mark.parametrize("error", [SoundverseOutcomeUnknown(), RequestInterruptedError()])
def test_failed_embed_does_not_repeat_not_charged(error):
    """Messages that already say 'not charged' don't get it twice."""
    embed = failed_embed(Mode.VOCALS, "a", error)
    assert (embed.description or "").lower().count("not charged") == 1


def test_failed_embed_neutralises_mentions_in_api_messages():
    """An API rejection text cannot mention everyone; our own markdown survives."""
    embed = failed_embed(Mode.VOCALS, "a", SoundverseRejected("Nope @everyone `x`"))
    assert "@everyone" not in (embed.description or "")
    assert "`x`" in (embed.description or "")


def test_failed_embed_generic_advice_for_outages():
    """An outage suggests trying again in a few minutes."""
    embed = failed_embed(Mode.VOCALS, "a", SoundverseUnavailable())
    assert "again in a few minutes" in (embed.fields[0].value or "")


def test_interrupted_embed_explains_restart():
    """Interrupted: says a restart cut it short, nothing charged, run it again."""
    embed = interrupted_embed(Mode.VOCALS, "a.mp3", quota())
    assert embed.description == RequestInterruptedError().user_message
    assert "not charged" in (embed.description or "")
    assert embed.colour == embeds.INTERRUPTED_COLOUR
    assert embed.footer.text == quota_left_text(quota())


def test_status_embeds_stay_within_limits_with_hostile_names():
    """Every status embed holds Discord's limits for a hostile source name."""
    name = "z" * 5000 + INJECTION
    built = [
        queued_embed(Mode.ALL, name, 10**9),
        processing_embed(Mode.ALL, name, ISSUED),
        failed_embed(Mode.ALL, name, SoundverseRejected("x" * 10_000), quota()),
        interrupted_embed(Mode.ALL, name, quota()),
        quota_embed(quota(), COSTS),
    ]
    for embed in built:
        check_message_limits([embed])
        assert "@everyone" not in (embed.title or "")


# --- quota_embed ----------------------------------------------------------------------------


def test_quota_embed_shows_windows_resets_and_costs():
    """Server today/month and the user's day, with limits, reset stamps and prices."""
    embed = quota_embed(quota(), COSTS)
    fields = {field.name: field.value or "" for field in embed.fields}
    assert "**42** of 50 units left" in fields["This server today"]
    assert f"<t:{unix(DAY_END)}:R>" in fields["This server today"]
    assert f"<t:{unix(DAY_END)}:f>" in fields["This server today"]
    assert "**420** of 500 units left" in fields["This server this month"]
    assert f"<t:{unix(MONTH_END)}:R>" in fields["This server this month"]
    assert "**7** of 10 units left" in fields["You today"]
    assert fields["Your requests in progress"] == "1 of 2 at a time"
    assert fields["Cost per request"] == "Vocals: 1 unit\nInstruments: 1 unit\nAll stems: 2 units"


def test_quota_embed_without_user_leaves_out_user_fields():
    """Asked for the server only, no user fields appear."""
    names = [field.name for field in quota_embed(quota(user=False), COSTS).fields]
    assert "You today" not in names
    assert "Your requests in progress" not in names


def test_quota_embed_says_when_switched_off():
    """A limit of 0 reads as switched off, not '42 of 0 left'."""
    embed = quota_embed(quota(daily_limit=0), COSTS)
    assert "Switched off" in (embed.fields[0].value or "")
    assert "switched off today" in quota_left_text(quota(daily_limit=0))


# --- ready_mention --------------------------------------------------------------------------


def test_ready_mention_pings_only_the_requester():
    """The line mentions the user and allows mentioning nobody else."""
    content, allowed = ready_mention(123456789012345678, Mode.VOCALS, "song.mp3")
    assert content == "<@123456789012345678> your stems for song.mp3 are ready (Vocals)."
    sent = allowed.to_dict()
    assert sent.get("parse") == []
    assert sent.get("users") == [123456789012345678]
    assert "roles" not in sent


def test_ready_mention_neutralises_injection_and_fits():
    """A hostile source name cannot ping others and the line stays under 2,000 characters."""
    content, _ = ready_mention(1, Mode.ALL, INJECTION * 100)
    assert "@everyone" not in content
    assert "<@123456789012345678>" not in content
    check_message_limits(content=content)


# --- check_message_limits -------------------------------------------------------------------


def test_check_message_limits_names_each_broken_limit():
    """Too long a title, too many embeds and a long button URL are all reported."""
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.Button(label="x" * 81, url="https://a.example/" + "u" * 600))
    too_many = [discord.Embed(title="t" * 300)] + [discord.Embed(title="ok")] * 10
    with pytest.raises(MessageLimitError) as caught:
        check_message_limits(too_many, view, content="c" * 2001)
    text = str(caught.value)
    for expected in ("embeds[0].title", "11 embeds", "url", "label", "content"):
        assert expected in text


def test_check_message_limits_counts_characters_across_embeds():
    """Two embeds of 3,500 characters each break the 6,000 total."""
    pair = [discord.Embed(description="d" * 3500), discord.Embed(description="d" * 3500)]
    with pytest.raises(MessageLimitError, match="7000 characters"):
        check_message_limits(pair)


def test_outputs_pass_the_discord_emulators_rules():
    """An independent check: the emulator's limit rules accept the hostile results."""
    rules = pytest.importorskip("tests.standins.discord.rules")
    for url_length in (40, 600, 2000):
        sep = separation(Mode.ALL, stems([INJECTION * 3] * 40, url_length=url_length))
        embed, view = result_message("s" * 300, sep, quota())
        body = {"embeds": [embed.to_dict()], "components": view.to_components()}
        assert rules.check_message(body) == []
