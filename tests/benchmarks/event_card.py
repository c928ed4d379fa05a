"""`bench_event --card`: N members click one remix event's card at once, and the card against
the `/stems vocals` burst of the same size.

The organiser starts an event offering the three modes (`/stems-event start`, the bot allowed
to pin its card); then N members click the card's buttons within the burst's dispatch, each
once, picking a mode by the shares of CARD_SHARES (60% Vocals, 30% All stems, 10% Instruments:
exact counts, shuffled). Every click should be acknowledged privately within 3 s; the event
pays one call per mode used; the channel shows the card and nothing else, the card edited at
most once per CARD_EDIT_INTERVAL_S. After the last answer the run waits until the card shows
every member and every mode ready, then one interval more, so that any edit still to come is
counted too.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from stembot.bot.remix_event_card_updates import CARD_EDIT_INTERVAL_S
from stembot.models import Mode
from tests.benchmarks.columns import print_columns
from tests.e2e.remix_event_cards import (
    ORGANISER,
    Event,
    card_text,
    public_posts,
    start_event,
    take_id,
)
from tests.e2e.stack import eventually
from tests.standins.discord import (
    BOT_DEFAULT,
    PIN_MESSAGES,
    DiscordEmulator,
    Guild,
    InteractionRecord,
    Member,
)

CARD, BURST = "card", "/stems burst"
CARD_N = 1000
CARD_SHARES: tuple[tuple[Mode, float], ...] = (
    (Mode.VOCALS, 0.6),
    (Mode.ALL, 0.3),
    (Mode.INSTRUMENTS, 0.1),
)
READY = ": ready, sent at once"  # the card's line of a mode whose stems the event has
# A changed card is edited within one interval of its last write: past that (and this slack
# for the edit's round trip) no edit is still to come.
SETTLE_SLACK_S = 2.0


@dataclass(frozen=True)
class CardSetup:
    """The crowd's picks: each mode's share of the clicks."""

    shares: tuple[tuple[Mode, float], ...] = CARD_SHARES

    @property
    def label(self) -> str:
        return CARD


# --- driving the card -------------------------------------------------------------------------


async def open_event(discord: DiscordEmulator, guild: Guild, title: str) -> Event:
    """An organiser starts an event offering every mode; the bot may pin its card."""
    await discord.set_bot_permissions(guild, BOT_DEFAULT | PIN_MESSAGES)
    organiser = discord.add_member(guild, f"{title} organiser", permissions=ORGANISER)
    return await start_event(discord, guild, organiser, title=title)


async def warm_up_card(discord: DiscordEmulator, latency_s: float) -> None:
    """One event in a guild of its own, one click answered and the card's edit made: the event
    code warm, nothing left to do during the measured clicks."""
    guild = await discord.add_guild("Card warm-up")
    event = await open_event(discord, guild, "Warm-up jam")
    member = discord.add_member(guild, "early-clicker")
    (record,) = await click_all(discord, event, [(member, Mode.VOCALS)])
    await eventually(lambda: len(event.card.history) > 1, latency_s + CARD_EDIT_INTERVAL_S + 30)
    if READY not in card_text(event.card) or record.original is None:
        raise RuntimeError("the warm-up click was not answered, or its card not updated")


def card_crowd(
    discord: DiscordEmulator, guild: Guild, n: int, setup: CardSetup, seed: int
) -> list[tuple[Member, Mode]]:
    """(member, the mode they click) for ``n`` members, the modes in ``setup``'s shares."""
    counts = [math.floor(n * share) for _, share in setup.shares]
    counts[0] += n - sum(counts)
    modes = [
        mode for (mode, _), count in zip(setup.shares, counts, strict=True) for _ in [0] * count
    ]
    random.Random(seed).shuffle(modes)
    return [(discord.add_member(guild, f"remixer{i}"), mode) for i, mode in enumerate(modes)]


async def click_all(
    discord: DiscordEmulator, event: Event, plan: Sequence[tuple[Member, Mode]]
) -> list[InteractionRecord]:
    """Every member of ``plan`` clicks their mode's button on the card, all at once."""
    return list(
        await asyncio.gather(
            *(discord.click(event.card, take_id(event.id, mode), member=m) for m, mode in plan)
        )
    )


