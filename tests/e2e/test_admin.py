"""/stems-admin end to end: the real bot over the loopback Discord, with the ledger it keeps."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import aiohttp

from stembot.models import Mode, RequestStatus
from stembot.remix_event_models import EventSpec
from stembot.store import Store
from tests.e2e.stack import Stack, channel_posts, eventually
from tests.standins.discord import ADMINISTRATOR, EPHEMERAL, MANAGE_GUILD, MEMBER_DEFAULT, Member


def moderator(stack: Stack, name: str = "mod", permissions: int = MANAGE_GUILD) -> Member:
    return stack.discord.add_member(stack.guild, name, permissions=MEMBER_DEFAULT | permissions)


async def admin(
    stack: Stack, command: str, member: Member, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run `/stems-admin <command>` and return the private message the member finally saw."""
    interaction = await stack.discord.slash(
        f"stems-admin {command}", member=member, channel=stack.channel, options=options
    )

    def settled() -> bool:
        original = interaction.view().original
        return original is not None and not original.get("flags", 0) & 128  # not "thinking"

    await eventually(settled)
    original = interaction.view().original
    assert original is not None
    assert original["flags"] & EPHEMERAL, "a /stems-admin answer must be private"
    return original


def text_of(message: dict[str, Any]) -> str:
    """Everything the member reads in a message: content, embed texts and fields."""
    parts = [str(message.get("content") or "")]
    for embed in message.get("embeds") or []:
        parts += [str(embed.get("title", "")), str(embed.get("description", ""))]
        parts += [f"{f['name']}: {f['value']}" for f in embed.get("fields") or []]
    return "\n".join(parts)


async def succeeded(stack: Stack, mode: str = "vocals", member: Member | None = None) -> None:
    await stack.answer(await stack.stems(mode, member=member))


def status_of(ledger: Store, request_id: int) -> RequestStatus:
    request = ledger.ledger.get_request(request_id)
    assert request is not None
    return request.status


def now() -> datetime:
    return datetime.now(UTC)


# --- permissions -----------------------------------------------------------------------------


async def test_the_command_defaults_to_manage_server(stack: Stack) -> None:
    """/stems-admin is a top-level command of its own, registered for Manage Server only."""
    (command,) = [c for c in stack.discord.commands[None] if c["name"] == "stems-admin"]
    assert int(command["default_member_permissions"]) == MANAGE_GUILD
    assert command["contexts"] == [0]  # servers only
    assert sorted(o["name"] for o in command["options"]) == [
        "export",
        "limits",
        "log-channel",
        "refund",
        "usage",
    ]


async def test_a_member_without_manage_server_gets_no_figures(stack: Stack) -> None:
    """Even when Discord shows them the command, a plain member is refused, privately."""
    await succeeded(stack)
    interaction = await stack.discord.slash(
        "stems-admin usage", member=stack.member, channel=stack.channel
    )
    refusal = await stack.refusal(interaction)
    assert "Manage Server" in refusal
    original = interaction.view().original
    assert original is not None and not original.get("embeds")
    assert not any(ch.isdigit() for ch in refusal)


async def test_a_plain_member_cannot_change_limits(stack: Stack) -> None:
    """A refused /stems-admin limits changes nothing in the ledger."""
    interaction = await stack.discord.slash(
        "stems-admin limits", member=stack.member, channel=stack.channel, options={"daily": 0}
    )
    assert "Manage Server" in await stack.refusal(interaction)
    assert stack.ledger().guilds.guild_limits(stack.guild.id).overridden == frozenset()


async def test_an_administrator_is_a_moderator(stack: Stack) -> None:
    """Administrator without Manage Server in the bits is accepted too."""
    message = await admin(stack, "usage", moderator(stack, "owner", ADMINISTRATOR))
    assert message["embeds"][0]["title"] == "stembot usage on this server"


# --- usage -----------------------------------------------------------------------------------


async def test_usage_figures_match_the_ledger(stack: Stack) -> None:
    """After vocals (1) and all (2), usage shows 3 of 50 units and 2 requests, as recorded."""
    await succeeded(stack, "vocals")
    await succeeded(stack, "all")
    message = await admin(stack, "usage", moderator(stack))
    status = stack.ledger().quotas.quota_status(stack.guild.id, None, now())
    assert status.guild_daily.used == 3
    text = text_of(message)
    assert "Today: **3** of 50 units used (6%), 47 left\n2 requests made, 0 refunded" in text
    assert "This month: **3** of 500 units used (0%)" in text
    assert "By mode today: All stems: 1 request, 2 units\nVocals: 1 request, 1 unit" in text
    assert f"1. <@{stack.member.id}> ({stack.member.id}): 3 units, 2 requests" in text
    reset = status.guild_daily.resets_at
    assert f"Resets {reset:%Y-%m-%d %H:%M} UTC" in text


