"""The streaming benchmark's corpus: sentences, and long-form test streams built from them.

Two sets of hand-written sentences with English references, 40 per language (de, fr, es → English; en transcribed):

- ``own``: benchmarks/data/LANG.tsv, committed with this repository;
- ``dev``: the shared development set, /work/shared/devset/LANG.tsv (``$DRAGOMAN_SHARED`` overrides where shared/ is).

Both follow shared/devset/README.md, and so do the streams: sentences 1–20 become stream 1 and 21–40 stream 2,
synthesised with espeak-ng + MBROLA voices rotated per sentence at a random speed, joined with random pauses, and
every sentence's (start_s, end_s) recorded so a scorer can re-segment the output. ``build_real_streams`` does the
same with real human recordings (French and Spanish volunteers' spoken stamp descriptions from Debian's
``tuxpaint-stamps-default``), because synthetic voices alone flatter a recogniser.

    .venv/bin/python -m benchmarks.corpus --list     # per language and set: sentences, stream durations, voices, pauses
    .venv/bin/python -m benchmarks.corpus --check    # also synthesise everything and report suspicious audio

Nothing synthesised is committed: WAVs go to the cache directory the caller passes.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from engine.audio import SAMPLE_RATE, load_audio

log = logging.getLogger(__name__)

Lang = Literal["de", "fr", "es", "en"]
SetName = Literal["own", "dev"]
LANGS: tuple[Lang, ...] = ("de", "fr", "es", "en")
SETS: tuple[SetName, ...] = ("own", "dev")

DATA_DIR = Path(__file__).resolve().parent / "data"
MBROLA_DIR = Path("/usr/share/mbrola")
# Debian's tuxpaint-stamps-default (GPL-2): each stamp X has X.txt (English on the first line, then
# "LANG.utf8=translation" lines) and spoken descriptions X_desc_LANG.ogg recorded by volunteers.
TUXPAINT_STAMPS = Path(os.environ.get("DRAGOMAN_TUXPAINT_STAMPS", "/usr/share/tuxpaint/stamps"))

# Voices rotated per sentence (devset README, step 1); all are installed by benchmarks/setup.sh.
VOICES: dict[Lang, tuple[str, ...]] = {
    "de": ("mb-de6", "mb-de7"),
    "fr": ("mb-fr1", "mb-fr4"),
    "es": ("mb-es1", "mb-es2"),
    "en": ("mb-us1", "mb-us2", "mb-us3"),
}
# espeak-ng's -s (words per minute), drawn per sentence, inclusive; the measured rate differs from voice to voice.
SPEED_WPM: dict[Lang, tuple[int, int]] = {"de": (135, 160), "fr": (135, 160), "es": (115, 135), "en": (135, 160)}
PAUSE_S = (0.3, 1.2)  # random silence between sentences, uniform
LEAD_S = 0.5  # silence before the first sentence
TAIL_S = 1.5  # silence after the last: lets a streaming system flush its last words
SENTENCES_PER_STREAM = 20  # sentences 1–20 → stream 1, 21–40 → stream 2
DEFAULT_SEED = 1234


@dataclass(frozen=True)
class Sentence:
    id: str  # own_de001, dev_fr017, tux_es_<stamp>
    source: str  # what is spoken
    reference: str  # English translation (== source for en)
    voice: str = ""  # set in a Stream: the MBROLA voice, or "human:<recording path>" for real speech


class Placed(NamedTuple):
    """Where one sentence lies in a stream."""

    start_s: float
    end_s: float
    sentence: Sentence


@dataclass
class Stream:
    """One long-form recording: continuous speech with short pauses, and where each sentence lies in it."""

    name: str  # e.g. own_de_1
    lang: Lang
    task: Literal["translate", "transcribe"]  # transcribe for en, translate to English otherwise
    audio: np.ndarray  # 16 kHz float32 mono
    sentences: list[Placed]  # in order

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def pauses_s(self) -> list[float]:
        """Silence between consecutive sentences."""
        return [b.start_s - a.end_s for a, b in zip(self.sentences, self.sentences[1:])]


def task_for(lang: str) -> Literal["translate", "transcribe"]:
    return "transcribe" if lang == "en" else "translate"


def shared_dir() -> Path:
    """The shared/ folder beside this checkout (…/main/benchmarks/corpus.py → …/shared), or $DRAGOMAN_SHARED."""
    override = os.environ.get("DRAGOMAN_SHARED")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "shared"


def _check_lang(lang: str) -> None:
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}: choose one of {', '.join(LANGS)}")


def sentence_file(lang: str, set_name: str) -> Path:
    _check_lang(lang)
    if set_name == "own":
        return DATA_DIR / f"{lang}.tsv"
    if set_name == "dev":
        path = shared_dir() / "devset" / f"{lang}.tsv"
        if not path.is_file():
            raise FileNotFoundError(
                f"dev set not found at {path}: set DRAGOMAN_SHARED to the folder that holds "
                f"devset/{lang}.tsv, or use set_name='own'"
            )
        return path
    raise ValueError(f"unknown sentence set {set_name!r}: choose 'own' or 'dev'")


def load_sentences(lang: str, set_name: str) -> list[Sentence]:
    """The 40 sentences of one language and set, in file order (the order matters: neighbours share a topic)."""
    path = sentence_file(lang, set_name)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if reader.fieldnames != ["id", "source", "reference"]:
            raise ValueError(f"{path}: expected the header 'id<TAB>source<TAB>reference', got {reader.fieldnames}")
        rows = [Sentence(r["id"].strip(), r["source"].strip(), r["reference"].strip()) for r in reader]
    for s in rows:
        if not (s.id and s.source and s.reference):
            raise ValueError(f"{path}: empty field in row {s}")
    return rows


def check_voices(lang: str) -> tuple[str, ...]:
    """The voices for `lang`, failing with what to install if an MBROLA database is missing."""
    _check_lang(lang)
    missing = [v for v in VOICES[lang] if not (MBROLA_DIR / v.removeprefix("mb-")).is_dir()]
    if missing:
        # A fallback voice would silently change the benchmark, so the corpus refuses instead.
        pkgs = " ".join("mbrola-" + v.removeprefix("mb-") for v in missing)
        raise RuntimeError(
            f"MBROLA voices {missing} are not installed: run benchmarks/setup.sh (or apt-get install {pkgs})"
        )
    return VOICES[lang]


def join_clips(name: str, lang: Lang, clips: Sequence[tuple[np.ndarray, Sentence]], rng: np.random.Generator) -> Stream:
    """Clips one after another: LEAD_S of silence, a random PAUSE_S gap between clips, TAIL_S at the end."""
    pieces = [np.zeros(int(LEAD_S * SAMPLE_RATE), dtype=np.float32)]
    spans: list[Placed] = []
    n_samples = len(pieces[0])
    for i, (audio, sentence) in enumerate(clips):
        if i:
            gap = np.zeros(int(round(rng.uniform(*PAUSE_S) * SAMPLE_RATE)), dtype=np.float32)
            pieces.append(gap)
            n_samples += len(gap)
        start = n_samples
        pieces.append(audio.astype(np.float32, copy=False))
        n_samples += len(audio)
        spans.append(Placed(start / SAMPLE_RATE, n_samples / SAMPLE_RATE, sentence))
    pieces.append(np.zeros(int(TAIL_S * SAMPLE_RATE), dtype=np.float32))
    return Stream(name, lang, task_for(lang), np.concatenate(pieces), spans)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of pink (1/f) noise at unit RMS: closer to a room, a fan or a street than white noise."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))  # power falls as 1/f
    noise = np.fft.irfft(spectrum, n)
    return (noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


def speech_rms(stream: Stream) -> float:
    """RMS of the stream's sentences, their own silences left out (espeak's clips start and end in silence)."""
    parts = [stream.audio[int(p.start_s * SAMPLE_RATE) : int(p.end_s * SAMPLE_RATE)] for p in stream.sentences]
    speech = np.concatenate(parts) if parts else stream.audio
    voiced = speech[np.abs(speech) > 1e-3]
    return float(np.sqrt(np.mean(voiced.astype(np.float64) ** 2))) if voiced.size else 0.0


def with_noise(stream: Stream, snr_db: float, seed: int = DEFAULT_SEED) -> Stream:
    """The stream with pink noise under it, `snr_db` below its speech (pauses included: a room is never silent).

    The noise depends only on (seed, the stream's name), so every system hears the same noisy audio, and the
    cached runs (keyed by the audio) of one SNR are found again."""
    rng = np.random.default_rng([seed, *stream.name.encode()])
    noise = pink_noise(len(stream.audio), rng) * speech_rms(stream) / 10 ** (snr_db / 20)
    audio = np.clip(stream.audio + noise, -1.0, 1.0).astype(np.float32)
    return dataclasses.replace(stream, name=f"{stream.name}-snr{snr_db:g}", audio=audio)


def _chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def build_streams(
    lang: str, set_name: str, cache_dir: Path, seed: int = DEFAULT_SEED, limit: int | None = None
) -> list[Stream]:
    """Synthesise a set into two streams (sentences 1–20 and 21–40); `limit` keeps only the first n sentences.

    The speeds, voices and pauses depend only on (seed, lang, set_name), so a stream is the same on every machine
    that has the same espeak-ng and MBROLA versions; tests.speech.synthesize caches each sentence's WAV by content.
    """
    voices = check_voices(lang)
    sentences = load_sentences(lang, set_name)[:limit]
    rng = np.random.default_rng([seed, LANGS.index(lang), SETS.index(set_name)])  # type: ignore[arg-type]
    lo, hi = SPEED_WPM[lang]  # type: ignore[index]
    streams = []
    for k, chunk in enumerate(_chunks(sentences, SENTENCES_PER_STREAM), start=1):
        clips = []
        for i, sentence in enumerate(chunk):
            voice = voices[i % len(voices)]
            speed = int(rng.integers(lo, hi + 1))
            path = _synthesize(sentence.source, voice, Path(cache_dir), speed)
            clips.append((load_audio(path), dataclasses.replace(sentence, voice=voice)))
        streams.append(join_clips(f"{set_name}_{lang}_{k}", lang, clips, rng))  # type: ignore[arg-type]
    return streams


# espeak-ng 1.51 gives mb-us3 phonemes its database lacks: O2 (the vowel of "cost", "long"; mb-us1 gets O) and
# syllabic l= ("hospital"); mbrola replaces each missing diphone with silence. tests.speech's rename table
# cannot split one phoneme into two, which "total" needs (us3 has no flap-to-l diphone 4-l), so this voice is
# rewritten here: O2 -> O, l= -> a short @ then l. Verified: no unknown diphone in all 80 English sentences.
_US3_FIX_VERSION = "us3-fix-1"  # part of the cache key: change it when the rewrite changes


def _synthesize(text: str, voice: str, cache_dir: Path, speed_wpm: int) -> Path:
    """tests.speech.synthesize (cache, Spanish e/ o/ fix, silence check), or the mb-us3 rewrite below."""
    from tests.speech import espeak_phonemes, synthesize

    if voice != "mb-us3":
        return synthesize(text, voice, cache_dir, speed_wpm=speed_wpm)
    import hashlib
    import subprocess

    cache_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(f"{voice}|{speed_wpm}|{_US3_FIX_VERSION}|{text}".encode()).hexdigest()[:16]
    path = cache_dir / f"{voice}-{key}.wav"
    if not path.exists():
        lines = []
        for line in espeak_phonemes(text, voice, speed_wpm):
            fields = line.split("\t")
            if fields[0] == "O2":
                fields[0] = "O"
            elif fields[0] == "l=" and len(fields) > 1:
                schwa_ms = int(fields[1]) // 3
                lines.append(f"@\t{schwa_ms}")
                fields[0], fields[1] = "l", str(int(fields[1]) - schwa_ms)
            lines.append("\t".join(fields))
        tmp = path.with_suffix(f".{os.getpid()}.tmp.wav")  # two benchmark processes may write the same file
        run = subprocess.run(
            ["mbrola", str(MBROLA_DIR / "us3" / "us3"), "-", str(tmp)],
            input="\n".join(lines) + "\n",
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if "unknown" in run.stderr:
            raise RuntimeError(f"mb-us3 lacks diphones for {text!r}: {run.stderr[:300]}")
        os.replace(tmp, path)
    voiced = np.mean(np.abs(load_audio(path)) > 0.01)
    if voiced < 0.2:
        raise RuntimeError(f"synthesis with {voice} is mostly silent ({voiced:.0%} voiced): {text!r}")
    return path


# --- real speech -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    path: Path  # X_desc_LANG.ogg
    source: str  # the transcript (LANG line of X.txt)
    reference: str  # English (first line of X.txt)


_ODD = re.compile(r"[0-9€$%&()«»\"/=_*+]")  # numbers, symbols and quoting: not a plain spoken sentence
_NOT_PHRASES = ("symbols/alphabets/", "symbols/math/", "symbols/music/", "symbols/money/")
MIN_WORDS = 5  # most stamps are two-word labels ("Une grenouille."); phrases start at about five words
# The English line is the stamp's own description, not a translation of the recording, and some translators
# added or left out words ("Une tête féminine pour dessiner un visage." / "A female head."): keep pairs of
# similar length, so the reference is close to a translation.
LENGTH_RATIO = (0.6, 1.6)  # English words / transcript words
SPEECH_RATE_WPS = (1.2, 4.5)  # words per second of the trimmed clip: outside, the recording likely isn't the text


def _read_stamp_text(txt: Path) -> tuple[str, dict[str, str]]:
    """English (first line) and {"fr": ..., "es": ...} from a stamp's text file."""
    lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
    english = lines[0].strip() if lines else ""
    translations = {}
    for line in lines[1:]:
        key, sep, value = line.partition("=")
        if sep and key.strip().endswith(".utf8"):
            translations[key.strip().removesuffix(".utf8")] = value.strip()
    return english, translations


def find_recordings(lang: str, root: Path = TUXPAINT_STAMPS) -> list[Recording]:
    """Every spoken stamp description in `lang` that has both a transcript and an English text (sorted by path)."""
    if lang not in ("fr", "es"):
        raise ValueError(f"real recordings are only used for fr and es, not {lang!r}")
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} not found: install Debian's tuxpaint-stamps-default (benchmarks/setup.sh) "
            f"or set DRAGOMAN_TUXPAINT_STAMPS"
        )
    suffix = f"_desc_{lang}.ogg"
    found = []
    for ogg in sorted(root.rglob(f"*{suffix}")):
        txt = ogg.with_name(ogg.name.removesuffix(suffix) + ".txt")
        if not txt.is_file():
            continue
        english, translations = _read_stamp_text(txt)
        source = translations.get(lang, "")
        if source and english:
            found.append(Recording(ogg, source, english))
    return found


