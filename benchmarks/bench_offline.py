"""Offline decoding side by side: `dragoman file`'s decoder (engine.models.whisper.transcribe) against
faster-whisper on the same Whisper base weights (the embedded CTranslate2 model), sentence by sentence on
synthesised speech.

    .venv/bin/python -m benchmarks.bench_offline                      # German dev set (40 sentences)
    .venv/bin/python -m benchmarks.bench_offline --lang de,fr,es --diff  # more languages; show sentences that differ

Prints one table per language: system, BLEU, chrF (sacrebleu, corpus level, against the English references),
RTF (decode seconds / audio seconds, model load excluded). Peers run only when installed (faster-whisper).
Speech: the set's sentences spoken by the language's two mbrola voices in turn at 150 words per minute.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.audio import SAMPLE_RATE, load_audio

SETS_DIR = Path("/work/shared/devset")  # <lang>.tsv: id, source, reference
SPEED_WPM = 150


@dataclasses.dataclass(frozen=True)
class Item:
    id: str
    source: str
    reference: str
    audio: np.ndarray


def load_set(lang: str, name: str, audio_dir: Path, limit: int | None = None) -> list[Item]:
    from tests.speech import VOICES, synthesize

    path = SETS_DIR / f"{lang}.tsv" if name == "dev" else Path(name) / f"{lang}.tsv"
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))[:limit]
    voices = (VOICES[lang], VOICES.get(f"{lang}2", VOICES[lang]))
    return [
        Item(
            r["id"],
            r["source"],
            r["reference"],
            load_audio(synthesize(r["source"], voices[i % 2], audio_dir, SPEED_WPM)),
        )
        for i, r in enumerate(rows)
    ]


Decoder = Callable[[np.ndarray, str], str]  # (audio, source language) -> English text


def dragoman(beam_size: int, quantize: str = "auto", **options) -> Callable[[], Decoder]:
    def make() -> Decoder:
        from engine.models.loading import load_model
        from engine.models.whisper.transcribe import TranscribeOptions, transcribe

        bundle = load_model(device="cpu", quantize=quantize)
        return lambda audio, lang: (
            transcribe(
                bundle, audio, TranscribeOptions(task="translate", language=lang, beam_size=beam_size, **options)
            ).text
        )

    return make


def ct2_model_dir() -> Path:
    """The embedded model as a CTranslate2 directory (model.bin = part1 + part2), built once in the temp dir."""
    import shutil

    from engine.models.whisper.load import _embedded_files

    data_dir, parts = _embedded_files()
    target = Path(tempfile.gettempdir()) / "dragoman-ct2-whisper-base"
    if not (target / "model.bin").is_file() or (target / "model.bin").stat().st_size != sum(
        p.stat().st_size for p in parts
    ):
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / "model.bin.tmp"
        with open(tmp, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy(data_dir / name, target / name)
        tmp.replace(target / "model.bin")
    return target


def faster_whisper(beam_size: int, compute_type: str = "default", **options) -> Callable[[], Decoder]:
    def make() -> Decoder:
        import torch
        from faster_whisper import WhisperModel

        model = WhisperModel(
            str(ct2_model_dir()), device="cpu", compute_type=compute_type, cpu_threads=torch.get_num_threads()
        )

        def run(audio: np.ndarray, lang: str) -> str:
            segments, _ = model.transcribe(audio, task="translate", language=lang, beam_size=beam_size, **options)
            return "".join(s.text for s in segments).strip()

        return run

    return make


def systems() -> dict[str, Callable[[], Decoder]]:
    table = {
        "dragoman greedy": dragoman(1),
        "dragoman beam 5": dragoman(5),
        "dragoman beam 5 / fp32 decoder": dragoman(5, quantize="none"),
        "dragoman beam 5 / silence padding": dragoman(5, mel_padding="silence"),  # openai's 30 s audio padding
    }
    if importlib.util.find_spec("faster_whisper") is not None:
        table["faster-whisper beam 5"] = faster_whisper(5)
        table["faster-whisper beam 5 / int8"] = faster_whisper(5, compute_type="int8")
    return table


def score(hyps: list[str], refs: list[str]) -> tuple[float, float]:
    import sacrebleu

    return sacrebleu.corpus_bleu(hyps, [refs]).score, sacrebleu.corpus_chrf(hyps, [refs]).score


def run_system(make: Callable[[], Decoder], items: list[Item], lang: str) -> tuple[list[str], float]:
    decode = make()
    decode(items[0].audio[:SAMPLE_RATE], lang)  # warm-up (first-call allocations, thread pools)
    hyps, spent = [], 0.0
    for item in items:
        t0 = time.perf_counter()
        hyps.append(decode(item.audio, lang).strip())
        spent += time.perf_counter() - t0
    return hyps, spent / sum(len(i.audio) / SAMPLE_RATE for i in items)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lang", default="de", help="comma-separated source languages (de,fr,es)")
    ap.add_argument("--set", default="dev", help="'dev' (/work/shared/devset) or a directory of <lang>.tsv files")
    ap.add_argument("--systems", default=None, help="comma-separated subset of: " + ", ".join(systems()))
    ap.add_argument("--limit", type=int, default=None, help="first N sentences only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--diff", action="store_true", help="print the sentences where the systems' outputs differ")
    ap.add_argument("--audio-dir", type=Path, default=Path(tempfile.gettempdir()) / "dragoman-bench-offline")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    table = systems()
    chosen = [s.strip() for s in args.systems.split(",")] if args.systems else list(table)
    for name in chosen:
        if name not in table:
            ap.error(f"unknown system {name!r} (installed: {', '.join(table)})")
    for lang in args.lang.split(","):
        items = load_set(lang, args.set, args.audio_dir, args.limit)
        audio_s = sum(len(i.audio) for i in items) / SAMPLE_RATE
        outputs: dict[str, list[str]] = {}
        print(f"\n### {lang} → en: {len(items)} sentences, {audio_s:.0f} s of speech, {args.threads} threads")
        print("| system | BLEU | chrF | RTF |\n|---|---|---|---|")
        for name in chosen:
            hyps, rtf = run_system(table[name], items, lang)
            outputs[name] = hyps
            bleu, chrf = score(hyps, [i.reference for i in items])
            print(f"| {name} | {bleu:.1f} | {chrf:.1f} | {rtf:.3f} |", flush=True)
        if args.diff:
            for k, item in enumerate(items):
                if len({outputs[n][k] for n in chosen}) > 1:
                    print(f"\n{item.id}  ref: {item.reference}")
                    for n in chosen:
                        print(f"  {n:>32}: {outputs[n][k]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
