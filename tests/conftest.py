from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.speech import espeak_available

torch.set_num_threads(int(os.environ.get("DRAGOMAN_TEST_THREADS", "2")))


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