def usable_recordings(lang: str, root: Path = TUXPAINT_STAMPS) -> list[Recording]:
    """Recordings that are phrases (not labels, letters or numbers), once per transcript, with plain text."""
    seen: set[str] = set()
    usable = []
    for rec in find_recordings(lang, root):
        rel = rec.path.relative_to(root).as_posix()
        key = rec.source.lower()
        if (
            len(rec.source.split()) < MIN_WORDS
            or len(rec.reference.split()) < 3
            or key in seen
            or _ODD.search(rec.source)
            or _ODD.search(rec.reference)
            or rel.startswith(_NOT_PHRASES)
            or not LENGTH_RATIO[0] <= len(rec.reference.split()) / len(rec.source.split()) <= LENGTH_RATIO[1]
        ):
            continue
        seen.add(key)
        usable.append(rec)
    return usable


def trim_silence(audio: np.ndarray, margin_s: float = 0.05) -> np.ndarray:
    """Cut leading/trailing silence so the pauses between clips are the ones we chose, not the recordist's."""
    frame = int(0.02 * SAMPLE_RATE)
    n = len(audio) // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > max(0.005, 0.1 * rms.max()))
    if not len(loud):
        return audio
    margin = int(margin_s * SAMPLE_RATE)
    return audio[max(0, loud[0] * frame - margin) : min(len(audio), (loud[-1] + 1) * frame + margin)]


