"""`stembot separate MODE URL`: the Soundverse client from a terminal.

Exit status: 0 on success, 1 when the API call or a download fails, 2 for a bad argument or
bad settings (130 on Ctrl+C, from the entry point). Every failure is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp

from stembot.audio_formats import audio_format_of, extension_of, media_type
from stembot.config import Settings, load_settings
from stembot.errors import (
    InvalidSourceError,
    SoundverseAuthError,
    SoundverseError,
    SoundverseUnavailable,
)
from stembot.logs import configure_logging
from stembot.models import Mode, Stem
from stembot.soundverse import SoundverseClient
from stembot.source_urls import check_url_syntax

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DOWNLOAD_TIMEOUT_S = 600.0
CONNECT_TIMEOUT_S = 10.0
_CHUNK_BYTES = 64 * 1024
_SPINNER = "|/-\\"


class DownloadError(Exception):
    """A stem could not be saved; the message is one line for the terminal."""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "separate",
        help="run one separation from a terminal (spends credits)",
        description="Send one audio URL to the Soundverse API and list (or save) the stems.",
        epilog="Exit status: 0 success, 1 API or download failure, 2 bad arguments or settings.",
    )
    parser.add_argument("mode", choices=[mode.value for mode in Mode], help="what to separate")
    parser.add_argument("url", help="a public http(s) URL of the input audio")
    parser.add_argument(
        "--json", action="store_true", dest="as_json", help='print [{"name", "url"}, ...]'
    )
    parser.add_argument("--download", type=Path, metavar="DIR", help="save every stem in DIR")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log each API attempt to stderr"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        args.url = check_url_syntax(args.url)
    except InvalidSourceError as refusal:
        return fail(refusal.user_message, EXIT_USAGE)
    settings = load_settings(env, need_soundverse=True)
    if args.download is not None:
        try:
            args.download.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return fail(f"cannot use {args.download} for downloads: {error.strerror}", EXIT_USAGE)
    if args.verbose:
        configure_logging(
            settings.log_level,
            [settings.soundverse_api_key.reveal()] if settings.soundverse_api_key else [],
        )
    else:
        # Without a handler, Python's last-resort handler would print warnings beside our line.
        logging.getLogger().addHandler(logging.NullHandler())
    return asyncio.run(separate(args, settings, sys.stdout, sys.stderr))


def fail(message: str, status: int) -> int:
    print(f"stembot: {message}", file=sys.stderr)
    return status


async def separate(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    mode = Mode(args.mode)
    assert settings.soundverse_api_key is not None  # load_settings(need_soundverse=True)
    async with aiohttp.ClientSession() as session:
        client = SoundverseClient(
            session,
            settings.soundverse_api_base,
            settings.soundverse_api_key,
            timeout_s=settings.api_timeout_s,
        )
        try:
            async with waiting(err, f"Separating {mode.label.lower()}"):
                separation = await client.separate(mode, args.url)
        except SoundverseError as error:
            return fail(error_line(error, settings.soundverse_api_base), EXIT_FAILED)
        out.write(render_json(separation.stems) if args.as_json else render_table(separation.stems))
        out.flush()
        if args.download is not None:
            try:
                await download_stems(session, separation.stems, args.download, err)
            except DownloadError as error:
                return fail(str(error), EXIT_FAILED)
    return EXIT_OK


def error_line(error: SoundverseError, api_base: str) -> str:
    # The user_messages are written for Discord members; the operator needs the cause.
    if isinstance(error, SoundverseAuthError):
        return "the Soundverse API refused the API key. Check SOUNDVERSE_API_KEY."
    if isinstance(error, SoundverseUnavailable):
        if error.status is not None:  # it answered 502/503/504
            return (
                f"the Soundverse API at {api_base} is unavailable (HTTP {error.status}); "
                "try again later."
            )
        reason = error.unreachable_because or "no connection"
        return (
            f"could not reach the Soundverse API at {api_base} ({reason}). "
            "Check the network, or SOUNDVERSE_API_BASE if you changed it."
        )
    return error.user_message


@contextlib.asynccontextmanager
async def waiting(stream: TextIO, what: str, interval_s: float = 0.1) -> AsyncIterator[None]:
    """Show that we are waiting: a spinner with elapsed seconds on a TTY, else one line."""
    if not stream.isatty():
        print(f"{what}: waiting for Soundverse (this can take minutes)...", file=stream)
        stream.flush()
        yield
        return
    spinner = asyncio.create_task(_spin(stream, what, interval_s))
    try:
        yield
    finally:
        spinner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await spinner
        stream.write("\r\033[K")
        stream.flush()


async def _spin(stream: TextIO, what: str, interval_s: float) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    frame = 0
    while True:
        elapsed = loop.time() - started
        stream.write(f"\r{_SPINNER[frame % len(_SPINNER)]} {what}... {elapsed:.0f}s")
        stream.flush()
        frame += 1
        await asyncio.sleep(interval_s)


def render_table(stems: Sequence[Stem]) -> str:
    rows = [("STEM", "URL"), *((printable(s.name), printable(s.url)) for s in stems)]
    width = max(len(name) for name, _ in rows)
    return "".join(f"{name.ljust(width)}  {url}\n" for name, url in rows)


def render_json(stems: Sequence[Stem]) -> str:
    return json.dumps([{"name": s.name, "url": s.url} for s in stems], indent=2) + "\n"


def printable(text: str) -> str:
    """``text`` safe to print to a terminal: control characters (escape codes) become '?'."""
    return "".join(c if c.isprintable() else "?" for c in text)


def stem_filename(name: str, url: str, content_type: str) -> str:
    """A safe file name from the stem's name; the suffix from the URL or the content type.

    Nothing from the server becomes a path part: separators, dots and the rest are replaced.
    """
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:64] or "stem"
    return base + _audio_suffix(url, content_type)


def _audio_suffix(url: str, content_type: str) -> str:
    named = audio_format_of(None, extension_of(urlsplit(url).path))
    audio_format = named or audio_format_of(media_type(content_type), None)
    return f".{audio_format}" if audio_format else ".bin"


def _unique(filename: str, taken: set[str]) -> str:
    stem, dot, suffix = filename.partition(".")
    candidate, number = filename, 1
    while candidate.lower() in taken:
        number += 1
        candidate = f"{stem}-{number}{dot}{suffix}"
    taken.add(candidate.lower())
    return candidate


async def download_stems(
    session: aiohttp.ClientSession, stems: Sequence[Stem], directory: Path, err: TextIO
) -> list[Path]:
    """Save each stem in ``directory``, reporting bytes as they arrive; return the paths."""
    taken: set[str] = set()
    return [await _download(session, stem, directory, taken, err) for stem in stems]


async def _download(
    session: aiohttp.ClientSession, stem: Stem, directory: Path, taken: set[str], err: TextIO
) -> Path:
    label = printable(stem.name)
    timeout = aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    partial: Path | None = None
    try:
        async with session.get(stem.url, timeout=timeout) as response:
            if response.status != 200:
                raise DownloadError(f"could not download the {label} stem: HTTP {response.status}")
            target = directory / _unique(
                stem_filename(stem.name, stem.url, response.content_type), taken
            )
            partial = target.with_name(target.name + ".part")
            size = await _save(response, partial, target.name, err)
        partial.replace(target)
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        if partial is not None:
            partial.unlink(missing_ok=True)
        reason = "timed out" if isinstance(error, TimeoutError) else type(error).__name__
        raise DownloadError(f"could not download the {label} stem: {reason}") from None
    _report(err, f"saved {target} ({size:,} bytes)", final=True)
    return target


async def _save(response: aiohttp.ClientResponse, path: Path, name: str, err: TextIO) -> int:
    size = 0
    with path.open("wb") as out:
        async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
            out.write(chunk)
            size += len(chunk)
            if err.isatty():
                _report(err, f"{name}: {size:,} bytes", final=False)
    return size


def _report(stream: TextIO, line: str, *, final: bool) -> None:
    if stream.isatty():
        stream.write(f"\r\033[K{line}" + ("\n" if final else ""))
    elif final:
        stream.write(line + "\n")
    stream.flush()
