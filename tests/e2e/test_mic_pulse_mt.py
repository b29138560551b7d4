"""`dragoman mic --target de` on a virtual microphone: English speech becomes German captions from a tiny MarianMT
checkpoint (caption files and event log), with the latency summary on stderr."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import webvtt

from engine.audio import SAMPLE_RATE
from tests.e2e.test_mic_pulse import MicProcess
from tests.mt_reference import build_marian
from tests.pulse import pulse_available, pulse_server
from tests.speech import speech, write_wav

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not pulse_available(), reason="PulseAudio (pulseaudio, pactl, paplay) is not installed"),
]


def test_mic_captions_in_german_from_english_speech(tmp_path: Path, audio_dir: Path) -> None:
    """English sentences spoken into the microphone give German target commits, in the WebVTT file and the event
    log alike, and a latency line per target."""
    mt = tmp_path / "opus-mt-en-de-tiny"
    build_marian(mt)
    pieces = [np.zeros(SAMPLE_RATE // 2, np.float32)]
    for i in (0, 1):
        pieces += [speech("en", i, audio_dir)[0], np.zeros(SAMPLE_RATE, np.float32)]
    wav = write_wav(tmp_path / "talk.wav", np.concatenate(pieces))
    vtt, events = tmp_path / "out.vtt", tmp_path / "events.jsonl"
    with pulse_server(tmp_path / "pa") as pulse:
        mic = MicProcess(
            pulse,
            tmp_path,
            "--language",
            "en",
            "--target",
            "de",
            "--mt-model",
            str(mt),
            "--vtt",
            str(vtt),
            "--events",
            str(events),
        )
        mic.wait_listening()
        pulse.play(wav)
        time.sleep(1.0)
        rc = mic.stop(signal.SIGINT)
    assert rc == 0, mic.stderr
    assert "Traceback" not in mic.stderr
    records = [json.loads(line) for line in events.read_text().splitlines()]
    commits = [r["text"] for r in records if r["type"] == "commit"]
    assert commits  # one per sentence whose (random, int8) translation is not empty
    cues = " ".join(c.text for c in webvtt.read(str(vtt)))
    assert cues.split() == "".join(commits).split()
    assert "meeting" not in cues.lower() and "morning" not in cues.lower()  # MT output, not the English source
    assert "de: " in mic.stderr and "latency from source speech to target commit" in mic.stderr