async def test_usage_shows_remix_events_apart_from_members(stack: Stack) -> None:
    """A remix event's call is the server's spend, listed apart; its organiser is no top
    member for it."""
    await succeeded(stack, "vocals")
    ledger = stack.ledger()
    spec = EventSpec("Spring *remix*", "song.wav", "attachment:77", None)
    event = ledger.events.start(stack.guild.id, stack.channel.id, 4242, spec, now(), max_open=3)
    ledger.ledger.reserve_for_event(event.id, Mode.ALL, "song.wav", "attachment:77", now())
    text = text_of(await admin(stack, "usage", moderator(stack)))
    assert "Today: **3** of 50 units used (6%), 47 left" in text
    assert (
        f"Remix events this month: Spring \\*remix\\* (#{event.id}): 1 request, 2 units\n"
        "Remix events 2 units, members 1 unit"
    ) in text
    assert f"1. <@{stack.member.id}> ({stack.member.id}): 1 unit, 1 request" in text
    assert "4242" not in text.split("Top members this month")[1]


# --- limits ----------------------------------------------------------------------------------


async def test_limits_set_by_command_hold_on_the_next_request(stack: Stack) -> None:
    """daily=1 is shown as set on this server, and the second request is refused."""
    message = await admin(stack, "limits", moderator(stack), {"daily": 1})
    text = text_of(message)
    assert "Server per UTC day: **1 unit** (set on this server)" in text
    assert "Server per UTC month: **500 units** (default)" in text
    await succeeded(stack)
    refused = await stack.stems("vocals")
    assert "used 1 of its 1 daily units" in await stack.refusal(refused)
    assert stack.api_calls() == 1


async def test_limits_without_values_are_refused(stack: Stack) -> None:
    """Setting nothing gets a private line saying what to give."""
    message = await admin(stack, "limits", moderator(stack))
    assert "at least one of `daily`, `monthly` or `per_user`" in message["content"]


async def test_discord_keeps_limits_non_negative(stack: Stack) -> None:
    """The options are registered as integers with a minimum of 0."""
    (command,) = [c for c in stack.discord.commands[None] if c["name"] == "stems-admin"]
    (limits,) = [o for o in command["options"] if o["name"] == "limits"]
    assert {
        o["name"]: (o["type"], o.get("min_value"), o["required"]) for o in limits["options"]
    } == {
        "daily": (4, 0, False),
        "monthly": (4, 0, False),
        "per_user": (4, 0, False),
        "role": (8, None, False),
        "reset": (3, None, False),
    }


# --- export ----------------------------------------------------------------------------------


async def download(url: str) -> bytes:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.read()


async def test_export_attaches_the_ledger_as_csv(stack: Stack) -> None:
    """The CSV attached to the private answer parses back to the ledger's rows."""
    await succeeded(stack, "all")
    await succeeded(stack, "vocals")
    message = await admin(stack, "export", moderator(stack))
    (attachment,) = message["attachments"]
    assert attachment["filename"].endswith(".csv")
    rows = list(csv.DictReader(io.StringIO((await download(attachment["url"])).decode())))
    assert [(r["mode"], r["charged"], r["status"]) for r in rows] == [
        ("all", "2", "succeeded"),
        ("vocals", "1", "succeeded"),
    ]
    created = datetime.fromisoformat(rows[0]["created_at"])
    assert created.tzinfo == UTC and rows[0]["created_at"].endswith("Z")
    assert {r["user_id"] for r in rows} == {f'="{stack.member.id}"'}
    assert "2 requests" in message["content"]


async def test_an_export_above_the_upload_limit_is_explained(stack: Stack) -> None:
    """When the file would pass the upload limit, the answer says so and attaches nothing."""
    await succeeded(stack)
    stack.discord.upload_limit = 100
    message = await admin(stack, "export", moderator(stack))
    assert not message["attachments"]
    assert "more than the 100 bytes" in message["content"]


async def test_export_refuses_a_bad_date(stack: Stack) -> None:
    """A date not written YYYY-MM-DD is answered with the expected form."""
    message = await admin(stack, "export", moderator(stack), {"since": "1 May"})
    assert "YYYY-MM-DD" in message["content"]


# --- refund ----------------------------------------------------------------------------------


