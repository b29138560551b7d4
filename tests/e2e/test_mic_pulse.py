"""`dragoman mic` end to end on a virtual microphone: German speech played through PulseAudio becomes English captions."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import srt
import webvtt

from engine.audio import SAMPLE_RATE
from tests import REPO
from tests.pulse import PulseServer, pulse_available, pulse_server
from tests.speech import speech, write_wav

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not pulse_available(), reason="PulseAudio (pulseaudio, pactl, paplay) is not installed"),
]

LEAD_S = 0.5  # silence before the first word in the played file
PAUSE_S = 1.0  # between the sentences


def _german_talk(audio_dir: Path, out: Path, sentences: tuple[int, ...]) -> tuple[Path, list[tuple[float, float]]]:
    """A 16-bit WAV of German sentences with pauses, and each sentence's (start_s, end_s) in the file."""
    pieces, spans, t = [np.zeros(int(LEAD_S * SAMPLE_RATE), np.float32)], [], LEAD_S
    for i in sentences:
        audio, _ = speech("de", i, audio_dir)
        pieces += [audio, np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)]
        spans.append((t, t + len(audio) / SAMPLE_RATE))
        t += len(audio) / SAMPLE_RATE + PAUSE_S
    return write_wav(out, np.concatenate(pieces)), spans


