"""Settings: one immutable object built from an explicit mapping (normally the environment).

Every setting is declared once, on its field below (environ-config's style): its name, default,
kind (how its text is read, with its bounds), section and one line of help. `load_settings`
reads the declarations, `.env.example` is generated from them (`python -m stembot.config`),
and the CLI knows the names from them. `.env` is loaded by the entry point only (stembot.cli),
never at import. Every problem in the mapping is collected and raised together as one
ConfigError.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

from stembot.errors import ConfigError
from stembot.models import Mode
from stembot.source_urls import redact_url

T = TypeVar("T")


class Secret:
    """A string that never shows itself in a repr, str, log line or error message."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class DatabaseUrl:
    """A PostgreSQL URL (``postgresql://user:password@host:port/database``) that shows only its
    server and database in a repr, str, log line or error: never its credentials or options."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    @property
    def password(self) -> str | None:
        return urlsplit(self._value).password

    def __repr__(self) -> str:
        return f"DatabaseUrl({str(self)!r})"

    def __str__(self) -> str:
        return redact_url(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DatabaseUrl) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# --- kinds: how a setting's text becomes a value, and what it must be ------------------------


@dataclass(frozen=True)
class Kind(Generic[T]):
    """``parse`` raises ValueError for text that is no valid value; ``expected`` says what is."""

    parse: Callable[[str], T]
    expected: str


def _whole(at_least: int, unit: str = "", note: str = "") -> Kind[int]:
    def parse(text: str) -> int:
        number = int(text)
        if number < at_least:
            raise ValueError(text)
        return number

    of = f" of {unit}," if unit else " of"
    return Kind(parse, f"a whole number{of} at least {at_least}" + (f" ({note})" if note else ""))


def _positive(unit: str = "", at_most: float | None = None, why: str = "") -> Kind[float]:
    def parse(text: str) -> float:
        number = float(text)
        if not number > 0 or number == float("inf") or (at_most is not None and number > at_most):
            raise ValueError(text)
        return number

    expected = "a positive number" + (f" of {unit}" if unit else "")
    if at_most is not None:
        expected += f", at most {at_most:g}" + (f" ({why})" if why else "")
    return Kind(parse, expected)


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _snowflake(text: str) -> int:
    number = int(text)
    if number <= 0 or number >= 2**64:
        raise ValueError(text)
    return number


# Far beyond any bot (one shard per 1,000-2,500 servers); it bounds what a typo expands to.
_MAX_SHARD_ID = 99_999


def _shard_ids(text: str) -> tuple[int, ...]:
    """``0-3``, ``0,2,5`` or both (``0-1,4``): the shard ids, sorted, each once."""
    ids: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        low, high = int(first), int(last) if dash else int(first)
        if low < 0 or high < low or high > _MAX_SHARD_ID:
            raise ValueError(text)
        ids.update(range(low, high + 1))
    return tuple(sorted(ids))


def _port(text: str) -> int:
    number = int(text)
    if not 1 <= number <= 65_535:
        raise ValueError(text)
    return number


def _http_host(text: str) -> str:
    """An address or host name to listen on; no scheme, port or spaces."""
    if not text or any(c.isspace() or c in "/[]" for c in text):
        raise ValueError(text)
    return text


def _url(schemes: tuple[str, ...], expected: str) -> Kind[str]:
    def parse(text: str) -> str:
        parts = urlsplit(text)
        if parts.scheme not in schemes or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(text)
        return text.rstrip("/")

    return Kind(parse, expected)


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(text: str) -> str:
    upper = text.upper()
    if upper not in _LOG_LEVELS:
        raise ValueError(text)
    return upper


def _secret(what: str) -> Kind[Secret]:
    return Kind(Secret, what)


def _database_url(text: str) -> DatabaseUrl:
    if urlsplit(text).scheme not in ("postgresql", "postgres"):
        raise ValueError("not a PostgreSQL URL")  # the text itself is never shown
    return DatabaseUrl(text)


_HTTP_URL = _url(("http", "https"), "an http(s) URL")
_SECONDS = _positive("seconds")
_AT_LEAST_0 = _whole(0)
_AT_LEAST_1 = _whole(1)
# Discord's interaction token lives 15 minutes; an API call must give up well before that.
_MAX_API_TIMEOUT_S = 14 * 60


# --- the declaration -------------------------------------------------------------------------

# When a setting must be given: never (its default, or None, is fine), always, or when the
# command talks to Discord / Soundverse (load_settings' need_discord / need_soundverse).
Required = Literal["never", "always", "discord", "soundverse"]


@dataclass(frozen=True)
class Setting:
    """One setting as the operator meets it: in the environment, .env.example and errors."""

    name: str
    default: Any
    kind: Kind[Any]
    section: str
    help: str
    secret: bool = False
    required: Required = "never"


_SETTING = "stembot.setting"  # field metadata: the field's Setting
_GROUP = "stembot.group"  # field metadata: a dataclass of further settings
_PER_MODE = "stembot.per_mode"  # field metadata: Mode -> Setting, one setting per mode


def _setting(
    name: str,
    default: Any,
    kind: Kind[Any],
    section: str,
    help: str,
    *,
    secret: bool = False,
    required: Required = "never",
) -> Any:
    declared = Setting(name, default, kind, section, help, secret, required)
    return field(default=default, metadata={_SETTING: declared})


_DISCORD = "Discord"
_SOUNDVERSE = "Soundverse"
_INPUTS = "Inputs"
_QUOTAS = "Quotas (units; moderators can override per server)"
_CAPS = "The operator's caps (empty = none)"
_STORAGE = "Storage and logs"
_AUDIO = "Audio (playable stems, mixes, the picture)"
_OPERATIONS = "Operations (metrics and health over HTTP)"


def _cost(mode: Mode) -> Setting:
    """STEMBOT_COST_<MODE>, from the mode's line in models.py; no default there: required."""
    return Setting(
        f"STEMBOT_COST_{mode.name}",
        mode.default_cost,
        _AT_LEAST_0,
        _QUOTAS,
        "What each mode costs in units.",
        required="never" if mode.default_cost is not None else "always",
    )


