"""A mode is one line in the table in stembot/models.py: its command, cost, price and picker
entries follow from it, and the picker fits Discord's limits whatever the number of files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stembot.models import Mode
from tests import mode_table_probe
from tests.mode_table_probe import MAX_FILES_TRIED, command_tree, picker_steps
from tests.standins.discord import rules

REPO = Path(__file__).resolve().parents[1]
_PICKED = re.compile(r"^stems:split:(?P<mode>[^:]+):[0-9]+:(?P<file>[0-9]+)$")

# The line a maintainer adds to the table for a fourth mode (placed before "all").
KARAOKE_LINE = """\
    KARAOKE = _ModeLine(
        "karaoke", "Karaoke", "/v1/generate/stem-separation/karaoke", 3,
        "Split a song into a backing track without the lead vocals",
    )  # fmt: skip
"""


def _stems_subcommands(tree: list[dict[str, Any]]) -> list[str]:
    (stems,) = [command for command in tree if command["name"] == "stems"]
    return [option["name"] for option in stems["options"]]


def reachable(steps: dict[str, Any]) -> set[tuple[str, str]]:
    """The (mode, attachment id) pairs a member can start from this picker, checking that
    every message it shows is one Discord accepts."""
    first = steps["first"]
    assert rules.check_components(first["components"]) == [], first
    pairs: set[tuple[str, str]] = set()
    for row in first["components"]:
        for component in row["components"]:
            if component["type"] == 2:
                picked = _PICKED.match(component["custom_id"])
                assert picked is not None
                pairs.add((picked["mode"], picked["file"]))
            elif component["custom_id"].startswith("stems:split-pick:"):
                pairs |= {tuple(o["value"].split(":")) for o in component["options"]}
            else:  # the file first: each file's own step offers its modes
                for option in component["options"]:
                    pairs |= reachable({"first": steps["then"][option["value"]]})
    return pairs


def assert_every_pick_fits(pickers: dict[Any, dict[str, Any]], modes: list[str]) -> None:
    for count, steps in pickers.items():
        offered = steps["offered"]
        assert len(offered) == min(int(count), 25)
        assert reachable(steps) == {(mode, file) for mode in modes for file in offered}, count
        if int(count) > 25:
            assert "(the first 25 are offered)" in steps["first"]["content"]


async def test_the_stems_commands_come_from_the_table_in_its_order() -> None:
    """One subcommand per mode, with the table's description, then quota; Discord accepts it."""
    tree = await command_tree()
    assert rules.check_commands(tree) == []
    assert _stems_subcommands(tree) == [*(mode.value for mode in Mode), "quota"]
    (stems,) = [command for command in tree if command["name"] == "stems"]
    described = {option["name"]: option["description"] for option in stems["options"]}
    assert all(described[mode.value] == mode.description for mode in Mode)


async def test_the_picker_offers_every_file_and_mode_within_discords_limits() -> None:
    """From 1 to 30 files, every message of the picker fits 25 options and 5 rows, and every
    (file, mode) pair of the first 25 files can be picked (a message holds at most 10)."""
    pickers = {n: picker_steps(n) for n in range(1, MAX_FILES_TRIED + 1)}
    assert_every_pick_fits(pickers, [mode.value for mode in Mode])
    assert pickers[8]["first"]["components"][0]["components"][0]["custom_id"].startswith(
        "stems:split-pick:"
    )  # every pair in one pick while they fit


@pytest.mark.slow
def test_a_fourth_mode_is_one_line_in_the_table(tmp_path: Path) -> None:
    """A copy of stembot with one more line in its mode table: the /stems command, the cost
    setting (and .env.example), the quota prices, `stembot separate` and the picker all offer
    the new mode, and the picker still fits Discord's limits with up to 30 files."""
    copy = tmp_path / "stembot"
    shutil.copytree(REPO / "stembot", copy, ignore=shutil.ignore_patterns("__pycache__"))
    models = copy / "models.py"
    table = models.read_text()
    assert table.count("    ALL = _ModeLine(") == 1
    models.write_text(table.replace("    ALL = _ModeLine(", KARAOKE_LINE + "    ALL = _ModeLine("))
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "PROBE_ENV": json.dumps({"STEMBOT_COST_ALL": "4"}),
    }
    run = subprocess.run(
        [sys.executable, mode_table_probe.__file__],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert Path(found["package"]).parent == copy
    modes = ["vocals", "instruments", "karaoke", "all"]
    assert [m[0] for m in found["modes"]] == modes
    assert _stems_subcommands(found["tree"]) == [*modes, "quota"]
    assert rules.check_commands(found["tree"]) == []
    assert "STEMBOT_COST_KARAOKE" in found["setting_names"]
    assert found["costs"] == {"vocals": 1, "instruments": 1, "karaoke": 3, "all": 4}
    assert "# STEMBOT_COST_KARAOKE=3\n" in found["env_example"]
    assert "Karaoke: 3 units" in found["quota_prices"]
    assert found["separate_modes"] == modes
    assert_every_pick_fits(found["pickers"], modes)
