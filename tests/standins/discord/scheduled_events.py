"""Guild scheduled events: create, read, modify (start, end, cancel), delete.

https://discord.com/developers/docs/resources/guild-scheduled-event. The emulator hosts
EXTERNAL events (entity type 3), the kind a bot makes for something happening in a channel
or elsewhere: no ``channel_id``, an ``entity_metadata.location`` of 1-100 characters, a start
in the future and an end after it, a name of 1-100 characters and a description of up to
1000, ``privacy_level`` 2 (GUILD_ONLY). Creating needs CREATE_EVENTS (MANAGE_EVENTS no longer
does, since 23 February 2026); changing or deleting one's own event needs CREATE_EVENTS or
MANAGE_EVENTS, someone else's MANAGE_EVENTS; all guild-wide, 403 / 50013 without. The status
moves SCHEDULED (1) -> ACTIVE (2) -> COMPLETED (3), or SCHEDULED -> CANCELED (4), and a finished
event cannot change (400 / 180000). At most 100 events are SCHEDULED or ACTIVE (400 / 30038).
Each change reaches the bot as GUILD_SCHEDULED_EVENT_CREATE / _UPDATE / _DELETE; GUILD_CREATE
lists them. Discord starts and completes EXTERNAL events at their times; ``run_schedule`` is
that clock, run when a test says.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import permissions
from .errors import DiscordError, refuse
from .rules import Problem
from .world import Guild, iso, snowflake

if TYPE_CHECKING:
    from .server import DiscordEmulator

SCHEDULED, ACTIVE, COMPLETED, CANCELED = 1, 2, 3, 4
EXTERNAL = 3
GUILD_ONLY = 2
NAME_MAX = 100
DESCRIPTION_MAX = 1000
LOCATION_MAX = 100
OPEN_EVENTS_MAX = 100
_NEXT_STATUSES = {SCHEDULED: {SCHEDULED, ACTIVE, CANCELED}, ACTIVE: {ACTIVE, COMPLETED}}


def _time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def check_event(event: dict[str, Any], *, now: float, start_changed: bool) -> list[Problem]:
    """Discord's rules for an EXTERNAL event as it would be after a create or a change."""
    problems: list[Problem] = []
    if event.get("entity_type") != EXTERNAL:
        problems.append((("entity_type",), "Only EXTERNAL events (3) are emulated."))
    name = event.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= NAME_MAX:
        problems.append((("name",), f"Must be between 1 and {NAME_MAX} in length."))
    description = event.get("description")
    if description is not None and len(str(description)) > DESCRIPTION_MAX:
        problems.append((("description",), f"Must be {DESCRIPTION_MAX} or fewer in length."))
    if event.get("privacy_level") != GUILD_ONLY:
        problems.append((("privacy_level",), "Must be 2 (GUILD_ONLY)."))
    if event.get("channel_id") is not None:
        problems.append((("channel_id",), "An EXTERNAL event has no channel."))
    location = (event.get("entity_metadata") or {}).get("location")
    if not isinstance(location, str) or not 1 <= len(location) <= LOCATION_MAX:
        problems.append(
            (("entity_metadata", "location"), f"Must be between 1 and {LOCATION_MAX} in length.")
        )
    start = _time(event.get("scheduled_start_time"))
    end = _time(event.get("scheduled_end_time"))
    if start is None:
        problems.append((("scheduled_start_time",), "Must be an ISO8601 timestamp."))
    elif start_changed and start <= now:
        problems.append((("scheduled_start_time",), "Cannot schedule event in the past."))
    if end is None:
        problems.append((("scheduled_end_time",), "An EXTERNAL event needs an end time."))
    elif start is not None and end <= start:
        problems.append((("scheduled_end_time",), "Must be after the start time."))
    return problems


