"""The error tree. Every StembotError carries a message that is safe to show a user.

Anything raised that is not a StembotError is a bug: the Discord layer logs it with an
incident id and shows the user only that id.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from http import HTTPStatus
from pathlib import Path

from stembot.models import QuotaLimit


class StembotError(Exception):
    """Root of stembot's own errors; ``user_message`` is safe to show to anyone."""

    default_message = "Something went wrong."
    # Whether ``user_message`` already tells the user they were not charged (a failure's
    # notice adds that line to the others).
    says_not_charged = False

    def __init__(self, user_message: str | None = None) -> None:
        self.user_message = user_message or self.default_message
        super().__init__(self.user_message)


class ConfigError(StembotError):
    """Settings are missing or invalid; names every problem at once."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid settings ({len(self.problems)} problem(s)):\n{lines}")


class InvalidSourceError(StembotError):
    """The attachment or URL cannot be used; says what was wrong and what to do."""


class NotAudioSourceError(InvalidSourceError):
    """The input's bytes (or, when they say nothing, its labels) are not audio; ``what``
    names what it is instead ("a PNG image"), for a caller that words it for its own input."""

    def __init__(self, user_message: str, what: str) -> None:
        self.what = what
        super().__init__(user_message)


class QuotaExceededError(StembotError):
    """A limit would be passed; knows when the binding window resets."""

    def __init__(self, user_message: str, resets_at: datetime | None = None) -> None:
        self.resets_at = resets_at
        super().__init__(user_message)


class QuotaLimitReached(QuotaExceededError):
    """A QuotaExceededError that also says, for code, which limit refused the request."""

    def __init__(self, limit: QuotaLimit, user_message: str, resets_at: datetime | None) -> None:
        self.limit = limit
        super().__init__(user_message, resets_at)


class TooManyLinksError(StembotError):
    """The member already has as many links being checked as one member may."""

    says_not_charged = True

    def __init__(self, limit: int) -> None:
        self.limit = limit
        links = "a link" if limit == 1 else f"{limit} links"
        super().__init__(
            f"You already have {links} being checked. Wait until "
            f"{'it is' if limit == 1 else 'they are'} answered, then try again. "
            "You were not charged."
        )


class DuplicateRequestError(StembotError):
    """The same interaction was already accepted (Discord delivered it twice)."""

    default_message = "This request is already being handled."


class CallInFlightError(StembotError):
    """Another request for the same source and mode is still waiting for or in its paid API
    call: the ledger holds one such call at a time (the first requester pays; the others join
    it, or reuse its stored result once it lands)."""

    says_not_charged = True

    default_message = (
        "The same file is being split in this mode right now. Try again in a moment: the "
        "result will be ready to share. You were not charged."
    )


class StoreBusyError(StembotError):
    """The database stayed locked past the busy timeout; retrying later is safe."""

    default_message = "stembot's database is busy right now. Please try again in a minute."


class StoreFailedError(StembotError):
    """The database refused a write for a reason other than busy (disk full, I/O error,
    a corrupt page); nothing was recorded, so nothing was charged."""

    says_not_charged = True

    default_message = (
        "stembot can't record requests right now because its database failed. You were not "
        "charged. The bot's operator can see the error; please try again later."
    )


class StoreUnavailableError(StembotError):
    """The database file cannot be opened or prepared (path, permissions, disk)."""

    default_message = "stembot's database cannot be opened."


class DatabaseReplacedError(StoreFailedError):
    """The database file was deleted or replaced while the bot ran: it takes no requests."""

    default_message = (
        "stembot has stopped taking requests: its database file went missing while it was "
        "running. You were not charged. The bot's operator has to restart it."
    )


class DatabaseInUseError(StembotError):
    """Another bot holds the database: starting a second one would undo its work."""

    def __init__(self, db_path: Path, holder: str) -> None:
        self.db_path = db_path
        self.holder = holder
        super().__init__(
            f"another stembot is already running on the database {db_path} "
            f"({holder or 'a process that has not said who it is yet'}). Run one bot per "
            f"database: stop that one first, or point STEMBOT_DB_PATH at another database."
        )


class DatabaseLockError(StembotError):
    """The lock file beside the database cannot be created or locked."""


class HttpPortError(StembotError):
    """/metrics and /healthz cannot listen where STEMBOT_HTTP_HOST and STEMBOT_HTTP_PORT say."""

    def __init__(self, host: str, port: int, why: str) -> None:
        super().__init__(
            f"cannot serve /metrics and /healthz on {host}:{port} ({why}); set "
            "STEMBOT_HTTP_PORT to a free port (or STEMBOT_HTTP_HOST to an address of this "
            "machine), or leave STEMBOT_HTTP_PORT empty for no HTTP server"
        )


class SoundverseError(StembotError):
    """Root of errors from the Soundverse API."""

    default_message = "The stem separation service failed. Please try again later."
    # Whether the API may have done (and billed) the work although we got no result.
    outcome_unknown = False


class SoundverseRejected(SoundverseError):
    """The API refused the input (NSFW words, artist name): its message reaches the user."""


class SoundverseGenerationFailed(SoundverseError):
    """The API tried and failed (``{"Detail": ...}``)."""


class SoundverseAuthError(SoundverseError):
    """401/403: the operator's API key is wrong. Users get a neutral line."""

    default_message = (
        "stembot can't use the stem separation service right now because of a problem with "
        "the bot's setup. Please try again later; if it keeps happening, tell the server's admins."
    )


