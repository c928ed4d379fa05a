"""Settings of what members give: files' and links' limits, how a link is checked, how long
a result answers a repeat."""

from __future__ import annotations

from dataclasses import dataclass

from stembot.config import kinds
from stembot.config.declaring import setting
from stembot.config.kinds import Kind

_INPUTS = "Inputs"

# fmt: off
# (One setting to a few lines: name, default, kind and section, then its help.)


@dataclass(frozen=True)
class InputSettings:
    """Inputs: the limits of files and links, and repeats."""

    max_input_mb: float = setting(
        "STEMBOT_MAX_INPUT_MB", 10.0, kinds.positive("MB"), _INPUTS,
        "Largest input file or download accepted, in MB.",
    )
    allow_private_urls: bool = setting(
        "STEMBOT_ALLOW_PRIVATE_URLS", False, Kind(kinds.parse_bool, "true or false"), _INPUTS,
        "Allow URLs that resolve to private, loopback or other non-public addresses (only for "
        "testing).",
    )
    url_probe_timeout_s: float = setting(
        "STEMBOT_URL_PROBE_TIMEOUT_S", 20.0, kinds.SECONDS, _INPUTS,
        "Give up checking a user's link (type and size) after this many seconds.",
    )
    url_probes_per_member: int = setting(
        "STEMBOT_URL_PROBES_PER_MEMBER", 2, kinds.AT_LEAST_1, _INPUTS,
        "Links one member may have being checked at once; more are refused until one is answered.",
    )
    result_ttl_s: float = setting(
        "STEMBOT_RESULT_TTL", 86_400.0, kinds.SECONDS, _INPUTS,
        "Answer a repeat of the same source and mode from the stored result for this many seconds.",
    )

    @property
    def max_input_bytes(self) -> int:
        return int(self.max_input_mb * 1024 * 1024)

# fmt: on
