"""benchmarks/peers.py: the real whisper_streaming (WhisperLiveKit's LocalAgreement-2) on our Whisper base weights.

Needs the `bench` extra and whisperlivekit (benchmarks/requirements-peers.txt); CI installs neither, so it skips.
"""

from __future__ import annotations

import pytest

pytest.importorskip("faster_whisper", reason="the bench extra is not installed")
pytest.importorskip(
    "whisperlivekit.local_agreement.online_asr",
    reason="whisperlivekit is not installed (pip install --no-deps -r benchmarks/requirements-peers.txt)",
)

from engine.audio import SAMPLE_RATE  # noqa: E402
from tests.speech import speech  # noqa: E402

pytestmark = pytest.mark.slow


def test_whisper_streaming_translates_german_with_ordered_emission_times(audio_dir) -> None:
    from benchmarks.peers import run_whisper_streaming

    audio, _ = speech("de", 1, audio_dir)  # "Bitte schicken Sie mir den Bericht bis Freitag. Vielen Dank ..."
    run = run_whisper_streaming(audio, "de", "translate", chunk_s=1.0)

    words = [w.lower().strip(".,!?") for w, _, _ in run.words]
    assert {"please", "friday", "thank", "help"} & set(words), words  # English, not German
    assert not {"bitte", "vielen", "dank"} & set(words), words
    stream_t = [t for _, t, _ in run.words]
    aware_t = [t for _, _, t in run.words]
    assert stream_t == sorted(stream_t) and aware_t == sorted(aware_t)
    assert all(a >= s for s, a in zip(stream_t, aware_t))  # computation can only delay a word
    assert stream_t[-1] <= len(audio) / SAMPLE_RATE + 1e-6
    assert run.audio_s == pytest.approx(len(audio) / SAMPLE_RATE) and run.compute_s > 0
    assert run.displays and run.displays[-1][: len(words)] == [w for w, _, _ in run.words]
    assert len(run.display_s) == len(run.displays) and run.display_s == sorted(run.display_s)
