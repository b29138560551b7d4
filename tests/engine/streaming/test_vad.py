"""Silero VAD per stream: speech segments open at speech and close at pauses; silence and noise stay closed."""

from __future__ import annotations

import numpy as np

from engine.audio import SAMPLE_RATE
from engine.streaming.vad import StreamVad
from tests.speech import long_stream


def test_sentences_with_pauses_give_one_segment_each(audio_dir):
    """Four sentences separated by 0.8 s pauses, fed in odd chunks, open and close about four segments."""
    audio, spans = long_stream("de", audio_dir)
    vad = StreamVad()
    windows = []
    for i in range(0, len(audio), 3001):
        windows += vad.process(audio[i : i + 3001])
    opened = [i for i, w in enumerate(windows) if w.opened]
    closed = [i for i, w in enumerate(windows) if w.closed]
    assert len(spans) <= len(opened) <= 2 * len(spans)
    assert len(closed) >= len(spans) - 1
    first_open_s = opened[0] * 512 / SAMPLE_RATE
    assert first_open_s <= spans[0][0] + 0.5


def test_silence_and_noise_never_open_a_segment():
    """Silence and quiet white noise are not speech."""
    rng = np.random.default_rng(0)
    for audio in (
        np.zeros(10 * SAMPLE_RATE, np.float32),
        (0.05 * rng.standard_normal(10 * SAMPLE_RATE)).astype(np.float32),
    ):
        assert not any(w.opened for w in StreamVad().process(audio))
