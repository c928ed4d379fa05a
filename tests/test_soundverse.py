"""The Soundverse client against the stand-in over loopback: every answer maps to one outcome."""

from __future__ import annotations

import io
import logging
import socket
import wave
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest

from stembot.config import Secret
from stembot.errors import (
    SoundverseAuthError,
    SoundverseError,
    SoundverseGenerationFailed,
    SoundverseOutcomeUnknown,
    SoundverseProtocolError,
    SoundverseRateLimited,
    SoundverseRejected,
    SoundverseUnavailable,
)
from stembot.models import Mode
from stembot.soundverse import RetryPolicy, SoundverseClient, parse_retry_after
from tests.soundverse_docs import DOCUMENTED_STEMS
from tests.standins.soundverse import ARTIST_MESSAGE, NSFW_MESSAGE, Reply, SoundverseStandin

KEY = "sv-live-7f3a9c1e-do-not-leak"
AUDIO = "https://cdn.example.com/song.mp3"
FAST = RetryPolicy(
    max_retries=2, base_delay=0.01, max_delay=0.05, max_rate_limit_retries=3, rate_limit_budget_s=30
)


@pytest.fixture
async def standin() -> AsyncIterator[SoundverseStandin]:
    async with SoundverseStandin(api_key=KEY) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


class RecordingSleep:
    """Records the delays the client asks for instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def client(standin, session, sleep) -> SoundverseClient:
    return SoundverseClient(
        session, standin.base_url, Secret(KEY), timeout_s=5, retry=FAST, sleep=sleep
    )


async def fail_with(client: SoundverseClient, mode: Mode = Mode.VOCALS) -> SoundverseError:
    with pytest.raises(SoundverseError) as caught:
        await client.separate(mode, AUDIO)
    return caught.value


# --- success ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(Mode))
async def test_success_returns_documented_stems_in_order(client, standin, mode) -> None:
    """Each mode returns the documented stem names, in the API's order, with http URLs."""
    separation = await client.separate(mode, AUDIO)
    assert separation.mode is mode
    assert [stem.name for stem in separation.stems] == list(DOCUMENTED_STEMS[mode])
    assert all(stem.url.startswith(standin.base_url + "/files/") for stem in separation.stems)
    assert separation.issued_at.tzinfo is UTC


@pytest.mark.parametrize("mode", list(Mode))
async def test_request_matches_the_contract(client, standin, mode) -> None:
    """One POST to the mode's path with a JSON body holding only audioUrl."""
    await client.separate(mode, AUDIO)
    [request] = standin.requests
    assert request.path == mode.api_path
    assert request.json() == {"audioUrl": AUDIO}
    assert request.headers["Content-Type"].startswith("application/json")


async def test_unknown_extra_stem_is_kept(client, standin) -> None:
    """A stem name the documentation does not list is kept, after the documented ones."""
    standin.fail_next(Reply.success("Synth"))
    separation = await client.separate(Mode.INSTRUMENTS, AUDIO)
    assert [s.name for s in separation.stems] == [*DOCUMENTED_STEMS[Mode.INSTRUMENTS], "Synth"]


async def test_stem_urls_are_fresh_and_serve_wav(client, session) -> None:
    """Two calls give different URLs, and each URL serves a readable WAV file."""
    first = await client.separate(Mode.VOCALS, AUDIO)
    second = await client.separate(Mode.VOCALS, AUDIO)
    assert first.stems[0].url != second.stems[0].url
    async with session.get(first.stems[0].url) as response:
        data = await response.read()
    with wave.open(io.BytesIO(data)) as wav:
        assert wav.getnframes() > 0


# --- documented errors -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 400])
@pytest.mark.parametrize(
    "make, message", [(Reply.nsfw, NSFW_MESSAGE), (Reply.artist, ARTIST_MESSAGE)]
)
async def test_rejection_passes_message_verbatim(client, standin, make, message, status) -> None:
    """A success:false body is a rejection with the API's message, whatever the status."""
    standin.fail_next(make(status))
    error = await fail_with(client)
    assert type(error) is SoundverseRejected
    assert error.user_message == message
    assert len(standin.requests) == 1


