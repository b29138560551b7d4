"""Engine-core benchmark: encoder cost per window, decoder step with the cache vs recomputing the prefix, fp32 vs
int8 decoder (speed and whether the text changes), model load cold (conversion) and warm (cached), peak RSS.

    .venv/bin/python -m benchmarks.bench_core               # ~2 minutes on 2 cores
    .venv/bin/python -m benchmarks.bench_core --threads 1

Timings are the minimum over repeats (the least disturbed run on a shared machine) with the median beside it;
the load average is printed so a noisy run can be recognised. Load times are measured in fresh interpreters
(`import torch` excluded) against a throw-away XDG_CACHE_HOME, so the user's cache is never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
PREFIX_TOKENS = 64  # the yardstick: a step over the cache vs recomputing a 64-token prefix
CLIPS = [
    ("de", 0, "translate"),
    ("de", 1, "translate"),
    ("fr", 0, "translate"),
    ("es", 0, "translate"),
    ("en", 0, "transcribe"),
    ("en", 1, "transcribe"),
]


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, float, float]:
    """(min wall, median wall, min process CPU) seconds of fn() over `repeats` runs after `warmup` ones.

    On a machine shared with other jobs wall time counts the wait for a core; process CPU time does not (it sums
    our threads, so on a quiet machine it is about threads x wall)."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), statistics.median(walls), min(cpus)


Row = tuple[str, str, str]  # (measurement, wall, CPU)


def ms(name: str, t: tuple[float, float, float]) -> Row:
    return name, f"{t[0] * 1e3:.1f} ms ({t[1] * 1e3:.1f})", f"{t[2] * 1e3:.1f} ms"


