"""Input checks that run before anything is spent, and guarded probes of user-supplied URLs.

Plain values in, plain values out: nothing here knows about Discord. Every refusal is an
InvalidSourceError whose message says what was wrong and what to do.

Which URL the API gets: the user's original URL (or the attachment URL exactly as Discord
gave it), never a copy re-hosted by stembot. The probe only looks; ``ProbedSource.url`` is what
to hand on, ``final_url`` is where the redirects ended and is only informative.

The URL guard lives in the connector, not in the probe, because only there is the address that
is about to be connected known: the resolver refuses a name if any of its answers is not
allowed, and the socket factory refuses every non-allowed address the instant before a socket
is made for it (which also covers IP literals, which aiohttp never sends to the resolver). So
there is no gap between checking an address and connecting to it, on every redirect hop.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from stembot.address_policy import AddressPolicy as AddressPolicy
from stembot.address_policy import IPAddress as IPAddress
from stembot.address_policy import embedded_ipv4 as embedded_ipv4
from stembot.address_policy import is_global_address as is_global_address
from stembot.address_policy import parse_address as parse_address
from stembot.errors import InvalidSourceError

log = logging.getLogger(__name__)


FORMATS_HINT: Final = "mp3, wav, flac, ogg/opus, m4a/aac"
MAX_URL_LENGTH: Final = 2048

# ---------------------------------------------------------------------------------------------
# Audio formats and what other files are called
# ---------------------------------------------------------------------------------------------

_AUDIO_EXTENSIONS: Final[Mapping[str, str]] = {
    "mp3": "mp3",
    "wav": "wav",
    "wave": "wav",
    "flac": "flac",
    "ogg": "ogg",
    "oga": "ogg",
    "opus": "opus",
    "m4a": "m4a",
    "aac": "aac",
}

_AUDIO_TYPES: Final[Mapping[str, str]] = {
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mpeg3": "mp3",
    "audio/x-mpeg": "mp3",
    "audio/x-mpeg-3": "mp3",
    "audio/x-mp3": "mp3",
    "audio/wav": "wav",
    "audio/wave": "wav",
    "audio/x-wav": "wav",
    "audio/vnd.wave": "wav",
    "audio/x-pn-wav": "wav",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/ogg": "ogg",
    "audio/x-ogg": "ogg",
    "audio/vorbis": "ogg",
    "audio/opus": "opus",
    "audio/mp4": "m4a",
    "audio/m4a": "m4a",
    "audio/x-m4a": "m4a",
    "audio/aac": "aac",
    "audio/x-aac": "aac",
    "audio/aacp": "aac",
    "audio/x-hx-aac-adts": "aac",
}

# Generic or container types that say nothing either way: the extension decides.
_UNINFORMATIVE_TYPES: Final = frozenset(
    {
        "application/octet-stream",
        "binary/octet-stream",
        "application/binary",
        "application/x-download",
        "application/force-download",
        "application/download",
        "application/ogg",
        "video/ogg",
        "video/mp4",
    }
)

_TYPE_NAMES: Final[Mapping[str, str]] = {
    "image/png": "a PNG image",
    "image/jpeg": "a JPEG image",
    "image/gif": "a GIF image",
    "image/webp": "a WebP image",
    "image/svg+xml": "an SVG image",
    "video/mp4": "an MP4 video",
    "video/quicktime": "a QuickTime video",
    "video/webm": "a WebM video",
    "text/html": "a web page",
    "application/xhtml+xml": "a web page",
    "text/plain": "a text file",
    "application/json": "a JSON file",
    "application/pdf": "a PDF document",
    "application/zip": "a ZIP archive",
}

_EXTENSION_NAMES: Final[Mapping[str, str]] = {
    "png": "a PNG image",
    "jpg": "a JPEG image",
    "jpeg": "a JPEG image",
    "gif": "a GIF image",
    "webp": "a WebP image",
    "mp4": "an MP4 video",
    "mov": "a QuickTime video",
    "webm": "a WebM video",
    "mkv": "a video",
    "avi": "a video",
    "html": "a web page",
    "htm": "a web page",
    "txt": "a text file",
    "json": "a JSON file",
    "pdf": "a PDF document",
    "zip": "a ZIP archive",
    "mid": "a MIDI file",
    "midi": "a MIDI file",
}

_FAMILY_NAMES: Final[Mapping[str, str]] = {
    "image": "an image",
    "video": "a video",
    "text": "a text file",
}

# A content type is echoed to the user only when it looks like one (it may come from a server).
_SAFE_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,40}/[a-z0-9][a-z0-9.+-]{0,60}")
_SAFE_EXTENSION = re.compile(r"[a-z0-9]{1,8}")


def media_type(content_type: str | None) -> str | None:
    """``'Audio/MPEG; charset=x'`` -> ``'audio/mpeg'``; empty -> None."""
    if not content_type:
        return None
    bare = content_type.split(";", 1)[0].strip().lower()
    return bare or None


def extension_of(name: str | None) -> str | None:
    """The lower-cased extension of a file name or URL path, without the dot."""
    if not name:
        return None
    base = name.rsplit("/", 1)[-1]
    if "." not in base.strip("."):
        return None
    return base.rsplit(".", 1)[-1].lower() or None


def audio_format_of(content_type: str | None, extension: str | None) -> str | None:
    """The audio format named by the content type or the extension, else None."""
    return _AUDIO_TYPES.get(content_type or "") or _AUDIO_EXTENSIONS.get(extension or "")


def describe_non_audio(content_type: str | None, extension: str | None) -> str | None:
    """What a file that is not usable audio is ("a PNG image"), or None when unknown.

    Phrased to follow both "That file is" and "That link leads to".
    """
    informative = content_type if content_type not in _UNINFORMATIVE_TYPES else None
    if informative:
        if informative in _TYPE_NAMES:
            return _TYPE_NAMES[informative]
        family = informative.split("/", 1)[0]
        shown = informative if _SAFE_MEDIA_TYPE.fullmatch(informative) else None
        if family == "audio":
            return (
                f"an unsupported audio format ({shown})" if shown else "an unsupported audio format"
            )
        if family in _FAMILY_NAMES:
            return _FAMILY_NAMES[family]
        if shown:
            return f"{_article(shown)} {shown} file"
    named = _EXTENSION_NAMES.get(extension or "") or _TYPE_NAMES.get(content_type or "")
    if named:
        return named
    if extension and _SAFE_EXTENSION.fullmatch(extension):
        return f"a .{extension} file"
    return None


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


_MPEG_AUDIO_BRANDS: Final = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "})


def sniff_audio_format(head: bytes) -> str | None:
    """The audio format the first bytes of a file prove, else None."""
    if head.startswith(b"ID3"):
        return "mp3"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"OggS"):
        return "opus" if b"OpusHead" in head[:64] else "ogg"
    if head[4:8] == b"ftyp" and head[8:12] in _MPEG_AUDIO_BRANDS:
        return "m4a"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG frame sync; layer bits 00 there mean an ADTS (AAC) header instead.
        return "aac" if head[1] & 0x06 == 0 else "mp3"
    return None


def sniff_non_audio(head: bytes) -> str | None:
    """What the first bytes of a file prove it is when that is not audio, else None."""
    signatures = (
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"%PDF-", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive"),
    )
    for magic, name in signatures:
        if head.startswith(magic):
            return name
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a WebP image"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "a video"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "a web page"
    return None


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------

_KB: Final = 1024
_MB: Final = 1024 * 1024


def _size_text(number: int, unit: int, label: str, scale: int, round_up: bool) -> str:
    scaled = -(-number * scale // unit) if round_up else number * scale // unit
    whole, part = divmod(scaled, scale)
    digits = str(part).rjust(len(str(scale)) - 1, "0").rstrip("0")
    return f"{whole}.{digits} {label}" if digits else f"{whole} {label}"


def describe_size(number: int, *, round_up: bool = False) -> str:
    """``24536678`` -> ``'23.4 MB'`` (1 MB = 1024 KiB, as STEMBOT_MAX_INPUT_MB counts).

    A file's size is rounded up and a limit down, so a file just over a limit never reads as
    equal to it.
    """
    if number >= _MB:
        return _size_text(number, _MB, "MB", 10 if round_up else 100, round_up)
    if number >= _KB:
        return _size_text(number, _KB, "KB", 10 if round_up else 100, round_up)
    return f"{number} bytes"


def _too_large_message(size: int, max_bytes: int) -> str:
    return (
        f"That file is {describe_size(size, round_up=True)}; the limit is "
        f"{describe_size(max_bytes)}. Send a shorter clip or a compressed format such as mp3."
    )


# ---------------------------------------------------------------------------------------------
# Attachments
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioSource:
    """An attachment that passed the checks. The API gets its URL exactly as Discord gave it."""

    filename: str
    content_type: str | None
    size: int
    audio_format: str


def require_one_source(has_file: bool, has_url: bool) -> None:
    """Exactly one of ``file:`` and ``url:`` must be given."""
    if has_file and has_url:
        raise InvalidSourceError("Give either a file or a url, not both.")
    if not has_file and not has_url:
        raise InvalidSourceError(
            "Attach an audio file with `file:` or paste a link to one with `url:`."
        )


def check_attachment(
    filename: str, content_type: str | None, size: int, max_bytes: int
) -> AudioSource:
    """Refuse an attachment that is not audio we can use or is too large; spends nothing."""
    if size < 0 or max_bytes < 1:
        raise ValueError("size must be >= 0 and max_bytes >= 1")
    declared = media_type(content_type)
    extension = extension_of(filename)
    audio_format = audio_format_of(declared, extension)
    if audio_format is None:
        what = describe_non_audio(declared, extension)
        raise InvalidSourceError(
            f"That file is {what or 'of a type stembot does not know'}; "
            f"send an audio file ({FORMATS_HINT})."
        )
    if size == 0:
        raise InvalidSourceError(f"That file is empty; send an audio file ({FORMATS_HINT}).")
    if size > max_bytes:
        raise InvalidSourceError(_too_large_message(size, max_bytes))
    return AudioSource(filename, declared, size, audio_format)


def source_key_for_attachment(attachment_id: int) -> str:
    """The reuse key of a Discord attachment: its id, which outlives its signed URL."""
    return f"attachment:{attachment_id}"


# ---------------------------------------------------------------------------------------------
# URL syntax, reuse keys, redaction
# ---------------------------------------------------------------------------------------------

_UNSAFE_CHARACTER = re.compile(r"[\x00-\x20\x7f\u0085\u00a0\u1680\u2000-\u200f\u2028-\u202f\ufeff]")
_SHOWABLE_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,15}")
_DEFAULT_PORTS: Final[Mapping[str, int]] = {"http": 80, "https": 443}

_NOT_A_LINK = "That isn't a web link; paste the full address, starting with https://."
_INVALID_LINK = "That link isn't a valid web address; check it and paste it again."


def check_url_syntax(url: str) -> str:
    """Return the URL stripped of surrounding blanks (and Discord's ``<...>``), or refuse it.

    Only http(s), no user name or password, a host, at most 2,048 characters.
    """
    text = url.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if not text:
        raise InvalidSourceError(
            "That link is empty; paste a link to an audio file, starting with https://."
        )
    if len(text) > MAX_URL_LENGTH:
        raise InvalidSourceError(
            f"That link is {len(text):,} characters long; the limit is {MAX_URL_LENGTH:,}. "
            "Use a shorter link to the audio file, or attach the file."
        )
    if _UNSAFE_CHARACTER.search(text):
        raise InvalidSourceError(
            "That link contains spaces or invisible characters; paste the link exactly as "
            "it is, with no spaces."
        )
    parsed = _parse(text)
    _check_parsed(parsed)
    return text


def _parse(text: str) -> URL:
    try:
        return URL(text, encoded=text.isascii())
    except ValueError:
        scheme = text.split(":", 1)[0].lower() if ":" in text else ""
        if scheme and scheme not in _DEFAULT_PORTS:
            raise InvalidSourceError(_scheme_message(scheme)) from None
        raise InvalidSourceError(_INVALID_LINK) from None


def _scheme_message(scheme: str) -> str:
    named = f", not {scheme} links" if _SHOWABLE_SCHEME.fullmatch(scheme) else ""
    return (
        f"Only http:// and https:// links work{named}; link to the audio file over "
        "https:// or attach it."
    )


def _check_parsed(parsed: URL) -> None:
    try:
        # yarl splits the authority lazily: a bad port or IPv6 literal raises only here.
        scheme, host, port = parsed.scheme, parsed.raw_host, parsed.port
        has_userinfo = parsed.raw_user is not None or parsed.raw_password is not None
    except ValueError:
        raise InvalidSourceError(_INVALID_LINK) from None
    if not scheme:
        raise InvalidSourceError(_NOT_A_LINK)
    if scheme not in _DEFAULT_PORTS:
        raise InvalidSourceError(_scheme_message(scheme))
    if has_userinfo:
        raise InvalidSourceError(
            "That link contains a user name or password, which stembot never sends. Use a "
            "link that works without logging in, or attach the file."
        )
    if not host or port is None:
        raise InvalidSourceError(
            "That link has no host name; paste the full address, e.g. https://example.com/song.mp3."
        )


_DISCORD_CDN_HOSTS: Final = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
_DISCORD_ATTACHMENT_PATH = re.compile(r"/(?:ephemeral-)?attachments/\d+/(\d+)/[^/]+")


def source_key_for_url(url: str) -> str:
    """The reuse key of a URL: the same audio at the same address gives the same key.

    A hash, never the URL: signed links are credentials, and the key is stored and exported.
    What is hashed is the URL normalised: the scheme and host lower-cased (punycode for
    international names), a default port dropped, an empty path made ``/``, the fragment gone
    (it never reaches the server). The path and query stay byte for byte: signed links differ
    only by their query, and re-encoding or re-ordering either could make two different files
    share a key. A Discord CDN link is keyed by its attachment id, like the attachment itself,
    because its signature changes each time Discord re-signs it.
    """
    text = check_url_syntax(url)
    parsed = _parse(text)
    host = (parsed.raw_host or "").lower()
    raw = urlsplit(text)
    path = raw.path or "/"
    if host in _DISCORD_CDN_HOSTS and (match := _DISCORD_ATTACHMENT_PATH.fullmatch(path)):
        return source_key_for_attachment(int(match.group(1)))
    netloc = f"[{host}]" if ":" in host else host
    port = parsed.explicit_port
    if port is not None and port != _DEFAULT_PORTS[parsed.scheme]:
        netloc = f"{netloc}:{port}"
    query = f"?{raw.query}" if raw.query else ""
    return hashed_url_key(f"{parsed.scheme}://{netloc}{path}{query}")


def hashed_url_key(normalised_url: str) -> str:
    """``url:sha256:<hex>``: tells links apart without keeping them."""
    return URL_KEY_PREFIX + hashlib.sha256(normalised_url.encode("utf-8")).hexdigest()


URL_KEY_PREFIX: Final = "url:sha256:"


def without_query(url: str) -> str:
    """The URL without its query string and fragment (where signatures and tokens live)."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    return url[:cut]


def redact_url(url: str | URL) -> str:
    """A URL fit for logs: scheme, host, port and a shortened path; no credentials or query."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        host = parsed.raw_host or "?"
        port = f":{parsed.explicit_port}" if parsed.explicit_port else ""
        path = parsed.raw_path if len(parsed.raw_path) <= 60 else parsed.raw_path[:57] + "..."
        query = "?<redacted>" if parsed.raw_query_string else ""
        return f"{parsed.scheme}://{host}{port}{path}{query}"
    except (ValueError, TypeError):
        return "<unparsable url>"


# ---------------------------------------------------------------------------------------------
# The guard: connections only to addresses the policy (stembot/address_policy.py) permits
# ---------------------------------------------------------------------------------------------

_BLOCKED_MARKER: Final = "address refused by stembot's URL policy"


class BlockedAddressError(OSError):
    """A connection to an address the policy forbids was stopped before it was made."""

    def __init__(self, address: str) -> None:
        # The address is for logs only; users get a fixed message.
        super().__init__(errno.EACCES, f"{_BLOCKED_MARKER}: {address}")
        self.address = address


class GuardedResolver(AbstractResolver):
    """Resolves through ``inner`` and fails the lookup when any answer is not allowed.

    All or nothing: a name that answers with one public and one private address is refused,
    since that mix is how a rebinding attack looks.
    """

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            if not self._policy.permits(answer["host"]):
                raise BlockedAddressError(answer["host"])
        return answers

    async def close(self) -> None:
        """The inner resolver belongs to whoever passed it in (ThreadedResolver holds nothing)."""


class GuardedConnector(aiohttp.TCPConnector):
    """A TCPConnector that connects only to addresses ``policy`` permits.

    Built by the entry point (inside the running loop) and shared by every UrlProbe. Its
    connections are never reused: each probe is one request to a host a user chose, and a
    server that sends more than its Content-Length must not poison a pooled connection.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: AbstractResolver | None = None,
        limit: int = 20,
    ) -> None:
        self.policy = policy
        super().__init__(
            resolver=GuardedResolver(policy, resolver),
            socket_factory=self._guarded_socket,
            force_close=True,
            limit=limit,
        )

    def _guarded_socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """Refuse the exact address about to be connected, whatever produced it."""
        family, type_, proto, _, sockaddr = addr_info
        host = str(sockaddr[0])
        if not self.policy.permits(host):
            raise BlockedAddressError(host)
        return socket.socket(family=family, type=type_, proto=proto)