async def test_detail_is_generation_failure_with_readable_message(client, standin) -> None:
    """A Detail body is a generation failure whose message quotes the detail in a sentence."""
    standin.fail_next(Reply.detail("Audio could not be decoded", status=200))
    error = await fail_with(client)
    assert type(error) is SoundverseGenerationFailed
    assert error.user_message == (
        "The stem separation service could not separate this audio: Audio could not be decoded."
    )
    assert len(standin.requests) == 1


async def test_detail_message_is_capped_and_one_line(client, standin) -> None:
    """A huge multi-line Detail becomes a single line of bounded length."""
    standin.fail_next(Reply.detail("line one\nline two " + "x" * 5000))
    error = await fail_with(client)
    assert isinstance(error, SoundverseGenerationFailed)
    assert "\n" not in error.user_message
    assert "line one line two" in error.user_message
    assert len(error.user_message) < 400


# --- authentication --------------------------------------------------------------------------


async def test_wrong_key_is_auth_error_logged_without_key(session, standin, sleep, caplog) -> None:
    """A refused key gives a neutral message, one request, and an ERROR log naming the setting."""
    wrong = "sv-wrong-key-4242"
    client = SoundverseClient(
        session, standin.base_url, Secret(wrong), timeout_s=5, retry=FAST, sleep=sleep
    )
    caplog.set_level(logging.DEBUG)
    error = await fail_with(client)
    assert type(error) is SoundverseAuthError
    assert error.user_message == SoundverseAuthError.default_message
    assert len(standin.requests) == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "SOUNDVERSE_API_KEY" in errors[0].getMessage()
    assert all(wrong not in r.getMessage() for r in caplog.records)


async def test_forbidden_is_auth_error(client, standin) -> None:
    """403 is treated like 401: an auth error, not retried."""
    standin.fail_next(Reply.http_status(403))
    assert type(await fail_with(client)) is SoundverseAuthError
    assert len(standin.requests) == 1


# --- 429 -------------------------------------------------------------------------------------


async def test_retry_after_seconds_is_honoured(client, standin, sleep) -> None:
    """A 429 with Retry-After: 2 waits 2 s, then the retry succeeds."""
    standin.fail_next(Reply.http_status(429, retry_after="2"))
    separation = await client.separate(Mode.VOCALS, AUDIO)
    assert separation.stems[0].name == "vocals"
    assert sleep.delays == [2.0]
    assert len(standin.requests) == 2


async def test_retry_after_http_date_is_honoured(client, standin, sleep) -> None:
    """A Retry-After given as an HTTP-date waits until about that time."""
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=4), usegmt=True)
    standin.fail_next(Reply.http_status(429, retry_after=when))
    await client.separate(Mode.VOCALS, AUDIO)
    [delay] = sleep.delays
    assert 2 <= delay <= 4
    assert len(standin.requests) == 2


async def test_429_without_retry_after_backs_off(client, standin, sleep) -> None:
    """A 429 without Retry-After waits a capped backoff delay before retrying."""
    standin.fail_next(Reply.http_status(429))
    await client.separate(Mode.VOCALS, AUDIO)
    [delay] = sleep.delays
    assert 0 < delay <= FAST.max_delay


async def test_persistent_429_gives_up_after_retry_limit(client, standin, sleep) -> None:
    """Endless 429s end in SoundverseRateLimited after max_rate_limit_retries retries."""
    standin.fail_always(Reply.http_status(429, retry_after="1"))
    error = await fail_with(client)
    assert type(error) is SoundverseRateLimited
    assert error.retry_after == 1.0
    assert len(standin.requests) == FAST.max_rate_limit_retries + 1
    assert sleep.delays == [1.0] * FAST.max_rate_limit_retries


async def test_retry_after_beyond_budget_is_not_waited(client, standin, sleep) -> None:
    """A Retry-After longer than the wait budget fails at once, keeping the advised delay."""
    standin.fail_next(Reply.http_status(429, retry_after="3600"))
    error = await fail_with(client)
    assert isinstance(error, SoundverseRateLimited)
    assert error.retry_after == 3600.0
    assert sleep.delays == []
    assert len(standin.requests) == 1