async def test_refund_gives_units_back_once(stack: Stack) -> None:
    """The first refund frees the units (usage drops); the second says it was done."""
    await succeeded(stack, "all")
    mod = moderator(stack)
    (request_id,) = request_ids(stack)
    first = await admin(stack, "refund", mod, {"request_id": request_id})
    assert f"Refunded request {request_id}" in first["content"]
    assert "2 units given back" in first["content"]
    ledger = stack.ledger()
    assert status_of(ledger, request_id) is RequestStatus.CANCELLED
    assert ledger.quotas.quota_status(stack.guild.id, None, now()).guild_daily.used == 0
    second = await admin(stack, "refund", mod, {"request_id": request_id})
    assert "already refunded (by a moderator)" in second["content"]
    usage = text_of(await admin(stack, "usage", mod))
    assert "Today: **0** of 50 units used (0%), 50 left\n1 request made, 1 refunded" in usage


async def test_refund_of_another_servers_request_is_refused(stack: Stack) -> None:
    """A moderator of another server cannot refund this server's request."""
    await succeeded(stack)
    (request_id,) = request_ids(stack)
    elsewhere = await stack.discord.add_guild("Other club")
    other_mod = stack.discord.add_member(elsewhere, "othermod", permissions=MANAGE_GUILD)
    interaction = await stack.discord.slash(
        "stems-admin refund", member=other_mod, options={"request_id": request_id}
    )
    assert f"no request {request_id} on this server" in await stack.refusal(interaction)
    assert status_of(stack.ledger(), request_id) is RequestStatus.SUCCEEDED


def request_ids(stack: Stack) -> list[int]:
    """This server's request ids, oldest first, as the ledger holds them."""
    out = io.StringIO()
    start = datetime(2000, 1, 1, tzinfo=UTC)
    stack.ledger().reports.stream_ledger(
        stack.guild.id, start, datetime(3000, 1, 1, tzinfo=UTC), out
    )
    return [int(row["request_id"]) for row in csv.DictReader(io.StringIO(out.getvalue()))]


# --- log channel and alerts ------------------------------------------------------------------


async def test_alerts_are_posted_once_per_window(stack: Stack) -> None:
    """Daily limit 5: the 4th unit posts the 80% alert, the 5th the 100% one, and no more."""
    mod = moderator(stack)
    logs = await stack.discord.add_channel(stack.guild, "mod-log")
    await admin(stack, "limits", mod, {"daily": 5})
    answer = await admin(stack, "log-channel", mod, {"channel": logs})
    assert f"<#{logs.id}>" in answer["content"]
    for _ in range(3):
        await succeeded(stack)
    (hello,) = channel_posts(stack.discord, logs)
    assert hello.embeds[0]["title"] == "stembot quota alerts"
    await succeeded(stack)
    await eventually(lambda: len(channel_posts(stack.discord, logs)) == 2)
    await succeeded(stack)
    await eventually(lambda: len(channel_posts(stack.discord, logs)) == 3)
    titles = [m.embeds[0]["title"] for m in channel_posts(stack.discord, logs)[1:]]
    assert titles == ["stembot: 80% of the daily limit used", "stembot: daily limit reached"]
    full = channel_posts(stack.discord, logs)[2].embeds[0]["description"]
    assert "This server has used 5 of its 5 daily units (100%)" in full
    # Back under the limit and up to 100% again in the same day: nothing new is posted.
    await admin(stack, "refund", mod, {"request_id": request_ids(stack)[-1]})
    await succeeded(stack)
    await admin(stack, "usage", mod)
    assert len(channel_posts(stack.discord, logs)) == 3


async def test_no_alert_without_a_log_channel(stack: Stack) -> None:
    """With alerts off, reaching the limit posts nothing anywhere."""
    mod = moderator(stack)
    await admin(stack, "limits", mod, {"daily": 1})
    off = await admin(stack, "log-channel", mod)
    assert "Quota alerts are off" in off["content"]
    await succeeded(stack)
    await admin(stack, "usage", mod)
    assert channel_posts(stack.discord, stack.channel) == []


async def test_a_channel_the_bot_cannot_post_in_is_not_kept(stack: Stack) -> None:
    """The moderator hears what to fix; the log channel is left as it was."""
    logs = await stack.discord.add_channel(stack.guild, "locked")
    stack.discord.refuse_channel(logs)
    message = await admin(stack, "log-channel", moderator(stack), {"channel": logs})
    assert f"I can't post in <#{logs.id}>" in message["content"]
    assert stack.ledger().guilds.log_channel(stack.guild.id) is None
