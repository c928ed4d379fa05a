"""A benchmark's comparison printed as left-aligned columns, `|` between them."""

from __future__ import annotations

from collections.abc import Sequence


def print_columns(lines: Sequence[Sequence[str]]) -> None:
    """``lines``: the header, then one row per line, each with as many cells."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print(" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