# -- load times, each in a fresh interpreter -----------------------------------------------------------------
_LOAD_SNIPPET = """
import json, resource, sys, time, torch
torch.set_num_threads({threads})
from engine.models.loading import load_model
c0, t0 = time.process_time(), time.perf_counter()
bundle = load_model(quantize={quantize!r})
seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
extra = {{}}
if {decode!r}:
    import numpy as np
    from engine.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram
    from engine.models.whisper.decoding import DecodingOptions, decode
    audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 8).astype(np.float32)
    with torch.inference_mode():
        enc = bundle.model.encode(log_mel_spectrogram(audio, pad_samples=N_SAMPLES)[None, :, :N_FRAMES])
    decode(bundle, enc, DecodingOptions(language="en", max_new_tokens=32))
print(json.dumps({{"load_s": seconds, "cpu_s": cpu_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def load_in_fresh_process(cache: Path, quantize: str, threads: int, decode: bool = False) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(REPO)}
    code = _LOAD_SNIPPET.format(threads=threads, quantize=quantize, decode=decode)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    if run.returncode != 0:
        raise RuntimeError(f"load failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def bench_load(threads: int) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="dragoman-bench-cache-") as tmp:
        cache = Path(tmp)
        cold = load_in_fresh_process(cache, "auto", threads)
        rows.append(
            (
                "cold load: convert CT2 -> safetensors cache, int8 decoder",
                f"{cold['load_s']:.2f} s",
                f"{cold['cpu_s']:.2f} s",
            )
        )
        for label, quantize in (
            ("warm load: cached, int8 decoder (the default)", "auto"),
            ("warm load: cached, fp32", "none"),
        ):
            warm = [load_in_fresh_process(cache, quantize, threads) for _ in range(3)]
            rows.append(
                (
                    label,
                    f"{min(w['load_s'] for w in warm):.2f} s ({statistics.median(w['load_s'] for w in warm):.2f})",
                    f"{min(w['cpu_s'] for w in warm):.2f} s",
                )
            )
        used = load_in_fresh_process(cache, "auto", threads, decode=True)
        rows.append(
            ("peak RSS: fresh process, default model, one 30 s window decoded", f"{used['peak_rss_mb']:.0f} MB", "")
        )
    return rows


# -- encoder -------------------------------------------------------------------------------------------------
@torch.inference_mode()
def bench_encoder(model, repeats: int) -> list[Row]:
    from engine.audio import log_mel_spectrogram

    rows = []
    rng = np.random.default_rng(0)
    for seconds in (5, 10, 30):
        mel = log_mel_spectrogram(rng.normal(0, 0.1, seconds * 16000).astype(np.float32))[None]
        mel = mel[:, :, : mel.shape[2] - mel.shape[2] % 2]
        rows.append(
            ms(
                f"encoder, {seconds} s window ({mel.shape[2]} mel frames)",
                timed(lambda mel=mel: model.encode(mel), repeats),
            )
        )
    return rows


# -- decoder: cached step vs recomputing the prefix ----------------------------------------------------------
@torch.inference_mode()
def bench_decoder(model, label: str, encoder_out: torch.Tensor, repeats: int) -> tuple[list[Row], float]:
    rng = np.random.default_rng(1)
    prefix = torch.tensor([[50258, 50259, 50359, 50363] + rng.integers(0, 50257, PREFIX_TOKENS - 4).tolist()])
    nxt = torch.tensor([[int(rng.integers(0, 50257))]])
    state = model.new_state(encoder_out)
    model.step(prefix, state)

    def cached_step() -> None:
        model.step(nxt, state)
        state.rewind(1)  # back to the 64-token prefix, so every repeat measures the same step

    fresh = state.clone()

    def recompute() -> None:
        # decoding without a self-attention cache reruns the whole prefix each step; the cross K/V are reused
        fresh.reset()
        model.step(torch.cat([prefix, nxt], dim=1), fresh)

    cross_kv = timed(lambda: model.new_state(encoder_out), repeats)
    cached = timed(cached_step, repeats * 4)
    full = timed(recompute, repeats)
    ratio = full[2] / max(cached[2], 1e-9)  # on CPU time: the cost, whatever else runs on the machine
    rows = [
        ms(f"{label}: cross-attention K/V of a 30 s window, once per encoder output", cross_kv),
        ms(f"{label}: decoder step with cache after {PREFIX_TOKENS} tokens", cached),
        ms(f"{label}: recompute {PREFIX_TOKENS}-token prefix + 1 (no self-attention cache)", full),
        (f"{label}: recompute / cached", f"{full[0] / cached[0]:.1f}x", f"{ratio:.1f}x"),
    ]
    return rows, ratio


# -- fp32 vs int8 on real speech -----------------------------------------------------------------------------
@torch.inference_mode()
def compare_texts(fp32, int8, audio_dir: Path) -> tuple[list[Row], list[str]]:
    from engine.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram
    from engine.models.whisper.decoding import DecodingOptions, decode
    from tests.speech import speech

    rows, details = [], []
    same = 0
    t_fp32, t_int8 = [], []
    for lang, index, task in CLIPS:
        audio, _ = speech(lang, index, audio_dir)
        mel = log_mel_spectrogram(audio, pad_samples=N_SAMPLES)[None, :, :N_FRAMES]
        encoder_out = fp32.model.encode(mel)  # the encoder is fp32 in both bundles
        texts = []
        for bundle, times in ((fp32, t_fp32), (int8, t_int8)):
            t0 = time.perf_counter()
            result = decode(bundle, encoder_out, DecodingOptions(task=task, language=lang))
            times.append((time.perf_counter() - t0) / max(1, len(result.tokens) + 1))
            texts.append(result.text.strip())
        same += texts[0] == texts[1]
        mark = "same" if texts[0] == texts[1] else "DIFFERS"
        details.append(
            f"- {lang}{index} {task}, {mark}: fp32 {texts[0]!r}"
            + ("" if texts[0] == texts[1] else f" / int8 {texts[1]!r}")
        )
    rows.append(
        ("greedy decoding per token, fp32 decoder (median over clips)", f"{statistics.median(t_fp32) * 1e3:.1f} ms", "")
    )
    rows.append(
        ("greedy decoding per token, int8 decoder (median over clips)", f"{statistics.median(t_int8) * 1e3:.1f} ms", "")
    )
    rows.append(("int8 decoder text == fp32 text (synthesised clips)", f"{same}/{len(CLIPS)}", ""))
    return rows, details


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (default 5)")
    parser.add_argument("--skip-load", action="store_true", help="skip the cold/warm load measurements")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from engine.models.common import quantize_decoder
    from engine.models.loading import load_model

    print(
        f"# dragoman engine core, Whisper base, {args.threads} thread(s), torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    rows: list[Row] = []
    if not args.skip_load:
        rows += bench_load(args.threads)
    fp32 = load_model(quantize="none")
    int8 = load_model(quantize="none")
    int8.quantized = quantize_decoder(int8.model)
    rows += bench_encoder(fp32.model, args.repeats)
    with torch.inference_mode():
        mel30 = torch.zeros(1, 80, 3000)
        encoder_out = fp32.model.encode(mel30)
    r32, ratio32 = bench_decoder(fp32.model, "fp32", encoder_out, args.repeats)
    r8, ratio8 = bench_decoder(
        int8.model, "int8" if int8.quantized else "int8 unavailable, fp32", encoder_out, args.repeats
    )
    rows += r32 + r8
    with tempfile.TemporaryDirectory(prefix="dragoman-bench-speech-") as tmp:
        text_rows, details = compare_texts(fp32, int8, Path(tmp))
    rows += text_rows
    rows.append(
        (
            "peak RSS of this benchmark process (fp32 + int8 models)",
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB",
            "",
        )
    )

    width = max(len(r[0]) for r in rows)
    print(f"\n| {'measurement':<{width}} | wall: min (median) | process CPU: min |")
    print(f"|{'-' * (width + 2)}|---|---|")
    for name, wall, cpu in rows:
        print(f"| {name:<{width}} | {wall} | {cpu} |")
    print("\nfp32 vs int8 decoder texts:")
    print("\n".join(details))
    print(
        f"\ntargets: warm load < 2 s; cached step >= 3x cheaper than recomputing {PREFIX_TOKENS} tokens "
        f"(on CPU time: fp32 {ratio32:.1f}x, int8 {ratio8:.1f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