def _is_blocked(error: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BlockedAddressError) or _BLOCKED_MARKER in str(current):
            return True
        inner = current.os_error if isinstance(current, aiohttp.ClientConnectorError) else None
        current = inner or current.__cause__ or current.__context__
    return False


# ---------------------------------------------------------------------------------------------
# Probing a URL
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbedSource:
    """A URL that passed the probe. Hand ``url`` (what the user gave) to the API."""

    url: str = field(repr=False)
    final_url: str = field(repr=False)
    content_type: str | None
    size: int
    filename: str
    audio_format: str


_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_OK: Final = frozenset({200, 203})
_GONE: Final = frozenset({404, 410})
_LOCKED: Final = frozenset({401, 403})
_CHUNK: Final = 64 * 1024
_SNIFF_BYTES: Final = 64
_MAX_FILENAME = 100

_TRY_ELSE = "or attach the file"
_PRIVATE_MESSAGE = (
    "That link points to a private or local network address, which stembot won't fetch. "
    f"Use a public link {_TRY_ELSE}."
)
_BAD_REDIRECT_MESSAGE = (
    "That link redirects to an address stembot can't follow; paste the final link to the "
    f"audio file {_TRY_ELSE}."
)


class UrlProbe:
    """Checks that a user's URL leads to audio within the size limit, before anything is spent.

    One bounded GET per probe (HEAD is often refused or wrong): redirects followed by hand up to
    ``max_redirects`` (each hop through the guarded connector), at most ``max_bytes + 1`` body
    bytes read and counted after decoding, all under one overall deadline of ``timeout_s`` that
    a trickling server cannot stretch.
    """

    def __init__(
        self,
        connector: aiohttp.BaseConnector,
        *,
        max_bytes: int,
        timeout_s: float = 20.0,
        max_redirects: int = 5,
        user_agent: str = "stembot (checks that a link is audio)",
    ) -> None:
        if not isinstance(connector, GuardedConnector):
            raise TypeError("UrlProbe needs a GuardedConnector: user URLs go through the guard")
        if max_bytes < 1 or timeout_s <= 0 or max_redirects < 0:
            raise ValueError("max_bytes >= 1, timeout_s > 0 and max_redirects >= 0 required")
        self._connector = connector
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._max_redirects = max_redirects
        self._headers = {
            "User-Agent": user_agent,
            # Count what the file is, not what a compressor made of it.
            "Accept-Encoding": "identity",
            "Accept": "audio/*, */*;q=0.5",
        }

    @property
    def allow_private(self) -> bool:
        return self._connector.policy.allow_private

    async def probe(self, url: str) -> ProbedSource:
        """Refuse (InvalidSourceError) unless ``url`` leads to usable audio within the limit."""
        checked = check_url_syntax(url)
        try:
            async with asyncio.timeout(self._timeout_s), self._session() as session:
                return await self._follow(session, checked)
        except TimeoutError:
            raise self._refuse(
                checked,
                "timed out",
                f"That link took too long to answer (over {self._timeout_s:g} "
                f"{'second' if self._timeout_s == 1 else 'seconds'}). "
                f"Try another host {_TRY_ELSE}.",
            ) from None
        except aiohttp.ClientError as error:
            raise self._refuse_client_error(checked, error) from None

    def _session(self) -> aiohttp.ClientSession:
        # A fresh session per probe over the shared connector: no cookies carried from one
        # user's link to another's, no proxy from the environment resolving past the guard.
        return aiohttp.ClientSession(
            connector=self._connector,
            connector_owner=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=None),
        )

    async def _follow(self, session: aiohttp.ClientSession, original: str) -> ProbedSource:
        target = _parse(original)
        for _hop in range(self._max_redirects + 1):
            async with session.get(target, allow_redirects=False) as response:
                if response.status in _REDIRECTS:
                    target = self._next_hop(original, response)
                    continue
                self._check_status(original, response.status)
                return await self._read(original, response)
        raise self._refuse(
            original,
            "too many redirects",
            f"That link redirects more than {self._max_redirects} times; paste the final link "
            f"to the audio file {_TRY_ELSE}.",
        )

    def _next_hop(self, original: str, response: aiohttp.ClientResponse) -> URL:
        location = response.headers.get("Location", "")
        try:
            if _UNSAFE_CHARACTER.search(location):
                raise ValueError(location)
            target = response.url.join(URL(location, encoded=location.isascii()))
            if not location or len(str(target)) > MAX_URL_LENGTH:
                raise ValueError(location)
            _check_parsed(target)
        except (ValueError, InvalidSourceError):
            raise self._refuse(original, "bad redirect", _BAD_REDIRECT_MESSAGE) from None
        return target

    def _check_status(self, original: str, status: int) -> None:
        if status in _OK:
            return
        phrase = _status_text(status)
        if status in _GONE:
            message = (
                f"That link no longer works (the server answered {phrase}). Links can "
                f"expire: paste a fresh link {_TRY_ELSE}."
            )
        elif status in _LOCKED:
            message = (
                f"That link needs a login or has expired (the server answered {phrase}). "
                f"Use a public link {_TRY_ELSE}."
            )
        elif status == 429 or status >= 500:
            message = f"The server for that link answered {phrase}; try again later {_TRY_ELSE}."
        else:
            message = (
                f"The server for that link answered {phrase} instead of the file; check the "
                f"link {_TRY_ELSE}."
            )
        raise self._refuse(original, f"status {status}", message)

    async def _read(self, original: str, response: aiohttp.ClientResponse) -> ProbedSource:
        declared = response.content_length
        if declared is not None and declared > self._max_bytes:
            raise self._refuse(original, "too large", _too_large_message(declared, self._max_bytes))
        head = bytearray()
        size = 0
        async for chunk in response.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > self._max_bytes:
                raise self._refuse(
                    original,
                    "too large",
                    f"That file is larger than the {describe_size(self._max_bytes)} limit. "
                    "Send a shorter clip or a compressed format such as mp3.",
                )
            if len(head) < _SNIFF_BYTES:
                head += chunk[: _SNIFF_BYTES - len(head)]
        if size == 0:
            raise self._refuse(
                original, "empty", f"That link leads to an empty file; check the link {_TRY_ELSE}."
            )
        content_type = media_type(response.headers.get("Content-Type"))
        filename = _filename(response)
        audio_format = self._audio_format(original, bytes(head), content_type, filename)
        return ProbedSource(
            url=original,
            final_url=str(response.url),
            content_type=content_type,
            size=size,
            filename=filename,
            audio_format=audio_format,
        )

    def _audio_format(
        self, original: str, head: bytes, content_type: str | None, filename: str
    ) -> str:
        # The bytes outrank the labels: servers mislabel audio, and share pages are HTML
        # behind a URL ending in .mp3.
        sniffed = sniff_audio_format(head)
        if sniffed is not None:
            return sniffed
        extension = extension_of(filename)
        what = sniff_non_audio(head)
        declared = None if what else audio_format_of(content_type, extension)
        if declared is not None:
            return declared
        what = what or describe_non_audio(content_type, extension)
        raise self._refuse(
            original,
            "not audio",
            f"That link leads to {what or 'a file that is not recognisable audio'}; link "
            f"straight to the audio file ({FORMATS_HINT}) {_TRY_ELSE}.",
        )

    def _refuse_client_error(self, original: str, error: aiohttp.ClientError) -> InvalidSourceError:
        if _is_blocked(error):
            return self._refuse(original, "private address", _PRIVATE_MESSAGE)
        if isinstance(error, aiohttp.ClientConnectorDNSError):
            message = (
                f"stembot couldn't find the server for that link; check the address {_TRY_ELSE}."
            )
        elif isinstance(error, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
            message = (
                f"That link's server has an invalid HTTPS certificate; use another link "
                f"{_TRY_ELSE}."
            )
        elif isinstance(error, aiohttp.ClientConnectorError):
            message = (
                "stembot couldn't connect to the server for that link; check the link, try "
                f"again later, {_TRY_ELSE}."
            )
        elif isinstance(error, aiohttp.ClientResponseError):
            # Raised for answers that break HTTP, e.g. bytes past the declared Content-Length.
            message = (
                f"The server for that link sent a malformed answer; use another link {_TRY_ELSE}."
            )
        elif isinstance(error, aiohttp.InvalidURL):
            message = (
                "That link, or one it redirects to, isn't a valid web address; check it and "
                "paste it again."
            )
        else:
            message = (
                f"The server for that link broke off the download; try again later {_TRY_ELSE}."
            )
        return self._refuse(original, type(error).__name__, message)

    @staticmethod
    def _refuse(original: str, reason: str, message: str) -> InvalidSourceError:
        log.info("refused source url %s: %s", redact_url(original), reason)
        return InvalidSourceError(message)


def _status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _filename(response: aiohttp.ClientResponse) -> str:
    """A display name: Content-Disposition's file name, else the last path segment."""
    disposition = response.content_disposition
    candidates: Iterable[str | None] = (
        disposition.filename if disposition is not None else None,
        unquote(response.url.raw_path.rsplit("/", 1)[-1]),
    )
    for candidate in candidates:
        cleaned = _clean_filename(candidate or "")
        if cleaned:
            return cleaned
    return "audio"


def _clean_filename(name: str) -> str:
    base = re.split(r"[/\\]", name)[-1]
    base = _UNSAFE_CHARACTER.sub(" ", base).strip(" .")
    return base[:_MAX_FILENAME]
