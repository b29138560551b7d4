"""Failures seen on continuous speech with short pauses (issue: streaming quality), each on synthesised speech,
through StreamingSession and through `dragoman stream`.

- re-translation duplicates: a sentence restarted after a commit ("or we should cook together or we should cook
  together", "No, I don't believe it. ... No, I don't believe it.");
- a lost clause: "Das Konzert beginnt um acht Uhr, aber wir sollten früher da sein." committed as "The concert
  begins at 8 a.m" and never the rest, not even after finish();
- auto-detect locking a wrong language on a sentence's first second;
- boundary junk: a commit ending in the next sentence's opening ("No,", "After"), guessed before it was said;
- a lost sentence: the only decode of a segment that commits it (its last) drifting into German and being
  discarded, after earlier updates had shown it (44.1 kHz microphone audio of "Bitte schicken Sie mir den
  Bericht bis Freitag ...");
- a sentence said once, committed twice: a segment's last update starting over ("Good morning and welcome to the
  6th at Black News from Chicago. Good evening and welcome to the 6th at Black News from Chicago.");
- lost sentences under an echo of the previous text: after "I have to bring some document." (committed, then
  repeated and hidden), two Spanish sentences about Lisbon came out as "I have to bring some documents." again
  (benchmark own_es_2, 45-64 s; the `dragoman stream` variant of this one passed before the fix too);
- vanished captions: a short utterance whose only decode (a segment's last) Whisper was unsure of (average
  log-probability below -2, no-speech probability low) was discarded as a guess;
- a lost sentence end: a segment's beam-searched last decode wrote the sentence out in German, and the text shown
  before it, heard from a second less audio, was committed instead ("Thank you for your", no "help"; seen in
  `dragoman mic`, where it failed the end-to-end test about one run in four);
- a sentence said again, hidden: the duplicate guard took "Thank you for your help.", said a second time a
  sentence later, for a re-translation of the first and dropped it;
- a stutter loop: the last beam search ran "grand-grand-grand-..." to its budget for "Ma grand-mère habite dans un
  petit village près de Lyon." (a cut kept all but two copies, and the rest of the sentence was lost), or went on
  after it ("My grand-grand-grand-grand in a small village near Lyon.");
- a restart without punctuation committed twice: "Drivers should use the bypassing instead Drivers should use the
  bypassing" (English, the next sentence 0.4 s later, inside the same segment).
Each test failed on the code before the fix (checked against the commit before it).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from engine.audio import SAMPLE_RATE, load_audio
from engine.events import Commit, TimedEvent
from engine.streaming.session import SessionConfig, StreamingSession
from tests.speech import synthesize, write_wav

pytestmark = pytest.mark.slow

# A short passage read with 0.35 s pauses: sentence ends the VAD does not always see, a clause after a comma,
# neighbours that start alike.
PASSAGE = [
    "Am Wochenende steigen die Temperaturen auf über dreißig Grad.",
    "Die Preise für Strom sind im Mai um 5,2 Prozent gestiegen.",
    "Ich habe heute keine Lust auf Restaurant. Oder sollen wir zusammen kochen?",
    "Das Konzert beginnt um acht Uhr, aber wir sollten früher da sein.",
    "Nein, das glaube ich nicht. Deshalb bleiben wir heute zu Hause.",
    "Nach dem Essen gehen wir noch kurz spazieren, wenn es nicht regnet.",
]
PAUSE_S = 0.35


def passage_audio(voice: str, audio_dir, onsets: list[float] | None = None) -> np.ndarray:
    """The passage as one stream; `onsets` (if given) receives each sentence's start time in seconds."""
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)
    pieces = [np.zeros(SAMPLE_RATE // 2, np.float32)]
    for text in PASSAGE:
        if onsets is not None:
            onsets.append(sum(map(len, pieces)) / SAMPLE_RATE)
        pieces += [load_audio(synthesize(text, voice, audio_dir)), pause]
    return np.concatenate(pieces + [np.zeros(SAMPLE_RATE, np.float32)])


def stream(
    backend, audio: np.ndarray, config: SessionConfig, timed: list[TimedEvent] | None = None
) -> StreamingSession:
    """Feed `audio` in 0.1 s pieces; `timed` (if given) receives the Commits with the stream time of each."""
    session = StreamingSession(backend, config)
    step = SAMPLE_RATE // 10

    def run() -> None:
        session.process()
        events = session.drain_timed_events()
        if timed is not None:
            timed.extend(te for te in events if isinstance(te.event, Commit))

    for i in range(0, len(audio), step):
        session.feed_audio(audio[i : i + step], SAMPLE_RATE)
        run()
    session.finish()
    run()
    return session


def stream_vtt(
    tmp_path, audio: np.ndarray, args: list[str], sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16"
) -> str:
    """`audio` through `dragoman stream ARGS --vtt` (as a WAV file at `sample_rate`, samples as `subtype`): the
    caption file's text."""
    from app.cli import main

    wav = write_wav(tmp_path / "speech.wav", audio, sample_rate, subtype=subtype)
    vtt = tmp_path / "out.vtt"
    assert main(["stream", str(wav), *args, "--vtt", str(vtt)]) == 0
    return vtt.read_text()


def words(text: str) -> list[str]:
    return [w for w in ("".join(c for c in t.lower() if c.isalnum()) for t in text.split()) if w]


def repeated_phrases(text: str, n: int = 5, window: int = 30) -> list[str]:
    """n-word phrases that occur twice within `window` words: a restarted translation."""
    w = words(text)
    seen: dict[tuple[str, ...], int] = {}
    out = []
    for i in range(len(w) - n + 1):
        gram = tuple(w[i : i + n])
        if gram in seen and i - seen[gram] <= window:
            out.append(" ".join(gram))
        seen[gram] = i
    return out


@pytest.fixture(scope="module", params=["mb-de6", "mb-de7"])
def passage(request, backend, audio_dir):
    onsets: list[float] = []
    audio = passage_audio(request.param, audio_dir, onsets)
    timed: list[TimedEvent] = []
    session = stream(backend, audio, SessionConfig(task="translate", language="de"), timed)
    session.onsets, session.timed_commits = onsets, timed
    return request.param, audio, session


def test_no_phrase_is_committed_twice(passage):
    voice, _, session = passage
    assert not repeated_phrases(session.transcript), (voice, session.transcript)


def test_the_clause_after_the_comma_is_not_lost(passage):
    """'..., aber wir sollten früher da sein' reaches the transcript (AlignAtt used to stop the segment's last
    update on a token whose attention parked on the appended silence)."""
    voice, _, session = passage
    text = " ".join(words(session.transcript))
    assert "concert" in text and "should be" in text.split("concert", 1)[1], (voice, session.transcript)


def test_every_sentence_is_represented(passage):
    """Nothing the speaker said silently vanishes: each sentence leaves a trace in the transcript."""
    voice, _, session = passage
    text = " ".join(words(session.transcript))
    for clue in ("30", "52", "together", "concert", "believe", "after"):
        assert clue in text, (voice, clue, session.transcript)


# a word of the English translation of PASSAGE[i] that no earlier sentence's translation holds
OPENINGS = {3: "concert", 4: "believe", 5: "after"}


def test_no_commit_guesses_the_next_sentence(passage):
    """Boundary junk: no commit decided before a sentence's audio began holds that sentence's opening word
    (the next sentence guessed from silence, then translated again once it is heard)."""
    voice, _, session = passage
    for i, opening in OPENINGS.items():
        early = " ".join(te.event.text for te in session.timed_commits if te.at_s < session.onsets[i])
        assert opening not in words(early), (voice, i, early)


def test_dragoman_stream_keeps_the_clause_and_commits_no_phrase_twice(backend, audio_dir, tmp_path, capsys):
    """The same passage through the command line: the JSONL commits hold the clause and no repeated phrase."""
    from app.cli import main

    wav = write_wav(tmp_path / "passage.wav", passage_audio("mb-de7", audio_dir))
    events = tmp_path / "events.jsonl"
    assert main(["stream", str(wav), "--language", "de", "--events", str(events)]) == 0
    text = "".join(r["text"] for r in map(json.loads, events.read_text().splitlines()) if r["type"] == "commit")
    assert not repeated_phrases(text), text
    joined = " ".join(words(text))
    assert "concert" in joined and "should be" in joined.split("concert", 1)[1], text


def mic_talk(audio_dir) -> np.ndarray:
    """Two German sentences with 1 s pauses, at a microphone's 44.1 kHz."""
    import soxr

    from tests.speech import speech

    pieces = [np.zeros(SAMPLE_RATE // 2, np.float32)]
    for i in (1, 3):
        pieces += [speech("de", i, audio_dir)[0], np.zeros(SAMPLE_RATE, np.float32)]
    return soxr.resample(np.concatenate(pieces), SAMPLE_RATE, 44100).astype(np.float32)


def test_a_sentence_whose_last_decode_fails_a_guard_is_not_lost(backend, audio_dir):
    """When a segment's last decode is discarded (drifted into the source language) the tentative text the
    earlier updates showed is committed: 'Please send me the ... Friday' stays on screen."""
    audio = mic_talk(audio_dir)
    session = StreamingSession(backend, SessionConfig(task="translate", language="de"))
    step = 4410
    for i in range(0, len(audio), step):
        session.feed_audio(audio[i : i + step], 44100)
        session.process()
    session.finish()
    session.process()
    text = words(session.transcript)
    assert "friday" in text and "sister" in text, session.transcript


def test_dragoman_stream_keeps_a_sentence_whose_last_decode_fails_a_guard(audio_dir, tmp_path):
    """The same 44.1 kHz recording through `dragoman stream`: both sentences reach the caption file."""
    captions = stream_vtt(tmp_path, mic_talk(audio_dir), ["--language", "de"], sample_rate=44100)
    text = words(captions)
    assert "friday" in text and "sister" in text, captions


RESTARTED = "Good evening, and welcome to the 6 o'clock news from Chicago."


def restarted_audio(audio_dir) -> np.ndarray:
    audio = load_audio(synthesize(RESTARTED, "mb-us3", audio_dir))
    return np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), audio, np.zeros(SAMPLE_RATE, np.float32)])


def test_a_sentence_said_once_is_committed_once(backend, audio_dir):
    """The last update of a segment whose sentence is already committed does not start it over (its attention
    goes back to audio already covered: the re-read is dropped)."""
    session = stream(backend, restarted_audio(audio_dir), SessionConfig(task="transcribe", language="en"))
    assert words(session.transcript).count("chicago") == 1, session.transcript
    assert "welcome" in words(session.transcript), session.transcript


def test_dragoman_stream_commits_a_sentence_said_once_once(audio_dir, tmp_path):
    """The same through the command line's caption file."""
    from app.cli import main

    wav = write_wav(tmp_path / "restart.wav", restarted_audio(audio_dir))
    srt = tmp_path / "out.srt"
    assert main(["stream", str(wav), "--task", "transcribe", "--language", "en", "--srt", str(srt)]) == 0
    assert words(srt.read_text()).count("chicago") == 1, srt.read_text()


@pytest.mark.parametrize(
    "text",
    [
        "In Hamburg regnet es heute den ganzen Tag.",  # its first second sounded English
        "Ich komme heute etwas später nach Hause.",  # its first second sounded Latin
    ],
)
def test_auto_detect_waits_for_enough_speech(backend, audio_dir, text):
    """With no language given, a short German sentence whose first second Whisper takes for another language
    is still detected as German and translated, not transcribed as if it were that language ("in Hamburg
    Regnet as hei to Dean Ganzen Tag" when the language was fixed on the first second)."""
    audio = load_audio(synthesize(text, "mb-de7", audio_dir))
    audio = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), audio, np.zeros(SAMPLE_RATE, np.float32)])
    session = stream(backend, audio, SessionConfig(task="translate", language=None))
    assert session.language == "de"
    out = set(words(session.transcript))
    assert len(out) >= 3 and not out & {w.lower().strip(".") for w in text.split()} - {"in", "hamburg"}, (
        session.transcript
    )


