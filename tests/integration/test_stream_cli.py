"""`dragoman stream` on a real recording."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sacrebleu

from app.cli import main
from engine.audio import SAMPLE_RATE
from tests.speech import speech, write_wav


@pytest.mark.slow
def test_stream_writes_jsonl_events(audio_dir, tmp_path, capsys):
    """Streaming a 44.1 kHz German recording prints the translation and logs commit/partial events as JSON lines."""
    from engine.audio import resample

    audio, utt = speech("de", 3, audio_dir)
    wav = write_wav(
        tmp_path / "de.wav", resample(np.concatenate([audio, np.zeros(8000, np.float32)]), SAMPLE_RATE, 44100), 44100
    )
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
