"""The page in a real browser: headless Debian Chromium whose fake microphone plays synthesised German speech.

Chromium is launched by the `chromium` fixture (pages.py, conftest.py). The server, engine and model are the real
ones. Screenshots go to artifacts/e2e/ (gitignored).
"""

from __future__ import annotations

import numpy as np
import pytest
import srt
import webvtt

from app.runtime import Engine, EngineConfig
from app.server import DragomanServer, ServerConfig
from tests.e2e.pages import ARTIFACTS, KEY_WORDS, page_without_engine, wait_for_committed_key_words
from tests.server_clients import words

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.parametrize("transport, language", [("websocket", "auto"), ("webrtc", "de")])
async def test_page_shows_english_captions_from_the_microphone(
    server, chromium, german_wav, tmp_path, transport, language
):
    """Speaking German into the page gives English captions for both transports, and caption files download."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    async with chromium.page(
        german_wav, accept_downloads=True, viewport={"width": 420, "height": 820}
    ) as page:  # a phone-sized window
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(server.url)
        await page.click("details.advanced summary")  # the transport choice is under "Advanced"
        await page.select_option("#transport", transport)
        await page.select_option("#language", language)
        await page.click("#start")
        # Committed English words appear while the audio plays
        await wait_for_committed_key_words(page)
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
    assert not errors, errors


async def test_page_reconnects_and_keeps_its_captions(backend, chromium, german_wav):
    """When the server goes away mid-stream the captions stay on the page, and it reconnects when the server is back."""
    async with Engine(backend, EngineConfig(max_sessions=2)) as engine:
        first = DragomanServer(engine, ServerConfig(port=0))
        await first.start()
        port = first.port
        second = None
        try:
            async with chromium.page(german_wav) as page:
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
            if second is not None:
                await second.stop()


async def test_page_reports_an_unreachable_server(chromium, german_wav):
    """With no server behind the page's socket, the page says it cannot reach the server and keeps retrying."""
    # Serve the page, then take the server away: the WebSocket has nowhere to connect
    server = DragomanServer(engine=None, config=ServerConfig(port=0))
    await server.start()
    async with chromium.page(german_wav) as page:
        await page.goto(server.url)
        await server.stop()
        await page.click("#start")
        await page.wait_for_selector("body[data-state=reconnecting]", timeout=15000)
        assert "Cannot reach the Dragoman server" in await page.inner_text("#status")
        await page.click("#stop")
        await page.wait_for_selector("body[data-state=idle]", timeout=5000)


async def test_page_reports_a_denied_microphone(chromium):
    """When the microphone permission is denied, the page explains how to allow it."""
    async with page_without_engine(chromium) as page:
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


async def test_worklet_resamples_any_context_rate_to_16k(chromium):
    """The capture worklet turns 1 s at 8/22.05/44.1/48/96 kHz into ~16000 samples with the tone's pitch and level."""
    async with page_without_engine(chromium) as page:
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
