"""Auto-detect on German speech, in headless Chromium with the real model: the page names the language it hears
(German) and shows English captions, and the caption files it downloads are exactly what app/captions.py writes
for the same commits (one caption rule, checked in the browser as well as in Node.js)."""

from __future__ import annotations

import pytest

from app.captions import build_cues, format_captions
from engine.events import Commit
from tests.e2e.pages import ARTIFACTS, KEY_WORDS, wait_for_committed_key_words
from tests.server_clients import words

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def test_auto_detect_on_german_speech_shows_english_captions(server, chromium, german_wav, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    async with chromium.page(german_wav, accept_downloads=True, viewport={"width": 900, "height": 700}) as page:
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(server.url)
        assert await page.input_value("#language") == "auto"  # what a new user starts with
        assert await page.input_value("#task") == "translate"
        await page.click("#start")
        await page.wait_for_selector("#detected:not([hidden])", timeout=60000)
        await page.wait_for_function(
            "document.querySelector('#detected-text').textContent.includes('detected: German')", timeout=60000
        )
        await wait_for_committed_key_words(page)
        assert await page.is_visible("#detected-fix button[data-language=en]")  # a correction is one click
        await page.screenshot(path=str(ARTIFACTS / "autodetect-german.png"))
        await page.wait_for_timeout(3000)
        await page.click("#stop")
        await page.wait_for_selector("body[data-state=idle]", timeout=30000)
        shown = await page.inner_text("#captions")
        assert len(words(shown) & KEY_WORDS) >= 3, shown
        assert "Listening" not in await page.inner_text("#status")

        commits = [Commit(c["text"], c["start"], c["end"]) for c in await page.evaluate("window.dragoman.commits")]
        cues = build_cues(commits)
        for button, fmt in (("#download-vtt", "vtt"), ("#download-srt", "srt")):
            async with page.expect_download() as dl:
                await page.click(button)
            path = tmp_path / f"captions.{fmt}"
            await (await dl.value).save_as(path)
            assert path.read_text(encoding="utf-8") == format_captions(cues, fmt)
    assert not errors, errors
