"""The page's "Captions in" selector in a real browser: it lists only the server's MT targets, and with one chosen
the fake microphone's English speech shows as source text above translated captions from a tiny MarianMT model."""

from __future__ import annotations

import numpy as np
import pytest

from app.server.mt import ServerTranslation
from engine.audio import resample
from engine.mt.loading import load_mt
from tests.e2e.pages import ARTIFACTS, page_without_engine
from tests.mt_reference import build_marian
from tests.server_clients import serving
from tests.speech import speech, write_wav

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.filterwarnings("ignore:Recommended. pip install")]


@pytest.fixture(scope="module")
def english_wav(tmp_path_factory):
    d = tmp_path_factory.mktemp("mic")
    audio, _ = speech("en", 1, d)
    x = np.concatenate([np.zeros(8000, np.float32), audio, np.zeros(24000, np.float32)])
    return write_wav(d / "english48k.wav", resample(x, 16000, 48000), 48000, "PCM_16")


@pytest.fixture
async def server(backend, tmp_path):
    build_marian(tmp_path / "opus-mt-en-de-tiny")
    translation = ServerTranslation(("de",), [load_mt(str(tmp_path / "opus-mt-en-de-tiny"), quantize="none")])
    async with serving(backend, max_sessions=2, translation=translation) as srv:
        yield srv


async def test_selector_hidden_without_mt(chromium) -> None:
    """A server without MT models shows no "Captions in" selector."""
    async with page_without_engine(chromium) as page:
        await page.wait_for_timeout(500)
        assert await page.is_hidden("#target-label")


async def test_captions_in_german_with_the_english_source_beside(server, chromium, english_wav) -> None:
    """With "Captions in" set to de, target commits fill the captions and the English text runs above them."""
    errors: list[str] = []
    async with chromium.page(english_wav) as page:
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(server.url)
        await page.wait_for_selector("#target-label:not([hidden])")
        assert await page.eval_on_selector_all("#target option", "os => os.map(o => o.value)") == ["", "de"]
        await page.select_option("#language", "en")
        await page.select_option("#target", "de")
        await page.click("#start")
        await page.wait_for_function("document.querySelectorAll('#captions .commit').length >= 1", timeout=60000)
        await page.wait_for_timeout(2000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "captions-in-de.png"))
        await page.click("#stop")
        await page.wait_for_selector("body[data-state=idle]", timeout=30000)
        source = (await page.inner_text("#source")).lower()
        assert "meeting" in source and "notes" in source
        commits = await page.evaluate("window.dragoman.commits.map(c => c.text)")
        # one commit per sentence whose (random) translation is not empty
        assert commits and "".join(commits).split() == (await page.inner_text("#captions")).split()
        assert "meeting" not in " ".join(commits).lower()  # the captions are the MT output, not the source
    assert not errors, errors
