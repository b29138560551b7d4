"""The audience page in real headless Chromium: viewers (normal and projection view) show a speaker's captions live,
a late joiner sees the earlier ones, viewers are told when the talk ends, and a wrong link says so.

The speaker is a protocol client and the engine the scripted stand-in of tests/app/server/test_rooms.py (one word per 0.1 s of
audio), so this runs without the model; test_browser.py covers the speaker's page with the real model.
Screenshots go to artifacts/e2e/ (gitignored): look at watch-projection-*.png to judge readability at a distance.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from app.server import DragomanServer, ServerConfig
from tests.app.server.test_rooms import FakeEngine, open_room, read_until, speak
from tests.e2e.pages import ARTIFACTS, KEY_WORDS

pytestmark = pytest.mark.e2e

TALK = (
    "Good",
    "evening",
    "and",
    "welcome",
    "to",
    "the",
    "city",
    "council",
    "meeting.",
    "Tonight",
    "we",
    "discuss",
    "the",
    "new",
    "bridge",
    "over",
    "the",
    "river.",
)


def caption_text(n_words: int) -> str:
    return "".join(" " + TALK[i % len(TALK)] for i in range(n_words)).strip()


async def test_viewer_pages_show_the_speakers_captions(chromium, tmp_path):
    """Two viewers (one in projection view) follow the speaker live; a late joiner gets the earlier captions; all
    are told when the talk ends; a wrong viewer token shows that the link does not work."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    async with DragomanServer(FakeEngine(words=TALK), ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        async with connect(server.ws_url) as speaker:
            room = await open_room(speaker)
            base = server.url.rstrip("/") + room["watch_path"]
            async with chromium.browser() as browser:

                async def viewer(url: str, width: int, height: int):
                    page = await browser.new_page(viewport={"width": width, "height": height})
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    await page.goto(url)
                    return page

                laptop = await viewer(base, 1000, 700)
                projector = await viewer(base + "&view=projection", 1280, 720)
                for page in (laptop, projector):
                    await page.wait_for_function("document.body.dataset.state === 'live'", timeout=10000)
                await speak(speaker, 1.8, realtime=4.0)  # 18 words, "... river."
                want = caption_text(18)
                for page in (laptop, projector):
                    await page.wait_for_function(
                        "(t) => document.querySelector('#committed').textContent === t", arg=want, timeout=10000
                    )
                await laptop.screenshot(path=str(ARTIFACTS / "watch-laptop.png"))
                await projector.screenshot(path=str(ARTIFACTS / "watch-projection-dark.png"))
                # projection view: big letters, at most three lines visible
                size = await projector.evaluate(
                    "parseFloat(getComputedStyle(document.querySelector('#captions')).fontSize)"
                )
                box = await projector.evaluate("document.querySelector('#captions').getBoundingClientRect().height")
                assert size >= 48 and box <= 3 * 1.25 * size + 2, (size, box)
                await projector.click("#theme")  # light
                await projector.click("#larger")
                assert await projector.evaluate("document.body.dataset.theme") == "light"
                await projector.screenshot(path=str(ARTIFACTS / "watch-projection-light.png"))
                # the projected screen invites phones: its QR code is this room's viewer link (without display options)
                await projector.click("#qr-toggle")
                qr = projector.locator("#qr-code svg")
                await qr.wait_for(state="visible", timeout=5000)
                assert await projector.get_attribute("#qr-code", "data-text") == base
                await projector.screenshot(path=str(ARTIFACTS / "watch-projection-qr.png"))
                await assert_qr_reads(qr, tmp_path / "watch-qr.png", base)
                await projector.click("#qr-toggle")
                assert await projector.locator("#qr").is_hidden()

                phone = await viewer(base + "&view=projection", 390, 760)  # a late joiner on a phone
                await phone.wait_for_function(
                    "(t) => document.querySelector('#committed').textContent === t", arg=want, timeout=10000
                )
                await phone.screenshot(path=str(ARTIFACTS / "watch-phone-late.png"))

                await speaker.send(json.dumps({"type": "stop"}))
                await read_until(speaker, "end")
                for page in (laptop, projector, phone):
                    await page.wait_for_function("document.body.dataset.state === 'ended'", timeout=10000)
                    assert "stopped" in (await page.text_content("#status"))
                    assert (await page.text_content("#committed")) == want  # captions stay after the end
                await laptop.screenshot(path=str(ARTIFACTS / "watch-ended.png"))

                wrong = await viewer(f"{server.url}watch/{room['room']}?token=nope", 600, 400)
                await wrong.wait_for_function("document.body.dataset.state === 'error'", timeout=10000)
                assert "Cannot join" in (await wrong.text_content("#status"))
    assert not errors, errors


