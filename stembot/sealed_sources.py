"""A queued call's source link, sealed for the ledger, so that a later start of the bot, or
another process on a shared ledger, can still make the call (issue 14: a stopped or dead
process's queued calls are handed over rather than refunded).

A signed link is a credential: it never reaches the database in the clear. It is encrypted and
authenticated (AES-GCM) with a key derived by HKDF from the Soundverse API key, which every
process that makes calls holds anyway, and bound to its request's source key and mode (the
associated data), so a sealed value copied onto another row opens for nothing. A key that
cannot open it (the API key was rotated since) gives None: that request is refunded as before.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Fixed: changing it makes every sealed link unreadable (their requests are then refunded).
_INFO = b"stembot sealed source link v1"
_NONCE_BYTES = 12
# A version byte ahead of the nonce: a later format can be told apart.
_VERSION = b"\x01"


class SourceSeal:
    """Seals and opens source links with the key derived from ``api_key``."""

    __slots__ = ("_aead",)

    def __init__(self, api_key: str) -> None:
        if not api_key:
            raise ValueError("sealing source links needs the Soundverse API key")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
            api_key.encode()
        )
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SourceSeal(<key hidden>)"

    def seal(self, url: str, source_key: str, mode: str) -> str:
        """``url`` encrypted for the row of ``source_key`` and ``mode``, as text."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, url.encode(), _bound_to(source_key, mode))
        return base64.urlsafe_b64encode(_VERSION + nonce + sealed).decode("ascii")

    def open(self, sealed: str, source_key: str, mode: str) -> str | None:
        """The link sealed for this row, or None when this key cannot open it (a rotated
        API key, a value altered or moved to another row)."""
        try:
            raw = base64.urlsafe_b64decode(sealed.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return None
        if raw[:1] != _VERSION or len(raw) <= 1 + _NONCE_BYTES:
            return None
        nonce, body = raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, _bound_to(source_key, mode)).decode()
        except (InvalidTag, UnicodeDecodeError):
            return None


def _bound_to(source_key: str, mode: str) -> bytes:
    return f"{mode}\n{source_key}".encode()
