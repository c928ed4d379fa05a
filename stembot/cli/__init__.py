"""The `stembot` command: the one place where settings, sessions and the store are built.

Each subcommand lives in its own module with a ``register(subparsers)`` function that adds its
parser and sets ``handler`` to a function ``(args, env) -> exit status``.
"""

from __future__ import annotations

import argparse
import difflib
import io
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from dotenv import dotenv_values

from stembot import __version__
from stembot.cli import copy_ledger, healthcheck, quota, run, separate
from stembot.config import setting_names
from stembot.errors import ConfigError, StembotError

EXIT_USAGE = 2
DEFAULT_ENV_FILE = Path(".env")
# In the environment only STEMBOT_* keys are surely meant for stembot (other programs may
# read DISCORD_* ones); in stembot's settings file, any key with a declared setting's prefix.
_OUR_PREFIXES = ("STEMBOT_",)


class EnvFileError(Exception):
    """The settings file cannot be used; the message is one line naming it."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stembot",
        description="Split audio into stems from Discord with the Soundverse API.",
    )
    parser.add_argument("--version", action="version", version=f"stembot {__version__}")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="settings file to read (default: .env if there is one; the environment wins)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, separate, quota, copy_ledger, healthcheck):
        module.register(subparsers)
    return parser


def read_env_file(path: Path, *, explicit: bool) -> dict[str, str] | None:
    """The settings in ``path``; None when the default .env is absent (that is fine).

    A file that cannot be read as UTF-8 text, a folder, or a missing file that was asked
    for by name raise EnvFileError: silently running without the operator's settings, or
    with half of them, would be a worse surprise.
    """
    if not path.exists() and not path.is_symlink() and not explicit:
        return None
    try:
        # utf-8-sig: editors on Windows put a byte-order mark before the first name.
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        given = " (given with --env-file)" if explicit else " (a broken link?)"
        raise EnvFileError(f"settings file {path} does not exist{given}") from None
    except IsADirectoryError:
        raise EnvFileError(f"settings file {path} is a folder, not a file") from None
    except UnicodeDecodeError as error:
        line = error.object[: error.start].count(b"\n") + 1
        raise EnvFileError(
            f"settings file {path} is not UTF-8 text (line {line}); save it as UTF-8"
        ) from None
    except OSError as error:
        raise EnvFileError(f"cannot read settings file {path}: {error.strerror}") from None
    return {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}


def unknown_setting_warnings(
    from_file: Mapping[str, str], environment: Mapping[str, str], file_name: str
) -> list[str]:
    """One warning per key that looks meant for stembot but is not a declared setting: most
    likely a typo, which would silently leave the default in force."""
    known = setting_names()
    prefixes_in_file = tuple(sorted({name.partition("_")[0] + "_" for name in known}))
    warnings = []
    for where, keys, prefixes in (
        (file_name, from_file, prefixes_in_file),
        ("the environment", environment, _OUR_PREFIXES),
    ):
        for key in sorted(keys):
            if key in known or not key.startswith(prefixes):
                continue
            if where != file_name and key in from_file:
                continue  # already named once
            close = _closest(key, known)
            hint = f"did you mean {close}?" if close else "see .env.example for the settings"
            warnings.append(f"stembot: warning: {key} in {where} is not a setting; {hint}")
    return warnings


def _closest(key: str, known: frozenset[str]) -> str | None:
    """The known name ``key`` most likely meant, else None.

    Compared without the prefix (STEMBOT_ alone would make every STEMBOT_ name look close),
    among names with the same prefix first.
    """
    prefix, _, rest = key.partition("_")
    for pool in ([n for n in known if n.startswith(prefix + "_")], list(known)):
        by_rest = {name.partition("_")[2]: name for name in sorted(pool)}
        close = difflib.get_close_matches(rest, list(by_rest), n=1, cutoff=0.6)
        if close:
            return by_rest[close[0]]
    return None


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if env is None:
        path = args.env_file if args.env_file is not None else DEFAULT_ENV_FILE
        try:
            from_file = read_env_file(path, explicit=args.env_file is not None)
        except EnvFileError as error:
            print(f"stembot: {error}", file=sys.stderr)
            return EXIT_USAGE
        args.env_file_read = path.absolute() if from_file is not None else None
        environment = {**(from_file or {}), **os.environ}
        file_keys: Mapping[str, str] = from_file or {}
    else:
        args.env_file_read = None
        environment = dict(env)
        file_keys = {}
    for warning in unknown_setting_warnings(file_keys, environment, str(args.env_file_read)):
        print(warning, file=sys.stderr)
    try:
        status: int = args.handler(args, environment)
    except ConfigError as error:
        print(f"stembot: {error.user_message}", file=sys.stderr)
        return EXIT_USAGE
    except StembotError as error:  # e.g. a database file that cannot be opened
        print(f"stembot: {error.user_message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status
