"""Redecoder: a segment's last decode is repaired only where it cannot stand, on real synthesised German speech."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.audio import SAMPLE_RATE, load_audio
from engine.streaming.batch import decode_batch
from engine.streaming.decoder import DecodeResult
from engine.streaming.policy import attended_frame
from engine.streaming.segment import PendingDecode
from engine.streaming.session import SessionConfig, StreamingSession
from tests.speech import synthesize

TEXT = "Was ist denn drin? Für Sendungen ins Ausland müssen Sie eine Zollerklärung ausfüllen."


@pytest.fixture(scope="module")
def last_decode(backend, audio_dir) -> tuple[StreamingSession, PendingDecode, DecodeResult]:
    """The session, its segment's last update set up and that update's own beam decode (not yet judged)."""
    speech = load_audio(synthesize(TEXT, "mb-de6", audio_dir))
    silence = np.zeros(SAMPLE_RATE // 2, np.float32)
    audio = np.concatenate([silence, speech, silence, silence, silence])
    session = StreamingSession(backend, SessionConfig(task="translate", language="de"))
    for i in range(0, len(audio), SAMPLE_RATE // 10):
        session.feed_audio(audio[i : i + SAMPLE_RATE // 10], SAMPLE_RATE)
        while (upd := session.next_update()) is not None:
            step = session.begin_decode(upd, backend.encode(upd.encoder_audio), None)
            res = decode_batch(backend, [step.job])[0]
            if upd.final:
                return session, step, session.mode.hypothesis(upd.segment, res)
            session.end_decode(step, res)
    raise AssertionError("the pause never closed the segment")


def _furthest_read(res: DecodeResult) -> int:
    assert res.attention is not None
    return max(attended_frame(row) for row in res.attention[: len(res.tokens)])


def test_a_sound_last_decode_is_left_as_it_is(last_decode):
    """The beam read the whole segment: no repair decodes it again, the same result comes back."""
    session, pending, res = last_decode
    assert pending.n_frames - _furthest_read(res) < 75, "the beam read to the audio's end"
    repaired_pending, repaired = session.redecoder.repair_last(pending, res, "de", pending_s=0.0)
    assert repaired is res and repaired_pending is pending


def test_a_last_decode_cut_short_is_decoded_on_from_the_text_shown(last_decode, backend):
    """The same decode cut after a third of its tokens, more than 1.5 s of speech unread: decoded on from the
    text the update before showed, which reads further, and the sentence's end ("... Zollerklärung ausfüllen")
    comes back."""
    session, pending, res = last_decode
    seg = pending.upd.segment
    assert seg.last_shown, "an update before the last showed the segment's text"
    assert res.attention is not None and len(res.tokens) >= 6, backend.tokenizer.decode(res.tokens)
    n = len(res.tokens) // 3
    short = dataclasses.replace(res, tokens=res.tokens[:n], attention=res.attention[:n])
    assert pending.n_frames - _furthest_read(short) >= 75, "the cut leaves more than 1.5 s unread"
    _, repaired = session.redecoder.repair_last(pending, short, "de", pending_s=0.0)
    assert _furthest_read(repaired) - _furthest_read(short) >= 50, "the repair reads at least 1 s further"
    assert repaired.tokens[: len(seg.last_shown)] == seg.last_shown  # the shown text, then what follows it
    text = backend.tokenizer.decode(repaired.tokens).lower()
    assert {"fill", "declaration", "customs", "statement", "form"} & set(text.replace(".", " ").split()), text