def railroad_talk(audio_dir) -> np.ndarray:
    """26 s of the English benchmark's own stream 1 (sentences 13-17, three voices, its pauses): the last segment's
    first second ("De-" of "Decades later") was decoded as "The kids" and "The" committed."""
    from benchmarks.corpus import build_streams

    st = build_streams("en", "own", audio_dir)[1]
    a, b = st.sentences[12][0] - 0.3, st.sentences[16][1] + 0.6
    return st.audio[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)]


def test_a_segments_first_second_is_not_committed(backend, audio_dir):
    """Words decoded from a segment's first second are shown, not committed: a committed guess steers the rest."""
    session = stream(backend, railroad_talk(audio_dir), SessionConfig(task="transcribe", language="en"))
    out = words(session.transcript)
    assert "kids" not in out and "decades" in out, session.transcript
    assert out.count("later") == 1 and out[out.index("later") - 2 : out.index("later")] == ["children", "decades"]


def test_dragoman_stream_does_not_commit_a_segments_first_second(audio_dir, tmp_path):
    """The same through the command line's caption file."""
    captions = stream_vtt(tmp_path, railroad_talk(audio_dir), ["--task", "transcribe", "--language", "en"])
    out = words(captions)
    assert "kids" not in out and "decades" in out, captions


def test_a_sentence_never_translated_is_committed_as_heard(backend, audio_dir, monkeypatch, caplog):
    """Seen in `dragoman mic` (44.1 kHz, German): every update was unsure or wrote German instead of English, so
    nothing was shown, and the last decode (with and without the prompt) drifted too: the sentence vanished.
    Here every decode is judged to have drifted; the segment's last one is committed as heard, with a warning."""
    import logging

    import engine.streaming.guards as guards_module

    monkeypatch.setattr(guards_module, "looks_like_source_language", lambda text, lang: True)
    audio = load_audio(synthesize("Bitte schicken Sie mir den Bericht bis Freitag.", "mb-de6", audio_dir))
    audio = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), audio, np.zeros(SAMPLE_RATE, np.float32)])
    with caplog.at_level(logging.WARNING, logger="engine.streaming.session"):
        session = stream(backend, audio, SessionConfig(task="translate", language="de"))
    assert len(words(session.transcript)) >= 4, session.transcript
    assert "committed untranslated" in caplog.text


