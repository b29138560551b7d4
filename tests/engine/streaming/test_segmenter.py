"""engine/streaming/segmenter.py without a VAD (no model): segments are cut at max_segment_s, updates come due."""

from __future__ import annotations

import logging

import numpy as np

from engine.audio import SAMPLE_RATE
from engine.streaming.config import SessionConfig
from engine.streaming.segmenter import Segmenter


def test_without_a_vad_segments_close_at_the_window_limit():
    """25 s of audio fed at once: two closed 10 s segments and an open 5 s one; the front's update is its last."""
    seg = Segmenter(SessionConfig(use_vad=False, max_segment_s=10.0), print, logging.getLogger(__name__))
    seg.feed(np.zeros(25 * SAMPLE_RATE, np.float32))
    assert [(s.start_s, s.n_samples / SAMPLE_RATE, s.closed) for s in seg.segments] == [
        (0.0, 10.0, True),
        (10.0, 10.0, True),
        (20.0, 5.0, False),
    ]
    upd = seg.due()
    assert upd is not None and upd.final and len(upd.audio) == 10 * SAMPLE_RATE
    assert len(upd.encoder_audio) == len(upd.audio) + SAMPLE_RATE  # pad_s of digital silence for the encoder
    seg.pop()
    seg.pop()
    assert seg.pending_s == 5.0


def test_an_open_segment_is_due_every_chunk():
    """An open segment's first update waits for min_first_s, later ones for chunk_s of new audio."""
    config = SessionConfig(use_vad=False, chunk_s=1.0, min_first_s=1.5)
    seg = Segmenter(config, print, logging.getLogger(__name__))
    seg.feed(np.zeros(SAMPLE_RATE, np.float32))
    assert seg.due() is None
    seg.feed(np.zeros(SAMPLE_RATE // 2, np.float32))
    upd = seg.due()
    assert upd is not None and not upd.final
    upd.segment.n_decoded = len(upd.audio)
    seg.feed(np.zeros(SAMPLE_RATE // 2, np.float32))
    assert seg.due() is None
    seg.feed(np.zeros(SAMPLE_RATE // 2, np.float32))
    assert seg.due() is not None
    seg.close_all()
    assert seg.due().final
