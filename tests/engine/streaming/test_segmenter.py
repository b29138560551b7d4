"""engine/streaming/segmenter.py without a VAD (no model): segments are cut at max_segment_s, updates come due."""

from __future__ import annotations

import logging

import numpy as np
import pytest

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


@pytest.mark.parametrize("window_s", [0.0, 30.0])
def test_the_last_update_fills_its_window_only_when_asked(tiny_backend, window_s):
    """last_window_s 30: a segment's last update pads its encoder window with silence to Whisper's 30 s, its
    other updates keep pad_s; 0 (the default) pads every update by pad_s alone."""
    from engine.streaming.session import StreamingSession

    config = SessionConfig(use_vad=False, logprob_threshold=-100.0, last_window_s=window_s)
    session = StreamingSession(tiny_backend, config)
    session.feed_audio(np.zeros(3 * SAMPLE_RATE, np.float32), SAMPLE_RATE)
    session.finish()
    windows = []
    while (upd := session.next_update()) is not None:
        windows.append((upd.final, len(upd.audio), len(upd.encoder_audio)))
        session.update(upd)
    pad = int(config.pad_s * SAMPLE_RATE)
    assert [w[0] for w in windows][-1] is True
    assert all(enc == n + pad for final, n, enc in windows if not final)
    final_enc = windows[-1][2]
    assert final_enc == (30 * SAMPLE_RATE if window_s else windows[-1][1] + pad)


def test_last_window_is_validated():
    """last_window_s lies in 0..30 s."""
    from engine.errors import ConfigError

    for bad in (-1.0, 31.0):
        with pytest.raises(ConfigError):
            SessionConfig(last_window_s=bad)


def _whole_window_encodes(backend, monkeypatch, config: SessionConfig, behind_s: float = 0.0) -> list[int]:
    """The window lengths (samples) `backend` encoded for 3 s of silence through a session with `config`, all
    updates run; `behind_s`: the audio the session reports waiting at every update (pending_s)."""
    from engine.streaming.session import StreamingSession

    encoded: list[int] = []
    encode = backend.encode
    monkeypatch.setattr(backend, "encode", lambda audio, **kw: (encoded.append(len(audio)), encode(audio, **kw))[1])
    session = StreamingSession(backend, config)
    if behind_s:
        monkeypatch.setattr(StreamingSession, "pending_s", property(lambda self: behind_s))
    session.feed_audio(np.zeros(3 * SAMPLE_RATE, np.float32), SAMPLE_RATE)
    session.finish()
    while (upd := session.next_update()) is not None:
        session.update(upd)
    assert session.done
    return encoded


@pytest.mark.parametrize(
    ("task", "threshold", "retried"),
    [
        ("translate", 0.0, True),
        ("translate", -20.0, False),
        ("translate", None, False),
        ("transcribe", None, False),
    ],
)
def test_an_unsure_last_decode_is_decoded_again_on_the_whole_window(
    tiny_backend, monkeypatch, task, threshold, retried
):
    """window_retry_logprob: a segment's last decode averaging below it (0.0: every decode) is decoded again on a
    30 s window, once; other updates and decodes above it (-20: none; None: off) keep their short
    windows.
    """
    config = SessionConfig(
        task=task, language="en", use_vad=False, logprob_threshold=-100.0, window_retry_logprob=threshold
    )
    encoded = _whole_window_encodes(tiny_backend, monkeypatch, config)
    whole = 30 * SAMPLE_RATE
    assert encoded.count(whole) == (1 if retried else 0), encoded
    assert all(n < whole for n in (encoded[:-1] if retried else encoded)), encoded


def test_a_session_behind_real_time_skips_the_whole_window_retry(tiny_backend, monkeypatch):
    """With more than RETRY_MAX_PENDING_S of audio waiting, the retry would put the session further behind: the
    last decode keeps its short window."""
    from engine.streaming.redecode import RETRY_MAX_PENDING_S

    config = SessionConfig(language="en", use_vad=False, logprob_threshold=-100.0, window_retry_logprob=0.0)
    encoded = _whole_window_encodes(tiny_backend, monkeypatch, config, behind_s=RETRY_MAX_PENDING_S + 1.0)
    assert all(n < 30 * SAMPLE_RATE for n in encoded), encoded


def test_the_whole_window_retry_is_off_by_default():
    """None is off, in either task; a log-probability turns it on; out of range fails."""
    from engine.errors import ConfigError

    assert SessionConfig(task="translate").window_retry_logprob is None
    assert SessionConfig(task="transcribe").window_retry_logprob is None
    assert SessionConfig(task="transcribe", window_retry_logprob=-0.5).window_retry_logprob == -0.5
    for bad in (0.5, -21.0, float("-inf"), float("nan")):
        with pytest.raises(ConfigError):
            SessionConfig(window_retry_logprob=bad)