@pytest.fixture(scope="module")
def echo_stream(audio_dir) -> np.ndarray:
    """The benchmark's second Spanish own-set stream, its first 66 s: "... ¿Tengo que traer algún documento?",
    then sentences about housing in Portugal, Lisbon and Porto, and foreign workers."""
    from benchmarks import corpus

    stream = corpus.build_streams("es", "own", audio_dir)[1]
    return stream.audio[: 66 * SAMPLE_RATE]


def _echo_checks(text: str) -> None:
    w = words(text)
    assert " ".join(w).count("bring some document") <= 1, text  # said once
    assert "cities" in w or "house" in w, text  # "Lisboa y Oporto son las ciudades ... comprar una casa"
    assert "experts" in w or "workers" in w, text  # "Según los expertos, la llegada de trabajadores ..."


def test_an_echo_of_the_previous_text_does_not_replace_new_sentences(backend, echo_stream):
    """ "I have to bring some document." was repeated, hidden, carried into the prompt and written out again over
    the next two sentences, which were lost (before the word-level echo guard and hidden repeats kept out of the
    prompt: "... I have to bring some documents. I have to bring some documents. I")."""
    session = stream(backend, echo_stream, SessionConfig(task="translate", language="es"))
    _echo_checks(session.transcript)


def test_dragoman_stream_does_not_let_an_echo_replace_new_sentences(echo_stream, tmp_path):
    """The same audio through `dragoman stream`: the sentences after the echo-prone one reach the caption file.
    (Its feeding rounds differently: this one passed on the code before the fix too; the session test above
    failed there.)"""
    captions = stream_vtt(tmp_path, echo_stream, ["--language", "es"])
    _echo_checks(captions)


