"""What a cached file is keyed by, and the names that key gives it on disk. Plain values.

A file belongs to one stored result (a row of ``results``: source key, mode and the moment the
API issued it) and is one item of it: a stem by its name, or a mix by the set of stems mixed
(and how it was encoded). The names are derived from the key alone, so a cache rebuilt from the
disk after a restart finds the same files, and retention can tell a result's age from its
folder's name without asking the database.

    <cache dir>/<issued, UTC, fixed width>-<digest of the result>/<kind>-<digest of the item>.<ext>
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from stembot.models import Separation
from stembot.windows import stamp, utc

_ISSUED_FORMAT: Final = "%Y%m%dT%H%M%S%fZ"
FOLDER_NAME: Final = re.compile(r"(?P<issued>\d{8}T\d{12}Z)-[0-9a-f]{24}")
FILE_NAME: Final = re.compile(
    r"(?P<item>(?:stem|mix|picture|analysis)-[0-9a-f]{24})\.(?P<ext>[a-z0-9]{1,8})"
)
EXTENSION: Final = re.compile(r"[a-z0-9]{1,8}")


def issued_prefix(moment: datetime) -> str:
    """The start of the folder name of results issued at ``moment``: sorts like the moments."""
    return utc(moment).strftime(_ISSUED_FORMAT)


@dataclass(frozen=True, slots=True)
class ResultKey:
    """One stored result, as the ledger's ``results`` row names it."""

    source_key: str
    mode: str
    issued_at: datetime

    @classmethod
    def of(cls, source_key: str, separation: Separation) -> ResultKey:
        return cls(source_key, separation.mode.value, separation.issued_at)

    @property
    def folder(self) -> str:
        """The folder of this result's files. The source key is hashed: fixed width and no
        character a file system could object to."""
        text = "\0".join((self.source_key, self.mode, stamp(self.issued_at)))
        return f"{issued_prefix(self.issued_at)}-{_digest(text)}"


@dataclass(frozen=True, slots=True)
class CacheItem:
    """One file of a result: a stem, a mix of a set of stems, the picture of a set of stems or
    the analysis behind it (``variant``: how it was made, e.g. its encoding, when the same set
    can be made more than one way)."""

    kind: Literal["stem", "mix", "picture", "analysis"]
    stems: tuple[str, ...]
    variant: str = ""

    @classmethod
    def stem(cls, name: str) -> CacheItem:
        return cls("stem", (name,))

    @classmethod
    def mix(cls, stems: tuple[str, ...] | list[str] | set[str], variant: str = "") -> CacheItem:
        """The mix of ``stems``: the same set in any order is the same mix."""
        return cls("mix", tuple(sorted(set(stems))), variant)

    @classmethod
    def picture(cls, stems: tuple[str, ...]) -> CacheItem:
        """The PNG of these stems, in this order (the lanes' order)."""
        return cls("picture", stems)

    @classmethod
    def analysis(cls, stems: tuple[str, ...]) -> CacheItem:
        """What the picture shows of each stem (length, silent or not), as JSON."""
        return cls("analysis", stems)

    @property
    def file_stem(self) -> str:
        """The file's name without its extension (the extension is the file's format)."""
        text = "\0".join((self.kind, self.variant, *self.stems))
        return f"{self.kind}-{_digest(text)}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]
