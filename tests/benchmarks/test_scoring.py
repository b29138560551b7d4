"""benchmarks/scoring.py: when the screen showed each committed word, and the latency measured on it."""

from __future__ import annotations

import math

import pytest

from benchmarks.scoring import Run, SetScore, Span, Word


def screen_run() -> Run:
    """The sentence "When the alarm sounds." is committed at 4.0 s; the screen showed "When" from 1.0 s, "the alarm" from 2.0 s
    ("the alarm" briefly replaced by "the gun" at 2.5 s), and "sounds." only with the commit."""
    words = [Word(w, 4.0, 4.3) for w in ["When", "the", "alarm", "sounds."]]
    displays = [[], ["When"], ["When", "the", "alarm"], ["When", "the", "gun"], ["When", "the", "alarm"]]
    displays.append(["When", "the", "alarm", "sounds."])
    return Run(words, displays, 1.0, 6.0, display_s=[0.5, 1.0, 2.0, 2.5, 3.0, 4.0])


def test_a_word_counts_as_shown_from_when_it_stayed_on_screen() -> None:
    """A partial word shown and kept counts from its first showing; one taken back from its last return; a word
    never shown before its commit, from the commit."""
    assert screen_run().shown_times() == [1.0, 2.0, 3.0, 4.0]


def test_shown_latency_is_laal_over_the_shown_times_and_survives_the_cache() -> None:
    run = screen_run()
    spans = [Span(0.0, 3.5, "When the alarm goes off.")]
    score = SetScore()
    score.add(run, spans)
    m = score.metrics()
    assert m["laal_shown"] < m["laal"]
    cached = Run(run.words, [], run.compute_s, run.audio_s, n_erased=run.erased(), shown=run.shown_times())
    again = SetScore()
    again.add(cached, spans)
    assert again.metrics()["laal_shown"] == pytest.approx(m["laal_shown"])


def test_a_run_without_display_times_has_no_shown_latency() -> None:
    run = screen_run()
    score = SetScore()
    score.add(Run(run.words, run.displays, 1.0, 6.0), [Span(0.0, 3.5, "When the alarm goes off.")])
    assert math.isnan(score.metrics()["laal_shown"])