# Short captions Whisper base understands poorly: a segment's last decode averages below -2 log-probability per
# token (-2.40 and -2.30) while the no-speech probability stays low (0.26, 0.13). They were discarded as guesses,
# and with nothing shown before, the utterance vanished (real volunteer recordings lost 3 of 40 the same way).
UNSURE_CAPTIONS = ["Un râteau pour ramasser les feuilles.", "Une coquille de noix flottante."]


def captions_audio(texts: list[str], voice: str, audio_dir, lead_s: float, gap_s: float) -> np.ndarray:
    """Each text synthesised, after `lead_s` of silence and followed by `gap_s` of it."""
    pieces = [np.zeros(int(lead_s * SAMPLE_RATE), np.float32)]
    for text in texts:
        pieces += [load_audio(synthesize(text, voice, audio_dir)), np.zeros(int(gap_s * SAMPLE_RATE), np.float32)]
    return np.concatenate(pieces)


def unsure_audio(audio_dir) -> np.ndarray:
    return captions_audio(UNSURE_CAPTIONS, "mb-fr1", audio_dir, lead_s=1.0, gap_s=2.0)


def _unsure_checks(text: str) -> None:
    w = words(text)
    assert "leaves" in w, text  # "Rato can massage the leaves."
    assert len(w) >= 6, text  # the second caption is there too ("A cookie from New Zealand.")