def _default_costs() -> dict[Mode, int]:
    return {mode: mode.default_cost for mode in Mode if mode.default_cost is not None}


_CAPS_HELP = (
    "The highest daily / monthly limit a server's moderators may set (the defaults must fit)."
)


# fmt: off
# (One setting to a few lines: name, default, kind and section, then its help.)


@dataclass(frozen=True)
class QuotaPolicy:
    """Default limits (in units) and the cost of each mode; moderators override per guild."""

    guild_daily_limit: int = _setting(
        "STEMBOT_GUILD_DAILY_LIMIT", 50, _AT_LEAST_0, _QUOTAS,
        "Units a server may use per day (resets 00:00 UTC); 0 switches the bot off for servers.",
    )
    guild_monthly_limit: int = _setting(
        "STEMBOT_GUILD_MONTHLY_LIMIT", 500, _AT_LEAST_0, _QUOTAS,
        "Units a server may use per calendar month (resets on the 1st, 00:00 UTC).",
    )
    user_daily_limit: int = _setting(
        "STEMBOT_USER_DAILY_LIMIT", 10, _AT_LEAST_0, _QUOTAS,
        "Units one member may use per day in a server.",
    )
    user_active_jobs: int = _setting(
        "STEMBOT_USER_ACTIVE_JOBS", 1, _AT_LEAST_1, _QUOTAS,
        "Requests one member may have queued or running at once.",
    )
    costs: Mapping[Mode, int] = field(default_factory=_default_costs, metadata={_PER_MODE: _cost})
    # The operator's ceilings on what a server's moderators may set (None: no ceiling).
    max_guild_daily_limit: int | None = _setting(
        "STEMBOT_MAX_GUILD_DAILY_LIMIT", None, _AT_LEAST_0, _CAPS, _CAPS_HELP
    )
    max_guild_monthly_limit: int | None = _setting(
        "STEMBOT_MAX_GUILD_MONTHLY_LIMIT", None, _AT_LEAST_0, _CAPS, _CAPS_HELP
    )
    api_daily_budget: int | None = _setting(
        "STEMBOT_API_DAILY_BUDGET", None, _AT_LEAST_0, _CAPS,
        "Paid Soundverse calls per UTC day across all servers; then only repeats and shared calls.",
    )

    def cost_of(self, mode: Mode) -> int:
        return self.costs[mode]


