"""The cascade end to end on synthesised English speech with the embedded Whisper base and a tiny random MarianMT
checkpoint: `dragoman file --target de --mt-model DIR` prints, per sentence of its own transcript, exactly what
transformers translates from that transcript; the live stage does the same through a streaming session."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from app.cli import main
from tests.mt_reference import build_marian
from tests.speech import long_stream, speech, write_wav

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")]


@pytest.fixture(scope="module")
def marian(tmp_path_factory):
    path = tmp_path_factory.mktemp("mt") / "opus-mt-en-de-tiny"
    ref, tok = build_marian(path)
    return ref, tok, path


@pytest.fixture(scope="module")
def english_wav(audio_dir: Path) -> Path:
    audio, _ = long_stream("en", audio_dir, pause_s=0.6)
    return write_wav(audio_dir / "en_stream.wav", audio)


# Beam scores closer than this are a tie that float rounding may break either way: the tiny random checkpoint scores
# "Good morning, everyone." -> "iek" at -1.914571 and "K" at -1.914641, and on an AMD EPYC Dragoman's search (the
# same algorithm, other kernels) picked "K"
_TIE = 1e-3


def _reference(ref, tok, text: str) -> list[str]:
    """transformers' translation of `text` (the checkpoint's generation config, beam 4), then every other finished
    beam hypothesis that ties with it within _TIE."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        beams = ref.generation_config.num_beams
        out = ref.generate(
            **tok([text], return_tensors="pt"),
            num_return_sequences=beams,
            output_scores=True,
            return_dict_in_generate=True,
        )
    best = float(out.sequences_scores[0])
    return [
        tok.decode(seq, skip_special_tokens=True).strip()
        for seq, score in zip(out.sequences, out.sequences_scores)
        if float(score) >= best - _TIE
    ]


def _file_to_german_json(wav: Path, language: str, mt_path: Path) -> list[str]:
    """`dragoman file` arguments: the speech in `language`, translated to German by the tiny checkpoint, greedy
    Whisper, unquantised MT, JSON out."""
    return [
        "file",
        str(wav),
        "--language",
        language,
        "--target",
        "de",
        "--mt-model",
        str(mt_path),
        "--json",
        "--beam",
        "1",
        "--mt-quantize",
        "none",
    ]


def test_file_target_equals_reference_translation_of_own_transcript(marian, english_wav, capsys) -> None:
    """Each JSON segment's text is transformers' translation of that segment's source sentence, the sentences
    together are Dragoman's own transcript, and the top-level text joins the segment translations."""
    ref, tok, path = marian
    assert main(_file_to_german_json(english_wav, "en", path)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["target"] == "de" and out["task"] == "transcribe"
    segments = out["segments"]
    assert len(segments) >= 4  # four spoken sentences, each its own unit
    assert " ".join(s["source_text"] for s in segments).split() == out["source_text"].split()
    assert "meeting" in out["source_text"].lower()
    for s in segments:
        assert s["text"] in _reference(ref, tok, s["source_text"]), s["source_text"]
        assert s["end"] >= s["start"]
    assert out["text"] == " ".join(s["text"] for s in segments if s["text"])


def test_file_pivots_through_english_when_no_direct_pair(marian, audio_dir, capsys) -> None:
    """French speech with only an en -> de model: Whisper translates into English, the MT model translates that;
    the chosen route is said on stderr."""
    ref, tok, path = marian
    audio, _ = speech("fr", 0, audio_dir)
    wav = write_wav(audio_dir / "fr0.wav", audio)
    assert main(_file_to_german_json(wav, "fr", path)) == 0
    captured = capsys.readouterr()
    assert "pivot through English" in captured.err
    out = json.loads(captured.out)
    assert out["task"] == "translate" and out["language"] == "fr"
    assert {"music", "cinema"} & set(out["source_text"].lower().replace(".", " ").split())  # English, not French
    for s in out["segments"]:
        assert s["text"] in _reference(ref, tok, s["source_text"])


def test_mt_model_without_target_is_an_error(marian, english_wav, capsys) -> None:
    """--mt-model alone says that --target is missing (exit status 2)."""
    _, _, path = marian
    assert main(["file", str(english_wav), "--mt-model", str(path)]) == 2
    assert "--target" in capsys.readouterr().err


def test_offline_hub_id_fails_at_once(monkeypatch, english_wav, capsys) -> None:
    """An MT hub id that is not cached fails with a message naming the offline alternatives."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["file", str(english_wav), "--target", "de", "--mt-model", "Helsinki-NLP/opus-mt-en-de"]) == 2
    err = capsys.readouterr().err
    assert "opus-mt-en-de" in err and "directory" in err


def test_stream_target_commits_translate_every_sentence_once(marian, english_wav, tmp_path, capsys) -> None:
    """`dragoman stream --target de` commits, per source unit of its own live transcript, transformers'
    translation of that unit; the units cover the live transcript exactly once; latency is reported."""
    ref, tok, path = marian
    events = tmp_path / "ev.jsonl"
    rc = main(
        [
            "stream",
            str(english_wav),
            "--language",
            "en",
            "--target",
            "de",
            "--mt-model",
            str(path),
            "--events",
            str(events),
            "--mt-quantize",
            "none",
        ]
    )
    assert rc == 0
    records = [json.loads(line) for line in events.read_text().splitlines()]
    source = "".join(r["text"] for r in records if r["type"] == "commit")
    commits = [r for r in records if r["type"] == "target_commit"]
    assert len(commits) >= 4
    assert " ".join(c["source_text"] for c in commits).split() == source.split()
    for c in commits:
        assert c["text"].strip() in _reference(ref, tok, c["source_text"])
        assert c["latency_s"] >= 0
    assert any(r["type"] == "target_partial" for r in records)
    assert "latency from source speech to target commit" in capsys.readouterr().err
