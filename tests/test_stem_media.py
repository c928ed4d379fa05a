"""The media service: a result's stems fetched once, its picture, attachments within the upload
limit, and free mixes, against the Soundverse stand-in's tone stems, a real cache and pool."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import soundfile as sf
from PIL import Image

from stembot.attachment_plan import REQUEST_OVERHEAD_BYTES
from stembot.audio.picture import WIDTH, height_for
from stembot.audio.pool import AudioPool
from stembot.errors import MixStemsGoneError, UnknownMixError
from stembot.guarded_connector import GuardedConnector
from stembot.models import Mode, Separation, Stem
from stembot.stem_cache import StemCache
from stembot.stem_fetcher import StemFetcher
from stembot.stem_files import StemFiles
from stembot.stem_media import MediaService, PreparedMedia
from tests.address_policies import allowing
from tests.audio_signals import level_at
from tests.standins.soundverse import SoundverseStandin, StemFault
from tests.standins.stem_audio import STEM_TONES_HZ

pytestmark = pytest.mark.timeout(90)

T = TypeVar("T")
KEY = "media-key"
SOURCE = "https://songs.example/track.mp3"
GUILD = 7
ROOMY = 25 * 1024 * 1024  # a boosted channel: every original fits
MiB = 1024 * 1024


class CountingPool(AudioPool):
    """The real pool, counting the jobs it was given by function name."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.jobs: Counter[str] = Counter()

    async def run(self, guild_id: int, function: Callable[..., T], *args: Any) -> T:
        self.jobs[function.__name__] += 1
        return await super().run(guild_id, function, *args)


@dataclasses.dataclass
class Rig:
    api: SoundverseStandin
    cache: StemCache
    pool: CountingPool
    media: MediaService

    async def separate(self, mode: Mode = Mode.ALL) -> Separation:
        """One separation call to the stand-in, as the service stores its answer."""
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                self.api.base_url + mode.api_path,
                json={"audioUrl": SOURCE},
                headers={"Authorization": f"Bearer {KEY}"},
            ) as answer,
        ):
            assert answer.status == 200
            listed = await answer.json()
        stems = tuple(Stem(s["audioName"], s["audioUrl"]) for s in listed)
        return Separation(mode, stems, datetime.now(UTC))

    async def prepare(self, separation: Separation, limit: int = ROOMY) -> PreparedMedia:
        """prepare(), checking that its files are on disk while held."""
        async with self.media.prepare(GUILD, SOURCE, separation, limit) as prepared:
            assert all(upload.path.is_file() for upload in prepared.files)
            return prepared


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    connector = GuardedConnector(allowing("127.0.0.1/32"))
    pool = CountingPool(2)
    cache = await StemCache.open(tmp_path / "cache", 200 * MiB)
    try:
        async with SoundverseStandin(api_key=KEY) as api:
            fetcher = StemFetcher(connector, max_bytes=8 * MiB, timeout_s=20)
            yield Rig(api, cache, pool, MediaService(cache, StemFiles(cache, fetcher), pool))
    finally:
        await pool.close()
        await cache.close()
        await connector.close()


def decoded(path: Path) -> tuple[int, int, float]:
    info = sf.info(path)
    return info.samplerate, info.channels, info.duration


async def test_twenty_asks_fetch_each_stem_once_and_draw_once(rig: Rig) -> None:
    """20 prepare() at once for one `/stems all` result: six GETs, one analysis per stem and
    one picture; everyone gets the picture and the six stems as the API's own files."""
    separation = await rig.separate()
    results = await asyncio.gather(*(rig.prepare(separation) for _ in range(20)))
    assert rig.api.downloads == 6
    assert rig.pool.jobs == Counter({"analyse_stem": 6, "draw_picture": 1})
    for prepared in results:
        assert prepared == results[0]
    media = results[0].media
    assert media.note is None
    assert media.picture == "stems.png"
    assert [stem.name for stem in media.stems] == list(STEM_TONES_HZ)
    assert all(stem.attachment and not stem.compressed for stem in media.stems)
    assert [upload.filename for upload in results[0].files] == [
        "stems.png",
        *(f"{name}.wav" for name in STEM_TONES_HZ),
    ]


async def test_picture_drawn_and_silent_stem_flagged(rig: Rig) -> None:
    """The PNG has a lane per stem; the silent Piano is flagged, and attached as it is since
    everything fits; the other stems decode to their own tones."""
    rig.api.serve_stems(silent={"Piano"})
    prepared = await rig.prepare(await rig.separate())
    picture = prepared.files[0]
    assert picture.filename == prepared.media.picture
    with Image.open(picture.path) as image:
        assert image.format == "PNG"
        assert image.size == (WIDTH, height_for(6))
    flags = {stem.name: stem.silent for stem in prepared.media.stems}
    assert flags == {name: name == "Piano" for name in STEM_TONES_HZ}
    files = {upload.filename: upload.path for upload in prepared.files}
    assert set(files) == {"stems.png", *(f"{name}.wav" for name in STEM_TONES_HZ)}
    for name, hz in STEM_TONES_HZ.items():
        if name != "Piano":
            assert level_at(files[f"{name}.wav"], hz) > -1