def modes_used(plan: Sequence[tuple[Member, Mode]]) -> int:
    return len({mode for _, mode in plan})


async def card_settled(
    event: Event, members: int, modes: int, timeout_s: float = 2 * CARD_EDIT_INTERVAL_S + 30
) -> bool:
    """Wait until the card shows ``members`` and ``modes`` ready, then one interval past its
    last write (an edit still to come is counted); False if it never did within ``timeout_s``."""

    def current() -> bool:
        text = card_text(event.card)
        return f"**{members}** members took stems" in text and text.count(READY) == modes

    try:
        await eventually(current, timeout_s)
    except TimeoutError:
        return False
    last_write = event.card.history[-1][0]
    await asyncio.sleep(max(0.0, last_write + CARD_EDIT_INTERVAL_S + SETTLE_SLACK_S - time.time()))
    return True


# --- what the run showed ----------------------------------------------------------------------


@dataclass
class CardReport:
    clicks: dict[str, int]  # per mode
    modes_used: int
    paid_calls: int  # the API calls the event made (the stand-in counts them)
    public_messages: int  # the bot's posts everyone sees (the card too); Discord's own left out
    card_edits: int  # from the first click to the end of the run
    card_edit_gap_min_s: float | None  # the shortest time between two writes of the card
    card_settled: bool  # the card came to show every member and every mode used ready
    last_card_edit_s: float | None  # after the first click
    private_answers: int  # clicks whose private reply carries the stems
    dms: int  # direct messages to the members who clicked (only after 15 minutes)


def card_report(
    discord: DiscordEmulator,
    event: Event,
    plan: Sequence[tuple[Member, Mode]],
    records: Sequence[InteractionRecord],
    kinds: Sequence[str],
    *,
    first: float,
    paid_calls: int,
    settled: bool,
) -> CardReport:
    """``kinds``: each click's outcome ("result": its reply carries the stems)."""
    clicks: dict[str, int] = {}
    for _, mode in sorted(plan, key=lambda pick: list(Mode).index(pick[1])):
        clicks[mode.value] = clicks.get(mode.value, 0) + 1
    writes = [at for at, _ in event.card.history]
    edits = [at for at in writes[1:] if at >= first]
    gaps = [later - earlier for earlier, later in itertools.pairwise(writes)]
    private = sum(
        1
        for record, kind in zip(records, kinds, strict=True)
        if kind == "result" and record.original is not None and record.original.ephemeral
    )
    return CardReport(
        clicks=clicks,
        modes_used=modes_used(plan),
        paid_calls=paid_calls,
        public_messages=len(public_posts(discord, event.card.channel_id)),
        card_edits=len(edits),
        card_edit_gap_min_s=round(min(gaps), 2) if gaps else None,
        card_settled=settled,
        last_card_edit_s=round(edits[-1] - first, 2) if edits else None,
        private_answers=private,
        dms=sum(len(discord.dm_messages(member)) for member, _ in plan),
    )


def card_rows(card: CardReport | None) -> list[tuple[str, object]]:
    """The card's rows of the benchmark's table ("-" for a `/stems` burst)."""
    labels = CARD_ROW_LABELS
    if card is None:
        return [(label, "-") for label in labels]
    picks = ", ".join(f"{mode} {count}" for mode, count in card.clicks.items())
    return [
        (labels[0], picks),
        (labels[1], f"{card.paid_calls} / {card.modes_used}"),
        (labels[2], f"{card.private_answers} ({card.dms} by DM)"),
        (
            labels[3],
            f"{card.public_messages} / {card.card_edits}"
            + ("" if card.card_settled else " (card never settled)"),
        ),
        (
            labels[4],
            f"{_num(card.card_edit_gap_min_s)} / {_num(card.last_card_edit_s)}",
        ),
    ]


