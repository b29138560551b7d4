"""Synthesised test speech: espeak-ng with mbrola voices (Debian packages installed by scripts/setup.sh).

Nothing is committed: WAVs are written to a per-run directory and cached there by content.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from engine.audio import SAMPLE_RATE, load_audio

# Voices that speak naturally enough for Whisper base; plain espeak voices are robotic. Spanish: es1 first, its
# translations came out closer to the references than es2's (measured with tests/integration/test_translate_e2e.py).
VOICES = {
    "en": "mb-us1",
    "en2": "mb-us2",
    "de": "mb-de6",
    "de2": "mb-de7",
    "fr": "mb-fr1",
    "fr2": "mb-fr4",
    "es": "mb-es1",
    "es2": "mb-es2",
}


@dataclass(frozen=True)
class Utterance:
    language: str
    text: str  # what is spoken
    english: str  # reference translation (== text for English)


SENTENCES: dict[str, list[Utterance]] = {
    "de": [
        Utterance(
            "de",
            "Guten Morgen. Heute ist das Wetter in Berlin sehr schön, und wir gehen am Nachmittag in den Park.",
            "Good morning. Today the weather in Berlin is very nice, and we are going to the park in the afternoon.",
        ),
        Utterance(
            "de",
            "Bitte schicken Sie mir den Bericht bis Freitag. Vielen Dank für Ihre Hilfe.",
            "Please send me the report by Friday. Thank you very much for your help.",
        ),
        Utterance(
            "de",
            "Der Zug nach Hamburg fährt um acht Uhr ab. Wir müssen pünktlich am Bahnhof sein.",
            "The train to Hamburg leaves at eight o'clock. We have to be at the station on time.",
        ),
        Utterance(
            "de",
            "Meine Schwester arbeitet in einem Krankenhaus. Sie ist Ärztin und hilft vielen Menschen.",
            "My sister works in a hospital. She is a doctor and helps many people.",
        ),
    ],
    "fr": [
        Utterance(
            "fr",
            "Bonjour à tous. Aujourd'hui, nous allons parler de la musique et du cinéma.",
            "Hello everyone. Today we are going to talk about music and cinema.",
        ),
        Utterance(
            "fr",
            "Ma famille habite à Paris depuis dix ans. Nous aimons beaucoup cette ville.",
            "My family has lived in Paris for ten years. We like this city very much.",
        ),
    ],
    "es": [
        Utterance(
            "es",
            "Buenos días. Hoy vamos a visitar el museo de la ciudad con nuestros amigos.",
            "Good morning. Today we are going to visit the city museum with our friends.",
        ),
        Utterance(
            "es",
            "Me gusta mucho leer libros por la noche antes de dormir.",
            "I really like to read books at night before going to sleep.",
        ),
    ],
    "en": [
        Utterance(
            "en",
            "Good morning everyone. Today we will talk about the weather in London and the price of coffee.",
            "Good morning everyone. Today we will talk about the weather in London and the price of coffee.",
        ),
        Utterance(
            "en",
            "The meeting starts at nine o'clock. Please bring your notes and a laptop.",
            "The meeting starts at nine o'clock. Please bring your notes and a laptop.",
        ),
    ],
}


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None and Path("/usr/share/mbrola").is_dir()


# espeak-ng emits phonemes some mbrola databases lack; mbrola then substitutes silence ("m-e/ unknown, replaced
# with _-_"). The Spanish voices lack espeak's unstressed-vowel variants e/ and o/, so every unstressed e and o
# went silent ("Me gusta mucho" came out as "M gusta much"). For those voices we take espeak's phoneme output
# (--pho), map the missing phonemes onto the nearest ones the database has, and run mbrola ourselves.
MBROLA_PHONEME_FIXES: dict[str, dict[str, str]] = {
    "mb-es1": {"e/": "e", "o/": "o"},
    "mb-es2": {"e/": "e", "o/": "o"},
}


def synthesize(text: str, voice: str, out_dir: Path, speed_wpm: int = 150) -> Path:
    """Speak `text` with an espeak-ng voice into a 16-bit WAV; fail loudly on missing phonemes or near-silence."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fixes = MBROLA_PHONEME_FIXES.get(voice, {})
    key = hashlib.sha1(f"{voice}|{speed_wpm}|{sorted(fixes.items())}|{text}".encode()).hexdigest()[:16]
    path = out_dir / f"{voice}-{key}.wav"
    if not path.exists():
        # one temporary name per process: two runs synthesising the same sentence at once (pytest-xdist, two
        # benchmarks) must not rename each other's file away
        tmp = path.with_suffix(f".{os.getpid()}.tmp.wav")
        if fixes:
            _synthesize_via_pho(text, voice, speed_wpm, fixes, tmp)
        else:
            run = subprocess.run(
                ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-w", str(tmp), text],
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if "unknown" in run.stderr:
                raise RuntimeError(
                    f"{voice} lacks phonemes for {text!r} (add MBROLA_PHONEME_FIXES): {run.stderr[:300]}"
                )
        os.replace(tmp, path)  # atomic: a concurrent run never reads half a file
    audio = load_audio(path)
    # mbrola voices that lack a phoneme go silent: reject a synthesis that is mostly silence
    voiced = np.mean(np.abs(audio) > 0.01)
    if voiced < 0.2:
        raise RuntimeError(f"synthesis with {voice} is mostly silent ({voiced:.0%} voiced): {text!r}")
    return path


def espeak_phonemes(text: str, voice: str, speed_wpm: int) -> list[str]:
    """espeak-ng's mbrola phoneme lines (--pho) for `text`: "name<TAB>duration_ms<TAB>pitch points"."""
    return subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-q", "--pho", text],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.splitlines()


def _synthesize_via_pho(text: str, voice: str, speed_wpm: int, fixes: dict[str, str], out: Path) -> None:
    """espeak-ng phonemes -> rename the ones the mbrola database lacks -> mbrola -> WAV."""
    lines = []
    for line in espeak_phonemes(text, voice, speed_wpm):
        name, sep, rest = line.partition("\t")
        lines.append(fixes.get(name, name) + sep + rest)
    database = Path("/usr/share/mbrola") / voice.removeprefix("mb-") / voice.removeprefix("mb-")
    # without -e mbrola stops at an unknown diphone instead of silently replacing it
    subprocess.run(
        ["mbrola", str(database), "-", str(out)],
        input="\n".join(lines) + "\n",
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )


def speech(language: str, index: int, out_dir: Path, voice: str | None = None) -> tuple[np.ndarray, Utterance]:
    """16 kHz float32 samples of SENTENCES[language][index] and the utterance."""
    utt = SENTENCES[language][index]
    path = synthesize(utt.text, voice or VOICES[language], out_dir)
    return load_audio(path), utt


def long_stream(
    language: str, out_dir: Path, pause_s: float = 0.8, repeat: int = 1, voice: str | None = None
) -> tuple[np.ndarray, list[tuple[float, float, Utterance]]]:
    """All sentences of a language one after another with natural pauses: samples and (start_s, end_s, utt)."""
    pieces, spans, t = [], [], 0.0
    pause = np.zeros(int(pause_s * SAMPLE_RATE), dtype=np.float32)
    for _ in range(repeat):
        for i in range(len(SENTENCES[language])):
            audio, utt = speech(language, i, out_dir, voice)
            pieces += [audio, pause]
            spans.append((t, t + len(audio) / SAMPLE_RATE, utt))
            t += (len(audio) + len(pause)) / SAMPLE_RATE
    return np.concatenate(pieces), spans


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> Path:
    sf.write(str(path), audio, sample_rate, subtype=subtype)
    return path
