"""Settings: one immutable object built from an explicit mapping (normally the environment).

`.env` is loaded by the entry point only (stembot.cli), never at import. Every problem in the
mapping is collected and raised together as one ConfigError.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from stembot.errors import ConfigError
from stembot.models import Mode

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


@dataclass(frozen=True)
class QuotaPolicy:
    """Default limits (in units) and the cost of each mode; moderators override per guild."""

    guild_daily_limit: int = 50
    guild_monthly_limit: int = 500
    user_daily_limit: int = 10
    user_active_jobs: int = 1
    costs: Mapping[Mode, int] = field(
        default_factory=lambda: {m: m.default_cost for m in Mode if m.default_cost is not None}
    )
    # The operator's ceilings on what a server's moderators may set (None: no ceiling).
    max_guild_daily_limit: int | None = None
    max_guild_monthly_limit: int | None = None
    # Paid API calls per UTC day across all servers (None: no budget).
    api_daily_budget: int | None = None

    def cost_of(self, mode: Mode) -> int:
        return self.costs[mode]


@dataclass(frozen=True)
class Settings:
    discord_token: Secret | None = None
    discord_api_base: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg"
    soundverse_api_key: Secret | None = None
    soundverse_api_base: str = "https://api.soundverse.ai"
    db_path: Path = Path("stembot.db")
    api_timeout_s: float = 600.0
    max_concurrent_jobs: int = 4
    max_input_mb: float = 10.0
    allow_private_urls: bool = False
    log_level: str = "INFO"
    dev_guild_id: int | None = None
    result_ttl_s: float = 86_400.0
    # Ledger rows and stored results older than this go (never the current month); 0 keeps all.
    retention_days: int = 90
    shutdown_grace_s: float = 8.0
    # Store calls run on the event loop: a locked database stalls the whole bot this long.
    db_busy_timeout_s: float = 1.0
    url_probe_timeout_s: float = 20.0
    # Links one member may have being checked at once (the probe slots are shared).
    url_probes_per_member: int = 2
    quota: QuotaPolicy = field(default_factory=QuotaPolicy)

    @property
    def max_input_bytes(self) -> int:
        return int(self.max_input_mb * 1024 * 1024)


# Discord's interaction token lives 15 minutes; an API call must give up well before that.
_MAX_API_TIMEOUT_S = 14 * 60
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Reader:
    """Reads typed values from the mapping, collecting every problem instead of stopping."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def typed(self, name: str, parse: Callable[[str], T], default: T, expected: str) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError:
            # Never echo the value: a misplaced secret must not reach the terminal.
            self.problems.append(f"{name} must be {expected}")
            return default

    def secret(self, name: str, required: bool, what: str) -> Secret | None:
        value = self.raw(name)
        if value is None:
            if required:
                self.problems.append(f"{name} is missing: set it to {what}")
            return None
        return Secret(value)


def _positive_int(text: str) -> int:
    number = int(text)
    if number < 1:
        raise ValueError(text)
    return number


def _non_negative_int(text: str) -> int:
    number = int(text)
    if number < 0:
        raise ValueError(text)
    return number


def _positive_float(text: str) -> float:
    number = float(text)
    if not number > 0 or number == float("inf"):
        raise ValueError(text)
    return number


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


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        parts = urlsplit(text)
        if parts.scheme not in schemes or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(text)
        return text.rstrip("/")

    return parse


def _log_level(text: str) -> str:
    upper = text.upper()
    if upper not in _LOG_LEVELS:
        raise ValueError(text)
    return upper


def _defaults_above_ceilings(quota: QuotaPolicy) -> list[str]:
    """A default limit must itself be one a moderator could set."""
    problems = []
    for default, ceiling, default_name, ceiling_name in (
        (
            quota.guild_daily_limit,
            quota.max_guild_daily_limit,
            "STEMBOT_GUILD_DAILY_LIMIT",
            "STEMBOT_MAX_GUILD_DAILY_LIMIT",
        ),
        (
            quota.guild_monthly_limit,
            quota.max_guild_monthly_limit,
            "STEMBOT_GUILD_MONTHLY_LIMIT",
            "STEMBOT_MAX_GUILD_MONTHLY_LIMIT",
        ),
    ):
        if ceiling is not None and default > ceiling:
            problems.append(
                f"{default_name} ({default}) is above {ceiling_name} ({ceiling}): "
                f"lower the default or raise the ceiling"
            )
    return problems