def test_an_unsure_last_decode_of_speech_is_kept(backend, audio_dir):
    """A segment's last update keeps a low-confidence translation of speech instead of dropping the utterance."""
    session = stream(backend, unsure_audio(audio_dir), SessionConfig(task="translate", language="fr"))
    _unsure_checks(session.transcript)


def test_dragoman_stream_keeps_an_unsure_last_decode(audio_dir, tmp_path):
    """The same captions through `dragoman stream`: both reach the caption file."""
    captions = stream_vtt(tmp_path, unsure_audio(audio_dir), ["--language", "fr"])
    _unsure_checks(captions)


# "Bitte schicken Sie mir den Bericht bis Freitag. Vielen Dank für Ihre Hilfe.": Whisper base's beam-searched last
# decode writes it out in German at every lead-in tried (0 to 0.95 s); the earlier updates' translation ended at
# "Thank you for your" and was committed as it was.
DRIFT_LEADS_S = (0.1, 0.45, 0.7)


def drift_audio(audio_dir, lead_s: float) -> np.ndarray:
    from tests.speech import speech

    audio = speech("de", 1, audio_dir)[0]
    lead, tail = np.zeros(int(lead_s * SAMPLE_RATE), np.float32), np.zeros(SAMPLE_RATE, np.float32)
    return np.concatenate([lead, audio, tail])


def _drift_checks(text: str) -> None:
    w = words(text)
    assert "friday" in w and "help" in w, text
    assert "vielen" not in w and "hilfe" not in w, text  # translated, not committed as heard


@pytest.mark.parametrize("lead_s", DRIFT_LEADS_S)
def test_a_last_decode_that_drifts_is_continued_not_cut_short(backend, audio_dir, lead_s):
    """The drifted last decode is replaced by the translation shown before it, continued to the segment's end."""
    session = stream(backend, drift_audio(audio_dir, lead_s), SessionConfig(task="translate", language="de"))
    _drift_checks(session.transcript)


def test_dragoman_stream_continues_a_last_decode_that_drifts(audio_dir, tmp_path):
    """The same sentence through `dragoman stream`: the caption file ends with "help"."""
    captions = stream_vtt(tmp_path, drift_audio(audio_dir, DRIFT_LEADS_S[0]), ["--language", "de"])
    _drift_checks(captions)


