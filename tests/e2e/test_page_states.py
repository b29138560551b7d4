"""The speaker's page never pretends to listen: a wrong token, a busy server and a failed session each show a
message that says what happened and what to do (headless Chromium, the scripted engine of tests/app/server/test_rooms.py;
a denied microphone and an unreachable server are in test_browser.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from app.server import DragomanServer, ServerConfig
from app.server.auth import AccessConfig
from engine.events import Error
from tests.app.server.test_language_message import DetectingEngine
from tests.app.server.test_rooms import FakeEngine
from tests.e2e.pages import ARTIFACTS, Chromium
from tests.speech import write_wav

pytestmark = pytest.mark.e2e


@contextlib.asynccontextmanager
async def speaker_page(
    chromium: Chromium, server: DragomanServer, tmp_path: Path, query: str = "", wav: Path | None = None
) -> AsyncIterator:
    """The speaker's page in headless Chromium whose fake microphone plays `wav` (default: 5 s of silence)."""
    if wav is None:
        wav = write_wav(tmp_path / "quiet.wav", np.zeros(48000 * 5, np.float32), 48000, "PCM_16")
    async with chromium.browser(wav) as browser:
        page = await browser.new_page(viewport={"width": 900, "height": 600})
        await page.goto(server.url + query)
        yield page


async def test_wrong_token_says_so_and_stops(chromium, tmp_path):
    """A page opened without the server's token says the token is wrong, and does not keep retrying."""
    config = ServerConfig(port=0, access=AccessConfig(token="RIGHT"))
    async with DragomanServer(FakeEngine(), config) as server:  # type: ignore[arg-type]
        async with speaker_page(chromium, server, tmp_path, "?token=wrong") as page:
            await page.click("#start")
            await page.wait_for_selector("body[data-state=error]", timeout=15000)
            assert "token is missing or wrong" in await page.inner_text("#status")
            assert await page.is_enabled("#start")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "state-wrong-token.png"))