async def assert_qr_reads(qr, png: Path, text: str) -> None:
    """Where zbarimg is installed: the QR code `qr` (a locator), screenshot to `png`, reads as `text`."""
    if not shutil.which("zbarimg"):
        return
    await qr.screenshot(path=str(png))
    read = subprocess.run(["zbarimg", "--raw", "-q", str(png)], capture_output=True, text=True, timeout=60, check=False)
    assert read.stdout.strip() == text, read.stderr


async def start_sharing(page, timeout_ms: int) -> str | None:
    """On the speaker's page: tick "Let others watch" and start; the audience link, once the page shows it."""
    await page.check("#share")
    await page.click("#start")
    link = page.locator("#share-link")
    await link.wait_for(state="visible", timeout=timeout_ms)
    return await link.get_attribute("href")


async def test_speaker_page_offers_the_audience_link(chromium, tmp_path):
    """With "Let others watch" ticked, the speaker's page shows the audience link from the server's `room`."""
    import numpy as np

    from tests.speech import write_wav

    wav = write_wav(tmp_path / "quiet.wav", np.zeros(48000 * 3, np.float32), 48000, "PCM_16")
    async with DragomanServer(FakeEngine(words=TALK), ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        async with chromium.browser(wav) as browser:
            page = await browser.new_page(viewport={"width": 1000, "height": 700})
            await page.goto(server.url)
            assert await page.locator("#share-box").is_hidden()
            await page.fill("#vocabulary", "Dragoman, council")
            href = await start_sharing(page, timeout_ms=15000)
            assert href and "/watch/" in href and "token=" in href
            live = server.hub.engine.sessions[-1]  # type: ignore[union-attr]
            assert live.config.vocabulary == "Dragoman, council"
            # the QR code beside the link is the link: what a phone in the audience reads from the screen
            qr = page.locator("#share-qr svg")
            await qr.wait_for(state="visible", timeout=5000)
            assert await page.get_attribute("#share-qr", "data-text") == href
            await assert_qr_reads(qr, tmp_path / "qr.png", href)
            viewer = await browser.new_page()
            await viewer.goto(href)
            await viewer.wait_for_function("document.body.dataset.state === 'live'", timeout=10000)
            await page.screenshot(path=str(ARTIFACTS / "speaker-share.png"))
            await page.click("#stop")
            await viewer.wait_for_function("document.body.dataset.state === 'ended'", timeout=20000)
            await page.locator("#share-box").wait_for(state="hidden", timeout=20000)  # the link died with the room


@pytest.mark.slow
async def test_speaker_page_and_two_viewers_with_the_real_model(backend, chromium, german_wav):
    """German speech into the speaker's page (fake microphone): two viewer pages, one joining late, show the same
    English captions as the speaker."""
    from app.runtime import Engine, EngineConfig

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    has_keys = """(keys) => {
        const text = (document.querySelector('#committed') || document.querySelector('#captions')).textContent
            .toLowerCase();
        return keys.filter(k => text.includes(k)).length >= 2;
    }"""
    async with (
        Engine(backend, EngineConfig(max_sessions=1)) as engine,
        DragomanServer(engine, ServerConfig(port=0)) as server,
        chromium.browser(german_wav) as browser,
    ):
        speaker = await browser.new_page(viewport={"width": 1000, "height": 700})
        await speaker.goto(server.url)
        await speaker.select_option("#language", "de")
        href = await start_sharing(speaker, timeout_ms=30000)
        early = await browser.new_page(viewport={"width": 1280, "height": 720})
        await early.goto(f"{href}&view=projection")
        await speaker.wait_for_function(has_keys, arg=sorted(KEY_WORDS), timeout=90000)  # (no #committed)
        late = await browser.new_page(viewport={"width": 390, "height": 760})
        await late.goto(href)
        for page in (early, late):
            await page.wait_for_function(has_keys, arg=sorted(KEY_WORDS), timeout=30000)
        await early.screenshot(path=str(ARTIFACTS / "watch-real-projection.png"))
        await late.screenshot(path=str(ARTIFACTS / "watch-real-late.png"))
        await speaker.click("#stop")
        await speaker.wait_for_selector("body[data-state=idle]", timeout=60000)
        spoken = "".join(await speaker.evaluate("window.dragoman.commits.map(c => c.text)")).strip()
        for page in (early, late):
            await page.wait_for_function("document.body.dataset.state === 'ended'", timeout=20000)
            assert (await page.text_content("#committed")).strip() == spoken
