"""The loopback Discord, driven by the real discord.py client over HTTP and the gateway."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from stembot.bot.endpoints import current_discord_endpoints
from tests.discord_clients import connected, emulated_discord
from tests.standins.discord import (
    ADMINISTRATOR,
    BOT_DM,
    DEFAULT_SPEC_PATH,
    USER_APP,
    USER_APP_DM,
    DiscordEmulator,
    InteractionFailed,
    OpenAPISpec,
    Pings,
    SpecViolationError,
    rules,
)
from tests.standins.discord.world import Guild, Member, Role, user_payload

AUDIO = b"RIFF" + bytes(4096)
has_spec = pytest.mark.skipif(
    not DEFAULT_SPEC_PATH.is_file(), reason=f"no OpenAPI description at {DEFAULT_SPEC_PATH}"
)


@dataclass
class Probe:
    """What the test bot's commands saw, and a latch that holds them mid-flight."""

    errors: list[Exception] = field(default_factory=list)
    seen: list[object] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


class AgainView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Again", custom_id="again")
    async def again(
        self, interaction: discord.Interaction, _: discord.ui.Button[AgainView]
    ) -> None:
        await interaction.response.edit_message(content="clicked", view=None)


def build_bot(probe: Probe) -> commands.Bot:
    """A plain discord.py bot with a small command tree exercising every response path."""
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0)
    stems = app_commands.Group(name="stems", description="Split audio into stems")

    @stems.command(name="vocals", description="Isolate the vocals")
    async def vocals(
        interaction: discord.Interaction, file: discord.Attachment, note: str | None = None
    ) -> None:
        await interaction.response.defer(thinking=True)
        data = await file.read()
        probe.seen.append((len(data), note, interaction.filesize_limit))
        embed = discord.Embed(title="Vocals ready", description=f"{file.filename}: {len(data)} B")
        await interaction.edit_original_response(embed=embed, view=AgainView())
        await interaction.followup.send(
            embed=discord.Embed(title="Stem"), file=discord.File(io.BytesIO(data), "vocals.wav")
        )

    @stems.command(name="hold", description="Defer, wait for the test, then edit")
    async def hold(
        interaction: discord.Interaction, size: int = 0, title_length: int = 5, fields: int = 0
    ) -> None:
        try:
            await interaction.response.defer()
            await probe.release.wait()
            if size:
                await interaction.followup.send(file=discord.File(io.BytesIO(bytes(size)), "x.bin"))
            embed = discord.Embed(title="t" * title_length)
            for _ in range(fields):
                embed.add_field(name="f", value="v" * 1000)
            await interaction.edit_original_response(content="done", embed=embed)
        except discord.HTTPException as error:
            probe.errors.append(error)

    @stems.command(name="post", description="Post in the channel and DM the user")
    async def post(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("posting", ephemeral=True)
        for send in (interaction.channel.send, interaction.user.send):  # type: ignore[union-attr]
            try:
                await send("result")
            except discord.HTTPException as error:
                probe.errors.append(error)

    @stems.command(name="tidy", description="Answer with a file, then edit and delete")
    async def tidy(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            "first", file=discord.File(io.BytesIO(AUDIO), "a.wav")
        )
        original = await interaction.original_response()
        probe.seen.append(original.attachments[0].size)
        extra = await interaction.followup.send("second", wait=True)
        await extra.edit(content="second, edited")
        await interaction.delete_original_response()

    @stems.command(name="roles", description="Say which roles the member and the option have")
    async def roles(interaction: discord.Interaction, role: discord.Role | None = None) -> None:
        member = interaction.user
        assert isinstance(member, discord.Member)
        probe.seen.append(([r.name for r in member.roles], role and (role.id, role.name)))
        await interaction.response.send_message("seen", ephemeral=True)

    @stems.command(name="where", description="Say where the interaction came from")
    async def where(interaction: discord.Interaction) -> None:
        probe.seen.append(
            (
                interaction.guild_id,
                (interaction.context.guild, interaction.context.dm_channel),
                interaction.is_guild_integration(),
                interaction.is_user_integration(),
                interaction.channel.type if interaction.channel else None,
            )
        )
        await interaction.response.send_message("here <@1> @everyone", ephemeral=True)

    @app_commands.context_menu(name="Split stems")
    async def split(interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.response.send_message(
            f"{len(message.attachments)} file(s) in {message.id}", ephemeral=True
        )

    async def setup_hook() -> None:
        bot.tree.add_command(stems)
        bot.tree.add_command(split)
        await bot.tree.sync()

    bot.setup_hook = setup_hook  # type: ignore[method-assign]
    return bot


@pytest.fixture
async def emulator() -> AsyncIterator[DiscordEmulator]:
    async with emulated_discord() as emulator:
        yield emulator


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def bot(emulator: DiscordEmulator, probe: Probe) -> AsyncIterator[commands.Bot]:
    await emulator.add_guild("Test server")
    bot = build_bot(probe)
    async with connected(bot, emulator):
        yield bot


@pytest.fixture
def guild(emulator: DiscordEmulator, bot: commands.Bot):
    return next(iter(emulator.guilds.values()))


@pytest.fixture
def alice(emulator: DiscordEmulator, guild):
    return emulator.add_member(guild, "alice")


async def test_full_slash_flow_with_attachment_embed_file_and_button(emulator, bot, probe, alice):
    """Defer, read the attachment, edit with an embed, follow up with a file, click a button."""
    upload = emulator.upload_attachment(AUDIO, "song.wav", "audio/wav")
    interaction = await emulator.slash(
        "stems vocals", member=alice, options={"file": upload, "note": "hi"}
    )

    final = await emulator.final_message(interaction)
    assert final is not None and final["embeds"][0]["title"] == "Vocals ready"
    assert probe.seen == [(len(AUDIO), "hi", emulator.upload_limit)]
    await interaction.wait_until(lambda r: bool(r.followups), 5)
    (followup,) = interaction.followups
    assert followup.embeds[0]["title"] == "Stem" and followup.attachments[0]["size"] == len(AUDIO)
    async with aiohttp.ClientSession() as http, http.get(followup.attachments[0]["url"]) as got:
        assert await got.read() == AUDIO

    original = interaction.original
    assert original is not None and original.custom_ids() == ["again"]
    click = await emulator.click(original, "again", member=alice)
    clicked = await emulator.final_message(click)
    assert clicked is not None and clicked["content"] == "clicked" and clicked["components"] == []


async def test_response_with_file_then_followup_edit_and_original_delete(
    emulator, bot, probe, alice
):
    """Multipart callback, GET @original, followup edit by id and DELETE @original are recorded."""
    interaction = await emulator.slash("stems tidy", member=alice)
    await interaction.wait_until(lambda r: r.original is not None and r.original.deleted_at, 5)
    assert probe.seen == [len(AUDIO)]
    view = interaction.view()
    assert view.original is None and [m["content"] for m in view.followups] == ["second, edited"]
    assert [c.method for c in interaction.calls] == ["POST", "GET", "POST", "PATCH", "DELETE"]


async def test_commands_are_synced_globally_with_ids(emulator, bot):
    """tree.sync() overwrites the global commands; the emulator stores them with ids."""
    names = sorted((c["name"], c["type"]) for c in emulator.commands[None])
    assert names == [("Split stems", 3), ("stems", 1)]
    assert all(c["id"].isdigit() for c in emulator.commands[None])


async def test_message_context_menu_sees_the_target_message(emulator, bot, guild, alice):
    """A message command receives the target message from `resolved`."""
    upload = emulator.upload_attachment(AUDIO, "a.wav", "audio/wav")
    target = await emulator.post_user_message(guild.default_channel, alice, "x", [upload])
    interaction = await emulator.message_command("Split stems", member=alice, target=target)
    final = await emulator.final_message(interaction)
    assert final is not None and final["content"] == f"1 file(s) in {target.id}"
    assert final["flags"] & 64  # ephemeral


async def test_late_acknowledgement_is_refused_and_marked_failed(emulator, bot, probe, alice):
    """An ack arriving after 3 s gets 10062 and the user sees the interaction failed."""
    probe.release.set()
    interaction = await emulator.slash("stems hold", member=alice, age_s=3.5)
    with pytest.raises(InteractionFailed):
        await emulator.final_message(interaction)
    await interaction.wait_until(lambda r: bool(r.calls), 5)
    assert interaction.late_ack_at is not None
    assert (interaction.calls[0].status, interaction.calls[0].code) == (404, 10062)


async def test_unacknowledged_interaction_fails_after_the_window(emulator, bot, guild, alice):
    """No answer at all: the interaction counts as failed once the ack window has passed."""
    emulator.ack_window_s = 0.05
    bot.tree.remove_command("Split stems", type=discord.AppCommandType.message)
    target = await emulator.post_user_message(guild.default_channel, alice, "x")
    interaction = await emulator.message_command("Split stems", member=alice, target=target)
    with pytest.raises(InteractionFailed):
        await emulator.acknowledged(interaction)


async def test_second_acknowledgement_answers_40060(emulator, bot, probe, alice):
    """A second callback for the same interaction is refused with 40060."""
    interaction = await emulator.slash("stems hold", member=alice)
    assert await emulator.acknowledged(interaction) == 5
    url = f"{emulator.api_base}/interactions/{interaction.id}/{interaction.token}/callback"
    async with aiohttp.ClientSession() as http, http.post(url, json={"type": 5}) as answer:
        assert answer.status == 400 and (await answer.json())["code"] == 40060
    probe.release.set()
    assert (await emulator.final_message(interaction) or {})["content"] == "done"


async def test_expired_token_is_refused_with_50027(emulator, bot, probe, alice):
    """After 15 minutes the interaction token no longer edits the response (401 / 50027)."""
    interaction = await emulator.slash("stems hold", member=alice)
    await emulator.acknowledged(interaction)
    emulator.age(interaction, 15 * 60 + 1)
    probe.release.set()
    await eventually(lambda: bool(probe.errors))
    error = probe.errors[0]
    assert isinstance(error, discord.HTTPException)
    assert (error.status, error.code) == (401, 50027)
    assert interaction.original is not None and interaction.original.loading


async def test_embeds_over_6000_characters_are_refused(emulator, bot, probe, alice):
    """An edit whose embeds total more than 6000 characters gets 400 / 50035."""
    probe.release.set()
    await emulator.slash("stems hold", member=alice, options={"fields": 7})
    await eventually(lambda: bool(probe.errors))
    error = probe.errors[0]
    assert isinstance(error, discord.HTTPException) and error.code == 50035
    assert "6000" in error.text


async def test_upload_over_the_limit_is_refused_with_40005(probe, alice, bot, emulator):
    """A file over the interaction's attachment_size_limit gets 413 / 40005."""
    emulator.upload_limit = 1000
    probe.release.set()
    await emulator.slash("stems hold", member=alice, options={"size": 2000})
    await eventually(lambda: bool(probe.errors))
    error = probe.errors[0]
    assert isinstance(error, discord.HTTPException) and (error.status, error.code) == (413, 40005)


@has_spec
async def test_body_breaking_the_openapi_description_is_refused_and_recorded(
    emulator, bot, probe, alice
):
    """An embed title over 256 characters breaks Discord's OpenAPI description."""
    probe.release.set()
    await emulator.slash("stems hold", member=alice, options={"title_length": 300})
    await eventually(lambda: bool(probe.errors))
    assert isinstance(probe.errors[0], discord.HTTPException) and probe.errors[0].code == 50035
    (violation,) = emulator.take_spec_violations()
    assert violation.route == "/webhooks/{webhook_id}/{webhook_token}/messages/@original"
    assert any(p.startswith("embeds/0/title") for p in violation.problems)


@has_spec
async def test_unclaimed_spec_violation_fails_at_exit():
    """A violation nobody took fails the `async with` block, so the test fails."""
    with pytest.raises(SpecViolationError, match="POST /users/@me/channels"):
        async with DiscordEmulator() as emulator, aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bot {emulator.token}"}
            url = f"{emulator.api_base}/users/@me/channels"
            async with http.post(url, json={"recipient_id": []}, headers=headers) as answer:
                assert answer.status == 400


def test_absent_openapi_description_skips_the_check_visibly(tmp_path, caplog):
    """Without the description file the check is off and a warning says so."""
    assert OpenAPISpec.load(tmp_path / "missing.json") is None
    assert "spec check skipped" in caplog.text


async def test_spec_check_can_be_switched_off():
    """validate_spec=False leaves Discord's own limits as the only check."""
    async with DiscordEmulator(validate_spec=False) as emulator:
        assert emulator.spec is None


async def test_rate_limit_with_via_is_retried(emulator, bot, probe, alice, guild):
    """A 429 carrying Via is waited out by discord.py, and the post lands."""
    emulator.rate_limit("POST", "/channels/{channel_id}/messages", via=True, retry_after=0.01)
    await emulator.slash("stems post", member=alice)
    await eventually(lambda: bool(emulator.dm_messages(alice) or probe.errors))
    posts = [c.status for c in emulator.calls if c.route == "/channels/{channel_id}/messages"]
    assert posts[:2] == [429, 200]
    assert [m.content for m in emulator.channel_messages(guild.default_channel)][-1] == "result"


async def test_rate_limit_without_via_is_not_retried(emulator, bot, probe, alice, guild):
    """A 429 without Via looks like Cloudflare's ban: discord.py raises instead of retrying."""
    emulator.rate_limit("POST", "/channels/{channel_id}/messages", via=False)
    await emulator.slash("stems post", member=alice)
    await eventually(lambda: bool(emulator.dm_messages(alice) or probe.errors))
    assert isinstance(probe.errors[0], discord.HTTPException) and probe.errors[0].status == 429


async def test_refused_channel_and_closed_dms_answer_50013_and_50007(
    emulator, bot, probe, alice, guild
):
    """Posting where the bot lacks permission, or DMing a user who closed DMs, is refused."""
    emulator.refuse_channel(guild.default_channel)
    emulator.refuse_dms(alice)
    await emulator.slash("stems post", member=alice)
    await eventually(lambda: len(probe.errors) == 2)
    assert [(e.status, e.code) for e in probe.errors] == [(403, 50013), (403, 50007)]


async def test_dropped_gateway_resumes_on_resume_url_and_replays_events(
    emulator, bot, guild, alice
):
    """After a dropped socket the client RESUMEs at resume_gateway_url and gets missed events."""
    await emulator.drop_gateway()
    target = await emulator.post_user_message(guild.default_channel, alice, "x")
    interaction = await emulator.message_command("Split stems", member=alice, target=target)
    assert await emulator.final_message(interaction) is not None
    assert [(e.path, e.op) for e in emulator.gateway.log] == [
        ("/gateway", "IDENTIFY"),
        ("/gateway/resume", "RESUME"),
    ]


async def test_a_gateway_outage_refuses_connections_until_it_ends(emulator, bot, guild, alice):
    """Down: the bot's socket is closed and every new connection is refused with 503 (the
    client backs off and tries again). Up: it connects again and is served."""
    await emulator.take_gateway_down()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(emulator.gateway_url)
    assert refused.value.status == 503
    await eventually(lambda: all(s.connection is None for s in emulator.gateway.sessions.values()))
    assert bot.ws is None or not bot.ws.open
    emulator.bring_gateway_up()
    await eventually(lambda: bot.ws is not None and bot.ws.open, timeout_s=30)
    target = await emulator.post_user_message(guild.default_channel, alice, "x")
    interaction = await emulator.message_command("Split stems", member=alice, target=target)
    assert await emulator.final_message(interaction) is not None


async def test_op7_reconnect_resumes_the_session(emulator, bot, alice):
    """op 7 makes the client reconnect and RESUME the same session."""
    session = emulator.gateway.live_session()
    await emulator.request_reconnect()
    await eventually(lambda: session.resumes == 1)
    assert emulator.gateway.log[-1].op == "RESUME"


async def test_gateway_traffic_is_zlib_compressed(emulator, bot):
    """discord.py asks for zlib-stream and the emulator compresses every frame."""
    connection = emulator.gateway.live_session().connection
    assert connection is not None and connection.compressed


async def test_endpoints_function_points_discord_py_at_the_settings(emulator):
    """use_discord_endpoints sets REST base and gateway URL, and returns the old ones."""
    assert current_discord_endpoints() == (emulator.api_base, emulator.gateway_url)
    assert discord.http.Route("GET", "/users/@me").url == emulator.api_base + "/users/@me"


async def test_cdn_refuses_expired_and_tampered_urls(emulator):
    """Attachment URLs are signed and expire, like Discord's."""
    fresh = emulator.upload_attachment(AUDIO, "a.wav")["url"]
    expired = emulator.upload_attachment(AUDIO, "a.wav", expires_in_s=-1)["url"]
    async with aiohttp.ClientSession() as http:
        for url, status in ((fresh, 200), (expired, 404), (fresh.replace("hm=", "hm=0"), 404)):
            async with http.get(url) as answer:
                assert answer.status == status


async def test_admin_member_permissions_reach_the_bot(emulator, bot, probe, guild):
    """Interactions carry the member's permissions as chosen by the test."""
    admin = emulator.add_member(guild, "mod", permissions=ADMINISTRATOR)
    upload = emulator.upload_attachment(AUDIO, "song.wav", "audio/wav")
    interaction = await emulator.slash("stems vocals", member=admin, options={"file": upload})
    assert int(interaction.payload["member"]["permissions"]) == ADMINISTRATOR
    await emulator.final_message(interaction)


async def eventually(condition, timeout_s: float = 5.0) -> None:
    """Wait until ``condition()`` holds (state outside the emulator, like the probe)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - the state lives in the bot, nothing to await
            await asyncio.sleep(0.005)


async def test_member_roles_and_role_options_reach_the_bot(emulator, bot, probe, guild):
    """member.roles and a role option arrive as Discord sends them; discord.py resolves both,
    including a role created after the bot connected (GUILD_ROLE_CREATE)."""
    patrons = await emulator.add_role(guild, "Patrons")
    djs = await emulator.add_role(guild, "DJs")
    member = emulator.add_member(guild, "carol", roles=[patrons, djs])
    interaction = await emulator.slash("stems roles", member=member, options={"role": patrons})
    await emulator.final_message(interaction)
    assert interaction.payload["member"]["roles"] == [str(patrons.id), str(djs.id)]
    (seen,) = probe.seen
    assert sorted(seen[0]) == ["@everyone", "DJs", "Patrons"]
    assert seen[1] == (patrons.id, "Patrons")


@has_spec
def test_roles_and_members_sent_to_the_bot_follow_the_openapi_description(emulator) -> None:
    """The role object and the interaction's member payload match Discord's own schemas."""
    spec = OpenAPISpec.load()
    assert spec is not None
    guild = Guild(1234, "g", 1)
    role = Role(5678, "Patrons")
    member = Member(user_payload(42, "carol"), guild.id, 0, roles=[role])
    assert spec.check_schema("GuildRoleResponse", role.payload()) == []
    assert spec.check_schema("GuildRoleResponse", guild.everyone.payload()) == []
    assert spec.check_schema("GuildMemberResponse", member.payload()) == []


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (BOT_DM, (None, (False, True), False, False, discord.ChannelType.private)),
        (USER_APP_DM, (None, (False, False), False, True, discord.ChannelType.private)),
    ],
)
async def test_dm_interactions_arrive_as_discord_sends_them(
    emulator, bot, probe, alice, context, expected
):
    """No guild, the user instead of a member, a DM channel, the context and the installs."""
    interaction = await emulator.slash("stems where", member=alice, context=context)
    answer = await emulator.final_message(interaction)
    assert answer is not None and answer["content"].startswith("here")
    assert probe.seen == [expected]
    assert "member" not in interaction.payload and "guild_id" not in interaction.payload
    assert interaction.payload["user"]["id"] == str(alice.id)


async def test_a_user_install_in_a_server_without_the_bot(emulator, bot, probe):
    """The server's id comes along, but only the member's install authorised the app."""
    server = await emulator.add_guild("No bot", bot_present=False)
    visitor = emulator.add_member(server, "visitor")
    assert server.id not in {g.id for g in bot.guilds}
    interaction = await emulator.slash("stems where", member=visitor, context=USER_APP)
    await emulator.final_message(interaction)
    assert probe.seen == [(server.id, (True, False), False, True, discord.ChannelType.text)]
    assert interaction.payload["authorizing_integration_owners"] == {"1": str(visitor.id)}


def test_contexts_and_installs_are_the_values_the_openapi_description_names():
    if not DEFAULT_SPEC_PATH.is_file():
        pytest.skip(f"no OpenAPI description at {DEFAULT_SPEC_PATH}")
    import json

    schemas = json.loads(DEFAULT_SPEC_PATH.read_text())["components"]["schemas"]
    contexts = {c["const"] for c in schemas["InteractionContextType"]["oneOf"]}
    installs = {str(c["const"]) for c in schemas["ApplicationIntegrationType"]["oneOf"]}
    assert contexts == {0, 1, 2}
    assert installs == {"0", "1"}


@pytest.mark.parametrize(
    ("content", "allowed", "expected"),
    [
        ("<@12> <@!13> <@&14> @everyone", None, Pings(frozenset({12, 13}), frozenset({14}), True)),
        ("<@12> <@&14> @here", {"parse": []}, Pings()),
        ("<@12> <@13> @everyone", {"parse": [], "users": ["13"]}, Pings(frozenset({13}))),
        (
            "<@12> <@&14> @everyone",
            {"parse": ["users", "everyone"]},
            Pings(frozenset({12}), everyone=True),
        ),
        ("<@&14> <@&15>", {"roles": ["15"]}, Pings(roles=frozenset({15}))),
        ("<@12> @everyone", {}, Pings()),
    ],
)
def test_who_a_body_pings_follows_allowed_mentions(content, allowed, expected):
    assert rules.pings(content, allowed) == expected


async def test_every_message_body_is_kept_with_who_it_pinged(emulator, bot, probe, alice):
    interaction = await emulator.slash("stems where", member=alice)
    await emulator.final_message(interaction)
    (sent,) = emulator.sent_bodies
    assert sent.route == "/interactions/{interaction_id}/{interaction_token}/callback"
    assert not sent.sets_allowed_mentions  # this test bot sets no default
    assert sent.pings == Pings(frozenset({1}), everyone=True)
    assert interaction.original is not None
    assert interaction.original.data["mention_everyone"] is True


async def test_parse_users_with_a_user_list_is_refused(emulator, bot, guild):
    channel = guild.default_channel
    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=channel.id)
    body = {"content": "<@1>", "allowed_mentions": {"parse": ["users"], "users": ["1"]}}
    with pytest.raises(discord.HTTPException) as refused:
        await bot.http.request(route, json=body)
    assert refused.value.code == 50035
    assert emulator.sent_bodies == []


def _select(options: int) -> dict[str, object]:
    choices = [{"label": f"option {i}", "value": str(i)} for i in range(options)]
    return {"type": 1, "components": [{"type": 3, "custom_id": "pick", "options": choices}]}


def _stems_group(subcommands: int) -> dict[str, object]:
    children = [
        {"type": 1, "name": f"mode-{i}", "description": f"Mode {i}"} for i in range(subcommands)
    ]
    return {"type": 1, "name": "stems", "description": "Split", "options": children}


async def test_option_counts_past_discords_limits_are_refused() -> None:
    """Like Discord, and without the OpenAPI description: a select of 26 options, six rows of
    buttons, or a command with 26 subcommands is a 400 (50035); 25 is fine."""
    async with DiscordEmulator(validate_spec=False) as emulator:
        guild = await emulator.add_guild()
        headers = {"Authorization": f"Bot {emulator.token}"}
        messages = f"{emulator.api_base}/channels/{guild.default_channel.id}/messages"
        commands_url = f"{emulator.api_base}/applications/{emulator.application_id}/commands"
        button_row = {
            "type": 1,
            "components": [
                {"type": 2, "style": 1, "label": "b", "custom_id": f"b{i}"} for i in range(5)
            ],
        }
        async with aiohttp.ClientSession(headers=headers) as http:
            refused = [
                await http.post(messages, json={"content": "x", "components": [_select(26)]}),
                await http.post(messages, json={"content": "x", "components": [button_row] * 6}),
                await http.put(commands_url, json=[_stems_group(26)]),
            ]
            for response in refused:
                assert response.status == 400
                assert (await response.json())["code"] == 50035
            accepted = [
                await http.post(messages, json={"content": "x", "components": [_select(25)]}),
                await http.put(commands_url, json=[_stems_group(25)]),
            ]
            assert [response.status for response in accepted] == [200, 200]
        assert len(emulator.channel_messages(guild.default_channel)) == 1


def test_command_rules_follow_discords_naming_and_lengths() -> None:
    """Names are lowercase, at most 32 characters; descriptions 1 to 100; choices at most 25."""
    good = _stems_group(3)
    assert rules.check_commands([good]) == []
    bad_name = {**good, "name": "Stems"}
    long_description = {**good, "description": "x" * 101}
    many_choices = {
        **good,
        "options": [
            {
                "type": 3,
                "name": "mode",
                "description": "which",
                "choices": [{"name": str(i), "value": str(i)} for i in range(26)],
            }
        ],
    }
    assert [path for path, _ in rules.check_commands([bad_name])] == [(0, "name")]
    assert [path for path, _ in rules.check_commands([long_description])] == [(0, "description")]
    assert [path for path, _ in rules.check_commands([many_choices])] == [
        (0, "options", 0, "choices")
    ]
