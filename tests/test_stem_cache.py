"""The on-disk stem cache: single-flight, LRU by size, restarts, retention; stems fetched from a
real HTTP server on loopback through the guarded fetcher."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from stembot.cache_keys import CacheItem, ResultKey
from stembot.cli.run import open_stem_cache
from stembot.config import Secret, load_settings
from stembot.errors import (
    StemAddressRefusedError,
    StemGoneError,
    StemNotAudioError,
    StemTooLargeError,
    StemTruncatedError,
)
from stembot.guarded_connector import GuardedConnector
from stembot.models import Mode, Stem
from stembot.retention import Retention
from stembot.soundverse import SoundverseClient
from stembot.stem_cache import PARTIAL_FOLDER, StemCache
from stembot.stem_fetcher import StemFetcher
from stembot.stem_files import StemFiles
from stembot.store.asynchronous import AsyncStore
from tests.address_policies import allowing
from tests.standins.local_http import serving
from tests.standins.soundverse import DEFAULT_API_KEY, SoundverseStandin, StemFault
from tests.test_stem_fetcher import wav_bytes
from tests.test_store import NOW, POLICY, new_request, separation

STEM_BYTES = len(wav_bytes(0.25))
MAX_STEM = 512 * 1024
RESULT = ResultKey("attachment:42", "all", NOW)


@dataclass
class StemServer:
    """Serves a distinct WAV per stem name; counts the requests per path; can hold a
    download half way until ``release`` is set."""

    base: str = ""
    hits: Counter[str] = field(default_factory=Counter)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    halfway: asyncio.Event = field(default_factory=asyncio.Event)

    def stem(self, name: str, path: str = "stems") -> Stem:
        return Stem(name, f"{self.base}/{path}/{name}.wav?sig=secret")

    def body(self, name: str) -> bytes:
        return wav_bytes(0.25, frequency=200 + 10 * len(name) + ord(name[0]))


def _app(server: StemServer) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/stems/{name}.wav")
    async def stem(request: web.Request) -> web.Response:
        server.hits[request.path] += 1
        await asyncio.sleep(0.1)  # long enough for every concurrent asker to arrive
        return web.Response(body=server.body(request.match_info["name"]), content_type="audio/wav")

    @routes.get("/gone/{name}.wav")
    async def gone(request: web.Request) -> web.Response:
        server.hits[request.path] += 1
        await asyncio.sleep(0.1)
        return web.Response(status=404)

    @routes.get("/held/{name}.wav")
    async def held(request: web.Request) -> web.StreamResponse:
        body = server.body(request.match_info["name"])
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        server.halfway.set()
        await server.release.wait()
        await response.write(body[len(body) // 2 :])
        return response

    @routes.get("/endless/{name}.wav")
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        await response.prepare(request)
        block = server.body("x")[:44] + b"\x00" * (64 * 1024 - 44)
        try:
            for _ in range(800):
                await response.write(block)
        except (ConnectionError, RuntimeError):
            pass
        return response

    app = web.Application()
    app.add_routes(routes)
    return app


@pytest.fixture
async def server() -> AsyncIterator[StemServer]:
    found = StemServer()
    async with serving(_app(found)) as base:
        found.base = base
        yield found
        found.release.set()


@pytest.fixture
async def fetcher() -> AsyncIterator[StemFetcher]:
    connector = GuardedConnector(allowing("127.0.0.1/32"))
    yield StemFetcher(connector, max_bytes=MAX_STEM, timeout_s=5.0)
    await connector.close()


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[list[StemCache]]:
    """Caches opened by a test, closed at its end."""
    caches: list[StemCache] = []
    yield caches
    for cache in caches:
        await cache.close()


async def open_cache(opened: list[StemCache], directory: Path, max_bytes: int) -> StemCache:
    cache = await StemCache.open(directory, max_bytes)
    opened.append(cache)
    return cache


async def fetch(files: StemFiles, stem: Stem, result: ResultKey = RESULT) -> bytes:
    async with files.holding(result, stem) as cached:
        return await asyncio.to_thread(cached.path.read_bytes)


def cached_files(directory: Path) -> list[Path]:
    """The files in the cache's result folders (not the partial downloads)."""
    return sorted(
        p for p in directory.rglob("*") if p.is_file() and p.parent.name != PARTIAL_FOLDER
    )