async def test_a_silent_stem_gives_its_room_to_the_others_when_space_is_short(rig: Rig) -> None:
    """Under a limit that takes smaller copies, the silent Piano stays a link and the five
    stems worth hearing share the room."""
    rig.api.serve_stems(silent={"Piano"})
    prepared = await rig.prepare(await rig.separate(), limit=2 * MiB)
    attached = {stem.name: stem.attachment for stem in prepared.media.stems}
    assert attached["Piano"] is None
    assert all(attached[name] is not None for name in STEM_TONES_HZ if name != "Piano")
    assert prepared.total_bytes <= 2 * MiB


async def test_limit_too_small_for_originals_gives_copies_within_it(rig: Rig) -> None:
    """At 2 MiB the six 3-second WAVs (about 3 MB) do not fit: each gets a smaller Ogg copy,
    the whole upload stays within the limit, the note says so, the copies hold their tones."""
    limit = 2 * MiB
    separation = await rig.separate()
    prepared = await rig.prepare(separation, limit)
    media = prepared.media
    assert all(stem.compressed and stem.attachment for stem in media.stems)
    assert media.note is not None and "smaller copies" in media.note
    assert prepared.total_bytes + REQUEST_OVERHEAD_BYTES <= limit
    by_name = {upload.filename: upload for upload in prepared.files}
    for name, hz in STEM_TONES_HZ.items():
        copy = by_name[f"{name}.ogg"]
        assert sf.info(copy.path).format == "OGG"
        assert level_at(copy.path, hz) > -1
    # Asked again with the same limit, the copies come from the cache.
    assert rig.pool.jobs["compress_to_fit"] == 6
    again = await rig.prepare(separation, limit)
    assert again == prepared
    assert rig.pool.jobs["compress_to_fit"] == 6


@pytest.mark.parametrize(
    "fault",
    [
        StemFault.MISSING,
        StemFault.NOT_AUDIO,
        StemFault.TRUNCATED,
        StemFault.HUGE,
        StemFault.PRIVATE_REDIRECT,
    ],
)
async def test_a_broken_stem_leaves_links_and_a_note(rig: Rig, fault: StemFault) -> None:
    """One stem's file breaks: no attachments at all, one line saying so, no exception."""
    rig.api.serve_stems(faults={"Drums": fault})
    prepared = await rig.prepare(await rig.separate())
    assert prepared.files == ()
    assert prepared.media.picture is None
    assert all(stem.attachment is None for stem in prepared.media.stems)
    note = prepared.media.note
    assert note is not None and "could not be attached" in note and "Drums" in note
    assert "\n" not in note


async def test_without_drums_holds_every_tone_but_the_drums(rig: Rig) -> None:
    """The mix from the cached stems (no new GET): every other stem's tone, not the drums'."""
    separation = await rig.separate()
    await rig.prepare(separation)
    async with rig.media.mix(GUILD, SOURCE, separation, "without:Drums", ROOMY) as made:
        assert made.mix.label == "Without Drums"
        assert made.file.filename == "Without_Drums.ogg"
        rate, channels, seconds = decoded(made.file.path)
        assert (rate, channels) == (44_100, 2) and seconds == pytest.approx(3.0, abs=0.01)
        for name, hz in STEM_TONES_HZ.items():
            level = level_at(made.file.path, hz)
            if name == "Drums":
                assert level < -40, name
            else:
                assert level > -3, name
    assert rig.api.downloads == 6


async def test_the_same_mix_twice_is_computed_once(rig: Rig) -> None:
    separation = await rig.separate()
    paths = []
    for _ in range(2):
        async with rig.media.mix(GUILD, SOURCE, separation, "instrumental", ROOMY) as made:
            paths.append(made.file.path)
    asked_together = [
        rig.media.mix(GUILD, SOURCE, separation, "instrumental", ROOMY) for _ in range(5)
    ]
    for holding in asked_together:
        async with holding as made:
            paths.append(made.file.path)
    assert rig.pool.jobs["mix_to_fit"] == 1
    assert len(set(paths)) == 1
    assert rig.api.downloads == 5  # the instrumental's stems, fetched for it


async def test_a_mix_after_eviction_with_expired_links_is_a_typed_failure(rig: Rig) -> None:
    """The stems left the cache and the API's links answer 404: MixStemsGoneError (rerun
    helps); with working links the stems are fetched again instead."""
    separation = await rig.separate()
    await rig.prepare(separation)
    assert await rig.cache.prune_issued_before(datetime.now(UTC)) > 0
    expired = dataclasses.replace(
        separation,
        stems=tuple(
            Stem(s.name, f"{rig.api.base_url}/files/{uuid.uuid4().hex}/{s.name}.wav")
            for s in separation.stems
        ),
    )
    with pytest.raises(MixStemsGoneError) as failure:
        async with rig.media.mix(GUILD, SOURCE, expired, "without:Bass", ROOMY):
            pass
    assert failure.value.rerun_helps
    assert "Run the request again" in failure.value.user_message
    assert rig.pool.jobs["mix_to_fit"] == 0
    async with rig.media.mix(GUILD, SOURCE, separation, "without:Bass", ROOMY) as made:
        assert level_at(made.file.path, STEM_TONES_HZ["Bass"]) < -40
    assert rig.api.downloads == 6 + 5


async def test_an_unknown_mix_is_refused(rig: Rig) -> None:
    separation = await rig.separate(Mode.VOCALS)
    with pytest.raises(UnknownMixError):
        async with rig.media.mix(GUILD, SOURCE, separation, "instrumental", ROOMY):
            pass