class SoundverseRateLimited(SoundverseError):
    """429 past our retry budget."""

    default_message = "The stem separation service is busy. Please try again in a few minutes."

    def __init__(self, user_message: str | None = None, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(user_message)


class SoundverseUnavailable(SoundverseError):
    """Could not reach the API, or it answered 502/503/504 past our retry budget.

    ``status`` is the HTTP status when the API answered; ``unreachable_because`` names the
    connection error when it never did (the operator's CLI tells the two apart by these).
    """

    default_message = (
        "The stem separation service is unavailable right now. Please try again later."
    )

    def __init__(
        self,
        user_message: str | None = None,
        *,
        status: int | None = None,
        unreachable_because: str | None = None,
    ) -> None:
        self.status = status
        self.unreachable_because = unreachable_because
        super().__init__(user_message)


class SoundverseOutcomeUnknown(SoundverseError):
    """500, a reset after sending, or a timeout: the API may have done the work; not retried."""

    default_message = (
        "The stem separation service did not finish answering, so the result is unknown. "
        "You were not charged; please try again later."
    )
    says_not_charged = True
    outcome_unknown = True


class SoundverseProtocolError(SoundverseError):
    """The API answered something that is not the documented contract."""

    default_message = (
        "The stem separation service sent an answer stembot could not read. Please try again later."
    )


class StemFetchError(StembotError):
    """A stem file of a stored result could not be fetched to attach it; the links still
    stand. ``stem`` is the stem's name as the API gave it (never its URL: signed links are
    credentials)."""

    default_message = "stembot couldn't fetch the stem files to attach them."

    def __init__(self, stem: str, user_message: str | None = None) -> None:
        self.stem = stem
        super().__init__(user_message)


class StemGoneError(StemFetchError):
    """The stem's link answered 401/403/404/410: it expired or was withdrawn."""

    def __init__(self, stem: str, status: int) -> None:
        self.status = status
        super().__init__(
            stem,
            f"stembot couldn't fetch the {stem} file: its link no longer works (the server "
            f"answered {status_text(status)}).",
        )


class StemUnavailableError(StemFetchError):
    """The stem's server answered another status than the file (5xx, 429, ...)."""

    def __init__(self, stem: str, status: int) -> None:
        self.status = status
        super().__init__(
            stem,
            f"stembot couldn't fetch the {stem} file: its server answered {status_text(status)}.",
        )


class StemTooLargeError(StemFetchError):
    """The stem is larger than stembot fetches (``declared_bytes``: its Content-Length, None
    when the server did not say and the download was stopped at the limit)."""

    def __init__(self, stem: str, limit_bytes: int, declared_bytes: int | None = None) -> None:
        self.limit_bytes = limit_bytes
        self.declared_bytes = declared_bytes
        super().__init__(
            stem,
            f"stembot didn't fetch the {stem} file: it is larger than the "
            f"{limit_bytes / 1024 / 1024:g} MB stembot fetches.",
        )


class StemNotAudioError(StemFetchError):
    """The stem's link led to bytes that are not recognisable audio (``what``, when known)."""

    def __init__(self, stem: str, what: str | None = None) -> None:
        self.what = what
        super().__init__(
            stem,
            f"stembot couldn't use the {stem} file: its link leads to "
            f"{what or 'a file that is not recognisable audio'}.",
        )


class StemTruncatedError(StemFetchError):
    """The download ended before the length the server declared."""

    def __init__(self, stem: str, expected_bytes: int | None, received_bytes: int) -> None:
        self.expected_bytes = expected_bytes
        self.received_bytes = received_bytes
        super().__init__(
            stem, f"stembot couldn't fetch the {stem} file: the download broke off part way."
        )


class StemAddressRefusedError(StemFetchError):
    """The stem's link, or a redirect from it, leads to an address stembot never fetches
    from (private, local) or cannot follow."""

    def __init__(self, stem: str) -> None:
        super().__init__(
            stem,
            f"stembot didn't fetch the {stem} file: its link leads to an address stembot "
            "doesn't fetch from.",
        )


class StemUnreachableError(StemFetchError):
    """No usable answer at all: ``because`` names the timeout or connection error."""

    def __init__(self, stem: str, because: str) -> None:
        self.because = because
        what = "took too long to send it" if because == "timed out" else "could not be reached"
        super().__init__(stem, f"stembot couldn't fetch the {stem} file: its server {what}.")


def status_text(status: int) -> str:
    """``404 Not Found``; just the number for a status HTTP does not name."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


class ShuttingDownError(StembotError):
    """stembot is stopping and takes no new requests."""

    default_message = "stembot is restarting. Please try again in a minute."


class RequestInterruptedError(StembotError):
    """A request that a restart or crash cut short; it was refunded."""

    default_message = (
        "stembot restarted before your request finished. You were not charged; "
        "please run the command again."
    )
    says_not_charged = True


class SharedCallEndedError(StembotError):
    """The identical request this one rode on (another bot process's API call, or one whose
    payer cancelled and whose riders none could pay for) ended without a result: cancelled by
    its requester, or cut short by a restart. Nothing was charged."""

    default_message = (
        "The same file was being split for someone else, and that request was cancelled or "
        "cut short before its stems came. You were not charged; please run the command again."
    )
    says_not_charged = True


class SharedCallFailedError(StembotError):
    """The identical request this one rode on (another bot process's API call) failed: its
    requester's message, which may already say that nothing was charged."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.says_not_charged = "not charged" in user_message.lower()


class NotYourRequestError(StembotError):
    default_message = "Only the person who asked for these stems can cancel them."


class RequestCancelledError(StembotError):
    """The requester cancelled while the request was waiting; it was refunded."""

    default_message = "You cancelled this request. You were not charged."
    says_not_charged = True


class RequestEndedError(StembotError):
    """A cancel for a request that is no longer waiting (finished, cancelled, restarted)."""

    default_message = "This request has already ended, so there is nothing to cancel."


class RemixEventCallNotCancellableError(StembotError):
    """A Cancel naming a remix event's call: the event's, not a member's request."""

    default_message = (
        "This is a remix event's call, not a request of yours, so it cannot be cancelled here. "
        "It ends with the event (/stems-event end)."
    )


class AlreadyStartedError(StembotError):
    default_message = "These stems are already being separated and can no longer be cancelled."


class ModerationError(StembotError):
    """A moderator's request cannot be done as asked; the message says why and what to do."""


class RequestNotFoundError(ModerationError):
    """No request with that id belongs to this server."""


class NotRefundableError(ModerationError):
    """The request exists but has nothing to give back (already refunded, free, in progress)."""


class RemixEventError(StembotError):
    """A remix event cannot do what was asked; the message says why (and what to do)."""


class RemixEventNotFoundError(RemixEventError):
    """No such event on this server (deleted by retention, or a forged id)."""

    default_message = "This remix event no longer exists."


class RemixEventEndedError(RemixEventError):
    """The event has ended: no more takes or submissions (stems already owed still arrive)."""

    default_message = "This remix event has ended."


class TooManyRemixEventsError(RemixEventError):
    """The server already runs as many events at once as one server may."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"This server already has {limit} remix events running, the most at once. "
            "End one with `/stems-event end` first."
        )


class RemixEventModeError(RemixEventError):
    """The event does not offer that mode."""


class RemixEventBudgetSpentError(RemixEventError):
    """The event's own budget cannot pay for the call a take needs. Nobody was charged."""

    says_not_charged = True

    def __init__(self, budget: int, spent: int, cost: int, label: str) -> None:
        self.budget = budget
        self.spent = spent
        self.cost = cost
        super().__init__(
            f"This remix event's budget is spent: it has used {spent} of its {budget} units "
            f"and {label} needs {cost} more. Stems it already has can still be taken. "
            "You were not charged."
        )


class RemixEventAlreadyPaidError(RemixEventError):
    """The event already paid a call for this mode that is still running or succeeded: it
    never pays a second one (the service waits for that call instead)."""

    default_message = "This remix event is already separating these stems."


class SubmissionRefusedError(RemixEventError):
    """A submission the event cannot take (submissions off, ended) or remove."""


class IncidentError(StembotError):
    """A bug: the user sees only the incident id; the log has the traceback.

    Each one gets a new id (the one generator of them): log ``incident_id`` beside the
    traceback, show the user ``user_message``.
    """

    says_not_charged = True

    def __init__(self, incident_id: str | None = None) -> None:
        self.incident_id = incident_id or secrets.token_hex(4).upper()
        super().__init__(
            f"Something went wrong on stembot's side (incident {self.incident_id}). "
            "You were not charged. If it keeps happening, tell the server's admins this id."
        )


class AudioError(StembotError):
    """Audio work on fetched stems could not be done; the links to the stems still stand."""

    default_message = "stembot could not process these audio files. The links still work."


class AudioFileError(AudioError):
    """A stem file that does not decode (not audio, truncated, an unknown format)."""

    default_message = "A stem file could not be read as audio. The links still work."


class MixMismatchError(AudioError):
    """Stems that cannot be summed sample by sample (different rates or channel layouts)."""


class AudioWorkerCrashed(AudioError):
    """The worker process running this job died (killed, out of memory); the pool was renewed."""

    default_message = "stembot's audio worker stopped while working on this. Please try again."


class MixUnavailableError(StembotError):
    """A free mix could not be made; ``user_message`` says why. No units are involved."""

    default_message = "stembot could not make this mix. The links still work."
    # Whether running the request again (a new, charged request) is what would help.
    rerun_helps = False


class UnknownMixError(MixUnavailableError):
    """The menu named a mix this result does not offer (an old message, a forged id)."""

    default_message = "This result doesn't offer that mix."


class MixStemsGoneError(MixUnavailableError):
    """The stems left the cache and their links no longer work (the API's links expired)."""

    default_message = (
        "The stems of this result are no longer available: their links have expired. "
        "Run the request again to get them back (it counts as a new request)."
    )
    rerun_helps = True


class MixStemsUnavailableError(MixUnavailableError):
    """The stems left the cache and could not be fetched again for another reason."""

    def __init__(self, cause: StemFetchError) -> None:
        self.stem = cause.stem
        super().__init__(f"{cause.user_message} Please try the mix again later.")


class MixTooLargeError(MixUnavailableError):
    """Even the smallest copy of the mix is larger than the channel's upload limit."""

    default_message = (
        "This mix is too long to send here, even as a small copy. The stems' links still work."
    )
