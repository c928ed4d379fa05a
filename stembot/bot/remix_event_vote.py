"""The vote of a remix event: `/stems-event vote` posts a native Discord poll of the event's
current submissions in the card's channel; ``poll_result`` reads its counts back for the end.

A poll holds at most 10 answers. With more submissions the organiser picks which (a private
menu of the first 25 by time, the most a menu holds) or takes the first 10 by time; the poll's
message says which it is. A poll cannot be edited once posted (Discord answers 520003), so
nothing here edits one: the end flow ends it (``Message.end_poll``) and reads its counts.

The menu and the button keep their state (the event and the poll's hours) in their custom ids,
so they answer after a restart too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from re import Match
from typing import Any

import discord
from discord import app_commands

from stembot.bot.embeds import label_text, safe_text, timestamp
from stembot.bot.guild_only import answer_if_elsewhere
from stembot.bot.remix_event_submissions import (
    acknowledged,
    event_channel,
    manages_events,
    outcome,
    remix_events_of,
    say_privately,
)
from stembot.errors import (
    RemixEventEndedError,
    RemixEventError,
    StembotError,
    SubmissionRefusedError,
)
from stembot.remix_event_models import RemixEvent, Submission

log = logging.getLogger(__name__)

ANSWERS_MAX = 10
ANSWER_TEXT_MAX = 55
NAME_IN_ANSWER_MAX = 20
QUESTION_MAX = 300
MENU_OPTIONS_MAX = 25
OPTION_LABEL_MAX = 100
HOURS_MAX = 768
DEFAULT_HOURS = 24
CHOICES_MAX = 25

NOT_ALLOWED = (
    "Only the event's organiser, or a member with Manage Events or Manage Server, can start "
    "its vote."
)
ENDED = "This remix event has ended, so its vote can no longer start."
POSTING = "Posting the vote…"
PICK, FIRST = "pick", "first"


def vote_command() -> app_commands.Command[Any, ..., None]:
    """A new `vote` command for the `/stems-event` group (add it to the group)."""

    @app_commands.command(name="vote", description="Post a poll of the remix event's submissions")
    @app_commands.describe(
        hours=f"How long members can vote, in hours (1-{HOURS_MAX}; default {DEFAULT_HOURS})",
        event="Which event, when several are running",
    )
    @app_commands.autocomplete(event=running_events)
    async def vote(
        interaction: discord.Interaction,
        hours: app_commands.Range[int, 1, HOURS_MAX] = DEFAULT_HOURS,
        event: int | None = None,
    ) -> None:
        await start_vote(interaction, event, hours)

    return vote


async def running_events(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[int]]:
    """The server's running events whose title holds what was typed."""
    if interaction.guild_id is None:
        return []
    try:
        running = await remix_events_of(interaction.client).open_events(interaction.guild_id)
    except StembotError:
        return []
    typed = current.casefold()
    return [
        app_commands.Choice(name=label_text(f"{event.title} (#{event.id})", 100), value=event.id)
        for event in running
        if typed in event.title.casefold() or typed == str(event.id)
    ][:CHOICES_MAX]


async def start_vote(interaction: discord.Interaction, event_id: int | None, hours: int) -> None:
    """The command: the poll posted, or the organiser's pick offered, privately."""
    thinking = interaction.response.defer(ephemeral=True, thinking=True)
    if not await acknowledged(interaction, thinking, "vote"):
        return
    answer = await outcome(_vote(interaction, event_id, hours), "a remix event vote")
    text, view = (answer, None) if isinstance(answer, str) else answer
    await say_privately(interaction, text, view)


async def _vote(
    interaction: discord.Interaction, event_id: int | None, hours: int
) -> tuple[str, discord.ui.View | None]:
    event = await _votable(interaction, await the_event(interaction, event_id))
    submissions = await remix_events_of(interaction.client).submissions(event.id)
    if len(submissions) < 2:
        raise RemixEventError(
            f"A vote needs at least two submissions; this event has {len(submissions)}."
        )
    if len(submissions) <= ANSWERS_MAX:
        note = "Every submission is in the poll."
        posted = await _post_poll(interaction.client, event, submissions, hours, note)
        return _posted(posted, hours), None
    offered = submissions[:MENU_OPTIONS_MAX]
    names = await _names(interaction.client, event, offered)
    return _pick_text(len(submissions)), _pick_view(event.id, hours, offered, names)


async def the_event(interaction: discord.Interaction, event_id: int | None) -> RemixEvent:
    """The event named, or the server's only running one."""
    assert interaction.guild_id is not None
    events = remix_events_of(interaction.client)
    if event_id is not None:
        return await events.get(event_id, guild_id=interaction.guild_id)
    running = await events.open_events(interaction.guild_id)
    if len(running) == 1:
        return running[0]
    if not running:
        raise RemixEventError("This server has no remix event running.")
    raise RemixEventError(
        f"This server has {len(running)} remix events running: choose one with `event:`."
    )


