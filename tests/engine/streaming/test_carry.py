"""Carrying a short segment in front of the next (engine/streaming/carry.py): what is carried, when it goes in
front, and how it comes off again."""

from __future__ import annotations

import numpy as np

from engine.audio import SAMPLE_RATE
from engine.streaming.carry import CONTEXT_GAP_S, carried_from, carry_into, uncarry
from engine.streaming.config import SessionConfig
from engine.streaming.segment import Segment


def segment(start_s: float, seconds: float, value: float) -> Segment:
    seg = Segment(start_s=start_s)
    seg.append(np.full(int(seconds * SAMPLE_RATE), value, np.float32))
    return seg


def test_a_short_segment_with_text_is_carried_a_long_or_empty_one_is_not():
    """Translation carries a segment of at most 4.5 s (SessionConfig.carried_s) that has text; transcription none."""
    translate, transcribe = SessionConfig(task="translate"), SessionConfig(task="transcribe")
    short, long = segment(1.0, 3.0, 0.1), segment(1.0, 5.0, 0.1)
    carried = carried_from(short, [11, 12], translate)
    assert carried is not None and carried.tokens == [11, 12] and carried.end_s == 4.0
    assert len(carried.audio) == 3 * SAMPLE_RATE
    assert carried_from(long, [11, 12], translate) is None
    assert carried_from(short, [], translate) is None  # nothing was said there
    assert carried_from(short, [11, 12], transcribe) is None


def test_the_carried_segment_goes_in_front_and_comes_off_again():
    """In front: the window starts with the carried audio, the stream times stay right (start_s moves back, commits
    start where the segment's own audio does), the text waits for the start tokens. Off again: as it was."""
    config = SessionConfig(task="translate")
    carried = carried_from(segment(1.0, 2.0, 0.1), [11, 12], config)
    seg = segment(3.5, 1.5, 0.2)
    assert carry_into(seg, carried, config)
    assert seg.n_samples == int(3.5 * SAMPLE_RATE) and seg.audio()[0] == np.float32(0.1)
    assert seg.start_s == 1.5 and seg.end_s == 5.0 and seg.committed_end_s == 3.5
    assert seg.context == [11, 12] and seg.committed == [] and seg.n_context == 2 * SAMPLE_RATE
    assert seg.own_audio()[0] == np.float32(0.2) and len(seg.own_audio()) == int(1.5 * SAMPLE_RATE)
    seg.n_decoded = seg.n_samples
    assert uncarry(seg) == 2 * SAMPLE_RATE
    assert (seg.start_s, seg.n_samples, seg.n_decoded, seg.context) == (3.5, int(1.5 * SAMPLE_RATE), seg.n_samples, [])
    assert seg.audio()[0] == np.float32(0.2)


def test_nothing_is_carried_across_a_long_pause_or_past_the_window():
    config = SessionConfig(task="translate")
    carried = carried_from(segment(1.0, 2.0, 0.1), [11], config)
    assert not carry_into(segment(3.0 + CONTEXT_GAP_S + 0.1, 1.0, 0.2), carried, config)
    assert not carry_into(segment(3.5, config.max_segment_s - 1.0, 0.2), carried, config)
    assert not carry_into(segment(3.5, 1.0, 0.2), None, config)