@dataclass(frozen=True)
class Settings:
    """Everything the operator can set; fields in .env.example's order, section by section."""

    discord_token: Secret | None = _setting(
        "DISCORD_TOKEN", None, _secret("your bot's token from the Discord Developer Portal"),
        _DISCORD, "Your bot's token (Developer Portal -> your application -> Bot -> Reset Token).",
        secret=True, required="discord",
    )
    discord_api_base: str = _setting(
        "DISCORD_API_BASE", "https://discord.com/api/v10", _HTTP_URL, _DISCORD,
        "Discord's REST API base; change only for a REST proxy or local testing.",
    )
    discord_gateway_url: str = _setting(
        "DISCORD_GATEWAY_URL", "wss://gateway.discord.gg",
        _url(("ws", "wss"), "a ws:// or wss:// URL without a query"), _DISCORD,
        "Discord's gateway websocket URL (no query); change only for a gateway proxy or local "
        "testing.",
    )
    dev_guild_id: int | None = _setting(
        "STEMBOT_DEV_GUILD_ID", None, Kind(_snowflake, "a Discord server id (digits)"), _DISCORD,
        "Register commands in this one server only (instant updates while developing); "
        "empty = globally.",
    )
    shard_count: int | None = _setting(
        "STEMBOT_SHARD_COUNT", None, _AT_LEAST_1, _DISCORD,
        "Gateway shards of the whole bot (every process the same); empty = Discord's "
        "recommendation. Discord needs one per 2,500 servers.",
    )
    shard_ids: tuple[int, ...] | None = _setting(
        "STEMBOT_SHARD_IDS", None,
        Kind(_shard_ids, "shard ids such as 0-3 or 0,2,5 (from 0, below STEMBOT_SHARD_COUNT)"),
        _DISCORD,
        "The shards this process runs, e.g. 0-3 or 0,2,5 (needs STEMBOT_SHARD_COUNT); "
        "empty = all of them.",
    )
    soundverse_api_key: Secret | None = _setting(
        "SOUNDVERSE_API_KEY", None, _secret("your Soundverse API key"), _SOUNDVERSE,
        "Your Soundverse API key (soundverse.ai -> API).", secret=True, required="soundverse",
    )
    soundverse_api_base: str = _setting(
        "SOUNDVERSE_API_BASE", "https://api.soundverse.ai", _HTTP_URL, _SOUNDVERSE,
        "The API's base URL; change only for a proxy or the local stand-in.",
    )
    api_timeout_s: float = _setting(
        "STEMBOT_API_TIMEOUT_S", 600.0,
        _positive("seconds", _MAX_API_TIMEOUT_S, "Discord's interaction token lasts 15 minutes"),
        _SOUNDVERSE,
        f"Give up on one separation after this many seconds (at most {_MAX_API_TIMEOUT_S}: "
        "Discord's token lives 15 min).",
    )
    max_concurrent_jobs: int = _setting(
        "STEMBOT_MAX_CONCURRENT_JOBS", 4, _AT_LEAST_1, _SOUNDVERSE,
        "At most this many separations run at once; the rest wait in a fair queue. On "
        "PostgreSQL, all processes together (give every process the same value).",
    )
    shutdown_grace_s: float = _setting(
        "STEMBOT_SHUTDOWN_GRACE_S", 8.0, _SECONDS, _SOUNDVERSE,
        "On SIGTERM (docker stop), give running separations this long to finish before they "
        "are marked interrupted and refunded. Keep it below your stop timeout (docker's default "
        "is 10 s).",
    )
    max_input_mb: float = _setting(
        "STEMBOT_MAX_INPUT_MB", 10.0, _positive("MB"), _INPUTS,
        "Largest input file or download accepted, in MB.",
    )
    allow_private_urls: bool = _setting(
        "STEMBOT_ALLOW_PRIVATE_URLS", False, Kind(_bool, "true or false"), _INPUTS,
        "Allow URLs that resolve to private, loopback or other non-public addresses (only for "
        "testing).",
    )
    url_probe_timeout_s: float = _setting(
        "STEMBOT_URL_PROBE_TIMEOUT_S", 20.0, _SECONDS, _INPUTS,
        "Give up checking a user's link (type and size) after this many seconds.",
    )
    url_probes_per_member: int = _setting(
        "STEMBOT_URL_PROBES_PER_MEMBER", 2, _AT_LEAST_1, _INPUTS,
        "Links one member may have being checked at once; more are refused until one is answered.",
    )
    result_ttl_s: float = _setting(
        "STEMBOT_RESULT_TTL", 86_400.0, _SECONDS, _INPUTS,
        "Answer a repeat of the same source and mode from the stored result for this many seconds.",
    )
    attach_stems: bool = _setting(
        "STEMBOT_ATTACH_STEMS", True, Kind(_bool, "true or false"), _AUDIO,
        "Attach each result's stems as files Discord plays, with a picture of them and free "
        "mixes (each stem is downloaded once and worked on here); false: links only.",
    )
    audio_workers: int = _setting(
        "STEMBOT_AUDIO_WORKERS", 2, _AT_LEAST_1, _AUDIO,
        "Worker processes decoding, mixing, encoding and drawing at once (each ~1 core while "
        "busy, at low priority so the bot stays responsive); 2 suits a 2-core machine.",
    )
    quota: QuotaPolicy = field(default_factory=QuotaPolicy, metadata={_GROUP: QuotaPolicy})
    db_path: Path = _setting(
        "STEMBOT_DB_PATH", Path("stembot.db"), Kind(Path, "a file path"), _STORAGE,
        "The SQLite file holding quotas, the usage ledger and stored results.",
    )
    database_url: DatabaseUrl | None = _setting(
        "STEMBOT_DATABASE_URL", None,
        Kind(_database_url, "a postgresql://user:password@host:port/database URL"), _STORAGE,
        "Keep the ledger in this PostgreSQL database instead of the SQLite file (empty = "
        "STEMBOT_DB_PATH); its password is never logged. Several bot processes may share it.",
    )
    lease_s: float = _setting(
        "STEMBOT_LEASE_S", 30.0, _SECONDS, _STORAGE,
        "PostgreSQL: a bot process that has not renewed its lease for this many seconds "
        "(crashed, frozen, or cut off from the database) is taken for gone: another process "
        "refunds or delivers its requests, and it stops if it comes back.",
    )
    heartbeat_s: float = _setting(
        "STEMBOT_HEARTBEAT_S", 5.0, _SECONDS, _STORAGE,
        "PostgreSQL: how often each process renews its lease and looks for gone processes' "
        "requests (at most a third of STEMBOT_LEASE_S).",
    )
    db_busy_timeout_s: float = _setting(
        "STEMBOT_DB_BUSY_TIMEOUT_S", 1.0, _SECONDS, _STORAGE,
        "How long a write waits for another process (the operator CLI, say) to release the "
        "database before the request is refused with \"busy, try again\". The bot waits inline "
        "(nothing else runs meanwhile), so keep it well under Discord's 3-second "
        "acknowledgement window.",
    )
    retention_days: int = _setting(
        "STEMBOT_RETENTION_DAYS", 90, _whole(0, "days", "0 keeps everything"), _STORAGE,
        "Days to keep ledger rows and stored results (never this month's); 0 keeps everything.",
    )
    cache_dir: Path | None = _setting(
        "STEMBOT_CACHE_DIR", None, Kind(Path, "a folder path"), _STORAGE,
        "Folder for the stems and mixes fetched or made to attach (a cache: its files can go "
        "while the bot is stopped); empty = stembot-cache beside the database.",
    )
    cache_max_mb: int = _setting(
        "STEMBOT_CACHE_MAX_MB", 2048, _whole(1, "MB"), _STORAGE,
        "Most the cache may hold, in MB; the least recently used files go first.",
    )
    max_stem_mb: float = _setting(
        "STEMBOT_MAX_STEM_MB", 200.0, _positive("MB"), _STORAGE,
        "Largest stem file fetched to attach, in MB (a 10-minute 48 kHz 24-bit stereo WAV is "
        "about 165); a larger one stays a link.",
    )
    log_level: str = _setting(
        "STEMBOT_LOG_LEVEL", "INFO", Kind(_log_level, "one of " + ", ".join(_LOG_LEVELS)),
        _STORAGE, ", ".join(_LOG_LEVELS[:-1]) + f" or {_LOG_LEVELS[-1]}.",
    )
    http_port: int | None = _setting(
        "STEMBOT_HTTP_PORT", None, Kind(_port, "a TCP port number from 1 to 65535"), _OPERATIONS,
        "Serve /metrics (Prometheus) and /healthz (200 or 503) on this port; empty = no HTTP "
        "server. The Docker image sets 8080 for its health check.",
    )
    http_host: str = _setting(
        "STEMBOT_HTTP_HOST", "127.0.0.1", Kind(_http_host, "an address or host name to listen on"),
        _OPERATIONS,
        "The address /metrics and /healthz listen on: 127.0.0.1 keeps them on this machine "
        "(or container); 0.0.0.0 lets a Prometheus elsewhere scrape them.",
    )

    @property
    def max_input_bytes(self) -> int:
        return int(self.max_input_mb * 1024 * 1024)

    @property
    def cache_path(self) -> Path:
        """STEMBOT_CACHE_DIR, or ``stembot-cache`` in the database's folder."""
        if self.cache_dir is not None:
            return self.cache_dir
        return self.db_path.parent / "stembot-cache"

    @property
    def cache_max_bytes(self) -> int:
        return self.cache_max_mb * 1024 * 1024

    @property
    def max_stem_bytes(self) -> int:
        return int(self.max_stem_mb * 1024 * 1024)


