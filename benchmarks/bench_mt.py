"""The MT stage: translation speed of real model shapes, and caption latency per --mt-unit on synthesised speech.

    .venv/bin/python -m benchmarks.bench_mt [--threads 1] [--skip-speed] [--skip-latency]

Speed: encoder and decoder-step times of opus-mt (Marian base) and NLLB-200-distilled-600M shapes with random
weights (no weights ship with Dragoman; the time does not depend on the values), fp32 and the CPU's int8 decoder.
Latency: `dragoman stream --target de` on the tests' synthesised English talk with a tiny random MarianMT checkpoint
(what is measured is *when* units are committed, which the model's words do not change), per --mt-unit: from a
source word's speech end to its source commit, from a unit's last word to its target commit, and from a unit's first
word to the target commit that first shows any of it. Stream time: compute is not counted. Results: docs/mt.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHAPES = {  # (d_model, layers, heads, ffn, vocab, family)
    "opus-mt (Marian base)": (512, 6, 8, 2048, 58101, "marian"),
    "nllb-200-distilled-600M": (1024, 12, 16, 4096, 256206, "m2m100"),
}


def speed(threads: int) -> list[str]:
    from engine.models.common import quantize_decoder
    from engine.mt.model import MTConfig, MTModel

    torch.set_num_threads(threads)
    rows = ["| model | decoder | encoder, 20 tokens | decoder step | 4 beams step |", "|---|---|---|---|---|"]
    for name, (d, n, h, ffn, vocab, family) in SHAPES.items():
        marian = family == "marian"
        cfg = MTConfig(
            family,
            vocab,
            vocab,
            d,
            n,
            n,
            h,
            h,
            ffn,
            ffn,
            "swish" if marian else "relu",
            512,
            vocab - 1 if marian else 1,
            True,
            not marian,
            "marian" if marian else "fairseq",
            marian,
        )
        model = MTModel(cfg).eval()
        ids = torch.randint(5, 1000, (1, 20))
        for kind in ("fp32", "int8"):
            if kind == "int8":
                quantize_decoder(model)
            with torch.inference_mode():
                enc_t = min(_timed(lambda model=model, ids=ids: model.encode(ids)) for _ in range(5))
                enc = model.encode(ids)
                step = _steps(model, enc, 1)
                step4 = _steps(model, enc, 4)
            rows.append(f"| {name} | {kind} | {enc_t * 1000:.0f} ms | {step * 1000:.1f} ms | {step4 * 1000:.1f} ms |")
    return rows


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _steps(model, enc, beams: int, n: int = 20) -> float:
    state = model.new_state(enc)
    model.step(torch.tensor([[0] * 5]), state)
    if beams > 1:
        state.repeat(beams)
    token = torch.tensor([[5]] * beams)
    return min(_timed(lambda: model.step(token, state)) for _ in range(n))


def latency(pause_s: float) -> list[str]:
    from tests.mt_reference import build_marian
    from tests.speech import long_stream, write_wav

    work = Path(tempfile.mkdtemp(prefix="bench_mt_"))
    audio, _ = long_stream("en", work, pause_s=pause_s, repeat=2)
    wav = write_wav(work / "talk.wav", audio)
    build_marian(work / "opus-mt-en-de-tiny")
    rows = [
        f"talk: {len(audio) / 16000:.0f} s of English, {pause_s} s pauses between sentences",
        "",
        "| --mt-unit | source commits: speech end → commit p50 / p90 | target commits | unit's last word → "
        "target commit p50 / p90 | unit's first word → first target text p50 / p90 |",
        "|---|---|---|---|---|",
    ]
    for unit in ("sentence", "clause", "agreement"):
        events = work / f"{unit}.jsonl"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "app.cli",
                "stream",
                str(wav),
                "--language",
                "en",
                "--target",
                "de",
                "--mt-model",
                str(work / "opus-mt-en-de-tiny"),
                "--mt-unit",
                unit,
                "--mt-quantize",
                "none",
                "--events",
                str(events),
            ],
            check=True,
            capture_output=True,
        )
        recs = [json.loads(line) for line in events.read_text().splitlines()]
        source = [r["t_audio"] - r["end_s"] for r in recs if r["type"] == "commit"]
        commits = [r for r in recs if r["type"] == "target_commit"]
        finals = [r for r in commits if r["source_text"]]
        last = [r["latency_s"] for r in finals]
        # first target text of each unit: the first commit after the previous unit's final one
        first, waiting = [], True
        for r in commits:
            if waiting:
                first.append(r["end_s"] + r["latency_s"] - r["start_s"])
            waiting = bool(r["source_text"])
        rows.append(
            f"| {unit} | {_p(source)} | {len(commits)} ({len(commits) - len(finals)} early) | {_p(last)} | "
            f"{_p(first)} |"
        )
    return rows


def _p(xs: list[float]) -> str:
    if not xs:
        return "—"
    p50, p90 = np.percentile(xs, [50, 90])
    return f"{p50:.2f} / {p90:.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    if not args.skip_speed:
        print("\n".join(speed(args.threads)) + "\n")
    if not args.skip_latency:
        for pause_s in (0.6, 0.2):
            print("\n".join(latency(pause_s)) + "\n")


if __name__ == "__main__":
    main()
