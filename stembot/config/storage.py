"""Settings of what the bot keeps: the ledger (a SQLite file or PostgreSQL, with the leases of
the processes sharing it), its retention, and the cache of stems on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stembot.config import kinds
from stembot.config.declaring import name_of, setting
from stembot.config.kinds import Kind
from stembot.config.values import DatabaseUrl

STORAGE = "Storage and logs"

# fmt: off
# (One setting to a few lines: name, default, kind and section, then its help.)


@dataclass(frozen=True)
class StorageSettings:
    """Storage: the ledger, the leases, retention, the cache."""

    db_path: Path = setting(
        "STEMBOT_DB_PATH", Path("stembot.db"), Kind(Path, "a file path"), STORAGE,
        "The SQLite file holding quotas, the usage ledger and stored results.",
    )
    database_url: DatabaseUrl | None = setting(
        "STEMBOT_DATABASE_URL", None,
        Kind(kinds.database_url, "a postgresql://user:password@host:port/database URL"), STORAGE,
        "Keep the ledger in this PostgreSQL database instead of the SQLite file (empty = "
        "STEMBOT_DB_PATH); its password is never logged. Several bot processes may share it.",
    )
    lease_s: float = setting(
        "STEMBOT_LEASE_S", 30.0, kinds.SECONDS, STORAGE,
        "PostgreSQL: a bot process that has not renewed its lease for this many seconds "
        "(crashed, frozen, or cut off from the database) is taken for gone: another process "
        "refunds or delivers its requests, and it stops if it comes back.",
    )
    heartbeat_s: float = setting(
        "STEMBOT_HEARTBEAT_S", 5.0, kinds.SECONDS, STORAGE,
        "PostgreSQL: how often each process renews its lease and looks for gone processes' "
        "requests (at most a third of STEMBOT_LEASE_S).",
    )
    db_busy_timeout_s: float = setting(
        "STEMBOT_DB_BUSY_TIMEOUT_S", 1.0, kinds.SECONDS, STORAGE,
        "How long a write waits for another process (the operator CLI, say) to release the "
        "database before the request is refused with \"busy, try again\". The bot waits inline "
        "(nothing else runs meanwhile), so keep it well under Discord's 3-second "
        "acknowledgement window.",
    )
    retention_days: int = setting(
        "STEMBOT_RETENTION_DAYS", 90, kinds.whole(0, "days", "0 keeps everything"), STORAGE,
        "Days to keep ledger rows and stored results (never this month's); 0 keeps everything.",
    )
    cache_dir: Path | None = setting(
        "STEMBOT_CACHE_DIR", None, Kind(Path, "a folder path"), STORAGE,
        "Folder for the stems and mixes fetched or made to attach (a cache: its files can go "
        "while the bot is stopped); empty = stembot-cache beside the database.",
    )
    cache_max_mb: int = setting(
        "STEMBOT_CACHE_MAX_MB", 2048, kinds.whole(1, "MB"), STORAGE,
        "Most the cache may hold, in MB; the least recently used files go first.",
    )
    max_stem_mb: float = setting(
        "STEMBOT_MAX_STEM_MB", 200.0, kinds.positive("MB"), STORAGE,
        "Largest stem file fetched to attach, in MB (a 10-minute 48 kHz 24-bit stereo WAV is "
        "about 165); a larger one stays a link.",
    )

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


def heartbeat_within_the_lease(settings: StorageSettings) -> list[str]:
    """A lease must outlive a late beat or two: a heartbeat of more than a third of it would
    lose it to a single slow renewal."""
    if settings.heartbeat_s * 3 <= settings.lease_s:
        return []
    beat = name_of(StorageSettings, "heartbeat_s")
    lease = name_of(StorageSettings, "lease_s")
    return [
        f"{beat} ({settings.heartbeat_s:g}) is more than a third of {lease} "
        f"({settings.lease_s:g}): lower {beat} or raise {lease}"
    ]