async def _votable(interaction: discord.Interaction, event: RemixEvent) -> RemixEvent:
    """The event, if this member may start its vote and it can have one now."""
    if interaction.user.id != event.organiser_id and not manages_events(interaction):
        raise RemixEventError(NOT_ALLOWED)
    if not event.is_open(datetime.now(UTC)):
        raise RemixEventEndedError(ENDED)
    running = await _running_poll(interaction.client, event)
    if running is not None:
        raise RemixEventError(
            f"This event's vote is still running: {running.jump_url}. It closes when its time "
            "is up or when the event ends."
        )
    return event


async def _running_poll(client: discord.Client, event: RemixEvent) -> discord.Message | None:
    """The event's poll message while members can still vote in it."""
    if event.poll_message_id is None:
        return None
    try:
        message = await event_channel(client, event).fetch_message(event.poll_message_id)
    except discord.HTTPException as error:
        log.info("remix event %s: its poll could not be read (%s)", event.id, error.status)
        return None
    poll = message.poll
    if poll is None or poll.is_finalised():
        return None
    return message if poll.expires_at is None or poll.expires_at > datetime.now(UTC) else None


# --- the poll ---------------------------------------------------------------------------------


async def _post_poll(
    client: discord.Client,
    event: RemixEvent,
    chosen: Sequence[Submission],
    hours: int,
    note: str,
) -> discord.Message:
    """Post the poll of ``chosen`` (in that order) and record it."""
    names = await _names(client, event, chosen)
    poll = discord.Poll(
        question=label_text(event.title, QUESTION_MAX), duration=timedelta(hours=hours)
    )
    for submission in chosen:
        poll.add_answer(text=answer_text(submission, names.get(submission.id)))
    channel = event_channel(client, event)
    content = _poll_intro(event, channel, chosen, hours, note)
    try:
        message = await channel.send(content=content, poll=poll)
    except discord.Forbidden:
        raise RemixEventError(
            "stembot may not post polls in the event's channel (it needs Send Messages and "
            "Create Polls there). Ask a moderator to let it, then run the vote again."
        ) from None
    except discord.HTTPException as error:
        log.warning("remix event %s: the poll was refused: %s", event.id, error.text)
        raise RemixEventError("Discord refused the poll. Please try again.") from None
    await remix_events_of(client).poll_posted(event.id, message.id, [s.id for s in chosen])
    log.info("remix event %s: vote of %d submissions posted", event.id, len(chosen))
    return message


def answer_text(submission: Submission, name: str | None) -> str:
    """An answer: the remix's title and its member's name, within Discord's 55 characters
    (the title is cut first)."""
    if not name:
        return label_text(submission.title, ANSWER_TEXT_MAX)
    by = f" — {label_text(name, NAME_IN_ANSWER_MAX)}"
    return label_text(submission.title, ANSWER_TEXT_MAX - len(by)) + by


def _poll_intro(
    event: RemixEvent,
    channel: discord.PartialMessageable,
    chosen: Sequence[Submission],
    hours: int,
    note: str,
) -> str:
    ends = timestamp(datetime.now(UTC) + timedelta(hours=hours), "f")
    lines = [
        f"**Vote for your favourite remix of {safe_text(event.title, 100)}!** "
        f"The poll closes {ends}.",
        note,
    ]
    for number, submission in enumerate(chosen, start=1):
        post = channel.get_partial_message(submission.message_id).jump_url
        title = safe_text(submission.title, 60)
        lines.append(f"{number}. [{title}]({post}) by <@{submission.user_id}>")
    return "\n".join(lines)


async def _names(
    client: discord.Client, event: RemixEvent, submissions: Sequence[Submission]
) -> dict[int, str]:
    """Each submission's member as its post credits them (read back from the post; none
    when the post is gone)."""
    channel = event_channel(client, event)

    async def name(submission: Submission) -> str | None:
        try:
            post = await channel.fetch_message(submission.message_id)
        except discord.HTTPException:
            return None
        return post.embeds[0].author.name if post.embeds else None

    found = await asyncio.gather(*(name(s) for s in submissions))
    return {s.id: n for s, n in zip(submissions, found, strict=True) if n}


def _posted(message: discord.Message, hours: int) -> str:
    span = "1 hour" if hours == 1 else f"{hours} hours"
    return f"The vote is up for {span}: {message.jump_url}"


# --- the organiser's pick ---------------------------------------------------------------------


def _pick_text(total: int) -> str:
    lines = [
        f"This event has {total} submissions, and a poll holds {ANSWERS_MAX}. Pick the ones "
        f"to vote on below, or use the first {ANSWERS_MAX} by time (the poll will say so)."
    ]
    if total > MENU_OPTIONS_MAX:
        lines.append(f"The menu lists the first {MENU_OPTIONS_MAX} by time.")
    return "\n".join(lines)


def _pick_view(
    event_id: int, hours: int, offered: Sequence[Submission], names: dict[int, str]
) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(VoteChoice(PICK, event_id, hours, offered, names))
    view.add_item(VoteChoice(FIRST, event_id, hours))
    return view