# Said twice, a sentence apart: the second "Thank you for your help." is new speech, not a re-translation
SAID_AGAIN = ["Thank you for your help.", "I will check the report tonight. Thank you for your help."]


def said_again_audio(audio_dir) -> np.ndarray:
    return captions_audio(SAID_AGAIN, "mb-us1", audio_dir, lead_s=0.5, gap_s=1.0)


def _said_again_checks(text: str) -> None:
    w = " ".join(words(text))
    assert w.count("thank you for your help") == 2, text
    assert "tonight" in w, text


def test_a_sentence_said_again_is_not_hidden_as_a_repeat(backend, audio_dir):
    """The duplicate guard hides a sentence of a segment's last decode that repeats what was just said only when
    its alignment does not move on to new audio."""
    config = SessionConfig(task="transcribe", language="en")
    _said_again_checks(stream(backend, said_again_audio(audio_dir), config).transcript)


def test_dragoman_stream_keeps_a_sentence_said_again(audio_dir, tmp_path):
    """The same speech through `dragoman stream`: both "Thank you for your help." reach the caption file."""
    captions = stream_vtt(tmp_path, said_again_audio(audio_dir), ["--task", "transcribe", "--language", "en"])
    _said_again_checks(captions)


# Three French sentences, 0.5 s apart (mb-fr4): the last decode of the third stalls in "grand-grand-grand-grand".
STUTTER = [
    "Si nous ne changeons rien, nous aurons un déficit en automne.",
    "Je propose de reporter l'achat des nouveaux ordinateurs.",
    "Ma grand-mère habite dans un petit village près de Lyon.",
]


def stutter_audio(audio_dir) -> np.ndarray:
    return captions_audio(STUTTER, "mb-fr4", audio_dir, lead_s=0.5, gap_s=0.5)


def _stutter_checks(text: str) -> None:
    assert "grand-grand-grand" not in text, text
    w = words(text)
    assert "village" in w and "lyon" in w and "computers" in w, text


def test_a_stutter_in_the_last_decode_keeps_one_copy(backend, audio_dir):
    """A short n-gram repeated three times or more inside a segment's last decode keeps one copy."""
    session = stream(backend, stutter_audio(audio_dir), SessionConfig(task="translate", language="fr"))
    _stutter_checks(session.transcript)


def test_dragoman_stream_keeps_one_copy_of_a_stutter(audio_dir, tmp_path):
    """The same speech through `dragoman stream`: the caption file has no stutter, and the village near Lyon. (It
    passed before the fix too: the command feeds the file in other pieces, and there the decode did not stall.)"""
    captions = stream_vtt(tmp_path, stutter_audio(audio_dir), ["--language", "fr"])
    _stutter_checks(captions)


# Two English sentences 0.4 s apart (one segment): the first one's last decode reads it again from its start.
RESTART = ["Drivers should use the bypass instead.", "Our daughter started school last September."]


def restart_audio(audio_dir) -> np.ndarray:
    return captions_audio(RESTART, "mb-us1", audio_dir, lead_s=0.5, gap_s=0.4)


def _restart_checks(text: str) -> None:
    w = " ".join(words(text))
    assert w.count("drivers should use") == 1, text
    assert "september" in w, text


def test_a_sentence_restarted_without_punctuation_is_committed_once(backend, audio_dir):
    """The copy of a sentence's opening inside its own last decode is hidden."""
    session = stream(backend, restart_audio(audio_dir), SessionConfig(task="transcribe", language="en"))
    _restart_checks(session.transcript)


def test_dragoman_stream_commits_a_restarted_sentence_once(audio_dir, tmp_path):
    """The same speech through `dragoman stream`: "Drivers should use" once in the caption file."""
    captions = stream_vtt(tmp_path, restart_audio(audio_dir), ["--task", "transcribe", "--language", "en"])
    _restart_checks(captions)


