"""The duplicate guard (engine/streaming/repeats.py): words of a segment's last decode that only say committed
text again are hidden; a speaker who really says something twice (heard anew) keeps it."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from engine.streaming.config import SessionConfig
from engine.streaming.repeats import Repeats


@pytest.fixture
def repeats(backend):
    return Repeats(backend, SessionConfig().max_tokens_per_s, logging.LoggerAdapter(logging.getLogger("test"), {}))


def test_a_sentence_said_again_in_other_words_is_hidden(backend, repeats):
    """A segment's last update that translates the sentence again with a different opening ("At that time" for
    "During that time") hides the second copy; a new sentence that shares a few words with the last one stays."""
    committed = "Hello. During that time, he began to paint the car with a"
    new = backend.text_tokens(" mirror placed on the bed. At that time, he began to paint the car with a mirror.")
    a, b = repeats.repeated_sentence(new, (0, 0), committed)
    text = b"".join(backend.token_bytes(t) for t in new[a:b]).decode()
    assert text.strip() == "At that time, he began to paint the car with a mirror."
    # the same sentence twice inside the decode, in other words and order: the shortened restart goes ...
    twice = backend.text_tokens(" There they will work 40 people from January. There will be 40 people from January.")
    a, b = repeats.repeated_sentence(twice, (0, 0), "The price is open.")
    shown = b"".join(backend.token_bytes(t) for t in twice[:a] + twice[b:]).decode()
    assert shown.strip() == "There they will work 40 people from January."
    # ... and a restart that says it in full replaces the first attempt, when nothing of it is on screen yet
    fuller = backend.text_tokens(" He began to paint the car. He began to paint the car with a mirror.")
    a, b = repeats.repeated_sentence(fuller, (0, 0), "Hello.")
    shown = b"".join(backend.token_bytes(t) for t in fuller[:a] + fuller[b:]).decode()
    assert shown.strip() == "He began to paint the car with a mirror."
    kept = backend.text_tokens(" last 20 years. Today I will talk about how tourism has changed in the Canary Islands.")
    assert repeats.repeated_sentence(
        kept, (0, 0), "I'm not going to talk about how the tourism has changed in the"
    ) == (
        0,
        0,
    )


def test_a_sentence_restarted_without_punctuation_is_hidden(backend, repeats):
    """Transcription may restart a sentence with no sentence mark before the copy: its opening, five words or more
    said again inside it, is hidden; a repeat of words from a sentence's middle is not a restart."""
    new = backend.text_tokens(" the bypassing instead Drivers should use the bypassing")
    a, b = repeats.repeated_sentence(new, (0, 0), "Drivers should use")
    assert b"".join(backend.token_bytes(t) for t in new[:a] + new[b:]).decode() == " the bypassing instead"
    middle = backend.text_tokens(" and we said that the old town hall will close while the old town hall will close")
    assert repeats.repeated_sentence(middle, (0, 0), "Last week") == (0, 0)


def test_a_clause_said_again_right_after_itself_is_hidden(backend, repeats):
    """A last decode that goes on from committed text may translate its clause again right after it ("but the
    landscape was" committed, then "beautiful but the landscape was beautiful."): the copy goes, the full stop
    stays. A short repeat ("very, very") and a phrase heard again in later audio stay."""
    committed = "The weather was cool, but the landscape was"
    new = backend.text_tokens(" beautiful but the landscape was beautiful.")
    a, b = repeats.repeated_sentence(new, (0, 0), committed)
    shown = b"".join(backend.token_bytes(t) for t in new[:a] + new[b:]).decode()
    assert shown == " beautiful."
    short = backend.text_tokens(" it was very, very beautiful.")
    assert repeats.repeated_sentence(short, (0, 0), "The weather was cool, and") == (0, 0)
    # the same words, each token of the copy read from later audio than the first: a speaker saying it twice
    said = backend.text_tokens(" we must go now we must go now.")
    attention = np.zeros((len(said), 300), dtype=np.float32)
    for t in range(len(said)):
        attention[t, 20 + 25 * t] = 1.0
    assert repeats.repeated_sentence(said, (0, 0), "Listen,", attention, n_frames=300) == (0, 0)
    assert repeats.repeated_sentence(said, (0, 0), "Listen,") != (0, 0)  # no alignment: no evidence of new speech
    # a copy read again from the first one's audio: its frames scatter back (median past the token before it)
    again = backend.text_tokens(" beautiful but the landscape was beautiful.")
    attention = np.zeros((len(again), 300), dtype=np.float32)
    for t, frame in enumerate([165, 211, 134, 122, 202, 165, 224, 230][: len(again)]):
        attention[t, frame] = 1.0
    a, b = repeats.repeated_sentence(again, (0, 0), committed, attention, n_frames=236)
    assert b"".join(backend.token_bytes(t) for t in again[:a] + again[b:]).decode() == " beautiful."