async def test_busy_server_says_so(chromium, tmp_path):
    """When every session slot is taken, the page says the server is busy and offers Start again."""
    engine = FakeEngine(max_sessions=0)
    async with DragomanServer(engine, ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        async with speaker_page(chromium, server, tmp_path) as page:
            await page.click("#start")
            await page.wait_for_selector("body[data-state=error]", timeout=15000)
            assert "busy" in await page.inner_text("#status")
            assert await page.is_enabled("#start")


async def test_failed_session_stops_and_offers_a_restart(chromium, tmp_path):
    """An `internal` failure stops the microphone, says the session failed, keeps the captions, offers Start."""
    engine = FakeEngine(words=("Hello", "there."))
    async with DragomanServer(engine, ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        async with speaker_page(chromium, server, tmp_path) as page:
            await page.click("#start")
            await page.wait_for_selector("#captions .commit", timeout=15000)
            # the engine fails: what the scheduler reports for a model failure inside one session
            engine.sessions[-1].queue.put_nowait(Error("internal", "the model failed"))
            await page.wait_for_selector("body[data-state=error]", timeout=15000)
            status = await page.inner_text("#status")
            assert "failed" in status and "Start" in status
            assert await page.is_enabled("#start") and not await page.is_enabled("#stop")
            assert await page.evaluate("window.dragoman.stream") is None  # the microphone was released
            assert await page.locator("#captions .commit").count() >= 1
            await page.screenshot(path=str(ARTIFACTS / "state-session-failed.png"))


# Headless Chromium has no screen-share picker: getDisplayMedia is replaced by the fake capture device (audio and
# video, as a shared tab gives), so the page's own tab-audio path (and the mix with the microphone) runs for real.
FAKE_DISPLAY = """navigator.mediaDevices.getDisplayMedia = (c) =>
    navigator.mediaDevices.getUserMedia({audio: true, video: true});"""


@pytest.mark.parametrize("source", ["tab", "tab+mic"])
async def test_tab_audio_is_captioned(chromium, tmp_path, source):
    """With "Audio from" a tab (alone or mixed with the microphone), the tab's sound reaches the server."""
    engine = FakeEngine(words=("Hello", "there."))
    async with DragomanServer(engine, ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        async with speaker_page(chromium, server, tmp_path) as page:
            await page.add_init_script(FAKE_DISPLAY)
            await page.reload()
            await page.select_option("#audio-source", source)
            await page.click("#start")
            await page.wait_for_selector("#captions .commit", timeout=15000)
            assert engine.sessions[-1].audio_s > 0
            await page.click("#stop")
            await page.wait_for_selector("body[data-state=idle]", timeout=15000)
            assert await page.evaluate("window.dragoman.extraStreams.length") == 0  # shared tab released


async def test_tab_audio_where_the_browser_cannot_share_says_so(chromium, tmp_path):
    """A browser without getDisplayMedia (phones) gets a message naming what to do instead, not silence."""
    async with DragomanServer(FakeEngine(), ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        async with speaker_page(chromium, server, tmp_path) as page:
            await page.add_init_script("delete MediaDevices.prototype.getDisplayMedia;")
            await page.reload()
            await page.select_option("#audio-source", "tab")
            await page.click("#start")
            await page.wait_for_selector("body[data-state=error]", timeout=15000)
            assert "cannot capture a tab" in await page.inner_text("#status")


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
async def test_detected_language_is_shown_and_corrected_in_one_click(chromium, tmp_path, transport):
    """With Auto-detect the page shows the language the server hears (a guess at first, then decided); one click on
    another language restarts the session in it on the same connection: the captions so far stay, and so does the
    audience link."""
    engine = DetectingEngine(words=("Salve", "amici."))
    async with DragomanServer(engine, ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        async with speaker_page(chromium, server, tmp_path) as page:
            assert await page.input_value("#language") == "auto"
            await page.click("details.advanced summary")
            await page.select_option("#transport", transport)
            await page.check("#share")
            await page.click("#start")
            await page.wait_for_selector("#detected:not([hidden])", timeout=15000)
            link = await page.get_attribute("#share-link", "href")
            text = await page.inner_text("#detected")
            assert "Latin" in text and "still listening" in text, text
            first = engine.sessions[-1]
            first.session.language_id.decided = True  # the detector makes up its mind: the next text says so
            await page.wait_for_function(
                "document.querySelector('#detected-text').textContent.includes('detected: Latin')", timeout=15000
            )
            await page.wait_for_function("document.querySelectorAll('#captions .commit').length >= 4", timeout=15000)
            await page.screenshot(path=str(ARTIFACTS / f"state-language-detected-{transport}.png"))
            before = await page.inner_text("#captions")
            await page.click("#detected-fix button[data-language=de]")  # the speaker: "it is German"
            await page.wait_for_function("document.body.dataset.state === 'live'", timeout=15000)
            assert len(engine.sessions) == 2 and first.closed
            assert engine.sessions[-1].config.language == "de"
            assert await page.input_value("#language") == "de"
            assert await page.is_hidden("#detected")  # given a language, nothing to detect
            n = await page.locator("#captions .commit").count()
            await page.wait_for_function(f"document.querySelectorAll('#captions .commit').length > {n}", timeout=15000)
            assert (await page.inner_text("#captions")).startswith(before.strip())  # earlier captions kept
            assert engine.sessions[-1].audio_s > 0
            assert await page.get_attribute("#share-link", "href") == link  # viewers keep their link
            assert await page.evaluate("window.dragoman.retries") == 0
            if transport == "webrtc":  # the same peer connection carries the audio into the new session
                assert await page.evaluate("window.dragoman.pc.connectionState") == "connected"


async def test_other_language_list_corrects_too(chromium, tmp_path):
    """A language not among the buttons is one choice in the "Other" list away."""
    engine = DetectingEngine()
    async with DragomanServer(engine, ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        async with speaker_page(chromium, server, tmp_path) as page:
            await page.click("#start")
            await page.wait_for_selector("#detected:not([hidden])", timeout=15000)
            await page.select_option("#detected-other", "pl")
            await page.wait_for_function("document.body.dataset.state === 'live'", timeout=15000)
            assert engine.sessions[-1].config.language == "pl" and await page.input_value("#language") == "pl"


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
async def test_level_meter_moves_on_both_transports(chromium, tmp_path, transport):
    """The microphone level meter shows sound whichever way the audio travels, and rests at 0 after Stop."""
    t = np.arange(48000 * 6) / 48000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    wav = write_wav(tmp_path / "tone.wav", tone, 48000, "PCM_16")
    engine = FakeEngine(words=("Hello", "there."))
    async with DragomanServer(engine, ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        async with speaker_page(chromium, server, tmp_path, wav=wav) as page:
            await page.click("details.advanced summary")
            await page.select_option("#transport", transport)
            await page.click("#start")
            await page.wait_for_function("document.getElementById('level').value > 0.2", timeout=15000)
            await page.wait_for_selector("#captions .commit", timeout=20000)  # the audio reaches the server too
            if transport == "webrtc":
                assert await page.evaluate("window.dragoman.pc.connectionState") == "connected"
            await page.screenshot(path=str(ARTIFACTS / f"state-level-{transport}.png"))
            await page.click("#stop")
            await page.wait_for_selector("body[data-state=idle]", timeout=15000)
            assert await page.evaluate("document.getElementById('level').value") == 0
