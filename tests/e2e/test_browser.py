"""The page in a real browser: headless Debian Chromium whose fake microphone plays synthesised German speech.

Chromium is driven by Playwright through `executable_path` (never `playwright install`); the microphone is
`--use-file-for-fake-audio-capture` with a 16-bit PCM WAV (see ../shared/notes/real-audio-tests.md). The server,
engine and model are the real ones. Screenshots go to artifacts/e2e/ (gitignored).
"""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import srt
import webvtt

from app.server import DragomanServer, ServerConfig
from engine.audio import resample
from app.runtime import Engine, EngineConfig
from tests.server_clients import words
from tests.speech import speech, write_wav

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "e2e"
KEY_WORDS = {"morning", "weather", "berlin", "park", "afternoon"}  # SENTENCES["de"][0].english


def require_chromium() -> None:
    """Debian Chromium must be there: scripts/setup.sh --test installs it; in CI its absence is a failure."""
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        if os.environ.get("CI"):
            pytest.fail("Debian chromium is not installed (scripts/setup.sh --test installs it)")
        pytest.skip("Debian chromium is not installed")


@contextlib.asynccontextmanager
async def page_without_engine() -> AsyncIterator:
    """A headless Chromium page on a model-less server (the static page only), without a fake microphone."""
    from playwright.async_api import async_playwright

    require_chromium()
    server = DragomanServer(engine=None, config=ServerConfig(port=0))
    await server.start()
    try:
        async with async_playwright() as pw:
            # without --use-fake-ui-for-media-stream, headless Chromium denies getUserMedia
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=["--no-sandbox", "--disable-gpu"])
            try:
                page = await browser.new_page()
                await page.goto(server.url)
                yield page
            finally:
                await browser.close()
    finally:
        await server.stop()


def chromium_flags(wav: Path) -> list[str]:
    return [
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav.resolve()}%noloop",  # absolute path; plays once, then silence
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
    ]


@pytest.fixture(scope="module")
def german_wav(tmp_path_factory) -> Path:
    """German sentence 0 at 48 kHz 16-bit PCM, with a little silence before and after (a speaker pausing)."""
    d = tmp_path_factory.mktemp("mic")
    audio, _ = speech("de", 0, d)
    x = np.concatenate([np.zeros(8000, np.float32), audio, np.zeros(24000, np.float32)])
    return write_wav(d / "german48k.wav", resample(x, 16000, 48000), 48000, "PCM_16")


@pytest.fixture
async def server(backend):
    async with Engine(backend, EngineConfig(max_sessions=2)) as engine:
        async with DragomanServer(engine, ServerConfig(port=0, stats_interval_s=0.5)) as srv:
            yield srv


@pytest.mark.parametrize("transport, language", [("websocket", "auto"), ("webrtc", "de")])
async def test_page_shows_english_captions_from_the_microphone(server, german_wav, tmp_path, transport, language):
    """Speaking German into the page gives English captions for both transports, and caption files download."""
    require_chromium()
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    async with async_playwright() as pw:
        ctx = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=chromium_flags(german_wav),
            accept_downloads=True, viewport={"width": 420, "height": 820},  # a phone-sized window
        )
        try:
            page = ctx.pages[0] if ctx.pages else await ctx.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(server.url)
            await page.click("details.advanced summary")  # the transport choice is under "Advanced"
            await page.select_option("#transport", transport)
            await page.select_option("#language", language)
            await page.click("#start")
            # Committed English words appear while the audio plays
            await page.wait_for_function(
                """(keys) => {
                    const text = [...document.querySelectorAll('#captions .commit')].map(s => s.textContent)
                        .join('').toLowerCase();
                    return keys.filter(k => text.includes(k)).length >= 2;
                }""", arg=sorted(KEY_WORDS), timeout=60000)
            await page.screenshot(path=str(ARTIFACTS / f"captions-live-{transport}.png"))
            if transport == "websocket":
                rate = await page.evaluate("window.dragoman.ctx.sampleRate")
                assert rate != 16000  # the worklet really resampled from the device rate
            else:
                assert await page.evaluate("window.dragoman.pc.connectionState") == "connected"
            # Let the recording finish, then stop: the last words are flushed before the page goes idle
            await page.wait_for_timeout(3000)
            await page.click("#stop")
            await page.wait_for_selector("body[data-state=idle]", timeout=30000)
            await page.screenshot(path=str(ARTIFACTS / f"captions-{transport}.png"), full_page=True)

            shown = await page.inner_text("#captions")
            assert len(words(shown) & KEY_WORDS) >= 3, shown
            assert await page.inner_text("#partial") == ""
            lag = await page.inner_text("#lag")
            assert lag.startswith("lag")

            async with page.expect_download() as dl:
                await page.click("#download-vtt")
            vtt_path = tmp_path / "captions.vtt"
            await (await dl.value).save_as(vtt_path)
            cues = webvtt.read(str(vtt_path))
            assert cues and len(words(" ".join(c.text for c in cues)) & KEY_WORDS) >= 3
            async with page.expect_download() as dl:
                await page.click("#download-srt")
            srt_path = tmp_path / "captions.srt"
            await (await dl.value).save_as(srt_path)
            subs = list(srt.parse(srt_path.read_text()))
            assert [s.content for s in subs] == [c.text for c in cues]
            assert all(s.start < s.end for s in subs)
        finally:
            await ctx.close()
    assert not errors, errors