# Three German sentences 0.8 s apart (mb-de6): the second one's last decode goes on from "... but the landscape was"
# (committed) with "beautiful, but the landscape was beautiful." (found on unseen sentences)
CLAUSE_AGAIN = [
    "Wir haben im Juli eine Reise nach Norwegen gemacht.",
    "Das Wetter war kühl, aber die Landschaft war wunderschön.",
    "Mein Bruder hat jeden Tag mindestens hundert Fotos gemacht.",
]


def clause_again_audio(audio_dir) -> np.ndarray:
    return captions_audio(CLAUSE_AGAIN, "mb-de6", audio_dir, lead_s=0.5, gap_s=0.8)


def _clause_again_checks(text: str) -> None:
    w = " ".join(words(text))
    assert w.count("landscape") == 1, text
    assert "beautiful" in w and "brother" in w and "photos" in w, text


def test_a_clause_translated_again_right_after_itself_is_committed_once(backend, audio_dir):
    """The copy of a clause said again right after itself, inside one last decode, is hidden."""
    session = stream(backend, clause_again_audio(audio_dir), SessionConfig(task="translate", language="de"))
    _clause_again_checks(session.transcript)


def test_dragoman_stream_commits_a_clause_translated_again_once(audio_dir, tmp_path):
    """The same speech through `dragoman stream`: "the landscape" once in the caption file."""
    captions = stream_vtt(tmp_path, clause_again_audio(audio_dir), ["--language", "de"])
    _clause_again_checks(captions)


# Two German sentences in one segment (seen under 20 dB of noise on unseen set 4: the last beam search ended after
# the first one, "What is the dream for sending us out of the country?", where the update before had shown the
# second, "You have to fill out a key statement.").
CUT_SHORT = ["Was ist denn drin? Für Sendungen ins Ausland müssen Sie eine Zollerklärung ausfüllen."]
_LAST_WORDS = {"fill", "declaration", "customs", "explanation", "statement", "form"}  # "... Zollerklärung ausfüllen"


def cut_short_audio(audio_dir) -> np.ndarray:
    return captions_audio(CUT_SHORT, "mb-de6", audio_dir, lead_s=0.5, gap_s=1.5)


@pytest.fixture
def last_decode_cut_short(monkeypatch):
    """Each segment's first last-update decode ends early, as the noisy one did: at its first sentence end, else
    after a third of its tokens (here "What is the dream?" is committed before the last update, which then stops
    after its first words). The decodes after it, on from a given text, run as they are. Patched where the session and the live
    engine call the decoder; the real decode runs first, so what the earlier updates showed is the model's own.
    Returns what was cut off, for the test to check that something was."""
    import app.runtime
    import engine.streaming.session as session_module
    from engine.streaming.batch import decode_batch
    from engine.text import ends_sentence

    seen: set[int] = set()
    cut_off: list[list[int]] = []

    def decode_cut_short(backend, jobs):
        results = decode_batch(backend, jobs)
        out = []
        for job, res in zip(jobs, results):
            if job.final and job.beam_size > 1 and id(job.state) not in seen and len(res.tokens) >= 4:
                seen.add(id(job.state))
                ends = [i + 1 for i, t in enumerate(res.tokens[:-1]) if ends_sentence(backend.token_bytes(t))]
                n = ends[0] if ends else len(res.tokens) // 3
                cut_off.append(res.tokens[n:])
                att = None if res.attention is None else res.attention[:n]
                res = dataclasses.replace(res, tokens=res.tokens[:n], attention=att, next_token=backend.eot)
            out.append(res)
        return out

    monkeypatch.setattr(session_module, "decode_batch", decode_cut_short)
    monkeypatch.setattr(app.runtime, "decode_batch", decode_cut_short)
    return cut_off


def _cut_short_checks(text: str) -> None:
    w = set(words(text))
    assert "what" in w, text  # the first sentence
    assert w & _LAST_WORDS, text  # and the end of the second, which the last decode left out