def _stored(guild_id: int, creator: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The event as Discord answers it (ExternalScheduledEventResponse)."""
    event: dict[str, Any] = {
        "id": str(snowflake()),
        "guild_id": str(guild_id),
        "name": body.get("name"),
        "description": body.get("description"),
        "channel_id": None,
        "creator_id": creator["id"],
        "creator": creator,
        "image": None,
        "scheduled_start_time": body.get("scheduled_start_time"),
        "scheduled_end_time": body.get("scheduled_end_time"),
        "status": SCHEDULED,
        "entity_type": body.get("entity_type"),
        "entity_id": None,
        "recurrence_rule": None,
        "privacy_level": body.get("privacy_level"),
        "guild_scheduled_event_exceptions": [],
        "entity_metadata": body.get("entity_metadata"),
    }
    return event


def _normalised(event: dict[str, Any]) -> dict[str, Any]:
    """Times as Discord writes them back (UTC, ISO 8601)."""
    for key in ("scheduled_start_time", "scheduled_end_time"):
        at = _time(event.get(key))
        if at is not None:
            event[key] = iso(at)
    return event


class ScheduledEvents:
    """The scheduled-event routes; the events live on their guilds."""

    def __init__(self, emulator: DiscordEmulator) -> None:
        self._emulator = emulator

    def routes(self) -> list[tuple[str, str, Any]]:
        one = "/guilds/{guild_id}/scheduled-events/{guild_scheduled_event_id}"
        return [
            ("GET", "/guilds/{guild_id}/scheduled-events", self._list),
            ("POST", "/guilds/{guild_id}/scheduled-events", self._create),
            ("GET", one, self._get),
            ("PATCH", one, self._modify),
            ("DELETE", one, self._delete),
        ]

    async def run_schedule(self, guild: Guild, now: float | None = None) -> None:
        """Discord's clock for EXTERNAL events at ``now`` (default: the time): a SCHEDULED
        event whose start has come becomes ACTIVE, an ACTIVE one whose end has come COMPLETED."""
        at = time.time() if now is None else now
        for event in guild.scheduled_events.values():
            status = event["status"]
            start = _time(event["scheduled_start_time"]) or at
            end = _time(event["scheduled_end_time"]) or float("inf")
            if status == SCHEDULED and start <= at:
                status = COMPLETED if end <= at else ACTIVE
            elif status == ACTIVE and end <= at:
                status = COMPLETED
            if status != event["status"]:
                event["status"] = status
                await self._emulator.dispatch_event("GUILD_SCHEDULED_EVENT_UPDATE", event)

    def _guild(self, request: web.Request) -> Guild:
        guild = self._emulator.guilds.get(int(request.match_info["guild_id"]))
        if guild is None or not guild.bot_present:
            raise DiscordError(404, 10004, "Unknown Guild")
        return guild

    def _event(self, request: web.Request, guild: Guild) -> dict[str, Any]:
        event = guild.scheduled_events.get(int(request.match_info["guild_scheduled_event_id"]))
        if event is None:
            raise DiscordError(404, 10070, "Unknown Guild Scheduled Event")
        return event

    async def _body(self, request: web.Request) -> dict[str, Any]:
        body, _ = await self._emulator.read_body(request, self._emulator.route_template(request))
        return dict(body or {})

    async def _list(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        return self._emulator.json_response(list(guild.scheduled_events.values()))

    async def _get(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        return self._emulator.json_response(self._event(request, guild))

    async def _create(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        body = await self._body(request)
        permissions.require(guild.bot_permissions, permissions.CREATE_EVENTS, in_channel=False)
        refuse(check_event(body, now=time.time(), start_changed=True))
        open_events = [
            e for e in guild.scheduled_events.values() if e["status"] in (SCHEDULED, ACTIVE)
        ]
        if len(open_events) >= OPEN_EVENTS_MAX:
            raise DiscordError(
                400, 30038, "Maximum number of uncompleted guild scheduled events reached (100)"
            )
        event = _normalised(_stored(guild.id, self._emulator.bot_user, body))
        guild.scheduled_events[int(event["id"])] = event
        await self._emulator.dispatch_event("GUILD_SCHEDULED_EVENT_CREATE", event)
        return self._emulator.json_response(event)

    def _require_change(self, guild: Guild, event: dict[str, Any]) -> None:
        own = event["creator_id"] == self._emulator.bot_user["id"]
        allowed = guild.bot_permissions
        if own and permissions.has(allowed, permissions.CREATE_EVENTS):
            return
        permissions.require(allowed, permissions.MANAGE_EVENTS, in_channel=False)

    async def _modify(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        body = await self._body(request)
        event = self._event(request, guild)
        self._require_change(guild, event)
        if event["status"] in (COMPLETED, CANCELED):
            raise DiscordError(400, 180000, "Cannot update a finished event")
        changed = {**event, **{k: v for k, v in body.items() if k != "status"}}
        status = body.get("status", event["status"])
        problems = check_event(
            changed,
            now=time.time(),
            start_changed="scheduled_start_time" in body and status == SCHEDULED,
        )
        if status not in _NEXT_STATUSES[event["status"]]:
            problems.append((("status",), f"Cannot go from status {event['status']} to {status}."))
        refuse(problems)
        event.update(_normalised(changed), status=status)
        await self._emulator.dispatch_event("GUILD_SCHEDULED_EVENT_UPDATE", event)
        return self._emulator.json_response(event)

    async def _delete(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        event = self._event(request, guild)
        self._require_change(guild, event)
        del guild.scheduled_events[int(event["id"])]
        await self._emulator.dispatch_event("GUILD_SCHEDULED_EVENT_DELETE", event)
        return web.Response(status=204)
