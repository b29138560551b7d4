"""The benchmark corpus (benchmarks/corpus.py, benchmarks/data/*.tsv): well-formed sentence files, and streams
built the way shared/devset/README.md describes (random pauses, increasing spans, rotated voices)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import corpus
from engine.audio import SAMPLE_RATE
from tests.speech import espeak_available


@pytest.mark.parametrize("lang", corpus.LANGS)
def test_own_tsv_has_40_well_formed_rows(lang: str) -> None:
    """Each own TSV has 40 rows with ids own_LANG001..040, no empty field and no symbol espeak-ng misreads."""
    rows = corpus.load_sentences(lang, "own")
    assert [s.id for s in rows] == [f"own_{lang}{i:03d}" for i in range(1, 41)]
    for s in rows:
        assert s.source and s.reference, s
        assert not set("%€&$") & set(s.source), s.source
        assert 5 <= len(s.source.split()) <= 25, s.source
        if lang == "en":
            assert s.reference == s.source
    assert sum(len(s.source.split()) > 15 for s in rows) >= 12  # about a third are long


def test_own_sentences_differ_from_the_dev_set() -> None:
    """No own sentence repeats a dev-set sentence (the two sets are scored separately)."""
    try:
        dev = {s.source for lang in corpus.LANGS for s in corpus.load_sentences(lang, "dev")}
    except FileNotFoundError as e:
        pytest.skip(str(e))
    own = {s.source for lang in corpus.LANGS for s in corpus.load_sentences(lang, "own")}
    assert not own & dev


def test_missing_shared_dir_fails_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing dev set names the path and the DRAGOMAN_SHARED override."""
    monkeypatch.setenv("DRAGOMAN_SHARED", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="DRAGOMAN_SHARED"):
        corpus.load_sentences("de", "dev")


def test_join_clips_records_spans_and_pauses() -> None:
    """Joined clips start after the lead, are separated by 0.3-1.2 s and end before the tail."""
    clips = [(np.ones(SAMPLE_RATE, dtype=np.float32), corpus.Sentence(f"x{i}", "a", "b")) for i in range(10)]
    stream = corpus.join_clips("t", "de", clips, np.random.default_rng(0))
    assert stream.sentences[0][0] == pytest.approx(corpus.LEAD_S)
    assert all(corpus.PAUSE_S[0] - 1e-3 <= p <= corpus.PAUSE_S[1] + 1e-3 for p in stream.pauses_s)
    assert stream.duration_s == pytest.approx(stream.sentences[-1][1] + corpus.TAIL_S, abs=1e-3)
    assert stream.task == "translate"


def _check_stream(stream: corpus.Stream, n_voices: int) -> None:
    starts = [a for a, _, _ in stream.sentences]
    assert all(a < b for a, b, _ in stream.sentences)
    assert starts == sorted(starts)
    assert all(corpus.PAUSE_S[0] - 1e-3 <= p <= corpus.PAUSE_S[1] + 1e-3 for p in stream.pauses_s)
    assert len({s.voice for _, _, s in stream.sentences}) == n_voices
    assert stream.audio.dtype == np.float32
    for a, b, s in stream.sentences:  # every sentence is voiced where the span says
        clip = stream.audio[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)]
        assert np.mean(np.abs(clip) > 0.01) > 0.2, s.id


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng with mbrola voices: run scripts/setup.sh --test")
def test_three_synthesised_sentences_make_a_stream(tmp_path: Path) -> None:
    """Three German sentences: increasing spans, pauses in range, two voices, reproducible with the seed."""
    (stream,) = corpus.build_streams("de", "own", tmp_path, seed=7, limit=3)
    assert len(stream.sentences) == 3
    _check_stream(stream, n_voices=2)
    (again,) = corpus.build_streams("de", "own", tmp_path, seed=7, limit=3)
    assert np.array_equal(stream.audio, again.audio)


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng with mbrola voices: run scripts/setup.sh --test")
def test_us3_rewrite_speaks_phonemes_the_database_lacks(tmp_path: Path) -> None:
    """mb-us3 synthesises words with O2 and syllabic l (which its database lacks) without a silent hole."""
    path = corpus._synthesize("It was the highest total at the hospital, it cost a lot.", "mb-us3", tmp_path, 150)
    from engine.audio import load_audio

    assert corpus.longest_inner_silence_s(load_audio(path)) < corpus.INNER_SILENCE_MAX_S


