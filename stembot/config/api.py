"""Settings of the Soundverse API and its calls: the key, where the API is, how long a call
may take, how many run at once."""

from __future__ import annotations

from dataclasses import dataclass

from stembot.config import kinds
from stembot.config.declaring import setting
from stembot.config.values import Secret

_SOUNDVERSE = "Soundverse"
# Discord's interaction token lives 15 minutes; an API call must give up well before that.
_MAX_API_TIMEOUT_S = 14 * 60

# fmt: off
# (One setting to a few lines: name, default, kind and section, then its help.)


@dataclass(frozen=True)
class ApiSettings:
    """Soundverse: the API and its calls."""

    soundverse_api_key: Secret | None = setting(
        "SOUNDVERSE_API_KEY", None, kinds.secret("your Soundverse API key"), _SOUNDVERSE,
        "Your Soundverse API key (soundverse.ai -> API).", secret=True, required="soundverse",
    )
    soundverse_api_base: str = setting(
        "SOUNDVERSE_API_BASE", "https://api.soundverse.ai", kinds.HTTP_URL, _SOUNDVERSE,
        "The API's base URL; change only for a proxy or the local stand-in.",
    )
    api_timeout_s: float = setting(
        "STEMBOT_API_TIMEOUT_S", 600.0,
        kinds.positive(
            "seconds", _MAX_API_TIMEOUT_S, "Discord's interaction token lasts 15 minutes"
        ),
        _SOUNDVERSE,
        f"Give up on one separation after this many seconds (at most {_MAX_API_TIMEOUT_S}: "
        "Discord's token lives 15 min).",
    )
    max_concurrent_jobs: int = setting(
        "STEMBOT_MAX_CONCURRENT_JOBS", 4, kinds.AT_LEAST_1, _SOUNDVERSE,
        "At most this many separations run at once; the rest wait in a fair queue. On "
        "PostgreSQL, all processes together (give every process the same value).",
    )
    shutdown_grace_s: float = setting(
        "STEMBOT_SHUTDOWN_GRACE_S", 8.0, kinds.SECONDS, _SOUNDVERSE,
        "On SIGTERM (docker stop), give running separations this long to finish before they "
        "are marked interrupted and refunded. Keep it below your stop timeout (docker's default "
        "is 10 s).",
    )

# fmt: on
