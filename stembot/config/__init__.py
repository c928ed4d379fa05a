"""Settings: one immutable object built from an explicit mapping (normally the environment).

Every setting is declared once, on its field in the module of its concern (environ-config's
style): its name, default, kind (how its text is read, with its bounds: kinds.py), section and
one line of help (declaring.py). Settings joins the groups into one object with flat names
(``settings.db_path``). `load_settings` reads the declarations, `.env.example` is generated
from them (`python -m stembot.config`), and the CLI knows the names from them. `.env` is loaded
by the entry point only (stembot.cli), never at import. Every problem in the mapping is
collected and raised together as one ConfigError.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from stembot.config import env_example as _env_example
from stembot.config.api import ApiSettings
from stembot.config.audio import AudioSettings
from stembot.config.declaring import Required, Setting, declared_in
from stembot.config.discord import DiscordSettings, shards_outside_the_count
from stembot.config.inputs import InputSettings
from stembot.config.kinds import Kind
from stembot.config.operations import OperationsSettings
from stembot.config.quota import QuotaPolicy, QuotaSettings, defaults_above_ceilings
from stembot.config.reading import Reader
from stembot.config.storage import StorageSettings, heartbeat_within_the_lease
from stembot.config.values import DatabaseUrl, Secret
from stembot.errors import ConfigError

__all__ = [
    "DatabaseUrl",
    "Kind",
    "QuotaPolicy",
    "Secret",
    "Setting",
    "Settings",
    "declared_settings",
    "env_example",
    "load_settings",
    "setting_names",
]


# The groups last to first: a dataclass's fields run from its last base to its first, and that
# is .env.example's order, section by section.
@dataclass(frozen=True)
class Settings(
    OperationsSettings,
    StorageSettings,
    QuotaSettings,
    AudioSettings,
    InputSettings,
    ApiSettings,
    DiscordSettings,
):
    """Everything the operator can set."""


def declared_settings() -> Iterator[Setting]:
    """Every setting, in the order of the fields (and so of .env.example)."""
    return declared_in(Settings)


def setting_names() -> frozenset[str]:
    """Every setting name stembot reads (the CLI warns about STEMBOT_* names not among them)."""
    return frozenset(s.name for s in declared_settings())


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
    reader = Reader(env, needed)
    settings = reader.build(Settings)
    reader.problems += defaults_above_ceilings(settings.quota)
    reader.problems += shards_outside_the_count(settings)
    reader.problems += heartbeat_within_the_lease(settings)
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings


def env_example() -> str:
    """.env.example as generated from the declarations (tests/test_config.py checks the file)."""
    return _env_example.render(declared_settings())