class VoteChoice(
    discord.ui.DynamicItem[discord.ui.Item[Any]],
    template=r"stems-event:vote-(?P<step>pick|first):(?P<event_id>[0-9]+):(?P<hours>[0-9]+)",
):
    """The organiser's choice of the poll's submissions: the menu of them (``pick``), or the
    button taking the first 10 by time (``first``)."""

    def __init__(
        self,
        step: str,
        event_id: int,
        hours: int,
        offered: Sequence[Submission] = (),
        names: dict[int, str] | None = None,
    ) -> None:
        """Without ``offered``, the menu that answers a pick (the message has its options)."""
        custom_id = f"stems-event:vote-{step}:{event_id}:{hours}"
        super().__init__(
            _pick_menu(custom_id, offered, names or {})
            if step == PICK
            else discord.ui.Button(
                label=f"Use the first {ANSWERS_MAX}",
                style=discord.ButtonStyle.secondary,
                custom_id=custom_id,
            )
        )
        self.event_id = event_id
        self.hours = hours

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Match[str], /
    ) -> VoteChoice:
        return cls(match["step"], int(match["event_id"]), int(match["hours"]))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await answer_if_elsewhere(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        picked = None
        if isinstance(self.item, discord.ui.Select):
            picked = {int(v) for v in self.item.values if v.isdigit()}
        await _post_picked(interaction, self.event_id, self.hours, picked)


def _pick_menu(
    custom_id: str, offered: Sequence[Submission], names: dict[int, str]
) -> discord.ui.Select[Any]:
    options = [
        discord.SelectOption(
            label=_option_label(s, names.get(s.id)),
            value=str(s.id),
            description=f"Submitted {s.submitted_at:%Y-%m-%d %H:%M} UTC",
        )
        for s in offered[:MENU_OPTIONS_MAX]
    ] or [discord.SelectOption(label="-", value="0")]
    return discord.ui.Select(
        custom_id=custom_id,
        placeholder=f"Pick 2 to {ANSWERS_MAX} submissions for the poll",
        min_values=min(2, len(options)),
        max_values=min(ANSWERS_MAX, len(options)),
        options=options,
    )


def _option_label(submission: Submission, name: str | None) -> str:
    by = f" — {name}" if name else ""
    return label_text(f"{submission.title}{by}", OPTION_LABEL_MAX)


async def _post_picked(
    interaction: discord.Interaction, event_id: int, hours: int, picked: set[int] | None
) -> None:
    """Post the poll of the ``picked`` submissions (None: the first 10 by time)."""
    posting = interaction.response.edit_message(content=POSTING, view=None)
    if not await acknowledged(interaction, posting, "vote pick"):
        return
    await say_privately(
        interaction, await outcome(_post_chosen(interaction, event_id, hours, picked), "a vote")
    )


async def _post_chosen(
    interaction: discord.Interaction, event_id: int, hours: int, picked: set[int] | None
) -> str:
    event = await _votable(interaction, await the_event(interaction, event_id))
    chosen, note = await _chosen(interaction, event, picked)
    return _posted(await _post_poll(interaction.client, event, chosen, hours, note), hours)


async def _chosen(
    interaction: discord.Interaction, event: RemixEvent, picked: set[int] | None
) -> tuple[list[Submission], str]:
    """The poll's submissions (still current, in time order) and the note saying which."""
    current = await remix_events_of(interaction.client).submissions(event.id)
    total = len(current)
    if picked is None:
        return current[:ANSWERS_MAX], (
            f"A poll holds {ANSWERS_MAX} answers, so this one lists the first "
            f"{min(ANSWERS_MAX, total)} of the {total} submissions, by the time they were made."
        )
    chosen = [s for s in current if s.id in picked][:ANSWERS_MAX]
    if len(chosen) < 2:
        raise RemixEventError(
            "Fewer than two of the submissions you picked are still in the event (removed or "
            "replaced since). Run the vote again to pick from the current ones."
        )
    return chosen, f"The organiser picked {len(chosen)} of the {total} submissions for the poll."


# --- the result, for the end's summary --------------------------------------------------------


async def poll_result(client: discord.Client, event: RemixEvent) -> list[tuple[Submission, int]]:
    """The poll's submissions with their votes, most votes first (answer order among equal
    counts); final once the poll has ended. A submission removed or replaced after the poll
    was posted is still listed (``Submission.current`` says so). Empty when the event had no
    vote, or its poll message is gone."""
    if event.poll_message_id is None or not event.poll_submission_ids:
        return []
    try:
        message = await event_channel(client, event).fetch_message(event.poll_message_id)
    except discord.HTTPException as error:
        log.info("remix event %s: its poll could not be read (%s)", event.id, error.status)
        return []
    if message.poll is None:
        return []
    answers = sorted(message.poll.answers, key=lambda answer: answer.id)
    events = remix_events_of(client)
    result: list[tuple[Submission, int]] = []
    for submission_id, answer in zip(event.poll_submission_ids, answers, strict=False):
        try:
            submission = await events.submission(submission_id, guild_id=event.guild_id)
        except SubmissionRefusedError:
            continue
        result.append((submission, answer.vote_count))
    return sorted(result, key=lambda pair: -pair[1])
