"""User URLs as text: the syntax check, the reuse keys, and the forms fit for storage and logs.

No network here: the guarded fetches are stembot/url_probe.py and stem_fetcher.py, over
stembot/guarded_get.py and guarded_connector.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from yarl import URL

from stembot.errors import InvalidSourceError

MAX_URL_LENGTH: Final = 2048

UNSAFE_CHARACTER = re.compile(r"[\x00-\x20\x7f\u0085\u00a0\u1680\u2000-\u200f\u2028-\u202f\ufeff]")
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
    if UNSAFE_CHARACTER.search(text):
        raise InvalidSourceError(
            "That link contains spaces or invisible characters; paste the link exactly as "
            "it is, with no spaces."
        )
    parsed = parse_url(text)
    check_parsed_url(parsed)
    return text


def parse_url(text: str) -> URL:
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


def check_parsed_url(parsed: URL) -> None:
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


def redirect_target(current: URL, location: str) -> URL:
    """Where a redirect's ``Location`` leads from ``current``; InvalidSourceError when that is
    no address a fetch may follow (not http(s), credentials, too long, unsafe characters)."""
    if not location or UNSAFE_CHARACTER.search(location):
        raise InvalidSourceError(_INVALID_LINK)
    try:
        target = current.join(URL(location, encoded=location.isascii()))
    except ValueError:
        raise InvalidSourceError(_INVALID_LINK) from None
    if len(str(target)) > MAX_URL_LENGTH:
        raise InvalidSourceError(_INVALID_LINK)
    check_parsed_url(target)
    return target


def source_key_for_attachment(attachment_id: int) -> str:
    """The reuse key of a Discord attachment: its id, which outlives its signed URL."""
    return f"attachment:{attachment_id}"


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
    parsed = parse_url(text)
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
