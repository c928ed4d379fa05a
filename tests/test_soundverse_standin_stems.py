"""The Soundverse stand-in's stem files: a tone per stem that decodes to its own pitch, silent
stems, WAV or MP3, each kind of broken file, and bytes made once per process."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf  # type: ignore[import-untyped, unused-ignore]

from tests.standins import stem_audio
from tests.standins.soundverse import (
    HUGE_STEM_BYTES,
    STEMS_BY_PATH,
    Reply,
    SoundverseStandin,
    StemFault,
    StemOptions,
)
from tests.standins.stem_audio import SAMPLE_RATE, SECONDS, STEM_TONES_HZ

KEY = "stems-key"
ALL = "/v1/generate/stem-separation/all-stems"
MiB = 1024 * 1024


@pytest.fixture
async def api() -> AsyncIterator[SoundverseStandin]:
    async with SoundverseStandin(api_key=KEY) as standin:
        yield standin


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def separate(api: SoundverseStandin, http: aiohttp.ClientSession) -> dict[str, str]:
    """One all-stems call: stem name -> URL."""
    async with http.post(
        api.base_url + ALL,
        json={"audioUrl": "https://x.example/song.mp3"},
        headers={"Authorization": f"Bearer {KEY}"},
    ) as answer:
        assert answer.status == 200
        stems: list[dict[str, str]] = await answer.json()
    return {stem["audioName"]: stem["audioUrl"] for stem in stems}


async def download(http: aiohttp.ClientSession, url: str) -> tuple[bytes, str]:
    async with http.get(url) as got:
        assert got.status == 200
        return await got.read(), got.headers["Content-Type"]


def decode(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples, rate


def peak_hz(samples: np.ndarray, rate: int) -> float:
    """The frequency with the most energy (mono sum, whole file)."""
    spectrum = np.abs(np.fft.rfft(samples.mean(axis=1)))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


@pytest.mark.parametrize("audio_format", ["wav", "mp3"])
async def test_each_stem_decodes_to_its_own_tone(api, http, audio_format) -> None:
    """Six stems, each a few seconds of 44.1 kHz stereo at its own pitch, in the format asked
    for (the URL's extension and the Content-Type say which)."""
    api.serve_stems(audio_format)
    urls = await separate(api, http)
    assert list(urls) == list(STEMS_BY_PATH[ALL])
    for name, url in urls.items():
        assert url.endswith(f".{audio_format}")
        data, content_type = await download(http, url)
        assert content_type == {"wav": "audio/wav", "mp3": "audio/mpeg"}[audio_format]
        assert sf.info(io.BytesIO(data)).format == audio_format.upper()
        samples, rate = decode(data)
        assert (rate, samples.shape[1]) == (SAMPLE_RATE, 2)
        assert abs(len(samples) / rate - SECONDS) < 0.1
        assert abs(peak_hz(samples, rate) - STEM_TONES_HZ[name]) < 1.0, name
        assert 0.2 < float(np.abs(samples).max()) < 0.3


async def test_a_silent_stem_is_silent_and_the_others_are_not(api, http) -> None:
    """Piano served silent: residual noise far below -60 dBFS, never digital zero; the rest
    keep their tones."""
    api.fail_next(Reply.success(stems=StemOptions.of(silent=["Piano"])))
    urls = await separate(api, http)
    piano, _ = decode((await download(http, urls["Piano"]))[0])
    assert 0 < float(np.abs(piano).max()) < 1e-3
    vocals, _ = decode((await download(http, urls["vocals"]))[0])
    assert float(np.abs(vocals).max()) > 0.2
    # the next call is served as the stand-in's default again: Piano audible
    piano_again, _ = decode((await download(http, (await separate(api, http))["Piano"]))[0])
    assert float(np.abs(piano_again).max()) > 0.2


async def test_an_undocumented_stem_gets_a_tone_of_its_own(api, http) -> None:
    """An extra stem name the API might add is served too, at a pitch none of the six has."""
    api.fail_next(Reply.success("Synth"))
    urls = await separate(api, http)
    samples, rate = decode((await download(http, urls["Synth"]))[0])
    pitch = peak_hz(samples, rate)
    assert all(abs(pitch - hz) > 30 for hz in STEM_TONES_HZ.values())
    assert abs(pitch - stem_audio.tone_hz("Synth")) < 1.0


def test_no_stem_tone_sits_on_a_harmonic_of_another() -> None:
    """Up to the 10th harmonic, none lands within 30 Hz of another stem's tone, so a spectrum
    tells which stems a mix holds even after a limiter adds harmonics."""
    for name, hz in STEM_TONES_HZ.items():
        for other, other_hz in STEM_TONES_HZ.items():
            if other != name:
                assert all(abs(k * hz - other_hz) >= 30 for k in range(1, 11)), (name, other)


async def test_files_are_made_once_and_served_from_memory(api, http, monkeypatch) -> None:
    """Two calls and twelve downloads encode each stem once; every download is counted."""
    stem_audio.stem_file.cache_clear()
    encoded: list[str] = []
    real_encode = stem_audio.encode

    def counting_encode(samples: Any, audio_format: Any) -> bytes:
        encoded.append(audio_format)
        return real_encode(samples, audio_format)

    monkeypatch.setattr(stem_audio, "encode", counting_encode)
    first, second = await separate(api, http), await separate(api, http)
    for url in [*first.values(), *second.values()]:
        await download(http, url)
    assert len(encoded) == 6
    assert api.downloads == 12 and len(set(api.downloaded)) == 12


# --- broken stem files --------------------------------------------------------------------------


async def broken(api: SoundverseStandin, http: aiohttp.ClientSession, fault: StemFault) -> str:
    """The URL of a Drums stem that breaks with ``fault`` (the other stems stay whole)."""
    api.serve_stems(faults={"Drums": fault})
    urls = await separate(api, http)
    data, _ = await download(http, urls["Bass"])
    assert abs(peak_hz(*decode(data)) - STEM_TONES_HZ["Bass"]) < 1.0
    return urls["Drums"]


async def test_a_missing_stem_is_404(api, http) -> None:
    async with http.get(await broken(api, http, StemFault.MISSING)) as got:
        assert got.status == 404 and "NoSuchKey" in await got.text()


async def test_expired_links_answer_403_and_later_calls_get_fresh_ones(api, http) -> None:
    """``expire_links()``: every stem URL issued so far is refused as an expired signed URL;
    a later call's URLs work."""
    before = await separate(api, http)
    api.expire_links()
    for url in before.values():
        async with http.get(url) as got:
            assert got.status == 403 and "Request has expired" in await got.text()
    after = await separate(api, http)
    data, _ = await download(http, after["Drums"])
    assert abs(peak_hz(*decode(data)) - STEM_TONES_HZ["Drums"]) < 1.0


async def test_a_stem_that_is_not_audio_is_an_html_page(api, http) -> None:
    data, content_type = await download(http, await broken(api, http, StemFault.NOT_AUDIO))
    assert content_type.startswith("text/html")
    with pytest.raises(sf.LibsndfileError):
        decode(data)


async def test_a_truncated_stem_breaks_off_before_its_announced_length(api, http) -> None:
    """Content-Length says the whole file; half arrives and the connection closes."""
    async with http.get(await broken(api, http, StemFault.TRUNCATED)) as got:
        whole = int(got.headers["Content-Length"])
        assert whole == len(stem_audio.stem_file("Drums"))
        with pytest.raises(aiohttp.ClientPayloadError):
            await got.read()


async def test_a_stem_cut_short_arrives_whole_but_holds_half_the_song(api, http) -> None:
    data, _ = await download(http, await broken(api, http, StemFault.CUT_SHORT))
    assert len(data) == len(stem_audio.stem_file("Drums")) // 2
    samples, rate = decode(data)  # libsndfile reads what is there
    assert len(samples) / rate < SECONDS * 0.6


@pytest.mark.parametrize("fault", [StemFault.HUGE, StemFault.HUGE_UNANNOUNCED])
async def test_a_huge_stem_streams_past_any_upload_limit(api, http, fault) -> None:
    """1 GiB, announced in Content-Length or not (chunked): a reader that counts stops it."""
    async with http.get(await broken(api, http, fault)) as got:
        if fault is StemFault.HUGE:
            assert int(got.headers["Content-Length"]) == HUGE_STEM_BYTES
        else:
            assert "Content-Length" not in got.headers
            assert got.headers["Transfer-Encoding"] == "chunked"
        read = 0
        while read <= 20 * MiB:
            chunk = await got.content.read(MiB)
            assert chunk
            read += len(chunk)
        got.close()


async def test_a_stem_can_redirect_to_a_private_address(api, http) -> None:
    """A 302 to the same path on 127.0.0.2: an address a guarded fetcher must refuse."""
    url = await broken(api, http, StemFault.PRIVATE_REDIRECT)
    async with http.get(url, allow_redirects=False) as got:
        assert got.status == 302
        location = got.headers["Location"]
    port = url.split("/")[2].split(":")[1]
    assert location == url.replace(f"127.0.0.1:{port}", f"127.0.0.2:{port}")


async def test_mp3_stems_are_320_kbps_like_a_separation_service(api, http) -> None:
    """An MP3 stem is about 120 kB per 3 s (320 kb/s), not libsndfile's default 40 kb/s: sizes
    that the upload-limit arithmetic of real results meets."""
    api.serve_stems("mp3")
    data, _ = await download(http, (await separate(api, http))["vocals"])
    kbps = len(data) * 8 / SECONDS / 1000
    assert 300 < kbps < 340