def _load_recording(rec: Recording, cache_dir: Path) -> np.ndarray:
    """16 kHz mono, trimmed; cached as .npy because decoding 44.1 kHz Vorbis and resampling is the slow part."""
    cache = Path(cache_dir) / "tuxpaint"
    cache.mkdir(parents=True, exist_ok=True)
    out = (
        cache / (rec.path.relative_to(TUXPAINT_STAMPS).as_posix().replace("/", "__") + ".npy")
        if rec.path.is_relative_to(TUXPAINT_STAMPS)
        else cache / (rec.path.name + ".npy")
    )
    if out.exists():
        return np.load(out)
    audio = trim_silence(load_audio(rec.path))
    tmp = out.with_suffix(f".{os.getpid()}.tmp.npy")  # two benchmark processes may cache the same recording
    np.save(tmp, audio)
    os.replace(tmp, out)
    return audio


def build_real_streams(lang: str, cache_dir: Path, n: int = 40, seed: int = DEFAULT_SEED) -> list[Stream]:
    """`n` seeded-random human recordings in `lang` (fr or es), 20 per stream, with the same pause rules."""
    candidates = usable_recordings(lang)
    rng = np.random.default_rng([seed, LANGS.index(lang), 99])  # type: ignore[arg-type]
    clips: list[tuple[np.ndarray, Sentence]] = []
    for i in rng.permutation(len(candidates)):
        if len(clips) == n:
            break
        rec = candidates[int(i)]
        audio = _load_recording(rec, cache_dir)
        rate = len(rec.source.split()) / max(len(audio) / SAMPLE_RATE, 1e-3)
        if not SPEECH_RATE_WPS[0] <= rate <= SPEECH_RATE_WPS[1] or np.mean(np.abs(audio) > 0.01) < 0.2:
            log.info("skipping %s: %.1f words/s or mostly quiet", rec.path, rate)
            continue
        stamp = rec.path.name.removesuffix(f"_desc_{lang}.ogg")
        clips.append((audio, Sentence(f"tux_{lang}_{stamp}", rec.source, rec.reference, voice=f"human:{rec.path}")))
    if len(clips) < n:
        raise RuntimeError(f"only {len(clips)} usable {lang} recordings under {TUXPAINT_STAMPS}, {n} asked for")
    return [
        join_clips(f"real_{lang}_{k}", lang, chunk, rng)  # type: ignore[arg-type]
        for k, chunk in enumerate(_chunks(clips, SENTENCES_PER_STREAM), start=1)
    ]


