"""The instant checks of an attachment and of giving exactly one source."""

from __future__ import annotations

import pytest

from stembot.errors import InvalidSourceError
from stembot.sources import check_attachment, describe_size, require_one_source

MB = 1024 * 1024
FORMATS = "mp3, wav, flac, ogg/opus, m4a/aac"


# ---------------------------------------------------------------------------------------------
# Attachments
# ---------------------------------------------------------------------------------------------


def test_attachment_mp3_is_accepted():
    """An mp3 with its content type passes and reports its format."""
    source = check_attachment("song.mp3", "audio/mpeg", 4 * MB, 10 * MB)
    assert (source.filename, source.content_type, source.size, source.audio_format) == (
        "song.mp3",
        "audio/mpeg",
        4 * MB,
        "mp3",
    )


@pytest.mark.parametrize(
    ("filename", "content_type", "audio_format"),
    [
        ("take1.flac", "application/octet-stream", "flac"),
        ("voice.m4a", "video/mp4", "m4a"),
        ("recording", "audio/x-wav", "wav"),
        ("memo.opus", None, "opus"),
        ("LOUD.MP3", "", "mp3"),
        ("clip", "Audio/MPEG; charset=binary", "mp3"),
        ("loop.ogg", "application/ogg", "ogg"),
        ("beat.aac", "audio/aac", "aac"),
    ],
)
def test_attachment_accepted_by_type_or_extension(filename, content_type, audio_format):
    """Either an audio content type or an audio extension is enough."""
    assert check_attachment(filename, content_type, 1000, MB).audio_format == audio_format


@pytest.mark.parametrize(
    ("filename", "content_type", "what"),
    [
        ("cover.png", "image/png", "a PNG image"),
        ("clip.mp4", "video/mp4", "an MP4 video"),
        ("notes.txt", "text/plain", "a text file"),
        ("tune.mid", "audio/midi", "an unsupported audio format (audio/midi)"),
        ("report.docx", "application/octet-stream", "a .docx file"),
        ("blob", None, "of a type stembot does not know"),
    ],
)
def test_attachment_that_is_not_audio_is_named(filename, content_type, what):
    """The refusal says what the file is and which formats to send."""
    with pytest.raises(InvalidSourceError) as caught:
        check_attachment(filename, content_type, 1000, MB)
    assert caught.value.user_message == f"That file is {what}; send an audio file ({FORMATS})."


def test_attachment_content_type_is_not_echoed_when_hostile():
    """A content type that could ping or format in Discord is never repeated."""
    with pytest.raises(InvalidSourceError) as caught:
        check_attachment("x", "application/<@everyone>", 1000, MB)
    assert "@" not in caught.value.user_message


def test_attachment_too_large_states_size_and_limit():
    """A file over the limit is refused with both sizes."""
    with pytest.raises(InvalidSourceError) as caught:
        check_attachment("long.wav", "audio/wav", int(23.4 * MB), 10 * MB)
    assert caught.value.user_message == (
        "That file is 23.4 MB; the limit is 10 MB. "
        "Send a shorter clip or a compressed format such as mp3."
    )


def test_attachment_one_byte_over_never_reads_as_equal_to_the_limit():
    """Rounding goes up for the file and down for the limit."""
    with pytest.raises(InvalidSourceError) as caught:
        check_attachment("a.wav", "audio/wav", 10 * MB + 1, 10 * MB)
    assert caught.value.user_message.startswith("That file is 10.1 MB; the limit is 10 MB.")


def test_attachment_exactly_at_the_limit_is_accepted():
    """The limit itself is allowed."""
    assert check_attachment("a.wav", "audio/wav", 10 * MB, 10 * MB).size == 10 * MB


def test_empty_attachment_is_refused():
    """A zero-byte file cannot be separated."""
    with pytest.raises(InvalidSourceError) as caught:
        check_attachment("a.mp3", "audio/mpeg", 0, MB)
    assert caught.value.user_message == f"That file is empty; send an audio file ({FORMATS})."


def test_fractional_limits_are_shown_as_configured():
    """STEMBOT_MAX_INPUT_MB=7.5 reads as 7.5 MB, small limits in KB."""
    assert (describe_size(int(7.5 * MB)), describe_size(64 * 1024)) == ("7.5 MB", "64 KB")


def test_both_file_and_url_is_refused():
    """The command takes one source."""
    with pytest.raises(InvalidSourceError, match=r"^Give either a file or a url, not both\.$"):
        require_one_source(has_file=True, has_url=True)


def test_neither_file_nor_url_is_refused():
    """With no source the reply says how to give one."""
    with pytest.raises(InvalidSourceError) as caught:
        require_one_source(has_file=False, has_url=False)
    assert caught.value.user_message == (
        "Attach an audio file with `file:` or paste a link to one with `url:`."
    )
