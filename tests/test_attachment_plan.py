"""Which stems ride on the result as files: the whole request within the upload limit."""

from __future__ import annotations

import random

from stembot.attachment_plan import (
    FILES_MAX,
    REQUEST_OVERHEAD_BYTES,
    Choice,
    FetchedStem,
    bitrate_for,
    lowest_copy_bytes,
    plan_attachments,
)

MIB = 2**20
ALL = ["vocals", "Guitar", "Other", "Drums", "Bass", "Piano"]
PICTURE = 120_000


def stems(size: int, seconds: float = 240.0, names: list[str] = ALL) -> list[FetchedStem]:
    return [FetchedStem(name, size, seconds) for name in names]


def request_bytes(files: list[FetchedStem], limit: int, picture: int = PICTURE) -> int:
    """What the planned message would upload, at most."""
    plan = plan_attachments(files, limit, picture)
    sizes = {f.name: f.size for f in files}
    total = picture + REQUEST_OVERHEAD_BYTES
    for planned in plan.stems:
        if planned.choice is Choice.ORIGINAL:
            total += sizes[planned.name]
        elif planned.choice is Choice.SMALLER_COPY:
            total += planned.budget_bytes
    return total


def test_everything_that_fits_goes_as_the_apis_own_files() -> None:
    plan = plan_attachments(stems(1 * MIB), 10 * MIB, PICTURE)
    assert {p.choice for p in plan.stems} == {Choice.ORIGINAL}
    assert plan.note is None


def test_the_whole_request_counts_not_each_file() -> None:
    """Six 2 MiB stems each fit 10 MiB, together they do not: smaller copies for all."""
    plan = plan_attachments(stems(2 * MIB), 10 * MIB, PICTURE)
    assert {p.choice for p in plan.stems} == {Choice.SMALLER_COPY}
    assert request_bytes(stems(2 * MIB), 10 * MIB) <= 10 * MIB
    assert plan.note is not None and "10 MiB upload limit" in plan.note
    assert "full quality" in plan.note


def test_a_boosted_server_gets_the_originals() -> None:
    plan = plan_attachments(stems(5 * MIB), 50 * MIB, PICTURE)
    assert {p.choice for p in plan.stems} == {Choice.ORIGINAL}


def test_small_stems_keep_their_files_and_pass_their_room_on() -> None:
    files = [FetchedStem("vocals", 300_000, 240), *stems(4 * MIB, names=ALL[1:])]
    plan = plan_attachments(files, 10 * MIB, PICTURE)
    assert plan.choice_of("vocals") is Choice.ORIGINAL
    copies = [p for p in plan.stems if p.choice is Choice.SMALLER_COPY]
    assert len(copies) == 5
    share = (10 * MIB - REQUEST_OVERHEAD_BYTES - PICTURE - 300_000) // 5
    assert all(abs(p.budget_bytes - share) <= 1 for p in copies)


def test_stems_too_long_for_any_worthwhile_copy_stay_links_and_the_note_names_them() -> None:
    """Six 10-minute stems in 10 MiB: not all can have a copy worth hearing."""
    files = stems(24 * MIB, seconds=600)
    plan = plan_attachments(files, 10 * MIB, PICTURE)
    links = [p.name for p in plan.stems if p.choice is Choice.LINK_ONLY]
    assert links and plan.note is not None
    assert all(name in plan.note for name in links)
    for planned in plan.stems:
        if planned.choice is Choice.SMALLER_COPY:
            assert planned.budget_bytes >= lowest_copy_bytes(600)
    assert request_bytes(files, 10 * MIB) <= 10 * MIB


def test_no_more_files_than_a_message_holds() -> None:
    names = [f"stem{n}" for n in range(12)]
    plan = plan_attachments(stems(10_000, names=names), 50 * MIB, PICTURE)
    attached = [p for p in plan.stems if p.choice is not Choice.LINK_ONLY]
    assert len(attached) == FILES_MAX - 1  # and the picture
    assert plan.note is not None and "at most 10 files" in plan.note


def test_a_file_discord_cannot_play_gets_a_copy_it_can() -> None:
    files = [
        FetchedStem("vocals", 1 * MIB, 240, plays_inline=False),
        *stems(1 * MIB, names=ALL[1:]),
    ]
    plan = plan_attachments(files, 10 * MIB, PICTURE)
    assert plan.choice_of("vocals") is Choice.SMALLER_COPY
    assert plan.choice_of("Drums") is Choice.ORIGINAL


def test_the_bitrate_fills_the_budget_without_passing_it() -> None:
    budget = 1_600_000
    bitrate = bitrate_for(budget, 240)
    assert bitrate * 240 / 8 * 1.05 <= budget
    assert bitrate > 48_000


def test_whatever_the_stems_the_request_stays_within_the_limit() -> None:
    rng = random.Random(7)
    for _ in range(500):
        count = rng.randint(1, 12)
        files = [
            FetchedStem(f"s{n}", rng.randint(1_000, 40 * MIB), rng.uniform(1, 900))
            for n in range(count)
        ]
        limit = rng.choice([10 * MIB, 25 * MIB, 50 * MIB, 100 * MIB])
        picture = rng.choice([0, PICTURE])
        assert request_bytes(files, limit, picture) <= limit
        plan = plan_attachments(files, limit, picture)
        assert len([p for p in plan.stems if p.choice is not Choice.LINK_ONLY]) <= FILES_MAX - (
            1 if picture else 0
        )