# fmt: on


def declared_settings() -> Iterator[Setting]:
    """Every setting, in the order of the fields (and so of .env.example)."""
    return _declared_in(Settings)


def _declared_in(within: type[Any]) -> Iterator[Setting]:
    for f in fields(within):
        if _GROUP in f.metadata:
            yield from _declared_in(f.metadata[_GROUP])
        elif _PER_MODE in f.metadata:
            yield from (f.metadata[_PER_MODE](mode) for mode in Mode)
        else:
            yield f.metadata[_SETTING]


def setting_names() -> frozenset[str]:
    """Every setting name stembot reads (the CLI warns about STEMBOT_* names not among them)."""
    return frozenset(s.name for s in declared_settings())


def _name_of(within: type[Any], field_name: str) -> str:
    [declared] = [f.metadata[_SETTING] for f in fields(within) if f.name == field_name]
    name: str = declared.name
    return name


# --- reading the mapping ---------------------------------------------------------------------


class _Reader:
    """Reads each declared setting from the mapping, collecting every problem instead of
    stopping."""

    def __init__(self, env: Mapping[str, str], needed: Mapping[Required, bool]) -> None:
        self.env = env
        self.needed = needed
        self.problems: list[str] = []

    def read(self, setting: Setting) -> Any:
        value = self.env.get(setting.name)
        if value is None or value.strip() == "":
            if self.needed[setting.required]:
                self.problems.append(
                    f"{setting.name} is missing: set it to {setting.kind.expected}"
                )
            return setting.default
        try:
            return setting.kind.parse(value.strip())
        except ValueError:
            # Never echo the value: a misplaced secret must not reach the terminal.
            self.problems.append(f"{setting.name} must be {setting.kind.expected}")
            return setting.default

    def build(self, within: type[T]) -> T:
        """An instance of the dataclass ``within`` from its fields' declarations."""
        values: dict[str, Any] = {}
        for f in fields(within):  # type: ignore[arg-type]
            if _GROUP in f.metadata:
                values[f.name] = self.build(f.metadata[_GROUP])
            elif _PER_MODE in f.metadata:
                values[f.name] = {mode: self.read(f.metadata[_PER_MODE](mode)) for mode in Mode}
            else:
                values[f.name] = self.read(f.metadata[_SETTING])
        return within(**values)


