"""engine/text.py: the text rules every user shares (UTF-8 completeness, word starts, sentence and clause ends)."""

from __future__ import annotations

import json
import re

from app.captions import RULES_PATH
from engine import text


def test_incomplete_utf8_tail_is_held_back():
    """A cut-off multi-byte character stays back; whole characters and ASCII go through."""
    data = "Straße ü".encode()
    assert text.split_complete_utf8(data) == (data, b"")
    assert text.split_complete_utf8(data[:-1]) == (data[:-2], data[-2:-1])
    assert text.split_complete_utf8("€".encode()[:2]) == (b"", "€".encode()[:2])
    assert text.split_complete_utf8(b"") == (b"", b"")


def test_token_pieces_start_words_and_end_sentences_and_clauses():
    """A leading space starts a word; '.', '?', '!' end a sentence, and ',', ';', ':' a clause too."""
    assert text.starts_word(b" Hamburg") and not text.starts_word(b"burg") and not text.starts_word(b"")
    assert text.ends_sentence(b" today. ") and text.ends_sentence(b"?") and not text.ends_sentence(b",")
    assert text.ends_clause(b",") and text.ends_clause(b" now;") and text.ends_clause(b"!")
    assert not text.ends_clause(b" word") and not text.ends_clause(b"")


def test_text_sentence_ends_cover_cjk_and_closing_quotes():
    """Committed text ends a sentence at Latin or CJK stops, closing quotes or brackets after them included."""
    assert text.text_ends_sentence("He said “stop.”  ") and text.text_ends_sentence("好。")
    assert not text.text_ends_sentence("5.2 percent") and not text.text_ends_sentence("")
    assert [m.end() for m in text.SENTENCE_END.finditer("It is 5.2. Yes! ")] == [10, 15]
    assert [m.end() for m in text.CLAUSE_END.finditer("First, then; done")] == [6, 12]


def test_caption_rules_end_sentences_with_the_same_marks():
    """web/caption-rules.json (shared with the page's JavaScript) ends a sentence at the same marks as engine.text;
    its clause ends add dashes and the ideographic comma on purpose (a caption line may break there)."""
    rules = json.loads(RULES_PATH.read_text(encoding="utf-8"))
    sentence = re.compile(rules["sentence_end"])
    for mark in text.SENTENCE_END_MARKS:
        assert sentence.search("word" + mark) and text.text_ends_sentence("word" + mark)
        assert sentence.search("word" + mark + "”") and text.text_ends_sentence("word" + mark + "”")
    clause = re.compile(rules["clause_end"])
    assert all(clause.search("word" + mark) for mark in text.CLAUSE_END_MARKS)


def test_a_sentence_started_in_lower_case_gets_its_capital():
    """Whisper now and then opens a sentence in lower case after its own full stop, mostly at a segment's start
    (own + dev: "... in August. drivers are advised", "... hospitals. the"); the capital follows the stop, within
    a text and across what was written before. Abbreviations, numbers, an ellipsis and mixed-case words keep theirs."""
    assert text.capitalise_sentences("the roads in August.", " drivers are advised") == " Drivers are advised"
    assert text.capitalise_sentences("Is it?", " yes, it is. and so") == " Yes, it is. And so"
    assert text.capitalise_sentences("", "the end. «la suite") == "the end. «La suite"
    assert text.capitalise_sentences("He said.", " über alles") == " Über alles"
    assert text.capitalise_sentences("Okay", " then we go") == " then we go"  # no sentence end before it
    assert text.capitalise_sentences("It opens at 9 a.m.", " and closes late") == " and closes late"
    assert text.capitalise_sentences("Ask Dr.", " smith") == " smith"
    assert text.capitalise_sentences("Wait...", " maybe not") == " maybe not"
    assert text.capitalise_sentences("Hello.", " iPhone users") == " iPhone users"
    assert text.capitalise_sentences("am 5.", " mai") == " mai"