async def test_page_reconnects_and_keeps_its_captions(backend, german_wav, tmp_path):
    """When the server goes away mid-stream the captions stay on the page, and it reconnects when the server is back."""
    require_chromium()
    from playwright.async_api import async_playwright

    async with Engine(backend, EngineConfig(max_sessions=2)) as engine:
        first = DragomanServer(engine, ServerConfig(port=0))
        await first.start()
        port = first.port
        async with async_playwright() as pw:
            ctx = await pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=chromium_flags(german_wav))
            second = None
            try:
                page = ctx.pages[0] if ctx.pages else await ctx.new_page()
                await page.goto(first.url)
                await page.click("#start")
                await page.wait_for_selector("#captions .commit", timeout=60000)
                await first.stop()  # the server goes away mid-stream
                await page.wait_for_selector("body[data-state=reconnecting]", timeout=10000)
                kept = await page.evaluate("window.dragoman.commits.length")
                assert kept >= 1 and await page.locator("#captions .commit").count() == kept
                second = DragomanServer(engine, ServerConfig(port=port))
                await second.start()
                await page.wait_for_selector("body[data-state=live]", timeout=20000)
                assert await page.locator("#captions .commit").count() >= kept  # nothing shown was lost
                await page.click("#stop")
                await page.wait_for_selector("body[data-state=idle]", timeout=30000)
            finally:
                await ctx.close()
                if second is not None:
                    await second.stop()


async def test_page_reports_an_unreachable_server(tmp_path, german_wav):
    """With no server behind the page's socket, the page says it cannot reach the server and keeps retrying."""
    require_chromium()
    from playwright.async_api import async_playwright

    # Serve the page, then take the server away: the WebSocket has nowhere to connect
    server = DragomanServer(engine=None, config=ServerConfig(port=0))
    await server.start()
    async with async_playwright() as pw:
        ctx = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=chromium_flags(german_wav))
        try:
            page = ctx.pages[0] if ctx.pages else await ctx.new_page()
            await page.goto(server.url)
            await server.stop()
            await page.click("#start")
            await page.wait_for_selector("body[data-state=reconnecting]", timeout=15000)
            assert "Cannot reach the Dragoman server" in await page.inner_text("#status")
            await page.click("#stop")
            await page.wait_for_selector("body[data-state=idle]", timeout=5000)
        finally:
            await ctx.close()


async def test_page_reports_a_denied_microphone():
    """When the microphone permission is denied, the page explains how to allow it."""
    async with page_without_engine() as page:
        await page.click("#start")
        await page.wait_for_selector("body[data-state=error]", timeout=15000)
        status = await page.inner_text("#status")
        assert "microphone" in status.lower()


WORKLET_PROBE = """async ({rate, freq}) => {
    const ctx = new OfflineAudioContext(1, rate, rate);  // 1 s at `rate`
    await ctx.audioWorklet.addModule('capture-worklet.js');
    const osc = ctx.createOscillator();
    osc.frequency.value = freq;
    const gain = ctx.createGain();
    gain.gain.value = 0.5;
    const node = new AudioWorkletNode(ctx, 'capture-16k',
        {processorOptions: {targetRate: 16000, frameSamples: 320}});
    const frames = [];
    node.port.onmessage = (e) => { if (e.data instanceof ArrayBuffer) frames.push(...new Int16Array(e.data)); };
    osc.connect(gain).connect(node).connect(ctx.destination);
    osc.start();
    await ctx.startRendering();
    await new Promise((r) => setTimeout(r, 300));  // port messages arrive after rendering
    return frames;
}"""


async def test_worklet_resamples_any_context_rate_to_16k():
    """The capture worklet turns 1 s at 8/22.05/44.1/48/96 kHz into ~16000 samples with the tone's pitch and level."""
    async with page_without_engine() as page:
        for rate in (8000, 22050, 44100, 48000, 96000):
            for freq in (440.0, 3000.0):
                x = np.array(await page.evaluate(WORKLET_PROBE, {"rate": rate, "freq": freq})) / 32768
                assert abs(len(x) - 16000) <= 320, (rate, len(x))  # the last partial frame stays behind
                spectrum = np.abs(np.fft.rfft(x[1600:] * np.hanning(len(x) - 1600)))
                peak_hz = np.argmax(spectrum) * 16000 / (len(x) - 1600)
                assert abs(peak_hz - freq) < 5, (rate, freq, peak_hz)
                rms = np.sqrt(np.mean(x[1600:] ** 2))
                # a 0.5 sine has rms 0.354; upsampling a 8 kHz context by linear interpolation dulls
                # the top of its band (3 kHz: -3 dB), which speech recognition tolerates
                low = 0.3 if rate >= 16000 or freq < 1000 else 0.2
                assert low < rms < 0.4, (rate, freq, rms)
        # above the new Nyquist: low-passed, not folded back as a loud alias
        alias = np.array(await page.evaluate(WORKLET_PROBE, {"rate": 48000, "freq": 14000.0})) / 32768
        assert np.sqrt(np.mean(alias[1600:] ** 2)) < 0.354 * 0.1  # at least 20 dB down