def _defaults_above_ceilings(quota: QuotaPolicy) -> list[str]:
    """A default limit must itself be one a moderator could set."""
    problems = []
    for default_field, ceiling_field in (
        ("guild_daily_limit", "max_guild_daily_limit"),
        ("guild_monthly_limit", "max_guild_monthly_limit"),
    ):
        default, ceiling = getattr(quota, default_field), getattr(quota, ceiling_field)
        if ceiling is not None and default > ceiling:
            problems.append(
                f"{_name_of(QuotaPolicy, default_field)} ({default}) is above "
                f"{_name_of(QuotaPolicy, ceiling_field)} ({ceiling}): "
                f"lower the default or raise the ceiling"
            )
    return problems


def _shards_outside_the_count(settings: Settings) -> list[str]:
    """Every process must agree on the count, so a range needs it said, and within it."""
    ids, count = settings.shard_ids, settings.shard_count
    ids_name, count_name = _name_of(Settings, "shard_ids"), _name_of(Settings, "shard_count")
    if ids is None:
        return []
    if count is None:
        return [f"{ids_name} needs {count_name}: set the bot's total number of shards too"]
    outside = [shard for shard in ids if shard >= count]
    if outside:
        listed = ", ".join(map(str, outside))
        return [
            f"{ids_name} names shard(s) {listed}, but {count_name} is {count}: "
            f"shard ids go from 0 to {count - 1}"
        ]
    return []


