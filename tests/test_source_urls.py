"""URL syntax, reuse keys and redaction: plain text in, plain text out."""

from __future__ import annotations

import re

import pytest

from stembot.errors import InvalidSourceError
from stembot.source_urls import (
    check_url_syntax,
    hashed_url_key,
    redact_url,
    source_key_for_attachment,
    source_key_for_url,
    without_query,
)

# ---------------------------------------------------------------------------------------------
# URL syntax, keys, redaction
# ---------------------------------------------------------------------------------------------


def test_url_is_stripped_of_blanks_and_discord_angle_brackets():
    """``<https://...>`` (Discord's no-embed form) and surrounding spaces are removed."""
    assert check_url_syntax("  <https://example.com/a.mp3>\n") == "https://example.com/a.mp3"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("   ", "That link is empty; paste a link to an audio file, starting with https://."),
        (
            "ftp://example.com/a.mp3",
            "Only http:// and https:// links work, not ftp links; link to the audio file over "
            "https:// or attach it.",
        ),
        (
            "example.com/song.mp3",
            "That isn't a web link; paste the full address, starting with https://.",
        ),
        (
            "https://user:hunter2@example.com/a.mp3",
            "That link contains a user name or password, which stembot never sends. Use a "
            "link that works without logging in, or attach the file.",
        ),
        (
            "https:///a.mp3",
            "That link has no host name; paste the full address, "
            "e.g. https://example.com/song.mp3.",
        ),
        (
            "https://example.com/my song.mp3",
            "That link contains spaces or invisible characters; paste the link exactly as it "
            "is, with no spaces.",
        ),
        (
            "https://example.com:99999/a.mp3",
            "That link isn't a valid web address; check it and paste it again.",
        ),
    ],
)
def test_bad_url_syntax_gets_a_specific_message(url, message):
    """Each malformed link is refused with what was wrong and what to do."""
    with pytest.raises(InvalidSourceError) as caught:
        check_url_syntax(url)
    assert caught.value.user_message == message


def test_url_over_2048_characters_is_refused():
    """The length cap is stated with the link's length."""
    url = "https://example.com/" + "a" * (2049 - len("https://example.com/"))
    with pytest.raises(InvalidSourceError) as caught:
        check_url_syntax(url)
    assert caught.value.user_message == (
        "That link is 2,049 characters long; the limit is 2,048. "
        "Use a shorter link to the audio file, or attach the file."
    )


def test_url_of_exactly_2048_characters_is_accepted():
    """The cap itself is allowed."""
    url = "https://example.com/" + "a" * (2048 - len("https://example.com/"))
    assert check_url_syntax(url) == url


def test_source_key_normalises_scheme_host_port_and_fragment():
    """Case of scheme and host, a default port and the fragment do not change the key."""
    key = source_key_for_url("HTTPS://Example.COM:443/Songs/A.mp3?b=2&a=1#t=10")
    assert key == hashed_url_key("https://example.com/Songs/A.mp3?b=2&a=1")
    assert key == source_key_for_url("https://example.com/Songs/A.mp3?b=2&a=1")


def test_source_key_keeps_a_non_default_port_and_adds_the_root_path():
    """``http://host:8080`` and ``http://host:8080/`` are one source, other ports are not."""
    assert source_key_for_url("http://example.com:8080") == source_key_for_url(
        "http://example.com:8080/"
    )
    assert source_key_for_url("http://example.com:8080/") != source_key_for_url(
        "http://example.com:8081/"
    )


def test_source_key_of_a_signed_link_is_a_hash_without_the_link():
    """A signed link is a credential: its key is ``url:sha256:<hex>``, nothing of the URL."""
    key = source_key_for_url("https://files.example/a.mp3?X-Amz-Signature=SECRET#t=1")
    assert re.fullmatch(r"url:sha256:[0-9a-f]{64}", key)
    assert "SECRET" not in key and "files.example" not in key


def test_without_query_drops_the_query_and_the_fragment():
    """What is stored or shown of a link keeps its address but not its signature."""
    assert without_query("https://files.example/a.mp3?sig=SECRET#frag") == (
        "https://files.example/a.mp3"
    )
    assert without_query("https://files.example/a.mp3#t=1?x") == "https://files.example/a.mp3"
    assert without_query("https://files.example/a.mp3") == "https://files.example/a.mp3"


def test_source_key_keeps_the_query_of_signed_links():
    """Two signed links differing only by their query are different sources."""
    first = source_key_for_url("https://files.example/a.mp3?sig=1")
    assert first != source_key_for_url("https://files.example/a.mp3?sig=2")


def test_source_key_of_international_host_is_punycode():
    """A host typed in Unicode and in punycode gives one key."""
    assert source_key_for_url("https://Bücher.de/a") == source_key_for_url(
        "https://xn--bcher-kva.de/a"
    )


def test_discord_cdn_link_is_keyed_like_the_attachment():
    """A pasted Discord attachment link reuses the attachment's results despite re-signing."""
    url = "https://cdn.discordapp.com/attachments/111/222/song.mp3?ex=1&is=2&hm=abc"
    assert source_key_for_url(url) == source_key_for_attachment(222) == "attachment:222"


def test_redacted_url_hides_credentials_and_query():
    """Logs get the host and path, never a password or a signature."""
    redacted = redact_url("https://user:pw@files.example/a/b.mp3?sig=SECRET")
    assert redacted == "https://files.example/a/b.mp3?<redacted>"