def test_a_copy_too_long_for_the_audio_after_the_first_is_hidden(backend, repeats):
    """A beam that writes a sentence's translation twice may park the copy on the audio's last half second: its
    median frame is past the words before it, but 17 tokens cannot be said in 43 frames (0.86 s; speech runs at
    most SessionConfig.max_tokens_per_s). The copy goes; the same sentence with a second's audio per six tokens after
    the first stays (a speaker saying it again)."""
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
    a, b = repeats.repeated_sentence(new, (0, 0), "The library remains closed until the end of March.", attention, 299)
    assert b"".join(backend.token_bytes(t) for t in new[:a] + new[b:]).decode() == first
    # the same copy, each token read in turn from 3.4 s of audio after the first: said again, kept
    for t in range(n_first, len(new)):
        attention[t] = 0.0
        attention[t, 262 + 10 * (t - n_first)] = 1.0
    assert repeats.repeated_sentence(new, (0, 0), "The library remains closed.", attention, 440) == (0, 0)


def test_an_unpunctuated_restart_of_the_window_is_hidden_to_the_end(backend, repeats):
    """Fast unpunctuated speech has no sentence start to restart from: a last decode that starts over from its
    window's start ("the insurance company ... about to the damage" committed, then "within 7 days the insurance
    company only pays if you are about to damage within 7 days") copies the window's committed opening. The copy
    and the rest that re-reads old audio go; a sentence in the window said again later in new audio stays."""
    before = "like the train station my sister is getting married in June we still haven't picked a gift"
    window = backend.text_tokens(" the insurance company only pays if you are about to the damage")
    text_out = before + " " + b"".join(backend.token_bytes(t) for t in window).decode().strip()
    new = backend.text_tokens(" within 7 days the insurance company only pays if you are about to damage within 7 days")
    frames = [141, 156, 169, 190, 21, 46, 63, 75, 87, 96, 101, 106, 120, 126, 140, 174, 169]  # measured (en, fast)
    assert len(new) == len(frames)
    attention = np.zeros((len(new), 400), dtype=np.float32)
    for t, frame in enumerate(frames):
        attention[t, frame] = 1.0
    a, b = repeats.repeated_sentence(new, (0, 0), text_out, attention, 206, window=window)
    assert b"".join(backend.token_bytes(t) for t in new[:a] + new[b:]).decode() == " within 7 days"
    assert repeats.repeated_sentence(new, (0, 0), text_out, attention, 206) == (0, 0)  # the window's start unknown
    # the same words read in turn from new audio after "days": said again, kept
    for t in range(3, len(new)):
        attention[t] = 0.0
        attention[t, 180 + 8 * t] = 1.0
    assert repeats.repeated_sentence(new, (0, 0), text_out, attention, 320, window=window) == (0, 0)


def test_a_restart_with_its_first_word_reworded_is_hidden(backend, repeats):
    """A real Spanish recording: "A tree, one of the" committed, and the last decode read the segment again with
    "the" for "A": "symbol of the day of San Patricia, the tree, one of the symbol of the day of San Patricia." The
    copy re-reads old audio (frames measured): it goes, its full stop stays. Said again later, it stays."""
    text_out = "A tomato, tomato and tomato. A tree, one of the"
    window = backend.text_tokens(" A tree, one of the")
    new = backend.text_tokens(
        " symbol of the day of San Patricia, the tree, one of the symbol of the day of San Patricia."
    )
    frames = [110, 122, 137, 140, 157, 160, 170, 97, 66, 29, 52, 80, 90, 98, 113, 127, 139, 140, 156, 159, 170, 111]
    assert len(new) == len(frames)
    attention = np.zeros((len(new), 400), dtype=np.float32)
    for t, frame in enumerate(frames):
        attention[t, frame] = 1.0
    a, b = repeats.repeated_sentence(new, (0, 0), text_out, attention, 214, window=window)
    shown = b"".join(backend.token_bytes(t) for t in new[:a] + new[b:]).decode()
    assert shown == " symbol of the day of San Patricia."
    for t in range(8, len(new)):  # the same words read in turn from new audio after "Patricia": said again, kept
        attention[t] = 0.0
        attention[t, 190 + 8 * t] = 1.0
    assert repeats.repeated_sentence(new, (0, 0), text_out, attention, 380, window=window) == (0, 0)


