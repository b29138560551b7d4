"""What the browser tests share: headless Debian Chromium launched one way, a page on a model-less server, and the
German speech its fake microphone plays (its key words).

Chromium is driven by Playwright through `executable_path` (never `playwright install`); the microphone is
`--use-file-for-fake-audio-capture` with a 16-bit PCM WAV (see ../shared/notes/real-audio-tests.md). Tests get a
`Chromium` from the `chromium` fixture (conftest.py). Screenshots go to artifacts/e2e/ (gitignored).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.server import DragomanServer, ServerConfig
from tests import REPO

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "artifacts" / "e2e"
KEY_WORDS = {"morning", "weather", "berlin", "park", "afternoon"}  # SENTENCES["de"][0].english
# without --use-fake-ui-for-media-stream, headless Chromium denies getUserMedia
NO_MICROPHONE = ["--no-sandbox", "--disable-gpu"]


def require_chromium() -> None:
    """Debian Chromium must be there: scripts/setup.sh --test installs it; in CI its absence is a failure."""
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        if os.environ.get("CI"):
            pytest.fail("Debian chromium is not installed (scripts/setup.sh --test installs it)")
        pytest.skip("Debian chromium is not installed")


def chromium_flags(wav: Path) -> list[str]:
    """A fake microphone that plays `wav` once (then silence), granted without asking."""
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav.resolve()}%noloop",  # absolute path; plays once, then silence
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]


class Chromium:
    """Headless Chromium for one test: browsers and persistent profiles, each closed when its block ends."""

    def __init__(self, playwright: Any, profiles: Path) -> None:
        self.playwright = playwright
        self.profiles = profiles  # persistent profiles go here (the test's tmp_path)
        self.n_profiles = 0

    @contextlib.asynccontextmanager
    async def browser(self, microphone: Path | None = None) -> AsyncIterator[Any]:
        """A browser (new pages, several at once); its fake microphone plays `microphone`, or there is none."""
        args = NO_MICROPHONE if microphone is None else chromium_flags(microphone)
        browser = await self.playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield browser
        finally:
            await browser.close()

    @contextlib.asynccontextmanager
    async def page(self, microphone: Path, **options: Any) -> AsyncIterator[Any]:
        """The page of a fresh persistent profile whose fake microphone plays `microphone`; `options` go to
        Playwright's launch_persistent_context (accept_downloads, viewport)."""
        self.n_profiles += 1
        ctx = await self.playwright.chromium.launch_persistent_context(
            str(self.profiles / f"profile-{self.n_profiles}"),
            executable_path=CHROMIUM,
            headless=True,
            args=chromium_flags(microphone),
            **options,
        )
        try:
            yield ctx.pages[0] if ctx.pages else await ctx.new_page()
        finally:
            await ctx.close()


@contextlib.asynccontextmanager
async def page_without_engine(chromium: Chromium) -> AsyncIterator:
    """A headless Chromium page on a model-less server (the static page only), without a fake microphone."""
    server = DragomanServer(engine=None, config=ServerConfig(port=0))
    await server.start()
    try:
        async with chromium.browser() as browser:
            page = await browser.new_page()
            await page.goto(server.url)
            yield page
    finally:
        await server.stop()


async def wait_for_committed_key_words(page: Any, n_words: int = 2) -> None:
    """Wait (up to a minute) until the page's committed captions hold `n_words` of KEY_WORDS."""
    await page.wait_for_function(
        """([keys, n]) => {
            const text = [...document.querySelectorAll('#captions .commit')].map(s => s.textContent)
                .join('').toLowerCase();
            return keys.filter(k => text.includes(k)).length >= n;
        }""",
        arg=[sorted(KEY_WORDS), n_words],
        timeout=60000,
    )