def _heartbeat_within_the_lease(settings: Settings) -> list[str]:
    """A lease must outlive a late beat or two: a heartbeat of more than a third of it would
    lose it to a single slow renewal."""
    if settings.heartbeat_s * 3 <= settings.lease_s:
        return []
    beat, lease = _name_of(Settings, "heartbeat_s"), _name_of(Settings, "lease_s")
    return [
        f"{beat} ({settings.heartbeat_s:g}) is more than a third of {lease} "
        f"({settings.lease_s:g}): lower {beat} or raise {lease}"
    ]


def load_settings(
    env: Mapping[str, str], *, need_discord: bool = False, need_soundverse: bool = False
) -> Settings:
    """Build Settings from ``env``; raise one ConfigError naming every problem."""
    needed: dict[Required, bool] = {
        "never": False,
        "always": True,
        "discord": need_discord,
        "soundverse": need_soundverse,
    }
    reader = _Reader(env, needed)
    settings = reader.build(Settings)
    reader.problems += _defaults_above_ceilings(settings.quota)
    reader.problems += _shards_outside_the_count(settings)
    reader.problems += _heartbeat_within_the_lease(settings)
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings


# --- .env.example ----------------------------------------------------------------------------

_ENV_EXAMPLE_HEAD = """\
# stembot settings. Copy to .env and fill in the two secrets.
# Every other setting is shown commented out, with its default: remove the "# " to change it.
# Left commented, a default never overrides one set elsewhere (the Docker image keeps its
# database on the /data volume). The process environment wins over this file.
"""
_RULE_WIDTH = 93
_TEXT_WIDTH = 98


def _shown(value: Any) -> str:
    """A default as the operator would write it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def env_example() -> str:
    """.env.example as generated from the declarations (tests/test_config.py checks the file)."""
    lines = [_ENV_EXAMPLE_HEAD.rstrip("\n")]
    section = shown_help = None
    for setting in declared_settings():
        if setting.section != section:
            section, shown_help = setting.section, None
            lines += ["", f"# --- {section} ".ljust(_RULE_WIDTH, "-")]
        # Settings that share their help (the costs, the caps) show it once, above them all.
        if setting.help != shown_help:
            shown_help = setting.help
            text = setting.help + (" Secret." if setting.secret else "")
            lines += textwrap.wrap(text, _TEXT_WIDTH, initial_indent="# ", subsequent_indent="# ")
        if setting.secret:
            lines.append(f"{setting.name}=")
        else:
            lines.append(f"# {setting.name}={_shown(setting.default)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(env_example(), end="")