def test_a_last_decode_that_ends_before_its_audio_is_continued(backend, audio_dir, last_decode_cut_short, caplog):
    """The segment's last decode stops after the first sentence; the text the update before showed goes on
    past it, so it is decoded on from there and the second sentence is committed."""
    import logging

    with caplog.at_level(logging.INFO, logger="engine.streaming.session"):
        session = stream(backend, cut_short_audio(audio_dir), SessionConfig(task="translate", language="de"))
    assert last_decode_cut_short, "the fixture never cut a last decode short"
    _cut_short_checks(session.transcript)
    assert "continued from the text shown before" in caplog.text


def test_dragoman_stream_continues_a_last_decode_that_ends_before_its_audio(audio_dir, tmp_path, last_decode_cut_short):
    """The same speech and the same cut through `dragoman stream`: both sentences in the caption file."""
    captions = stream_vtt(tmp_path, cut_short_audio(audio_dir), ["--language", "de"])
    assert last_decode_cut_short, "the fixture never cut a last decode short"
    _cut_short_checks(captions)


# Unseen set 5, German stream 2, its first six sentences as the benchmark streams them (voice, espeak speed, the
# pause before each in samples: the VAD's and the updates' timing decide which near-tie the decoder takes). "Wirklich? Das wäre ja wunderbar!" was committed "Really? That would be wonderful!", then
# the segment's last decode went on " Really?" from the segment's start: a one-word copy the duplicate guard let
# through, and carried in front of the next segment it led that one to translate the rest again ("Really? That").
ONE_WORD_COPY = [
    ("Entschuldigung, haben Sie vielleicht eine rote Katze gesehen?", "mb-de6", 140, 8000),
    ("Sie heißt Minka und ist seit Sonntag verschwunden.", "mb-de7", 148, 16786),
    ("Sie trägt ein blaues Halsband mit einem kleinen silbernen Glöckchen.", "mb-de6", 151, 15552),
    ("Hm, gestern Abend saß eine rote Katze auf dem Dach vom Gartenhaus der Familie Schmitt.", "mb-de7", 135, 11314),
    ("Wirklich? Das wäre ja wunderbar!", "mb-de6", 137, 11445),
    ("Die Schmitts sind aber gerade für zwei Wochen an der Ostsee.", "mb-de7", 137, 12399),
]


def one_word_copy_audio(audio_dir) -> np.ndarray:
    pieces = []
    for text, voice, wpm, pause in ONE_WORD_COPY:
        pieces += [np.zeros(pause, np.float32)]
        pieces += [load_audio(synthesize(text, voice, audio_dir, speed_wpm=wpm))]
    return np.concatenate([*pieces, np.zeros(SAMPLE_RATE, np.float32)])


def _one_word_copy_checks(text: str) -> None:
    w = words(text)
    assert w.count("really") == 1, text  # "Wirklich?" once
    assert "wonderful" in w and "weeks" in w, text  # that sentence and the next one are there


@pytest.mark.parametrize("language", ["de", None])
def test_a_one_word_sentence_read_again_is_committed_once(backend, audio_dir, language):
    """A last decode that reads a one-word sentence again ("Really?") does not show it twice: from committed audio
    at the start of its text, and the next segment does not translate the rest again (German given); or at the end
    of its text, parked on the audio's end (" very wonderful. Really?" after "Really? That's", the language
    detected)."""
    session = stream(backend, one_word_copy_audio(audio_dir), SessionConfig(task="translate", language=language))
    _one_word_copy_checks(session.transcript)


@pytest.mark.parametrize("language", ["de", "auto"])
def test_dragoman_stream_commits_a_one_word_sentence_once(audio_dir, tmp_path, language):
    """The same speech through `dragoman stream`: "Really?" once in the caption file."""
    audio = one_word_copy_audio(audio_dir)  # as float samples: 16-bit ones move the decoder's near-ties
    _one_word_copy_checks(stream_vtt(tmp_path, audio, ["--language", language], subtype="FLOAT"))