def test_a_restart_that_changes_a_words_number_is_hidden(backend, repeats):
    """A last decode that went on from a committed "I have to bring some document." read it again as "I have to bring
    some documents." (a real run of the Spanish own-set stream, through `dragoman stream`): the whole copy is hidden
    although one word changed its number, not only its opening (which left "Documents." on screen). In a sentence
    that only shares the opening ("I have to bring some money.") the new word stays shown."""
    from engine.streaming.segment import Segment

    seg = Segment(start_s=0.0, n_samples=16000 * 5)
    seg.sequence = backend.text_tokens(" I have to bring some document.")
    committed = "Perfect, it comes very well. I have to bring some document."
    copy = backend.text_tokens(" I have to bring some documents.")
    assert repeats.repeated_prefix(seg, copy, None, committed) == len(copy)
    other = backend.text_tokens(" I have to bring some money.")
    assert repeats.repeated_prefix(seg, other, None, committed) == len(other) - 2  # " money." and "." stay


def test_a_one_word_sentence_read_again_from_committed_audio_is_hidden(backend, repeats):
    """ "Really? That would be wonderful!" committed from a segment's first 3 s; its last decode went on " Really?"
    read from the segment's start (unseen set 5, German): hidden. The same word heard in new audio after the
    committed end (a speaker who says it again) stays, and so does one word that is not a sentence of its own."""
    from engine.streaming.segment import Segment

    seg = Segment(start_s=10.0, n_samples=16000 * 4)
    seg.sequence = backend.text_tokens(" Really? That would be wonderful!")
    seg.committed_end_s = 13.0
    committed = "Yes, a red cat sat on the roof. Really? That would be wonderful!"
    copy = backend.text_tokens(" Really?")
    attention = np.zeros((len(copy), 200), dtype=np.float32)
    attention[:, 5] = 1.0  # 0.1 s into the segment: its first word's audio
    assert repeats.repeated_prefix(seg, copy, attention, committed) == len(copy)
    attention[:] = 0.0
    attention[:, 170] = 1.0  # 3.4 s into the segment, after the committed end: said again
    assert repeats.repeated_prefix(seg, copy, attention, committed) == 0
    unfinished = backend.text_tokens(" Really the")
    at_start = np.zeros((len(unfinished), 200), dtype=np.float32)
    at_start[:, 5] = 1.0
    assert repeats.repeated_prefix(seg, unfinished, at_start, committed) == 0
    assert repeats.repeated_prefix(seg, copy, None, committed) == 0  # no alignment: no evidence of old audio


def test_a_one_word_sentence_said_again_at_the_end_is_hidden(backend, repeats):
    """ "Really? That's" committed, then the last decode " very wonderful. Really?", the copy's heads parked on the
    audio's end (frames measured: unseen set 5, German, the language detected): the copy goes. Heard in new audio
    after the words before it, it stays; so does a last word that repeats no one-word sentence."""
    committed = "Yes, a red cat sat on the roof. Really? That's"
    new = backend.text_tokens(" very wonderful. Really?")
    frames = [97, 107, 137, 135, 136]
    assert len(new) == len(frames)
    attention = np.zeros((len(new), 300), dtype=np.float32)
    for t, frame in enumerate(frames):
        attention[t, frame] = 1.0
    a, b = repeats.repeated_sentence(new, (0, 0), committed, attention, 182)
    assert b"".join(backend.token_bytes(t) for t in new[:a] + new[b:]).decode() == " very wonderful."
    attention[3:] = 0.0
    attention[3:, 170] = 1.0  # a second after "wonderful.": said again
    assert repeats.repeated_sentence(new, (0, 0), committed, attention, 200) == (0, 0)
    other = backend.text_tokens(" very wonderful. Thanks!")
    assert repeats.repeated_sentence(other, (0, 0), committed, np.ones((len(other), 300), np.float32), 182) == (0, 0)
