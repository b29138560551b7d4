from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.speech import espeak_available

torch.set_num_threads(int(os.environ.get("DRAGOMAN_TEST_THREADS", "2")))

# fixtures that load the real 290 MB model: a test that uses one (directly or through another fixture) is slow
REAL_MODEL_FIXTURES = frozenset({"whisper_bundle", "whisper_bundle_fp32", "backend"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark slow every test that needs the real model or drives a browser or audio device (e2e), so that
    `pytest -m "not slow"` (the fast tier: tiny seeded models only, under a minute) stays fast without each test
    file having to remember the marker. Other tests that take seconds carry @pytest.mark.slow themselves."""
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where synthesised speech is written for this run (never committed)."""
    if not espeak_available():
        pytest.fail("espeak-ng with mbrola voices is required: run scripts/setup.sh --test")
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def whisper_bundle():
    """The real embedded Whisper base (int8 decoder on CPU, the default), loaded once per test run."""
    from engine.models.loading import load_model

    return load_model()


@pytest.fixture(scope="session")
def whisper_bundle_fp32():
    """The real embedded Whisper base in fp32 throughout (for parity with a reference implementation)."""
    from engine.models.loading import load_model

    return load_model(quantize="none")


@pytest.fixture(scope="session")
def backend(whisper_bundle):
    from engine.backend import make_backend

    return make_backend(whisper_bundle)


@pytest.fixture(scope="session")
def tiny_whisper():
    """A tiny seeded random Whisper (tests/tiny_models.py): 0.8 s audio windows, 64 text positions."""
    from tests.tiny_models import tiny_whisper

    return tiny_whisper()


@pytest.fixture(scope="session")
def tiny_whisper_bundle(tiny_whisper):
    """The tiny Whisper behind the real tokenizer and suppression lists."""
    from tests.tiny_models import tiny_whisper_bundle

    return tiny_whisper_bundle(tiny_whisper)


@pytest.fixture(scope="session")
def tiny_backend():
    """A Backend over a tiny random Whisper with the real model's context (30 s windows, 448 text positions), for
    fast tests of session and scheduler mechanics: it decodes arbitrary words, so give the session
    use_vad=False and logprob_threshold=-100 (a random model is never confident). The fast tier's `backend`."""
    from engine.backend import make_backend
    from tests.tiny_models import TINY_STREAMING_WHISPER, tiny_whisper, tiny_whisper_bundle

    return make_backend(tiny_whisper_bundle(tiny_whisper(TINY_STREAMING_WHISPER)))