async def test_a_stem_is_fetched_once_then_served_from_disk(server, fetcher, opened, tmp_path):
    """The second ask reads the cached file: the server sees one request."""
    files = StemFiles(await open_cache(opened, tmp_path / "cache", 10 * MAX_STEM), fetcher)
    vocals = server.stem("vocals")
    assert await fetch(files, vocals) == server.body("vocals")
    assert await fetch(files, vocals) == server.body("vocals")
    assert server.hits == {"/stems/vocals.wav": 1}
    [path] = cached_files(tmp_path / "cache")
    assert path.suffix == ".wav"


async def test_fifty_concurrent_asks_make_one_download(server, fetcher, opened, tmp_path):
    """However many ask for a stem at once, it is fetched once and all get the whole file."""
    files = StemFiles(await open_cache(opened, tmp_path / "cache", 10 * MAX_STEM), fetcher)
    drums = server.stem("drums")
    bodies = await asyncio.gather(*(fetch(files, drums) for _ in range(50)))
    assert server.hits == {"/stems/drums.wav": 1}
    assert set(bodies) == {server.body("drums")}


async def test_a_failed_fetch_reaches_every_asker_and_is_not_kept(
    server, fetcher, opened, tmp_path
):
    """Ten askers share one failed fetch; the failure is not cached, so a later ask tries
    again; no file is left anywhere."""
    directory = tmp_path / "cache"
    files = StemFiles(await open_cache(opened, directory, 10 * MAX_STEM), fetcher)
    gone = server.stem("bass", path="gone")
    outcomes = await asyncio.gather(
        *(fetch(files, gone) for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(o, StemGoneError) for o in outcomes)
    assert server.hits == {"/gone/bass.wav": 1}
    with pytest.raises(StemGoneError):
        await fetch(files, gone)
    assert server.hits == {"/gone/bass.wav": 2}
    assert [p for p in directory.rglob("*") if p.is_file()] == []


async def test_a_stem_past_the_cap_leaves_no_file(server, fetcher, opened, tmp_path):
    """An endless stream is stopped at the fetcher's cap and its part is deleted."""
    directory = tmp_path / "cache"
    files = StemFiles(await open_cache(opened, directory, 10 * MAX_STEM), fetcher)
    with pytest.raises(StemTooLargeError):
        await fetch(files, server.stem("piano", path="endless"))
    assert [p for p in directory.rglob("*") if p.is_file()] == []


async def test_a_download_under_way_is_not_visible_in_the_cache(server, fetcher, opened, tmp_path):
    """Half a file sits in the partial folder only; the cache shows it once it is whole."""
    directory = tmp_path / "cache"
    cache = await open_cache(opened, directory, 10 * MAX_STEM)
    files = StemFiles(cache, fetcher)
    guitar = server.stem("guitar", path="held")
    task = asyncio.create_task(fetch(files, guitar))
    await asyncio.wait_for(server.halfway.wait(), 5)
    await asyncio.sleep(0.05)
    assert not cache.has(RESULT, CacheItem.stem("guitar"))
    assert cached_files(directory) == []
    [part] = list((directory / PARTIAL_FOLDER).iterdir())
    assert part.stat().st_size < len(server.body("guitar"))
    server.release.set()
    assert await task == server.body("guitar")
    assert cache.has(RESULT, CacheItem.stem("guitar"))
    assert [p.read_bytes() for p in cached_files(directory)] == [server.body("guitar")]
    assert list((directory / PARTIAL_FOLDER).iterdir()) == []


async def test_a_part_left_by_a_crash_is_deleted_at_start(opened, tmp_path):
    """A partial download from a stopped bot never becomes a cached file."""
    directory = tmp_path / "cache"
    (directory / PARTIAL_FOLDER).mkdir(parents=True)
    (directory / PARTIAL_FOLDER / "0123.part").write_bytes(b"RIFF half a stem")
    cache = await open_cache(opened, directory, 10 * MAX_STEM)
    assert (cache.total_bytes, list((directory / PARTIAL_FOLDER).iterdir())) == (0, [])


async def test_least_recently_used_files_go_first_and_the_total_stays_under_the_cap(
    server, fetcher, opened, tmp_path
):
    """Room for three stems: after A, B, C and a use of A, fetching D evicts B."""
    directory = tmp_path / "cache"
    cache = await open_cache(opened, directory, 3 * STEM_BYTES + 100)
    files = StemFiles(cache, fetcher)
    for name in ("a", "b", "c"):
        await fetch(files, server.stem(name))
    await fetch(files, server.stem("a"))
    await fetch(files, server.stem("d"))
    await cache.close()
    kept = {name for name in "abcd" if cache.has(RESULT, CacheItem.stem(name))}
    assert kept == {"a", "c", "d"}
    assert cache.total_bytes == sum(p.stat().st_size for p in cached_files(directory))
    assert cache.total_bytes <= cache.max_bytes
    assert len(cached_files(directory)) == 3


async def test_a_file_in_use_is_not_evicted_until_let_go(server, fetcher, opened, tmp_path):
    """Room for one stem: while A and B are held both stay (over the cap) and C comes and goes
    around them; B, let go while A is still in use, goes at once, and the total is back under
    the cap."""
    directory = tmp_path / "cache"
    cache = await open_cache(opened, directory, STEM_BYTES + 100)
    files = StemFiles(cache, fetcher)
    async with (
        files.holding(RESULT, server.stem("a")) as a,
        files.holding(RESULT, server.stem("b")) as b,
    ):
        await fetch(files, server.stem("c"))
        await cache.close()
        assert (a.path.read_bytes(), b.path.read_bytes()) == (server.body("a"), server.body("b"))
        assert not cache.has(RESULT, CacheItem.stem("c"))
        assert cache.total_bytes == 2 * STEM_BYTES
    await cache.close()
    assert (a.path.exists(), b.path.exists()) == (True, False)
    assert cache.total_bytes == STEM_BYTES


async def test_a_restarted_cache_finds_its_files_and_their_order(server, fetcher, opened, tmp_path):
    """A new cache on the same folder serves the files without fetching, and evicts by the
    uses made before the restart (A was used after B)."""
    directory = tmp_path / "cache"
    first = StemFiles(await open_cache(opened, directory, 3 * STEM_BYTES + 100), fetcher)
    for name in ("a", "b", "c"):
        await fetch(first, server.stem(name))
        await asyncio.sleep(0.02)  # distinct modification times
    await fetch(first, server.stem("a"))
    hits = server.hits.copy()

    restarted = await open_cache(opened, directory, 3 * STEM_BYTES + 100)
    assert restarted.total_bytes == 3 * STEM_BYTES
    second = StemFiles(restarted, fetcher)
    await fetch(second, server.stem("d"))
    await restarted.close()
    assert {n for n in "abcd" if restarted.has(RESULT, CacheItem.stem(n))} == {"a", "c", "d"}
    assert await fetch(second, server.stem("a")) == server.body("a")
    assert server.hits == hits + Counter({"/stems/d.wav": 1})


async def test_a_lowered_cap_is_applied_at_start(server, fetcher, opened, tmp_path):
    """Restarted with room for one stem, the cache keeps only the most recently used."""
    directory = tmp_path / "cache"
    first = StemFiles(await open_cache(opened, directory, 10 * MAX_STEM), fetcher)
    for name in ("a", "b", "c"):
        await fetch(first, server.stem(name))
        await asyncio.sleep(0.02)
    smaller = await open_cache(opened, directory, STEM_BYTES + 100)
    await smaller.close()
    assert [p.read_bytes() for p in cached_files(directory)] == [server.body("c")]


async def test_a_mix_is_made_once_for_the_same_set_of_stems(opened, tmp_path):
    """A mix is keyed by the set of stems mixed, in any order; another set is another file."""
    cache = await open_cache(opened, tmp_path / "cache", 10 * MAX_STEM)
    made: list[tuple[str, ...]] = []

    def maker(stems: tuple[str, ...]):
        async def make(path: Path) -> str:
            made.append(stems)
            await asyncio.to_thread(path.write_bytes, "+".join(stems).encode())
            return "flac"

        return make

    for stems in (("vocals", "bass"), ("bass", "vocals"), ("bass", "drums")):
        async with cache.holding(RESULT, CacheItem.mix(stems), maker(stems)) as mix:
            assert mix.extension == "flac"
    assert made == [("vocals", "bass"), ("bass", "drums")]


async def test_pruning_removes_the_files_of_results_issued_before_the_cutoff(
    server, fetcher, opened, tmp_path
):
    """Files of a result issued 100 days ago go with it; a recent result's stay."""
    directory = tmp_path / "cache"
    cache = await open_cache(opened, directory, 10 * MAX_STEM)
    files = StemFiles(cache, fetcher)
    old = ResultKey("attachment:1", "all", NOW - timedelta(days=100))
    recent = ResultKey("attachment:2", "all", NOW - timedelta(days=1))
    for result in (old, recent):
        for name in ("vocals", "drums"):
            await fetch(files, server.stem(name), result)
    assert await cache.prune_issued_before(NOW - timedelta(days=30)) == 2
    assert not (directory / old.folder).exists()
    assert sorted(p.parent.name for p in cached_files(directory)) == [recent.folder] * 2
    assert cache.total_bytes == 2 * STEM_BYTES


async def test_retention_prunes_cached_files_with_the_stored_results(
    server, fetcher, opened, tmp_path
):
    """The daily retention removes an old stored result and its cached stems together."""
    store = await AsyncStore.open(tmp_path / "ledger.db", POLICY)
    try:
        results = []
        for key, issued in (("attachment:1", NOW - timedelta(days=100)), ("attachment:2", NOW)):
            asked = new_request(mode=Mode.VOCALS, source_key=key)
            request = await store.ledger.reserve(asked, issued)
            await store.ledger.settle(request.id, separation(Mode.VOCALS, issued), key, issued)
            results.append(ResultKey.of(key, separation(Mode.VOCALS, issued)))
        cache = await open_cache(opened, tmp_path / "cache", 10 * MAX_STEM)
        files = StemFiles(cache, fetcher)
        for result in results:
            await fetch(files, server.stem("vocals"), result)
        await Retention(store, 30, lambda: NOW + timedelta(days=10), cache=cache).prune_now()
        old, recent = results
        long_ago = NOW - timedelta(days=400)
        assert await store.ledger.find_result("attachment:1", Mode.VOCALS, long_ago) is None
        assert not cache.has(old, CacheItem.stem("vocals"))
        assert not (tmp_path / "cache" / old.folder).exists()
        assert cache.has(recent, CacheItem.stem("vocals"))
    finally:
        await store.close()


async def test_a_file_removed_behind_the_caches_back_is_fetched_again(
    server, fetcher, opened, tmp_path
):
    """An operator clearing the folder while the bot runs costs a fetch, not an error."""
    directory = tmp_path / "cache"
    cache = await open_cache(opened, directory, 10 * MAX_STEM)
    files = StemFiles(cache, fetcher)
    await fetch(files, server.stem("vocals"))
    for path in cached_files(directory):
        os.remove(path)
    assert await fetch(files, server.stem("vocals")) == server.body("vocals")
    assert server.hits == {"/stems/vocals.wav": 2}
    assert cache.total_bytes == STEM_BYTES


def test_the_cache_lives_beside_the_database_unless_set() -> None:
    """STEMBOT_CACHE_DIR defaults to stembot-cache in the database's folder (the Docker volume)."""
    beside = load_settings({"STEMBOT_DB_PATH": "/data/stembot.db"})
    assert (beside.cache_path, beside.cache_max_bytes) == (Path("/data/stembot-cache"), 2 << 30)
    chosen = load_settings(
        {"STEMBOT_CACHE_DIR": "/var/cache/stembot", "STEMBOT_CACHE_MAX_MB": "64"}
    )
    assert (chosen.cache_path, chosen.cache_max_bytes) == (Path("/var/cache/stembot"), 64 << 20)


async def test_an_unusable_cache_folder_is_logged_and_does_not_stop_the_bot(tmp_path, caplog):
    """A cache folder that cannot be made (here: under a file) is one error line, no crash."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    settings = load_settings({"STEMBOT_CACHE_DIR": str(blocker / "cache")})
    assert await open_stem_cache(settings) is None
    assert "STEMBOT_CACHE_DIR" in caplog.text


EXPECTED_FAILURE: dict[StemFault, type[Exception]] = {
    StemFault.MISSING: StemGoneError,
    StemFault.NOT_AUDIO: StemNotAudioError,
    StemFault.TRUNCATED: StemTruncatedError,
    StemFault.CUT_SHORT: StemTruncatedError,
    StemFault.PRIVATE_REDIRECT: StemAddressRefusedError,
    StemFault.HUGE: StemTooLargeError,
    StemFault.HUGE_UNANNOUNCED: StemTooLargeError,
}


@pytest.mark.parametrize(
    "broken",
    [
        ("MISSING", "NOT_AUDIO", "TRUNCATED", "PRIVATE_REDIRECT", "HUGE_UNANNOUNCED"),
        ("CUT_SHORT", "HUGE"),
    ],
)
async def test_the_stand_ins_stems_and_broken_files(opened, tmp_path, broken):
    """A whole `all` result from the Soundverse stand-in with stems broken each way it can
    break them: the good ones are cached as the WAV served, each broken one is its typed
    error, and asking twice downloads no good stem again."""
    names = ("Guitar", "Other", "Drums", "Bass", "Piano")
    faults = {name: StemFault[fault] for name, fault in zip(names, broken, strict=False)}
    expected = {name: EXPECTED_FAILURE[fault] for name, fault in faults.items()}
    connector = GuardedConnector(allowing("127.0.0.1/32"))
    fetcher = StemFetcher(connector, max_bytes=4 * 1024 * 1024, timeout_s=10.0)
    async with SoundverseStandin() as api, aiohttp.ClientSession() as session, connector:
        api.serve_stems("wav", faults=faults)
        client = SoundverseClient(session, api.base_url, Secret(DEFAULT_API_KEY), timeout_s=10.0)
        result = await client.separate(Mode.ALL, "https://audio.example/song.mp3")
        key = ResultKey.of("attachment:7", result)
        files = StemFiles(await open_cache(opened, tmp_path / "cache", 10 * MAX_STEM), fetcher)
        for _ in range(2):
            for stem in result.stems:
                if stem.name in expected:
                    with pytest.raises(expected[stem.name]):
                        await fetch(files, stem, key)
                else:
                    body = await fetch(files, stem, key)
                    assert body.startswith(b"RIFF") and len(body) > 100_000
        # Each good stem once; each broken one on each ask (failures are not kept).
        assert api.downloads == (6 - len(faults)) + 2 * len(faults)


async def test_the_stand_ins_mp3_stems_are_cached_as_mp3(fetcher, opened, tmp_path):
    """The format comes from the bytes: MP3 stems are kept as .mp3 files."""
    async with SoundverseStandin() as api, aiohttp.ClientSession() as session:
        api.serve_stems("mp3", seconds=1.0)
        client = SoundverseClient(session, api.base_url, Secret(DEFAULT_API_KEY), timeout_s=10.0)
        result = await client.separate(Mode.VOCALS, "https://audio.example/song.mp3")
        files = StemFiles(await open_cache(opened, tmp_path / "cache", 10 * MAX_STEM), fetcher)
        [stem] = result.stems
        async with files.holding(ResultKey.of("attachment:8", result), stem) as cached:
            assert (cached.extension, cached.path.suffix) == ("mp3", ".mp3")
