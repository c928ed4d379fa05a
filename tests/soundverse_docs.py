"""What the Soundverse API documents, for tests to hold the client and the CLI to."""

from __future__ import annotations

from stembot.models import Mode

# The stems the API documents for each mode, in its order. Unknown extra stems are kept.
DOCUMENTED_STEMS: dict[Mode, tuple[str, ...]] = {
    Mode.VOCALS: ("vocals",),
    Mode.INSTRUMENTS: ("Guitar", "Other", "Drums", "Bass", "Piano"),
    Mode.ALL: ("vocals", "Guitar", "Other", "Drums", "Bass", "Piano"),
}
