"""benchmarks/bench_streaming.py's Dragoman runner: what it records of one stream, on real synthesised speech."""

from __future__ import annotations

import pytest

from benchmarks.bench_streaming import stream_once
from engine.audio import SAMPLE_RATE
from engine.streaming.session import SessionConfig
from tests.speech import speech

pytestmark = pytest.mark.slow


def test_one_screen_per_update_and_words_shown_before_their_commit(backend, audio_dir) -> None:
    """Each update's commit and partial make one screen (apart, the screen between them showed the committed
    words twice: erased words that never left the page); every word is shown by its commit at the latest."""
    audio, _ = speech("de", 1, audio_dir)  # "Bitte schicken Sie mir den Bericht bis Freitag. Vielen Dank ..."
    run = stream_once(backend, SessionConfig(task="translate", language="de"), audio)

    assert run.words and len(run.display_s) == len(run.displays)
    assert all(a < b for a, b in zip(run.display_s, run.display_s[1:]))  # one screen per update
    committed = [w.text for w in run.words]
    assert run.displays[-1] == committed  # the last screen: everything committed, no partial left
    shown = run.shown_times()
    assert shown is not None and len(shown) == len(run.words)
    assert all(s <= w.stream_s for s, w in zip(shown, run.words))
    assert any(s < w.stream_s for s, w in zip(shown, run.words))  # partial text came first somewhere
    assert run.erased() < len(run.words)
    assert run.audio_s == pytest.approx(len(audio) / SAMPLE_RATE)