@pytest.mark.slow
@pytest.mark.skipif(not espeak_available(), reason="espeak-ng with mbrola voices: run scripts/setup.sh --test")
@pytest.mark.parametrize("set_name", corpus.SETS)
@pytest.mark.parametrize("lang", corpus.LANGS)
def test_full_streams(lang: str, set_name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every set synthesises into two streams of 20 sentences that pass the stream checks."""
    try:
        streams = corpus.build_streams(lang, set_name, tmp_path_factory.mktemp("corpus"))
    except FileNotFoundError as e:
        pytest.skip(str(e))
    assert [len(s.sentences) for s in streams] == [20, 20]
    for stream in streams:
        _check_stream(stream, n_voices=len(corpus.VOICES[lang]))


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["fr", "es"])
def test_real_streams(lang: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """40 human recordings with transcript and English make two streams of 20 with the same pause rules."""
    if not corpus.TUXPAINT_STAMPS.is_dir():
        pytest.skip("tuxpaint-stamps-default is not installed: run benchmarks/setup.sh")
    streams = corpus.build_real_streams(lang, tmp_path_factory.mktemp("real"))
    assert [len(s.sentences) for s in streams] == [20, 20]
    for stream in streams:
        _check_stream(stream, n_voices=20)  # one recording each


def _toy_stream() -> corpus.Stream:
    """Two 'sentences' of a 440 Hz tone, quiet inside, between stretches of digital silence."""
    rng = np.random.default_rng(0)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    tone[:1600] = 0.0  # a clip's own leading silence: not speech
    clips = [(tone, corpus.Sentence("a", "eins", "one")), (tone, corpus.Sentence("b", "zwei", "two"))]
    return corpus.join_clips("own_de_1", "de", clips, rng)


@pytest.mark.parametrize("snr_db", [20.0, 5.0])
def test_noise_lies_snr_db_below_the_speech_and_fills_the_pauses(snr_db: float) -> None:
    """with_noise adds noise at the asked SNR against the speech alone (not its silences), leaves the sentence
    times as they were, and names the stream apart so its cached runs are not the clean stream's."""
    clean = _toy_stream()
    noisy = corpus.with_noise(clean, snr_db)
    noise = noisy.audio - clean.audio
    measured = 20 * np.log10(corpus.speech_rms(clean) / np.sqrt(np.mean(noise**2)))
    assert measured == pytest.approx(snr_db, abs=0.2)
    assert corpus.speech_rms(clean) == pytest.approx(0.2 / np.sqrt(2), rel=0.01)  # the tone, silences left out
    assert noisy.sentences == clean.sentences and len(noisy.audio) == len(clean.audio)
    pause = noisy.audio[: int(corpus.LEAD_S * SAMPLE_RATE)]
    assert np.sqrt(np.mean(pause**2)) > 0.5 * np.sqrt(np.mean(noise**2))  # the pauses are no longer digital silence
    assert noisy.name == f"own_de_1-snr{snr_db:g}"


def test_noise_is_the_same_for_every_system_and_pink() -> None:
    """The same stream gets the same noise every time (the peers and Dragoman hear the same audio); another
    stream gets other noise; its power falls with frequency (pink: 10 dB per decade)."""
    clean = _toy_stream()
    a, b = corpus.with_noise(clean, 10.0), corpus.with_noise(clean, 10.0)
    assert np.array_equal(a.audio, b.audio)
    other = corpus.with_noise(corpus.Stream("own_de_2", "de", "translate", clean.audio, clean.sentences), 10.0)
    assert not np.allclose(other.audio, a.audio)
    noise = corpus.pink_noise(1 << 16, np.random.default_rng(1))
    power = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(len(noise), 1 / SAMPLE_RATE)
    low, high = power[(freqs > 100) & (freqs < 200)].mean(), power[(freqs > 1000) & (freqs < 2000)].mean()
    assert 10 * np.log10(low / high) == pytest.approx(10.0, abs=1.5)