# --- checks and listing ----------------------------------------------------------------------------------------

# MBROLA's pause between two sentences in one row ("Sí, aquí está. Los compré ...") is about 0.55 s; a dropped
# phoneme or word leaves a longer hole.
INNER_SILENCE_MAX_S = 0.65


def longest_inner_silence_s(audio: np.ndarray, threshold: float = 0.005) -> float:
    """The longest quiet stretch inside a clip: an MBROLA voice that drops a phoneme leaves a hole."""
    frame = int(0.01 * SAMPLE_RATE)
    n = len(audio) // frame
    if n == 0:
        return 0.0
    quiet = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1)) < threshold
    loud = np.flatnonzero(~quiet)
    if not len(loud):
        return len(audio) / SAMPLE_RATE
    best = run = 0
    for q in quiet[loud[0] : loud[-1] + 1]:
        run = run + 1 if q else 0
        best = max(best, run)
    return best * frame / SAMPLE_RATE


def describe(streams: Sequence[Stream]) -> str:
    n = sum(len(s.sentences) for s in streams)
    durations = ", ".join(f"{s.name} {s.duration_s:.1f} s" for s in streams)
    voices = sorted(
        {sent.voice if not sent.voice.startswith("human:") else "human" for s in streams for _, _, sent in s.sentences}
    )
    pauses = [p for s in streams for p in s.pauses_s]
    return f"{n} sentences; {durations}; voices {'/'.join(voices)}; pauses {min(pauses):.2f}–{max(pauses):.2f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.corpus", description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="build every stream and print a summary per set")
    parser.add_argument(
        "--check", action="store_true", help="as --list, and report clips with long inner silences (dropped phonemes)"
    )
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "dragoman-bench-corpus")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    if not (args.list or args.check):
        parser.print_help()
        return 2
    problems = 0
    for lang in LANGS:
        groups: list[tuple[str, list[Stream]]] = []
        notes: list[str] = []
        for set_name in SETS:
            try:
                groups.append((set_name, build_streams(lang, set_name, args.cache_dir, seed=args.seed)))
            except (FileNotFoundError, RuntimeError) as e:
                print(f"{lang} {set_name}: {e}")
                problems += 1
        if lang in ("fr", "es"):
            try:
                groups.append(("real", build_real_streams(lang, args.cache_dir, seed=args.seed)))
                notes.append(
                    f"{lang} real: drawn from {len(usable_recordings(lang))} usable recordings "
                    f"of {len(find_recordings(lang))} with transcript + English"
                )
            except (FileNotFoundError, RuntimeError) as e:
                print(f"{lang} real: {e}")
                problems += 1
        for set_name, streams in groups:
            print(f"{lang} {set_name}: {describe(streams)}")
            if args.check:
                for stream in streams:
                    for start, end, sent in stream.sentences:
                        clip = stream.audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
                        hole = longest_inner_silence_s(clip)
                        if hole > INNER_SILENCE_MAX_S:
                            problems += 1
                            print(f"  {sent.id} ({sent.voice}): {hole:.2f} s silence inside: {sent.source}")
        for note in notes:
            print(note)
    return 1 if problems else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