CARD_ROW_LABELS = (
    "card: clicks per mode",
    "card: paid calls / modes used",
    "card: private answers with stems",
    "card: public messages / card edits",
    "card: shortest gap between writes / last edit (s)",
)


# --- the card against the burst ---------------------------------------------------------------


@dataclass
class CardRound:
    first: str  # CARD or BURST: which ran first in this round
    card_ack_ms: dict[str, float]
    burst_ack_ms: dict[str, float]
    p99_ratio: float  # card / burst


@dataclass
class CardComparison:
    """Medians over the rounds; ``p99_ratio`` is the median of the rounds' ratios."""

    n: int
    latency_s: float
    rounds: list[CardRound]
    card_p50_ms: float
    card_p99_ms: float
    card_max_ms: float
    burst_p50_ms: float
    burst_p99_ms: float
    burst_max_ms: float
    p99_ratio: float
    p99_ratio_of_medians: float
    card_acked_within_3s_share: float  # the lowest of the rounds
    card_kib_per_pending_click: float | None


def compare(
    n: int,
    latency_s: float,
    rounds: Sequence[CardRound],
    within_3s: Sequence[float],
    kib_per_pending: Sequence[float | None],
) -> CardComparison:
    def median(values: Sequence[float]) -> float:
        return round(statistics.median(values), 1)

    def ack(side: str, p: str) -> float:
        return median([getattr(r, side)[p] for r in rounds])

    known = [k for k in kib_per_pending if k is not None]
    return CardComparison(
        n=n,
        latency_s=latency_s,
        rounds=list(rounds),
        card_p50_ms=ack("card_ack_ms", "p50"),
        card_p99_ms=ack("card_ack_ms", "p99"),
        card_max_ms=ack("card_ack_ms", "max"),
        burst_p50_ms=ack("burst_ack_ms", "p50"),
        burst_p99_ms=ack("burst_ack_ms", "p99"),
        burst_max_ms=ack("burst_ack_ms", "max"),
        p99_ratio=round(statistics.median(r.p99_ratio for r in rounds), 3),
        p99_ratio_of_medians=round(ack("card_ack_ms", "p99") / ack("burst_ack_ms", "p99"), 3),
        card_acked_within_3s_share=min(within_3s),
        card_kib_per_pending_click=round(statistics.median(known), 2) if known else None,
    )


def print_comparison(comparisons: Sequence[CardComparison], targets: dict[str, str]) -> None:
    for c in comparisons:
        print()
        print(
            f"the card against the /stems vocals burst, N={c.n} L={c.latency_s:g}s, "
            "runs alternated:"
        )
        lines = [("", "card: ack p50 / p99 / max (ms)", "burst: ack p50 / p99 / max", "p99 ratio")]
        for k, r in enumerate(c.rounds, 1):
            lines.append(
                (
                    f"  repeat {k} ({r.first} first)",
                    _ack(r.card_ack_ms),
                    _ack(r.burst_ack_ms),
                    f"{r.p99_ratio:.2f}",
                )
            )
        lines.append(
            (
                f"  median of {len(c.rounds)}",
                f"{c.card_p50_ms:,.0f} / {c.card_p99_ms:,.0f} / {c.card_max_ms:,.0f}",
                f"{c.burst_p50_ms:,.0f} / {c.burst_p99_ms:,.0f} / {c.burst_max_ms:,.0f}",
                f"{c.p99_ratio:.2f} (of the medians {c.p99_ratio_of_medians:.2f})",
            )
        )
        print_columns(lines)
        print(
            f"card clicks acknowledged within 3 s (lowest round): "
            f"{c.card_acked_within_3s_share:.2%}; "
            f"KiB per pending click (median): {_num(c.card_kib_per_pending_click)}"
        )
        print(
            f"targets: card clicks within 3 s {targets['card_acked_within_3s_share']}; "
            f"card ack p99 over the burst's {targets['card_ack_p99_over_burst']}"
        )


def _ack(ack_ms: dict[str, float]) -> str:
    return " / ".join(f"{ack_ms[p]:,.0f}" for p in ("p50", "p99", "max")) if ack_ms else "-"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"
