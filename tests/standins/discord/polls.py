"""Polls: a message's ``poll``, members' votes, and its end.

https://discord.com/developers/docs/resources/poll. A poll comes with the message that creates
it (channel message, interaction response or followup): a question of up to 300 characters,
1 to 10 answers of up to 55 characters each (numbered from 1), a duration of 1 to 768 hours
(32 days; 24 by default), single or multiple choice. The message cannot be edited afterwards
(400 / 520003) and apps cannot vote. Each vote reaches the bot as MESSAGE_POLL_VOTE_ADD (one
per answer) and each withdrawn one as MESSAGE_POLL_VOTE_REMOVE. A poll ends when its time is
up or its author ends it (``POST /channels/{channel_id}/polls/{message_id}/expire``; 520006 for
a message without a poll, 520001 once it has ended, 50005 for someone else's poll): its
``expiry`` becomes the end, its results are final (``is_finalized``), the poll message gets
MESSAGE_UPDATE, and a POLL_RESULT message (type 46) with a ``poll_result`` embed follows it.
``answer_counts`` lists only answers with votes, as Discord's does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .errors import DiscordError
from .records import MessageRecord
from .rules import Problem
from .world import iso

if TYPE_CHECKING:
    from .server import DiscordEmulator

QUESTION_TEXT_MAX = 300
ANSWER_TEXT_MAX = 55
ANSWERS_MAX = 10
DURATION_HOURS_MAX = 768
DEFAULT_DURATION_HOURS = 24
LAYOUT_DEFAULT = 1
POLL_RESULT = 46  # the message type of the result Discord posts when a poll ends
VOTERS_PAGE_MAX = 100


def check_poll(poll: Any) -> list[Problem]:
    """Discord's limits on a poll create request (what the OpenAPI description cannot say, and
    the rest again for a run without it)."""
    if not isinstance(poll, dict):
        return [(("poll",), "Must be a poll create request.")]
    problems: list[Problem] = []
    question = (poll.get("question") or {}).get("text")
    if not isinstance(question, str) or not 1 <= len(question) <= QUESTION_TEXT_MAX:
        problems.append(
            (("poll", "question", "text"), f"Must be between 1 and {QUESTION_TEXT_MAX} in length.")
        )
    answers = poll.get("answers")
    if not isinstance(answers, list) or not 1 <= len(answers) <= ANSWERS_MAX:
        problems.append((("poll", "answers"), f"Must be between 1 and {ANSWERS_MAX} in length."))
        answers = []
    for i, answer in enumerate(answers):
        text = ((answer or {}).get("poll_media") or {}).get("text")
        if not isinstance(text, str) or not 1 <= len(text) <= ANSWER_TEXT_MAX:
            problems.append(
                (
                    ("poll", "answers", i, "poll_media", "text"),
                    f"Must be between 1 and {ANSWER_TEXT_MAX} in length.",
                )
            )
    duration = poll.get("duration")
    # a whole number of hours; discord.py sends it as a float (48.0), which JSON counts whole
    whole = isinstance(duration, int | float) and float(duration).is_integer()
    if duration is not None and not (whole and 1 <= duration <= DURATION_HOURS_MAX):
        problems.append(
            (("poll", "duration"), f"Must be between 1 and {DURATION_HOURS_MAX} hours.")
        )
    return problems


class PollClosedError(ValueError):
    """A member tried to vote on a poll that has ended: the client no longer offers it."""


@dataclass
class Poll:
    """One poll and every member's votes (user id -> answer ids, in the order chosen)."""

    message: MessageRecord
    question: str
    answers: list[dict[str, Any]]
    allow_multiselect: bool
    expiry: float
    votes: dict[int, list[int]] = field(default_factory=dict)
    ended: bool = False

    @classmethod
    def from_request(cls, message: MessageRecord, request: dict[str, Any], now: float) -> Poll:
        answers = [
            {"answer_id": n, "poll_media": _media(answer.get("poll_media") or {})}
            for n, answer in enumerate(request["answers"], start=1)
        ]
        hours = request.get("duration") or DEFAULT_DURATION_HOURS
        return cls(
            message,
            str(request["question"]["text"]),
            answers,
            bool(request.get("allow_multiselect")),
            now + int(hours) * 3600,
        )

    @property
    def answer_ids(self) -> list[int]:
        return [int(a["answer_id"]) for a in self.answers]

    def counts(self) -> dict[int, int]:
        """Votes per answer, every answer listed (0 for none)."""
        totals = dict.fromkeys(self.answer_ids, 0)
        for chosen in self.votes.values():
            for answer_id in chosen:
                totals[answer_id] += 1
        return totals

    def payload(self) -> dict[str, Any]:
        """The message's ``poll`` as Discord answers it (PollResponse)."""
        return {
            "question": {"text": self.question},
            "answers": self.answers,
            "expiry": iso(self.expiry),
            "allow_multiselect": self.allow_multiselect,
            "layout_type": LAYOUT_DEFAULT,
            "results": {
                "answer_counts": [
                    # the bot cannot vote, so me_voted is always false for it
                    {"id": answer_id, "count": count, "me_voted": False}
                    for answer_id, count in self.counts().items()
                    if count
                ],
                "is_finalized": self.ended,
            },
        }

    def choose(self, user_id: int, answer_ids: list[int]) -> tuple[list[int], list[int]]:
        """Make ``answer_ids`` the user's votes (none withdraws them); returns the answers
        added and removed."""
        if self.ended or time.time() >= self.expiry:
            raise PollClosedError(f"the poll on message {self.message.id} has ended")
        unknown = [a for a in answer_ids if a not in self.answer_ids]
        if unknown:
            raise LookupError(f"the poll has no answer(s) {unknown}; it has {self.answer_ids}")
        if len(answer_ids) > 1 and not self.allow_multiselect:
            raise ValueError("this poll allows one answer per member")
        before = self.votes.get(user_id, [])
        chosen = list(dict.fromkeys(answer_ids))
        if chosen:
            self.votes[user_id] = chosen
        else:
            self.votes.pop(user_id, None)
        added = [a for a in chosen if a not in before]
        removed = [a for a in before if a not in chosen]
        return added, removed

    def voters(self, answer_id: int) -> list[int]:
        return [user for user, chosen in self.votes.items() if answer_id in chosen]

    def result_embed(self) -> dict[str, Any]:
        """The ``poll_result`` embed of the POLL_RESULT message: the question, the total, and
        the winning answer when one answer has the most votes."""
        counts = self.counts()
        top = max(counts.values(), default=0)
        winners = [a for a, count in counts.items() if count == top]
        fields = {
            "poll_question_text": self.question,
            "victor_answer_votes": str(top),
            "total_votes": str(sum(counts.values())),
        }
        if top and len(winners) == 1:
            answer = next(a for a in self.answers if a["answer_id"] == winners[0])
            fields["victor_answer_id"] = str(winners[0])
            fields["victor_answer_text"] = str(answer["poll_media"].get("text") or "")
        return {
            "type": "poll_result",
            "fields": [{"name": k, "value": v, "inline": False} for k, v in fields.items()],
        }


