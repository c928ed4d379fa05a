"""The summary an ended remix event posts under its card: members who took stems (in all and
per mode), remixes submitted, what the event spent, and the vote's result when there was one.
Drawn from plain values; remix_event_end.py gathers them and posts it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import discord

from stembot.bot.embeds import DESCRIPTION_MAX, TITLE_MAX, safe_text, timestamp
from stembot.remix_event_models import EventSummary

SUMMARY_COLOUR: Final = discord.Colour.gold()
ANSWER_TEXT_MAX: Final = 60
# A poll holds at most 10 answers: every one of them fits.
VOTE_LINES_MAX: Final = 10


@dataclass(frozen=True, slots=True)
class VoteAnswer:
    """One answer of the event's poll as it ended."""

    text: str
    votes: int
    # The member whose remix it is.
    user_id: int


@dataclass(frozen=True, slots=True)
class VoteResult:
    answers: tuple[VoteAnswer, ...]

    @property
    def total(self) -> int:
        return sum(answer.votes for answer in self.answers)


def summary_embed(summary: EventSummary, vote: VoteResult | None) -> discord.Embed:
    event = summary.event
    title = safe_text(event.title, TITLE_MAX - 20) or "Remix event"
    who = f"ended by <@{event.ended_by}>" if event.ended_by is not None else "closed at its end"
    ended = f" {timestamp(event.ended_at, 'f')}" if event.ended_at is not None else ""
    lines = [
        f"This remix event is over ({who}{ended}).",
        "",
        f"**{summary.members}** {_plural(summary.members, 'member')} took stems",
        *(
            f"- {mode.label}: {count} {_plural(count, 'member')}"
            for mode, count in summary.takes_by_mode
        ),
        f"**{summary.submissions}** {_plural(summary.submissions, 'remix', 'remixes')} submitted",
        f"Paid calls: **{summary.spend.paid_calls}** ({summary.spend.units} "
        f"{_plural(summary.spend.units, 'unit')}, charged to the server; members paid nothing)",
    ]
    if vote is not None:
        lines += ["", *_vote_lines(vote)]
    description = "\n".join(lines)[:DESCRIPTION_MAX]
    embed = discord.Embed(
        title=f"Summary · {title}", description=description, colour=SUMMARY_COLOUR
    )
    embed.set_footer(text=f"Remix event {event.id}")
    return embed


def _vote_lines(vote: VoteResult) -> list[str]:
    if not vote.answers:
        return ["**The vote**: no answers."]
    ranked = sorted(vote.answers, key=lambda answer: -answer.votes)  # stable: poll order
    lines = [f"**The vote** ({vote.total} {_plural(vote.total, 'vote')}):"]
    for place, answer in enumerate(ranked[:VOTE_LINES_MAX], start=1):
        text = safe_text(answer.text, ANSWER_TEXT_MAX) or "?"
        votes = f"{answer.votes} {_plural(answer.votes, 'vote')}"
        lines.append(f"{place}. **{text}** by <@{answer.user_id}>: {votes}")
    return lines


def _plural(count: int, one: str, many: str | None = None) -> str:
    return one if count == 1 else (many or f"{one}s")