class MicProcess:
    """`dragoman mic` running as a subprocess against the virtual microphone."""

    def __init__(self, pulse: PulseServer, tmp: Path, *args: str, tty: bool = False) -> None:
        self.stderr_path = tmp / "mic.stderr"
        self.stdout_path = tmp / "mic.stdout"
        self._tty_out = bytearray()
        self._reader: threading.Thread | None = None
        if tty:  # stdout on a pseudo-terminal, as in an interactive shell
            master, slave = pty.openpty()
            stdout = slave
            self._reader = threading.Thread(target=self._read_tty, args=(master,), daemon=True)
            self._reader.start()
        else:
            stdout = open(self.stdout_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "mic", "--language", "de", "--task", "translate", *args],
            cwd=REPO,
            env=pulse.env,
            stdout=stdout,
            stderr=open(self.stderr_path, "w"),
        )
        if tty:
            os.close(slave)

    def _read_tty(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO once the child has closed the terminal
                break
            if not data:
                break
            self._tty_out += data
        os.close(fd)

    @property
    def stdout(self) -> str:
        if self._reader is not None:
            self._reader.join(timeout=10)  # the child has exited: the terminal drains, then reads fail with EIO
        return self._tty_out.decode(errors="replace") if self._tty_out else self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_listening(self, timeout_s: float = 300) -> float:
        """Waits until audio flows (model loaded, first block captured); returns that moment (monotonic)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "listening on" in self.stderr:
                return time.monotonic()
            assert self.proc.poll() is None, f"dragoman mic exited early:\n{self.stderr}"
            time.sleep(0.05)
        raise AssertionError(f"dragoman mic never started listening:\n{self.stderr}")

    def stop(self, sig: int, timeout_s: float = 300) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def _vtt(path: Path) -> list[tuple[float, float, str]]:
    def secs(stamp: str) -> float:
        h, m, s = stamp.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    return [(secs(c.start), secs(c.end), c.text) for c in webvtt.read(str(path))]


def test_mic_translates_german_speech_into_webvtt_and_srt(tmp_path: Path, audio_dir: Path) -> None:
    """German speech played into the default microphone ends up, after Ctrl-C, as English WebVTT/SRT cues timed
    where each sentence was spoken; the JSONL events hold the same committed text."""
    wav, spans = _german_talk(audio_dir, tmp_path / "talk.wav", (0, 1))
    vtt, srt_path, events = tmp_path / "out.vtt", tmp_path / "out.srt", tmp_path / "events.jsonl"
    with pulse_server(tmp_path / "pa") as pulse:
        mic = MicProcess(pulse, tmp_path, "--vtt", str(vtt), "--srt", str(srt_path), "--events", str(events))
        listening = mic.wait_listening()
        played = time.monotonic()
        pulse.play(wav)  # real-time paced: returns when the whole file has been played
        time.sleep(1.0)  # let the last samples reach the capture queue
        rc = mic.stop(signal.SIGINT)
    assert rc == 0, mic.stderr
    assert "Traceback" not in mic.stderr
    offset = played - listening  # stream time 0 is (about) when the first block arrived

    cues = _vtt(vtt)
    text = " ".join(t for _, _, t in cues).lower()
    # Streaming output varies with how audio chunks meet the decoder; these words survive in nearly every run.
    expected = ("morning", "berlin", "park", "afternoon", "friday", "thank", "help")
    found = [w for w in expected if w in text]
    assert len(found) >= 5, f"only {found} of {expected} in the captions: {text!r}"
    for (s0, e0, _), (s1, _, _) in zip(cues, cues[1:]):
        assert s0 < e0 <= s1
    first_start = cues[0][0]
    assert offset + spans[0][0] - 1.0 <= first_start <= offset + spans[0][0] + 3.0, (first_start, offset)
    second = next(s for s, _, t in cues if any(w in t.lower() for w in ("friday", "report", "thank", "help")))
    assert second >= offset + spans[1][0] - 1.0, (second, offset, spans)  # timed in the second sentence
    assert cues[-1][1] <= offset + spans[-1][1] + 4.0

    subs = list(srt.parse(srt_path.read_text(), ignore_errors=False))
    assert [s.content for s in subs] == [t for _, _, t in cues]
    records = [json.loads(line) for line in events.read_text().splitlines()]
    committed = "".join(r["text"] for r in records if r["type"] == "commit")
    assert committed.split() == " ".join(t for _, _, t in cues).split()
    # AlignAtt commits up to where the audio was heard, so a short talk may show no tentative tail at all
    assert "commit" in {r["type"] for r in records} <= {"commit", "partial"}
    assert "berlin" in mic.stdout.lower() and "\x1b[" not in mic.stdout  # plain caption lines when not a TTY


def test_sigterm_finishes_captions_like_ctrl_c(tmp_path: Path, audio_dir: Path) -> None:
    """SIGTERM right after the speech still flushes the last commits into a complete WebVTT file, exit 0; on a
    terminal the partial tail and the lag indicator are drawn dimmed and rewritten in place."""
    wav, _ = _german_talk(audio_dir, tmp_path / "one.wav", (0,))
    vtt = tmp_path / "term.vtt"
    with pulse_server(tmp_path / "pa") as pulse:
        mic = MicProcess(pulse, tmp_path, "--vtt", str(vtt), tty=True)
        mic.wait_listening()
        pulse.play(wav)
        time.sleep(0.5)
        rc = mic.stop(signal.SIGTERM)
    assert rc == 0, mic.stderr
    text = " ".join(t for _, _, t in _vtt(vtt)).lower()
    assert "morning" in text and "berlin" in text and "park" in text, text
    screen = mic.stdout
    assert "\r\x1b[2K" in screen and "\x1b[2m" in screen and "[lag " in screen, screen  # redrawn, dimmed, lag
    assert "berlin" in screen.lower()


def test_device_lost_mid_stream_keeps_captions_so_far(tmp_path: Path, audio_dir: Path) -> None:
    """When the audio server dies mid-talk, `dragoman mic` says the device stopped, exits 2, no traceback,
    and the WebVTT file holds the captions of what was heard before."""
    wav, spans = _german_talk(audio_dir, tmp_path / "talk.wav", (1, 3))
    vtt = tmp_path / "lost.vtt"
    with pulse_server(tmp_path / "pa") as pulse:
        mic = MicProcess(pulse, tmp_path, "--vtt", str(vtt))
        mic.wait_listening()
        player = pulse.play(wav, wait=False)
        time.sleep(spans[0][1] + PAUSE_S)  # the first sentence has been spoken
        pulse.kill()
        player.wait(timeout=30)
        rc = mic.proc.wait(timeout=300)
    stderr = mic.stderr
    assert rc == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("dragoman: error:")]
    assert len(errors) == 1 and "input device 'default' stopped" in errors[0], stderr
    text = " ".join(t for _, _, t in _vtt(vtt)).lower()
    # the first sentence's words ("Bitte schicken Sie mir den Bericht bis Freitag. Vielen Dank für Ihre Hilfe."):
    # Whisper base translates this 44.1 kHz capture differently from run to run (about one in ten its last decode
    # stays German: then the tentative text, or the German itself, is committed rather than dropped)
    assert any(w in text for w in ("report", "friday", "send", "help", "please", "thank", "bericht", "freitag")), text
    assert "hospital" not in text  # the second sentence was never heard
