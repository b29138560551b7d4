"""Hallucination guards (engine/streaming/guards.py): pure functions over token ids and text."""

from __future__ import annotations

from engine.streaming.drift import looks_like_source_language
from engine.streaming.guards import (
    echo_run,
    is_prompt_echo,
    is_stutter,
    repetition_cut,
    stutter_spans,
)
from engine.streaming.segment import Segment


def test_repetition_loop_is_cut_to_one_copy():
    """A 3-gram repeated three times is cut back to a single copy; normal text is untouched."""
    assert repetition_cut([1, 2, 3, 4, 5, 6]) is None
    tokens = [9, 1, 2, 3, 1, 2, 3, 1, 2, 3]
    assert tokens[: repetition_cut(tokens)] == [9, 1, 2, 3]


def test_a_loop_run_to_a_beam_searchs_budget_keeps_one_copy():
    """A beam search checks for loops once, at its end: every copy goes, not only the last two."""
    tokens = [9, 4] + [1, 2] * 12
    assert tokens[: repetition_cut(tokens)] == [9, 4, 1, 2]
    period = 99
    ends = period.__eq__  # token 99 ends a sentence
    assert is_stutter(tokens, repetition_cut(tokens), ends)  # a two-token unit: the model stalled in the speech
    clause = list(range(10, 22))
    assert not is_stutter([9] + clause + clause, repetition_cut([9] + clause + clause), ends)  # it started over
    sentence = [9] + [5, 6, 7, period] * 3  # "A modern pencil. A modern pencil. A modern pencil."
    assert not is_stutter(sentence, repetition_cut(sentence), ends)  # a sentence finished, then said again


def test_a_stutter_inside_a_hypothesis_keeps_its_first_copy():
    """ "grand-grand-grand-grand in a small village": short n-grams three times in a row (one token: four)."""
    tokens = [5, 1, 2, 1, 2, 1, 2, 1, 9, 9, 9, 7, 7, 7, 7, 3]
    for a, b in reversed(stutter_spans(tokens)):
        tokens = tokens[:a] + tokens[b:]
    assert tokens == [5, 1, 2, 1, 9, 9, 9, 7, 3]  # "no, no, no" (one token three times) is speech
    assert stutter_spans([1, 2, 3, 1, 2, 3, 4]) == []


def test_prompt_echo_and_source_language_drift():
    """Echoing the previous text and answering in German in translate mode are recognised."""
    assert is_prompt_echo([5, 6, 7, 8, 9], [1, 5, 6, 7, 8, 9, 2])
    assert not is_prompt_echo([5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6])
    assert looks_like_source_language("Bitte schicken Sie mir den Bericht bis Freitag", "de")
    assert not looks_like_source_language("Please send me the report by Friday", "de")


def test_speech_written_out_in_spanish_or_french_is_a_drift_and_names_are_not():
    """Whisper's translation written out in the spoken language (seen on whole-window retries of Spanish speech)
    is recognised by its commonest function words; an English sentence with a few foreign names is not."""
    assert looks_like_source_language("Diga, hola, yamos por qué quede a pedir cita con la doctora Álterga.", "es")
    assert looks_like_source_language("Lisboio por dos son las ciudades donde más se ha encarecido una casa.", "es")
    assert looks_like_source_language("Il faisait frais, mais les paysages étaient magnifiques.", "fr")
    assert looks_like_source_language("Die Preise für Gemüse sind in diesem Jahr stark gestiegen.", "de")
    # a stream's opening greeting, written out in French (dev_fr_1; 2 of 10 words before "à", "l", "voici" joined)
    assert looks_like_source_language("Bonsoir à tous, voici les principaux titres de l'actualité", "fr")
    assert not looks_like_source_language("She met Juan de la Cruz in the city of Buenos Aires.", "es")
    assert not looks_like_source_language("Songs like La Vie en rose are now known all over the world.", "fr")
    assert not looks_like_source_language("I'd say it's the Café de Flore, a place I'll show you.", "fr")
    assert not looks_like_source_language("The concert begins at eight, but we should be there earlier.", "de")


def test_a_translation_that_goes_over_into_the_spoken_language_halfway_is_a_drift():
    """Three or more of the spoken language's function words and few English ones beside them: a last decode that
    went over into French after two English words (fresh speech, committed as is before), or German written in its
    rarer words, under the 30 % density. A place name brings English words with it."""
    assert looks_like_source_language("A collective rallye samedi à la mairie de Toulouse, the 9h16h.", "fr")
    assert looks_like_source_language(
        "Laut einer Umfrage hat fast jeder dritte des halb schon einmal verzichtet.", "de"
    )
    assert looks_like_source_language("A piece shared in Granada Cuesta unos 350 euros al mes para habitación.", "es")
    assert not looks_like_source_language("We live on the Rue de la Paix, and it is near the station.", "fr")
    assert not looks_like_source_language("It is the Plaza de la Villa, the oldest square in the city.", "es")


def test_echo_run_finds_four_copied_words_reaching_into_the_new_ones():
    """A run of four words of the prompt, one of them just decoded, is an echo; the copy may drift after it."""
    prompt = "perfect it comes very well i have to bring some document".split()
    assert echo_run(["i", "have", "to", "bring", "some", "documents"], 6, prompt)
    assert echo_run(["i", "have", "to", "bring"], 3, prompt)  # the first word was committed earlier
    assert not echo_run(["i", "have", "to"], 3, prompt)  # three words: too common to tell
    assert not echo_run(["i", "have", "to", "bring", "lisbon"], 1, prompt)  # the copy lies in old words only
    assert not echo_run("lisbon and porto are the cities".split(), 6, prompt)
    assert not echo_run(["i", "have", "to", "bring"], 4, [])


def test_hidden_repeats_are_left_out_of_what_the_prompt_carries_on():
    """Segment.shown: committed tokens less those committed but not shown (a repeat the decoder continued from)."""
    seg = Segment(start_s=0.0)
    seg.sequence, seg.n_start = [50258, 1, 2, 3, 4, 5], 1
    seg.hidden = [False, False, True, True, False]
    assert seg.shown() == [1, 2, 5]
    assert seg.shown(3) == [1, 2]


def test_the_spoken_languages_function_words_are_tokens_to_ban(backend):
    """Guards.source_word_tokens: the drift word list as single tokens, lower-case and capitalised, for the decode
    that must translate a drifted segment; words English uses too ("die") stay allowed; no list, nothing banned."""
    import logging

    from engine.streaming.config import SessionConfig
    from engine.streaming.guards import Guards

    guards = Guards(backend, SessionConfig(), logging.LoggerAdapter(logging.getLogger("test"), {}))
    spanish = set(guards.source_word_tokens("es"))
    for word in (" la", " La", " de", " las", " donde"):
        (token,) = backend.text_tokens(word)
        assert token in spanish, word
    for word in (" the", " The", " city", " house"):
        assert not set(backend.text_tokens(word)) & spanish, word
    german = set(guards.source_word_tokens("de"))
    assert backend.text_tokens(" und")[0] in german and backend.text_tokens(" die")[0] not in german
    assert guards.source_word_tokens("en") == [] and guards.source_word_tokens(None) == []
