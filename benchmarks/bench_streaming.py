"""Streaming benchmark: quality, latency and cost of each policy × mode × chunk size, a re-decode baseline,
and N concurrent real-time streams on one Engine.

    .venv/bin/python -m benchmarks.bench_streaming --quick      # a few minutes: German only, fewer rows, N <= 4
    .venv/bin/python -m benchmarks.bench_streaming              # de/fr/es translation + en transcription

Single-stream rows are simulated: audio is fed in 0.1 s pieces and each decoder update is timed, so the
computation-unaware delays are exact and the computation-aware ones replay a real-time clock (an update
cannot start before its audio has arrived nor before the previous update ended). Timings on a shared
2-core machine are noisy.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.audio import SAMPLE_RATE
from engine.events import Commit, Partial

FEED_S = 0.1


@dataclass
class Run:
    """One streamed recording: what was emitted and when."""

    words: list[tuple[str, float, float]]  # (word, emitted at stream time, emitted at computation-aware time)
    displays: list[list[str]]  # words on screen (committed + partial) after each event
    compute_s: float
    audio_s: float
    windows: list[tuple[float, float]] = dataclasses.field(default_factory=list)  # (encoder window s, update s)


def stream_once(backend, config, audio: np.ndarray) -> Run:
    from engine.session import StreamingSession

    session = StreamingSession(backend, config)
    step = int(FEED_S * SAMPLE_RATE)
    clock, compute = 0.0, 0.0
    committed: list[str] = []
    words, displays = [], []
    partial: list[str] = []

    def take(t_audio_now: float, dt: float) -> None:
        nonlocal clock, partial
        clock = max(clock, t_audio_now) + dt
        for t_audio, ev in session.drain_timed_events():
            if isinstance(ev, Commit):
                for w in ev.text.split():
                    words.append((w, t_audio, clock))
                    committed.append(w)
            elif isinstance(ev, Partial):
                partial = ev.text.split()
            displays.append(committed + partial)

    windows: list[tuple[float, float]] = []

    def process() -> float:  # session.process(), timing each update and noting its encoder window
        t_all = time.perf_counter()
        while (upd := session.next_update()) is not None:
            t0 = time.perf_counter()
            session.apply(upd, backend.encode(upd.encoder_audio), None)
            windows.append((len(upd.encoder_audio) / SAMPLE_RATE, time.perf_counter() - t0))
        return time.perf_counter() - t_all

    for i in range(0, len(audio), step):
        session.feed_audio(audio[i : i + step], SAMPLE_RATE)
        dt = process()
        compute += dt
        take(min(len(audio), i + step) / SAMPLE_RATE, dt)
    session.finish()
    dt = process()
    compute += dt
    take(len(audio) / SAMPLE_RATE, dt)
    return Run(words, displays, compute, len(audio) / SAMPLE_RATE, windows)


# -- scoring --------------------------------------------------------------------------------------------
def _norm(w: str) -> str:
    return "".join(c for c in w.lower() if c.isalnum())


def align_to_sentences(hyp: list[str], refs: list[str]) -> list[list[int]]:
    """Split hypothesis word indices into one group per reference sentence (minimum edit distance alignment
    of the hypothesis to the concatenated references, as mwerSegmenter does)."""
    ref_words, owner = [], []
    for k, r in enumerate(refs):
        for w in r.split():
            ref_words.append(_norm(w))
            owner.append(k)
    h = [_norm(w) for w in hyp]
    n, m = len(h), len(ref_words)
    d = np.zeros((n + 1, m + 1), np.int32)
    d[:, 0] = np.arange(n + 1)
    d[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (h[i - 1] != ref_words[j - 1]))
    groups: list[list[int]] = [[] for _ in refs]
    i, j = n, m
    while i > 0:
        if j > 0 and d[i, j] == d[i - 1, j - 1] + (h[i - 1] != ref_words[j - 1]):
            groups[owner[j - 1]].append(i - 1)
            i, j = i - 1, j - 1
        elif j > 0 and d[i, j] == d[i, j - 1] + 1:
            j -= 1
        else:
            groups[owner[max(j - 1, 0)] if m else 0].append(i - 1)
            i -= 1
    return [sorted(g) for g in groups]


def laal(delays: list[float], source_s: float, n_ref: int) -> float:
    """Length-adaptive average lagging of one sentence (delays in seconds from the sentence start)."""
    if not delays:
        return source_s
    rate = source_s / max(len(delays), n_ref)
    total, tau = 0.0, 0
    for i, d in enumerate(delays):
        total += d - i * rate
        tau = i + 1
        if d >= source_s:
            break
    return total / tau


def score(run: Run, spans, quality_only: bool = False) -> dict:
    import jiwer
    import sacrebleu

    refs = [u.english for _, _, u in spans]
    hyp_words = [w for w, _, _ in run.words]
    groups = align_to_sentences(hyp_words, refs)
    hyps = [" ".join(hyp_words[i] for i in g) for g in groups]
    out = {"bleu": sacrebleu.corpus_bleu(hyps, [refs]).score, "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
           "wer": 100 * jiwer.wer([r.lower() for r in refs], [h.lower() or "-" for h in hyps])}
    if quality_only:
        return out
    laal_u, laal_a, first, final = [], [], [], []
    for (start, end, utt), g in zip(spans, groups):
        src = end - start
        n_ref = len(utt.english.split())
        laal_u.append(laal([run.words[i][1] - start for i in g], src, n_ref))
        laal_a.append(laal([run.words[i][2] - start for i in g], src, n_ref))
        if g:
            first.append(run.words[g[0]][1] - start)
            final.append(run.words[g[-1]][1] - end)
    erased = 0
    for prev, cur in zip(run.displays, run.displays[1:]):
        k = 0
        while k < min(len(prev), len(cur)) and prev[k] == cur[k]:
            k += 1
        erased += len(prev) - k
    out.update(laal=float(np.mean(laal_u)), laal_ca=float(np.mean(laal_a)),
               first_word=float(np.mean(first)) if first else float("nan"),
               final_lag=float(np.mean(final)) if final else float("nan"),
               erasure=erased / max(1, len(hyp_words)), rtf=run.compute_s / run.audio_s)
    return out


def offline_bound(bundle, backend, audio, spans, task: str, language: str) -> dict:
    """Whole-sentence offline decoding: the quality upper bound."""
    from engine.transcribe import TranscribeOptions, transcribe

    # Each sentence alone, decoded the way `dragoman file` does (30 s padded window, temperature fallback):
    # an unpadded window lets Whisper loop past the end of short sentences, which is no upper bound.
    words = []
    options = TranscribeOptions(task=task, language=language, condition_on_previous_text=False)
    for s, e, _ in spans:
        text = transcribe(bundle, audio[int(s * SAMPLE_RATE) : int(e * SAMPLE_RATE)], options).text
        words += [(w, e, e) for w in text.split()]
    return score(Run(words, [], 0.0, 1.0), spans, quality_only=True)


# -- concurrency ------------------------------------------------------------------------------------------
async def concurrent(backend, config, audio: np.ndarray, n: int, batch: bool) -> dict:
    """n streams fed at wall-clock pace into one Engine: lag over time per stream."""
    from engine.scheduler import Engine, EngineConfig

    lags: list[list[tuple[float, float]]] = [[] for _ in range(n)]
    async with Engine(backend, EngineConfig(max_sessions=max(8, n), batch=batch)) as engine:
        lives = [engine.open_session(config, session_id=f"c{i}") for i in range(n)]

        async def drain(lv):
            async for _ in lv.events():
                pass

        drains = [asyncio.create_task(drain(lv)) for lv in lives]
        step = int(FEED_S * SAMPLE_RATE)
        t0 = time.monotonic()
        for k, i in enumerate(range(0, len(audio), step)):
            for lv in lives:
                lv.feed_audio(audio[i : i + step], SAMPLE_RATE)
            for j, lv in enumerate(lives):
                lags[j].append((time.monotonic() - t0, lv.lag_s))
            await asyncio.sleep(max(0.0, t0 + (k + 1) * FEED_S - time.monotonic()))
        t_end = time.monotonic()
        await asyncio.gather(*(lv.finish() for lv in lives))
        drain_s = time.monotonic() - t_end
        await asyncio.gather(*drains)
        rtfs = [lv.rtf for lv in lives]
    max_lag = max(l for series in lags for _, l in series)
    return {"n": n, "batch": batch, "max_lag": max_lag, "p50_lag": float(np.median([l for s in lags for _, l in s])),
            "drain_s": drain_s, "rtf_sum": sum(rtfs), "lags": lags}


# -- serving memory -------------------------------------------------------------------------------------------
def _rss_mb(field: str = "VmRSS") -> float:
    """Resident memory now (VmRSS) or at its peak (VmHWM). Not ru_maxrss: Linux carries that over fork and exec,
    so a child started by this benchmark would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def serving_child(n: int, threads: int) -> int:
    """Inside a fresh process: the default model + n real-time German streams on one Engine; print RSS as JSON."""
    import json

    import torch

    from engine.backend import make_backend
    from engine.models.loading import load_model
    from engine.session import SessionConfig
    from tests.speech import long_stream

    torch.set_num_threads(threads)
    audio, _ = long_stream("de", Path(tempfile.gettempdir()) / "dragoman-bench-speech")  # cached by the parent
    rss = {"start": _rss_mb()}
    backend = make_backend(load_model())
    rss["model"] = _rss_mb()
    c = asyncio.run(concurrent(backend, SessionConfig(task="translate", language="de"), audio, n, True))
    rss["after"] = _rss_mb()
    rss["peak"] = _rss_mb("VmHWM")
    rss["max_lag"] = c["max_lag"]
    print(json.dumps(rss))
    return 0


