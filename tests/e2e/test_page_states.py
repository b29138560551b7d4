"""The speaker's page never pretends to listen: a wrong token, a busy server and a failed session each show a
message that says what happened and what to do (headless Chromium, the scripted engine of tests/test_rooms.py;
a denied microphone and an unreachable server are in test_browser.py)."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from app.auth import AccessConfig
from app.server import DragomanServer, ServerConfig
from engine.events import Error
from tests.e2e.test_browser import ARTIFACTS, CHROMIUM, chromium_flags, require_chromium
from tests.speech import write_wav
from tests.test_rooms import FakeEngine

pytestmark = pytest.mark.e2e


@contextlib.asynccontextmanager
async def speaker_page(server: DragomanServer, tmp_path: Path, query: str = "") -> AsyncIterator:
    from playwright.async_api import async_playwright

    require_chromium()
    wav = write_wav(tmp_path / "quiet.wav", np.zeros(48000 * 5, np.float32), 48000, "PCM_16")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_flags(wav))
        try:
            page = await browser.new_page(viewport={"width": 900, "height": 600})
            await page.goto(server.url + query)
            yield page
        finally:
            await browser.close()


async def test_wrong_token_says_so_and_stops(tmp_path):
    """A page opened without the server's token says the token is wrong, and does not keep retrying."""
    config = ServerConfig(port=0, access=AccessConfig(token="RIGHT"))
    async with DragomanServer(FakeEngine(), config) as server:  # type: ignore[arg-type]
        async with speaker_page(server, tmp_path, "?token=wrong") as page:
            await page.click("#start")
            await page.wait_for_selector("body[data-state=error]", timeout=15000)
            assert "token is missing or wrong" in await page.inner_text("#status")
            assert await page.is_enabled("#start")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "state-wrong-token.png"))


async def test_busy_server_says_so(tmp_path):
    """When every session slot is taken, the page says the server is busy and offers Start again."""
    engine = FakeEngine(max_sessions=0)
    async with DragomanServer(engine, ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        async with speaker_page(server, tmp_path) as page:
            await page.click("#start")
            await page.wait_for_selector("body[data-state=error]", timeout=15000)
            assert "busy" in await page.inner_text("#status")
            assert await page.is_enabled("#start")


async def test_failed_session_stops_and_offers_a_restart(tmp_path):
    """An `internal` failure stops the microphone, says the session failed, keeps the captions, offers Start."""
    engine = FakeEngine(words=("Hello", "there."))
    async with DragomanServer(engine, ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        async with speaker_page(server, tmp_path) as page:
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
async def test_tab_audio_is_captioned(tmp_path, source):
    """With "Audio from" a tab (alone or mixed with the microphone), the tab's sound reaches the server."""
    engine = FakeEngine(words=("Hello", "there."))
    async with DragomanServer(engine, ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        async with speaker_page(server, tmp_path) as page:
            await page.add_init_script(FAKE_DISPLAY)
            await page.reload()
            await page.select_option("#audio-source", source)
            await page.click("#start")
            await page.wait_for_selector("#captions .commit", timeout=15000)
            assert engine.sessions[-1].audio_s > 0
            await page.click("#stop")
            await page.wait_for_selector("body[data-state=idle]", timeout=15000)
            assert await page.evaluate("window.dragoman.extraStreams.length") == 0  # shared tab released


async def test_tab_audio_where_the_browser_cannot_share_says_so(tmp_path):
    """A browser without getDisplayMedia (phones) gets a message naming what to do instead, not silence."""
    async with DragomanServer(FakeEngine(), ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        async with speaker_page(server, tmp_path) as page:
            await page.add_init_script("delete MediaDevices.prototype.getDisplayMedia;")
            await page.reload()
            await page.select_option("#audio-source", "tab")
            await page.click("#start")
            await page.wait_for_selector("body[data-state=error]", timeout=15000)
            assert "cannot capture a tab" in await page.inner_text("#status")
