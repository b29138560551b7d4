"""Hallucination guards (engine/streaming/guards.py): pure functions over token ids and text."""

from __future__ import annotations

from engine.streaming.guards import is_prompt_echo, looks_like_source_language, repetition_cut


def test_repetition_loop_is_cut_to_one_copy():
    """A 3-gram repeated three times is cut back to a single copy; normal text is untouched."""
    assert repetition_cut([1, 2, 3, 4, 5, 6]) is None
    tokens = [9, 1, 2, 3, 1, 2, 3, 1, 2, 3]
    assert tokens[: repetition_cut(tokens)] == [9, 1, 2, 3]


def test_prompt_echo_and_source_language_drift():
    """Echoing the previous text and answering in German in translate mode are recognised."""
    assert is_prompt_echo([5, 6, 7, 8, 9], [1, 5, 6, 7, 8, 9, 2])
    assert not is_prompt_echo([5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6])
    assert looks_like_source_language("Bitte schicken Sie mir den Bericht bis Freitag", "de")
    assert not looks_like_source_language("Please send me the report by Friday", "de")
