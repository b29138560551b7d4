"""Fixtures of the browser tests: headless Chromium (pages.py), the German speech its fake microphone plays, and
a real server on the real model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from app.server import DragomanServer
from engine.audio import resample
from tests.e2e.pages import Chromium, require_chromium
from tests.server_clients import serving
from tests.speech import speech, write_wav


@pytest.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[Chromium]:
    """Playwright driving Debian Chromium (skipped where it is missing, a failure in CI)."""
    require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        yield Chromium(pw, tmp_path)


@pytest.fixture(scope="module")
def german_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """German sentence 0 at 48 kHz 16-bit PCM, with a little silence before and after (a speaker pausing)."""
    d = tmp_path_factory.mktemp("mic")
    audio, _ = speech("de", 0, d)
    x = np.concatenate([np.zeros(8000, np.float32), audio, np.zeros(24000, np.float32)])
    return write_wav(d / "german48k.wav", resample(x, 16000, 48000), 48000, "PCM_16")


@pytest.fixture
async def server(backend) -> AsyncIterator[DragomanServer]:
    async with serving(backend, max_sessions=2, stats_interval_s=0.5) as srv:
        yield srv
