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


def test_a_sentence_said_again_in_other_words_is_hidden(backend):
    """A segment's last update that translates the sentence again with a different opening ("At that time" for
    "During that time") hides the second copy; a new sentence that shares a few words with the last one stays."""
    import logging

    from engine.streaming.config import SessionConfig
    from engine.streaming.guards import Guards

    guards = Guards(backend, SessionConfig(), logging.LoggerAdapter(logging.getLogger("test"), {}))
    committed = "Hello. During that time, he began to paint the car with a"
    new = backend.text_tokens(" mirror placed on the bed. At that time, he began to paint the car with a mirror.")
    a, b = guards.repeated_sentence(new, (0, 0), committed)
    text = b"".join(backend.token_bytes(t) for t in new[a:b]).decode()
    assert text.strip() == "At that time, he began to paint the car with a mirror."
    # the same sentence twice inside the decode, in other words and order: the shortened restart goes ...
    twice = backend.text_tokens(" There they will work 40 people from January. There will be 40 people from January.")
    a, b = guards.repeated_sentence(twice, (0, 0), "The price is open.")
    shown = b"".join(backend.token_bytes(t) for t in twice[:a] + twice[b:]).decode()
    assert shown.strip() == "There they will work 40 people from January."
    # ... and a restart that says it in full replaces the first attempt, when nothing of it is on screen yet
    fuller = backend.text_tokens(" He began to paint the car. He began to paint the car with a mirror.")
    a, b = guards.repeated_sentence(fuller, (0, 0), "Hello.")
    shown = b"".join(backend.token_bytes(t) for t in fuller[:a] + fuller[b:]).decode()
    assert shown.strip() == "He began to paint the car with a mirror."
    kept = backend.text_tokens(" last 20 years. Today I will talk about how tourism has changed in the Canary Islands.")
    assert guards.repeated_sentence(kept, (0, 0), "I'm not going to talk about how the tourism has changed in the") == (
        0,
        0,
    )


def test_a_sentence_restarted_without_punctuation_is_hidden(backend):
    """Transcription may restart a sentence with no sentence mark before the copy: its opening, five words or more
    said again inside it, is hidden; a repeat of words from a sentence's middle is not a restart."""
    import logging

    from engine.streaming.config import SessionConfig
    from engine.streaming.guards import Guards

    guards = Guards(backend, SessionConfig(task="transcribe"), logging.LoggerAdapter(logging.getLogger("test"), {}))
    new = backend.text_tokens(" the bypassing instead Drivers should use the bypassing")
    a, b = guards.repeated_sentence(new, (0, 0), "Drivers should use")
    assert b"".join(backend.token_bytes(t) for t in new[:a] + new[b:]).decode() == " the bypassing instead"
    middle = backend.text_tokens(" and we said that the old town hall will close while the old town hall will close")
    assert guards.repeated_sentence(middle, (0, 0), "Last week") == (0, 0)


def test_a_clause_said_again_right_after_itself_is_hidden(backend):
    """A last decode that goes on from committed text may translate its clause again right after it ("but the
    landscape was" committed, then "beautiful but the landscape was beautiful."): the copy goes, the full stop
    stays. A short repeat ("very, very") and a phrase heard again in later audio stay."""
    import logging

    import numpy as np

    from engine.streaming.config import SessionConfig
    from engine.streaming.guards import Guards

    guards = Guards(backend, SessionConfig(), logging.LoggerAdapter(logging.getLogger("test"), {}))
    committed = "The weather was cool, but the landscape was"
    new = backend.text_tokens(" beautiful but the landscape was beautiful.")
    a, b = guards.repeated_sentence(new, (0, 0), committed)
    shown = b"".join(backend.token_bytes(t) for t in new[:a] + new[b:]).decode()
    assert shown == " beautiful."
    short = backend.text_tokens(" it was very, very beautiful.")
    assert guards.repeated_sentence(short, (0, 0), "The weather was cool, and") == (0, 0)
    # the same words, each token of the copy read from later audio than the first: a speaker saying it twice
    said = backend.text_tokens(" we must go now we must go now.")
    attention = np.zeros((len(said), 300), dtype=np.float32)
    for t in range(len(said)):
        attention[t, 20 + 25 * t] = 1.0
    assert guards.repeated_sentence(said, (0, 0), "Listen,", attention, n_frames=300) == (0, 0)
    assert guards.repeated_sentence(said, (0, 0), "Listen,") != (0, 0)  # no alignment: no evidence of new speech
    # a copy read again from the first one's audio: its frames scatter back (median past the token before it)
    again = backend.text_tokens(" beautiful but the landscape was beautiful.")
    attention = np.zeros((len(again), 300), dtype=np.float32)
    for t, frame in enumerate([165, 211, 134, 122, 202, 165, 224, 230][: len(again)]):
        attention[t, frame] = 1.0
    a, b = guards.repeated_sentence(again, (0, 0), committed, attention, n_frames=236)
    assert b"".join(backend.token_bytes(t) for t in again[:a] + again[b:]).decode() == " beautiful."