def serving_rss(n: int, threads: int) -> dict:
    """Peak RSS of a serving-like process (model + n concurrent sessions via Engine), in a fresh interpreter so the
    benchmark's own offline decodes and other rows do not count."""
    import json
    import subprocess

    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_streaming", "--serving-child", str(n),
                          "--threads", str(threads)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- main ----------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    import torch

    from engine.backend import make_backend
    from engine.models.loading import load_model
    from engine.session import SessionConfig
    from tests.speech import long_stream

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="German only, fewer rows, N<=4 (a few minutes)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results", help="where PNG plots go (git-ignored)")
    ap.add_argument("--serving-child", type=int, default=0, help=argparse.SUPPRESS)  # see serving_rss
    ap.add_argument("--only", choices=["rows", "pause-free", "concurrency", "rss"], action="append",
                    help="run only these parts (default: all)")
    args = ap.parse_args(argv)
    if args.serving_child:
        return serving_child(args.serving_child, args.threads)
    torch.set_num_threads(args.threads)
    audio_dir = Path(tempfile.gettempdir()) / "dragoman-bench-speech"
    bundle = load_model()
    backend = make_backend(bundle)

    if args.quick:
        sets = [("de", "translate", 1)]
        rows = [("alignatt", "exact", c) for c in (0.5, 1.0)] + [("alignatt", "incremental", 1.0)]
        rows += [("local-agreement", "exact", c) for c in (0.5, 1.0)]
        rows += [("local-agreement", "redecode", 1.0)]
        conc, conc_repeat = [1, 2, 4], 1
    else:
        # repeats giving streams of at least a minute (de: 4 sentences, ~30 s; fr/es/en: 2 sentences, ~9-10 s)
        sets = [("de", "translate", 2), ("fr", "translate", 7), ("es", "translate", 7), ("en", "transcribe", 7)]
        rows = [("alignatt", m, c) for m in ("exact", "incremental") for c in (0.5, 1.0, 2.0)]
        rows += [("local-agreement", "exact", c) for c in (0.5, 1.0, 2.0)] + [("local-agreement", "incremental", 1.0)]
        rows += [("local-agreement", "redecode", c) for c in (1.0, 2.0)]
        conc, conc_repeat = [1, 2, 4, 8], 2

    parts = set(args.only or ["rows", "pause-free", "concurrency", "rss"])
    header = ("| policy | mode | chunk s | BLEU | chrF | WER | StreamLAAL s | LAAL (comp.-aware) s | first word s "
              "| final lag s | erasure | RTF |")

    def row(label: str, r: dict) -> str:
        return (f"| {label} | {r['bleu']:.1f} | {r['chrf']:.1f} | {r['wer']:.1f} | {r['laal']:.2f} | "
                f"{r['laal_ca']:.2f} | {r['first_word']:.2f} | {r['final_lag']:.2f} | {r['erasure']:.2f} | "
                f"{r['rtf']:.3f} |")

    results = []
    for lang, task, repeat in sets if "rows" in parts else []:
        audio, spans = long_stream(lang, audio_dir, repeat=repeat)
        off = offline_bound(bundle, backend, audio, spans, task, lang)
        print(f"\n## {lang} {task}: {len(audio) / SAMPLE_RATE:.0f} s, {len(spans)} sentences; offline bound "
              f"BLEU {off['bleu']:.1f} chrF {off['chrf']:.1f} WER {off['wer']:.1f}", flush=True)
        print(header)
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for policy, mode, chunk in rows:
            cfg = SessionConfig(task=task, language=lang, policy=policy, mode=mode, chunk_s=chunk)
            r = score(stream_once(backend, cfg, audio), spans)
            results.append((lang, policy, mode, chunk, r, off))
            print(row(f"{policy} | {mode} | {chunk}", r), flush=True)

    if "pause-free" in parts:
        # Sentences read back to back without pauses: the VAD never closes a segment, so only buffer trimming
        # (SessionConfig.trim_s) keeps the encoder window short; trim off is the previous behaviour (the window
        # grows to max_segment_s = 24 s, then everything is force-committed).
        print("\n## pause-free speech (no pauses between sentences): buffer trimming on (default) vs off")
        print("| set | trim | BLEU | chrF | WER | StreamLAAL s | LAAL (comp.-aware) s | first word s | final lag s "
              "| erasure | RTF | max window s | ms per update: first third / last third |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for lang, task, repeat in [("de", "translate", 2), ("en", "transcribe", 5)][: 1 if args.quick else 2]:
            audio, spans = long_stream(lang, audio_dir, pause_s=0.0, repeat=repeat)
            for trim in (SessionConfig.trim_s, 0.0):
                run = stream_once(backend, SessionConfig(task=task, language=lang, trim_s=trim), audio)
                r = score(run, spans)
                third = max(1, len(run.windows) // 3)
                ms = [1000 * float(np.mean([t for _, t in w])) for w in (run.windows[:third], run.windows[-third:])]
                label = f"{lang} {task} {len(audio) / SAMPLE_RATE:.0f} s | {f'{trim:g} s' if trim else 'off'}"
                print(row(label, r) + f" {max(w for w, _ in run.windows):.1f} | {ms[0]:.0f} / {ms[1]:.0f} |",
                      flush=True)

    conc_results = []
    if "concurrency" in parts:
        audio, _ = long_stream("de", audio_dir, repeat=conc_repeat)
        print(f"\n## concurrency (German, {len(audio) / SAMPLE_RATE:.0f} s paced in real time, default session config)")
        print("| N | batched | max lag s | median lag s | drain after end s | sum of RTFs |")
        print("|---|---|---|---|---|---|")
        for n in conc:
            for batch in ((True, False) if n > 1 else (True,)):
                c = asyncio.run(concurrent(backend, SessionConfig(task="translate", language="de"), audio, n, batch))
                conc_results.append(c)
                print(f"| {n} | {'yes' if batch else 'no'} | {c['max_lag']:.2f} | {c['p50_lag']:.2f} | "
                      f"{c['drain_s']:.2f} | {c['rtf_sum']:.2f} |", flush=True)
    if "rss" in parts:
        long_stream("de", audio_dir)  # synthesised here, so the child only reads cached WAVs
        print("\n## serving memory: a fresh process with the default model and N real-time German streams (Engine)")
        print("| N | RSS after import MB | after model load MB | peak MB | after the streams MB |")
        print("|---|---|---|---|---|")
        for n in (1, 4):
            m = serving_rss(n, args.threads)
            print(f"| {n} | {m['start']:.0f} | {m['model']:.0f} | {m['peak']:.0f} | {m['after']:.0f} |", flush=True)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this benchmark process (everything above) {rss_mb:.0f} MB")
    if results or conc_results:
        plot(results, conc_results, Path(args.out))
    return 0


def plot(results, conc_results, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    for lang in sorted({r[0] for r in results}):
        fig, ax = plt.subplots(figsize=(6, 4))
        lines: dict[tuple[str, str], list] = {}
        for lg, policy, mode, chunk, r, off in results:
            if lg == lang:
                lines.setdefault((policy, mode), []).append((r["laal"], r["bleu"]))
                bound = off["bleu"]
        for (policy, mode), pts in lines.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{policy} / {mode}")
        ax.axhline(bound, color="grey", linestyle="--", label="offline bound")
        ax.set_xlabel("StreamLAAL (s, computation-unaware)")
        ax.set_ylabel("BLEU")
        ax.set_title(f"quality vs latency ({lang})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"quality_latency_{lang}.png", dpi=120)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in conc_results:
        series = c["lags"][0]
        ax.plot([t for t, _ in series], [l for _, l in series], label=f"N={c['n']} {'batched' if c['batch'] else 'unbatched'}")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("lag of stream 0 (s)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "lag_over_time.png", dpi=120)
    plt.close(fig)
    print(f"plots in {out}/")


if __name__ == "__main__":
    sys.exit(main())
