"""The `stembot` command: the one place where settings, sessions and the store are built.

Each subcommand lives in its own module with a ``register(subparsers)`` function that adds its
parser and sets ``handler`` to a function ``(args, env) -> exit status``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from dotenv import dotenv_values

from stembot import __version__
from stembot.cli import quota, run, separate
from stembot.errors import ConfigError, StembotError

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stembot",
        description="Split audio into stems from Discord with the Soundverse API.",
    )
    parser.add_argument("--version", action="version", version=f"stembot {__version__}")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=Path(".env"),
        help="settings file to read (default: .env; the environment wins over it)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, separate, quota):
        module.register(subparsers)
    return parser


def read_environment(env_file: Path) -> dict[str, str]:
    """The process environment layered over the .env file, as python-dotenv does by default."""
    from_file = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    return {**from_file, **os.environ}


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    environment = read_environment(args.env_file) if env is None else dict(env)
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
