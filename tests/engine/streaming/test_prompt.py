"""Vocabulary (`start.vocabulary`, SessionConfig.vocabulary): the names and terms lead the decoder's prompt, before
the previous text; without one the prompt is unchanged."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.server import protocol as p
from engine.streaming.config import SessionConfig
from engine.streaming.prompt import VOCABULARY_TOKENS
from engine.streaming.session import StreamingSession


def test_start_vocabulary_is_parsed_and_bounded() -> None:
    """Whitespace collapses to one line; too long a vocabulary is a bad_message; absent or null is empty."""
    start = p.parse_text('{"type": "start", "vocabulary": "Dragoman,\\n  Kubernetes"}')
    assert isinstance(start, p.Start) and start.vocabulary == "Dragoman, Kubernetes"
    assert p.parse_text('{"type": "start", "vocabulary": null}').vocabulary == ""  # type: ignore[union-attr]
    with pytest.raises(p.ProtocolError) as e:
        p.parse_text('{"type": "start", "vocabulary": "%s"}' % ("x" * (p.MAX_VOCABULARY_CHARS + 1)))
    assert e.value.code is p.ErrorCode.BAD_MESSAGE


@pytest.mark.slow
def test_vocabulary_tokens_lead_the_prompt(backend) -> None:
    """sequence = <|startofprev|> vocabulary history <|startoftranscript|>...; no vocabulary: history only."""
    vocab = backend.text_tokens(" Dragoman, Kubernetes")
    history = backend.text_tokens(" Good morning.")
    for words, expected in (("Dragoman,  Kubernetes", vocab), ("", [])):
        session = StreamingSession(backend, SessionConfig(language="de", vocabulary=words))
        session.prompt.history = list(history)
        seg = SimpleNamespace(use_prompt=True, prompt=None, n_start=0, sequence=None, context=[])
        session.prompt.start(seg, [], session.language)  # type: ignore[arg-type]
        sot_prev = backend.tokenizer.special.sot_prev
        assert seg.sequence[: 1 + len(expected) + len(history)] == [sot_prev, *expected, *history]
        assert seg.prompt == history  # echo checks still compare against the previous text only
    long = StreamingSession(backend, SessionConfig(vocabulary="word " * 200))
    assert len(long.prompt.vocabulary) == VOCABULARY_TOKENS


def test_a_closed_segment_ends_the_prompt_with_a_sentence_mark(backend) -> None:
    """Prompt.close: a segment's text that ended without a sentence mark ("... it's on the third floor") reaches the
    prompt with a full stop, since Whisper copies the previous text's style and went on unpunctuated; text that
    ends one keeps it, and audio trimmed off a window's front (remember) is mid-speech: no stop is added."""
    from engine.streaming.prompt import Prompt

    prompt = Prompt(backend, SessionConfig(language="en", task="transcribe"))
    unpunctuated = backend.text_tokens(" It has two bedrooms and it's on the third floor")
    prompt.close(unpunctuated)
    assert prompt.history == unpunctuated + backend.text_tokens(".")
    asked = backend.text_tokens(" Is it still available?")
    prompt.close(asked)
    assert prompt.history[-len(asked) :] == asked  # its own mark kept, nothing added
    trimmed = backend.text_tokens(" The rent is")
    prompt.remember(trimmed)
    assert prompt.history[-len(trimmed) :] == trimmed
    prompt.close([])
    assert prompt.history[-len(trimmed) :] == trimmed  # an empty segment adds nothing
    translating = Prompt(backend, SessionConfig(language="fr", task="translate"))
    translating.close(unpunctuated)
    assert translating.history == unpunctuated  # a segment may close mid-sentence: the translation goes on


def test_a_sentence_opened_in_lower_case_reaches_the_prompt_with_its_capital(backend) -> None:
    """The prompt carries the text as the captions show it: a segment Whisper opened in lower case after the last
    one's full stop ("later. tickets for the lunar record ...") enters it capitalised, since the next segments copy
    the prompt's style (unseen fast English went on in lower case without stops); other segments keep their tokens."""
    from engine.streaming.prompt import Prompt

    prompt = Prompt(backend, SessionConfig(language="en", task="transcribe"))
    first = backend.text_tokens(" A friend of mine found hers two weeks later.")
    prompt.close(first)
    assert prompt.history == first
    prompt.close(backend.text_tokens(" tickets for the tour went on sale."))
    assert prompt.history[len(first) :] == backend.text_tokens(" Tickets for the tour went on sale.")
    trimmed = backend.text_tokens(" within minutes the site crashed")
    prompt.remember(trimmed)
    assert prompt.history[-len(trimmed) :] == backend.text_tokens(" Within minutes the site crashed")


def test_a_carried_segment_s_text_leaves_the_prompt_and_follows_the_start_tokens(backend) -> None:
    """A segment carried in front of the next (SessionConfig.context_s) has its text forced after the start tokens,
    where the decoder continues it; the prompt then ends before that text (it is not given twice) and reaches back
    as far as prompt_tokens allows."""
    from engine.streaming.prompt import Prompt
    from engine.streaming.segment import Segment

    prompt = Prompt(backend, SessionConfig(language="fr", prompt_tokens=8))
    earlier = prompt.close(backend.text_tokens(" A pair of open scissors. A police officer."))
    carried = prompt.close(backend.text_tokens(" A red and white anemone."))
    seg = Segment(start_s=0.0, context=carried)
    prompt.start(seg, [], "fr")
    assert seg.sequence[seg.n_start - len(carried) : seg.n_start] == carried
    assert seg.committed == []
    assert seg.prompt == earlier[-8:]  # the 8 tokens before the carried text
    plain = Segment(start_s=0.0)
    prompt.start(plain, [], "fr")
    assert plain.prompt == (earlier + carried)[-8:]