def test_a_copy_too_long_for_the_audio_after_the_first_is_hidden(backend):
    """A beam that writes a sentence's translation twice may park the copy on the audio's last half second: its
    median frame is past the words before it, but 17 tokens cannot be said in 43 frames (0.86 s; speech runs at
    most SessionConfig.max_tokens_per_s). The copy goes; the same sentence with a second's audio per six tokens after
    the first stays (a speaker saying it again)."""
    import logging

    import numpy as np

    from engine.streaming.config import SessionConfig
    from engine.streaming.guards import Guards

    guards = Guards(backend, SessionConfig(), logging.LoggerAdapter(logging.getLogger("test"), {}))
    first = " The books, which they have from the school, can give them back to Warnhof."
    copy = " The books, which they have from the school can give back to Warnhof."
    new = backend.text_tokens(first + copy)
    n_first = len(backend.text_tokens(first))
    # the frames measured (German unseen stream, engine 8c09cfd): the first copy 16..256, the copy parked at the end
    frames_first = [16, 55, 52, 52, 79, 106, 194, 90, 90, 274, 199, 274, 255, 206, 248, 207, 211, 256, 232]
    frames_copy = [297, 297, 274, 274, 185, 106, 201, 90, 297, 274, 297, 297, 248, 198, 254, 255, 297]
    assert len(new) == len(frames_first) + len(frames_copy) and n_first == len(frames_first)
    attention = np.zeros((len(new), 500), dtype=np.float32)
    for t, frame in enumerate(frames_first + frames_copy):
        attention[t, frame] = 1.0
    a, b = guards.repeated_sentence(new, (0, 0), "The library remains closed until the end of March.", attention, 299)
    assert b"".join(backend.token_bytes(t) for t in new[:a] + new[b:]).decode() == first
    # the same copy, each token read in turn from 3.4 s of audio after the first: said again, kept
    for t in range(n_first, len(new)):
        attention[t] = 0.0
        attention[t, 262 + 10 * (t - n_first)] = 1.0
    assert guards.repeated_sentence(new, (0, 0), "The library remains closed.", attention, 440) == (0, 0)


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


def test_an_unpunctuated_restart_of_the_window_is_hidden_to_the_end(backend):
    """Fast unpunctuated speech has no sentence start to restart from: a last decode that starts over from its
    window's start ("the insurance company ... about to the damage" committed, then "within 7 days the insurance
    company only pays if you are about to damage within 7 days") copies the window's committed opening. The copy
    and the rest that re-reads old audio go; a sentence in the window said again later in new audio stays."""
    import logging

    import numpy as np

    from engine.streaming.config import SessionConfig
    from engine.streaming.guards import Guards

    guards = Guards(backend, SessionConfig(task="transcribe"), logging.LoggerAdapter(logging.getLogger("test"), {}))
    before = "like the train station my sister is getting married in June we still haven't picked a gift"
    window = backend.text_tokens(" the insurance company only pays if you are about to the damage")
    text_out = before + " " + b"".join(backend.token_bytes(t) for t in window).decode().strip()
    new = backend.text_tokens(" within 7 days the insurance company only pays if you are about to damage within 7 days")
    frames = [141, 156, 169, 190, 21, 46, 63, 75, 87, 96, 101, 106, 120, 126, 140, 174, 169]  # measured (en, fast)
    assert len(new) == len(frames)
    attention = np.zeros((len(new), 400), dtype=np.float32)
    for t, frame in enumerate(frames):
        attention[t, frame] = 1.0
    a, b = guards.repeated_sentence(new, (0, 0), text_out, attention, 206, window=window)
    assert b"".join(backend.token_bytes(t) for t in new[:a] + new[b:]).decode() == " within 7 days"
    assert guards.repeated_sentence(new, (0, 0), text_out, attention, 206) == (0, 0)  # the window's start unknown
    # the same words read in turn from new audio after "days": said again, kept
    for t in range(3, len(new)):
        attention[t] = 0.0
        attention[t, 180 + 8 * t] = 1.0
    assert guards.repeated_sentence(new, (0, 0), text_out, attention, 320, window=window) == (0, 0)
