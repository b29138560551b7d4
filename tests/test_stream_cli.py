"""`dragoman stream` on a real recording, and the terminal caption renderer."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import sacrebleu

from app.cli import main
from app.terminal import LiveCaptions
from engine.audio import SAMPLE_RATE
from tests.speech import speech, write_wav


@pytest.mark.slow
def test_stream_writes_jsonl_events(audio_dir, tmp_path, capsys):
    """Streaming a 44.1 kHz German recording prints the translation and logs commit/partial events as JSON lines."""
    from engine.audio import resample

    audio, utt = speech("de", 3, audio_dir)
    wav = write_wav(tmp_path / "de.wav", resample(np.concatenate([audio, np.zeros(8000, np.float32)]),
                                                  SAMPLE_RATE, 44100), 44100)
    events = tmp_path / "events.jsonl"
    assert main(["stream", str(wav), "--language", "de", "--events", str(events)]) == 0
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert {r["type"] for r in records} == {"commit", "partial"}
    for r in records:
        assert set(r) == {"type", "text", "start_s", "end_s", "t_audio", "t_wall"}
    commits = [r for r in records if r["type"] == "commit"]
    text = "".join(r["text"] for r in commits)
    # chrF, not single words: AlignAtt may commit "Kranken|haus" as "cramp house" before hearing "haus"
    assert "sister" in text and sacrebleu.sentence_chrf(text, [utt.english]).score >= 40, text
    assert [r["t_audio"] for r in records] == sorted(r["t_audio"] for r in records)
    assert text.strip() in capsys.readouterr().out.replace("\n", " ")


def test_stream_missing_file_is_one_clear_error(tmp_path, capsys):
    """A missing recording exits non-zero with one error line and no traceback."""
    assert main(["stream", str(tmp_path / "nope.wav")]) != 0
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err


def test_captions_plain_lines_when_not_a_tty():
    """Without a TTY only committed text is written, as whole lines at sentence ends, without escape codes."""
    out = io.StringIO()
    c = LiveCaptions(out, tty=False)
    c.partial("Good mor")
    c.commit(" Good morning.")
    c.commit(" Today")
    c.partial(" is the")
    c.close()
    assert out.getvalue() == "Good morning.\nToday\n"


def test_captions_dim_partial_rewritten_in_place_on_a_tty():
    """On a TTY the partial tail is dimmed and the line is redrawn in place."""
    out = io.StringIO()
    c = LiveCaptions(out, tty=True)
    c.commit(" Good")
    c.partial(" morning")
    assert out.getvalue().endswith("\r\x1b[2KGood\x1b[2m morning\x1b[0m")
    c.commit(" morning.")
    assert out.getvalue().endswith("\r\x1b[2KGood morning.\n")
