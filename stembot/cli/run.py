"""`stembot run`: start the Discord bot."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run", help="start the Discord bot", description="Start the Discord bot."
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    print("stembot: the Discord bot is not built yet", file=sys.stderr)
    return 1