def _media(media: dict[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {"text": media.get("text")}
    emoji = media.get("emoji")
    if isinstance(emoji, dict):
        shown["emoji"] = {"id": emoji.get("id"), "name": emoji.get("name")}
    return shown


class Polls:
    """Every poll the bot created, by message id, and the poll routes."""

    def __init__(self, emulator: DiscordEmulator) -> None:
        self._emulator = emulator
        self._polls: dict[int, Poll] = {}

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("POST", "/channels/{channel_id}/polls/{message_id}/expire", self._expire),
            ("GET", "/channels/{channel_id}/polls/{message_id}/answers/{answer_id}", self._voters),
        ]

    def open(self, message: MessageRecord, request: dict[str, Any], now: float) -> dict[str, Any]:
        """Start the poll ``request`` on ``message``; returns the message's ``poll``."""
        poll = Poll.from_request(message, request, now)
        self._polls[message.id] = poll
        return poll.payload()

    def of(self, message: MessageRecord) -> Poll:
        poll = self._polls.get(message.id)
        if poll is None:
            raise LookupError(f"message {message.id} has no poll")
        return poll

    async def vote(self, message: MessageRecord, user_id: int, answer_ids: list[int]) -> None:
        """The member's votes become ``answer_ids``; the bot hears of each change."""
        poll = self.of(message)
        added, removed = poll.choose(user_id, answer_ids)
        message.data["poll"] = poll.payload()
        for event, answers in (
            ("MESSAGE_POLL_VOTE_REMOVE", removed),
            ("MESSAGE_POLL_VOTE_ADD", added),
        ):
            for answer_id in answers:
                await self._emulator.dispatch_event(
                    event, self._vote_event(poll, user_id, answer_id)
                )

    async def end(self, message: MessageRecord) -> MessageRecord:
        """End the poll now, as its time running out or its author would: final results,
        MESSAGE_UPDATE, and the POLL_RESULT message; returns that message."""
        poll = self.of(message)
        if poll.ended:
            raise DiscordError(400, 520001, "Poll expired")
        poll.ended = True
        poll.expiry = min(poll.expiry, time.time())
        message.data["poll"] = poll.payload()
        await self._emulator.dispatch_event("MESSAGE_UPDATE", message.data)
        author = message.data["author"]
        return await self._emulator.post_system_message(
            self._emulator.channels[message.channel_id],
            POLL_RESULT,
            author=author,
            reference=message,
            mentions=[author],
            embeds=[poll.result_embed()],
        )

    def _vote_event(self, poll: Poll, user_id: int, answer_id: int) -> dict[str, Any]:
        data = {
            "user_id": str(user_id),
            "channel_id": str(poll.message.channel_id),
            "message_id": str(poll.message.id),
            "answer_id": answer_id,
        }
        guild_id = poll.message.data.get("guild_id")
        if guild_id is not None:
            data["guild_id"] = guild_id
        return data

    def _poll_message(self, request: web.Request) -> MessageRecord:
        channel = self._emulator.request_channel(request)
        message = self._emulator.request_message(request, channel)
        if message.id not in self._polls:
            raise DiscordError(400, 520006, "Cannot expire a non-poll message")
        return message

    async def _expire(self, request: web.Request) -> web.Response:
        message = self._poll_message(request)
        if message.data["author"]["id"] != self._emulator.bot_user["id"]:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        await self.end(message)
        return self._emulator.json_response(message.data)

    async def _voters(self, request: web.Request) -> web.Response:
        """Up to ``limit`` (1-100, default 25) voters of the answer, ids above ``after``."""
        poll = self.of(self._poll_message(request))
        answer_id = int(request.match_info["answer_id"])
        if answer_id not in poll.answer_ids:
            raise DiscordError(404, 10008, "Unknown Message")
        after = int(request.query.get("after") or 0)
        limit = min(max(int(request.query.get("limit") or 25), 1), VOTERS_PAGE_MAX)
        users = self._emulator.users
        voters = sorted(u for u in poll.voters(answer_id) if u > after)[:limit]
        return self._emulator.json_response({"users": [users[u] for u in voters if u in users]})