# --- unavailable -----------------------------------------------------------------------------


async def test_gateway_errors_are_retried_then_succeed(client, standin, sleep) -> None:
    """503, 503, then success: three requests, two capped backoff waits."""
    standin.script(Reply.http_status(503), Reply.http_status(503))
    separation = await client.separate(Mode.ALL, AUDIO)
    assert len(separation.stems) == 6
    assert len(standin.requests) == 3
    assert len(sleep.delays) == 2 and all(0 < d <= FAST.max_delay for d in sleep.delays)


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_persistent_gateway_error_is_unavailable(client, standin, status) -> None:
    """A gateway status that persists ends in SoundverseUnavailable after max_retries retries."""
    standin.fail_always(Reply.http_status(status))
    assert type(await fail_with(client)) is SoundverseUnavailable
    assert len(standin.requests) == FAST.max_retries + 1


async def test_html_gateway_page_is_unavailable(client, standin) -> None:
    """An HTML 502 page from a proxy is a gateway error, retried like any 502."""
    standin.fail_always(Reply.html(502))
    assert type(await fail_with(client)) is SoundverseUnavailable
    assert len(standin.requests) == FAST.max_retries + 1


async def test_refused_connection_is_retried_then_unavailable(session, sleep) -> None:
    """Nothing listening: bounded retries, then SoundverseUnavailable."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = SoundverseClient(
        session, f"http://127.0.0.1:{port}", Secret(KEY), timeout_s=5, retry=FAST, sleep=sleep
    )
    assert type(await fail_with(client)) is SoundverseUnavailable
    assert len(sleep.delays) == FAST.max_retries


async def test_an_unavailable_api_says_whether_it_answered(session, standin, sleep) -> None:
    """The facts are on the error, not in its text: the status a gateway answered with, or
    the connection error when nothing answered."""
    client = SoundverseClient(
        session, standin.base_url, Secret(KEY), timeout_s=5, retry=FAST, sleep=sleep
    )
    standin.fail_always(Reply.http_status(504))
    answered = await fail_with(client)
    assert isinstance(answered, SoundverseUnavailable)
    assert (answered.status, answered.unreachable_because) == (504, None)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = SoundverseClient(
        session, f"http://127.0.0.1:{port}", Secret(KEY), timeout_s=5, retry=FAST, sleep=sleep
    )
    unreached = await fail_with(client)
    assert isinstance(unreached, SoundverseUnavailable)
    assert (unreached.status, unreached.unreachable_because) == (None, "ClientConnectorError")


async def test_retry_after_past_the_call_deadline_is_not_waited(client, standin, sleep) -> None:
    """A Retry-After that ends after timeout_s (5 s here) fails at once instead of waiting."""
    standin.fail_always(Reply.http_status(429, retry_after="10"))
    assert type(await fail_with(client)) is SoundverseRateLimited
    assert sleep.delays == []
    assert len(standin.requests) == 1


async def test_retries_stop_at_the_call_deadline(session, standin, sleep) -> None:
    """A backoff that would pass timeout_s is not waited: the call fails within its budget."""
    slow = RetryPolicy(base_delay=30, max_delay=30)
    client = SoundverseClient(
        session, standin.base_url, Secret(KEY), timeout_s=5, retry=slow, sleep=sleep
    )
    standin.fail_always(Reply.http_status(503))
    assert type(await fail_with(client)) is SoundverseUnavailable
    assert sleep.delays == []
    assert len(standin.requests) == 1


# --- outcome unknown: never retried ----------------------------------------------------------


async def test_500_is_outcome_unknown_and_not_retried(client, standin) -> None:
    """A bare 500 may have billed: one request only, outcome unknown."""
    standin.fail_always(Reply.http_status(500))
    error = await fail_with(client)
    assert type(error) is SoundverseOutcomeUnknown and error.outcome_unknown
    assert len(standin.requests) == 1


async def test_reset_after_send_is_outcome_unknown(client, standin) -> None:
    """A connection dropped after the request was read: one request only, outcome unknown."""
    standin.fail_always(Reply.reset())
    assert type(await fail_with(client)) is SoundverseOutcomeUnknown
    assert len(standin.requests) == 1


async def test_timeout_is_outcome_unknown(session, standin, sleep) -> None:
    """No answer within timeout_s: one request only, outcome unknown."""
    client = SoundverseClient(
        session, standin.base_url, Secret(KEY), timeout_s=0.5, retry=FAST, sleep=sleep
    )
    standin.fail_always(Reply.hang(2))
    assert type(await fail_with(client)) is SoundverseOutcomeUnknown
    assert len(standin.requests) == 1


# --- protocol errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        Reply.html(200),
        Reply.not_json(200),
        Reply.missing_url(),
        Reply.non_http_url(),
        Reply.empty_list(),
        Reply.json({"stems": []}),
        Reply.json([{"audioName": 7, "audioUrl": "https://x.example/a.wav"}]),
        Reply.json(["vocals"]),
        Reply.http_status(404),
        Reply.http_status(418),
        Reply.html(400),
    ],
    ids=lambda reply: f"{reply.kind}-{reply.status}-{str(reply.body)[:30]}",
)
async def test_unexpected_answers_are_protocol_errors(client, standin, reply) -> None:
    """Anything off-contract is a protocol error after one request, never a crash."""
    standin.fail_always(reply)
    assert type(await fail_with(client)) is SoundverseProtocolError
    assert len(standin.requests) == 1


# --- secrets and logs ------------------------------------------------------------------------

LEAK_CASES = [
    Reply.success(),
    Reply.nsfw(),
    Reply.detail(),
    Reply.http_status(401),
    Reply.http_status(429),
    Reply.http_status(500),
    Reply.http_status(503),
    Reply.html(200),
    Reply.reset(),
]


@pytest.mark.parametrize("reply", LEAK_CASES, ids=lambda r: f"{r.kind}-{r.status}")
async def test_key_never_reaches_logs_or_errors(client, standin, caplog, reply) -> None:
    """The API key appears in no log record, error text, repr or cause."""
    caplog.set_level(logging.DEBUG)
    standin.fail_always(reply)
    try:
        await client.separate(Mode.VOCALS, AUDIO)
    except SoundverseError as error:
        texts = [str(error), repr(error), str(error.__cause__), repr(error.__cause__)]
        assert all(KEY not in text for text in texts)
    assert caplog.records, "every attempt logs one line"
    assert all(KEY not in r.getMessage() and KEY not in str(r.exc_text) for r in caplog.records)
    assert KEY not in repr(client)


async def test_key_echoed_by_the_api_is_redacted(client, standin) -> None:
    """If the API echoes the key in a Detail, the user message does not carry it."""
    standin.fail_next(Reply.detail(f"bad key {KEY} for this request"))
    error = await fail_with(client)
    assert KEY not in error.user_message and "[redacted]" in error.user_message


async def test_one_log_line_per_attempt(client, standin, caplog) -> None:
    """A retried call logs a WARNING for the failed attempt and an INFO for the success."""
    caplog.set_level(logging.INFO, logger="stembot.soundverse")
    standin.fail_next(Reply.http_status(503))
    await client.separate(Mode.VOCALS, AUDIO)
    levels = [r.levelno for r in caplog.records if r.name == "stembot.soundverse"]
    assert levels == [logging.WARNING, logging.INFO]


# --- retry arithmetic ------------------------------------------------------------------------


def test_backoff_is_capped_and_jittered() -> None:
    """Backoff doubles from base_delay, never exceeds max_delay, and jitter only shortens it."""
    policy = RetryPolicy(base_delay=1, max_delay=8, jitter=0.25)
    for retry in range(1, 12):
        ceiling = min(8.0, 2.0 ** (retry - 1))
        assert all(0.75 * ceiling <= policy.backoff(retry) <= ceiling for _ in range(50))


@pytest.mark.parametrize(
    "header, expected",
    [("3", 3.0), ("1.5", 1.5), ("-4", 0.0), ("soon", None), (None, None), ("nan", None)],
)
def test_parse_retry_after_seconds(header, expected) -> None:
    """Retry-After in seconds parses to a non-negative delay; junk gives None."""
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date() -> None:
    """Retry-After as an HTTP-date gives the seconds until then (0 if already past)."""
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0.0