def load_settings(
    env: Mapping[str, str], *, need_discord: bool = False, need_soundverse: bool = False
) -> Settings:
    """Build Settings from ``env``; raise one ConfigError naming every problem."""
    r = _Reader(env)
    d = Settings()
    q = QuotaPolicy()
    http = ("http", "https")
    values: dict[str, Any] = {
        "discord_token": r.secret(
            "DISCORD_TOKEN", need_discord, "your bot's token from the Discord Developer Portal"
        ),
        "discord_api_base": r.typed(
            "DISCORD_API_BASE", _url(http), d.discord_api_base, "an http(s) URL"
        ),
        "discord_gateway_url": r.typed(
            "DISCORD_GATEWAY_URL",
            _url(("ws", "wss")),
            d.discord_gateway_url,
            "a ws:// or wss:// URL without a query",
        ),
        "soundverse_api_key": r.secret(
            "SOUNDVERSE_API_KEY", need_soundverse, "your Soundverse API key"
        ),
        "soundverse_api_base": r.typed(
            "SOUNDVERSE_API_BASE", _url(http), d.soundverse_api_base, "an http(s) URL"
        ),
        "db_path": r.typed("STEMBOT_DB_PATH", Path, d.db_path, "a file path"),
        "api_timeout_s": r.typed(
            "STEMBOT_API_TIMEOUT_S", _positive_float, d.api_timeout_s, "a positive number"
        ),
        "max_concurrent_jobs": r.typed(
            "STEMBOT_MAX_CONCURRENT_JOBS",
            _positive_int,
            d.max_concurrent_jobs,
            "a whole number of at least 1",
        ),
        "max_input_mb": r.typed(
            "STEMBOT_MAX_INPUT_MB", _positive_float, d.max_input_mb, "a positive number"
        ),
        "allow_private_urls": r.typed(
            "STEMBOT_ALLOW_PRIVATE_URLS", _bool, d.allow_private_urls, "true or false"
        ),
        "log_level": r.typed(
            "STEMBOT_LOG_LEVEL", _log_level, d.log_level, "one of " + ", ".join(_LOG_LEVELS)
        ),
        "dev_guild_id": r.typed(
            "STEMBOT_DEV_GUILD_ID", _snowflake, d.dev_guild_id, "a Discord server id (digits)"
        ),
        "shutdown_grace_s": r.typed(
            "STEMBOT_SHUTDOWN_GRACE_S",
            _positive_float,
            d.shutdown_grace_s,
            "a positive number of seconds",
        ),
        "result_ttl_s": r.typed(
            "STEMBOT_RESULT_TTL", _positive_float, d.result_ttl_s, "a positive number of seconds"
        ),
        "db_busy_timeout_s": r.typed(
            "STEMBOT_DB_BUSY_TIMEOUT_S",
            _positive_float,
            d.db_busy_timeout_s,
            "a positive number of seconds",
        ),
        "retention_days": r.typed(
            "STEMBOT_RETENTION_DAYS",
            _non_negative_int,
            d.retention_days,
            "a whole number of days (0 keeps everything)",
        ),
        "url_probe_timeout_s": r.typed(
            "STEMBOT_URL_PROBE_TIMEOUT_S",
            _positive_float,
            d.url_probe_timeout_s,
            "a positive number of seconds",
        ),
        "url_probes_per_member": r.typed(
            "STEMBOT_URL_PROBES_PER_MEMBER",
            _positive_int,
            d.url_probes_per_member,
            "a whole number of at least 1",
        ),
    }
    limit = "a whole number of at least 0"
    quota = QuotaPolicy(
        guild_daily_limit=r.typed(
            "STEMBOT_GUILD_DAILY_LIMIT", _non_negative_int, q.guild_daily_limit, limit
        ),
        guild_monthly_limit=r.typed(
            "STEMBOT_GUILD_MONTHLY_LIMIT", _non_negative_int, q.guild_monthly_limit, limit
        ),
        user_daily_limit=r.typed(
            "STEMBOT_USER_DAILY_LIMIT", _non_negative_int, q.user_daily_limit, limit
        ),
        user_active_jobs=r.typed(
            "STEMBOT_USER_ACTIVE_JOBS",
            _positive_int,
            q.user_active_jobs,
            "a whole number of at least 1",
        ),
        costs={
            mode: r.typed(f"STEMBOT_COST_{mode.name}", _non_negative_int, q.cost_of(mode), limit)
            for mode in Mode
        },
        max_guild_daily_limit=r.typed(
            "STEMBOT_MAX_GUILD_DAILY_LIMIT", _non_negative_int, q.max_guild_daily_limit, limit
        ),
        max_guild_monthly_limit=r.typed(
            "STEMBOT_MAX_GUILD_MONTHLY_LIMIT", _non_negative_int, q.max_guild_monthly_limit, limit
        ),
        api_daily_budget=r.typed(
            "STEMBOT_API_DAILY_BUDGET", _non_negative_int, q.api_daily_budget, limit
        ),
    )
    r.problems += _defaults_above_ceilings(quota)
    if values["api_timeout_s"] > _MAX_API_TIMEOUT_S:
        r.problems.append(
            f"STEMBOT_API_TIMEOUT_S must be at most {_MAX_API_TIMEOUT_S} "
            "(Discord's interaction token lasts 15 minutes)"
        )
    if r.problems:
        raise ConfigError(r.problems)
    return Settings(**values, quota=quota)


class _RecordingEnv(Mapping[str, str]):
    """An empty mapping that remembers every name asked of it."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def setting_names() -> frozenset[str]:
    """Every setting name load_settings reads, learned by watching it read (no list to keep)."""
    recorder = _RecordingEnv()
    # The defaults may not make a complete configuration; the names are asked for regardless.
    with contextlib.suppress(ConfigError):
        load_settings(recorder)
    return frozenset(recorder.asked)
