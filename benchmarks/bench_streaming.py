"""Streaming quality and latency on continuous speech, Dragoman side by side with the real peers.

    benchmarks/setup.sh                                            # once: test + bench extras, peers, real speech
    .venv/bin/python -m benchmarks.bench_streaming                 # own + dev sets, de/fr/es/en, every system
    .venv/bin/python -m benchmarks.bench_streaming --sets own --langs de --systems dragoman,whisper_streaming
    .venv/bin/python -m benchmarks.bench_streaming --variant la='{"policy": "local-agreement"}'   # extra rows

The corpus (benchmarks/corpus.py): per language 40 sentences of our own and the 40 of shared/devset, each set as
two ~2 min streams of continuous speech (pauses 0.3-1.2 s, two or three MBROLA voices), plus real volunteer
recordings for fr/es (`--sets real`). Systems, all on the same audio and the same Whisper base weights:
  dragoman           the shipped defaults (SessionConfig()), and any --variant
  whisper_streaming  LocalAgreement-2 over faster-whisper, beam 5 (WhisperLiveKit 0.2.26's local-agreement code)
  simulstreaming     AlignAtt (WhisperLiveKit 0.2.26's SimulStreaming backend)
  offline-fw         faster-whisper, each sentence alone, beam 5: the quality bound
  offline-dragoman   `dragoman file`'s decoder, each sentence alone, its defaults (beam 5)
Streaming runs are computation-unaware simulations (audio fed in pieces, each update timed): StreamLAAL CU uses
the stream time at which each word was committed, CA a replayed real-time clock (an update starts no earlier
than its audio arrived and the previous update ended). Peer runs take minutes (about 2 CPU-seconds per audio
second), so their results are cached under --out/runs keyed by audio and peer version; --fresh reruns them.
--reuse does the same for Dragoman rows of one commit and config (timing fields then come from that run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.scoring import Run, SetScore, Span, Word
from engine.audio import SAMPLE_RATE
from engine.events import Commit, Partial

FEED_S = 0.1  # audio per feed_audio call in Dragoman's runs: a microphone's buffer
PEER_CHUNK_S = 1.0  # whisper_streaming's and SimulStreaming's min chunk size (their defaults)
PEERS = ("whisper_streaming", "simulstreaming", "offline-fw")
ALL_SYSTEMS = ("dragoman", "whisper_streaming", "simulstreaming", "offline-fw", "offline-dragoman")


def stream_once(backend, config, audio: np.ndarray) -> Run:
    """One recording through a StreamingSession, fed in FEED_S pieces; every update timed."""
    from engine.streaming.session import StreamingSession

    session = StreamingSession(backend, config)
    step = int(FEED_S * SAMPLE_RATE)
    clock = compute = 0.0
    committed: list[str] = []
    words: list[Word] = []
    displays: list[list[str]] = []
    display_s: list[float] = []
    partial: list[str] = []
    windows: list[tuple[float, float]] = []

    def show(t_audio: float) -> None:
        displays.append(committed + partial)
        display_s.append(t_audio)

    def take(t_audio_now: float, dt: float) -> None:
        # One screen per update: its Commit and its Partial arrive together (counted apart, the screen between
        # them showed the committed words twice, as erased and re-shown words)
        nonlocal clock, partial
        clock = max(clock, t_audio_now) + dt
        shown_at: float | None = None
        for timed in session.drain_timed_events():
            t_audio, ev = timed.at_s, timed.event
            if shown_at is not None and t_audio != shown_at:
                show(shown_at)
            shown_at = t_audio
            if isinstance(ev, Commit):
                pieces = ev.text.split()
                if pieces and words and not ev.text[:1].isspace():  # a commit continuing the last word
                    w = pieces.pop(0)
                    words[-1] = Word(words[-1].text + w, t_audio, clock)
                    committed[-1] += w
                words.extend(Word(w, t_audio, clock) for w in pieces)
                committed.extend(pieces)
            elif isinstance(ev, Partial):
                partial = ev.text.split()
        if shown_at is not None:
            show(shown_at)

    def process() -> float:
        t_all = time.perf_counter()
        while (upd := session.next_update()) is not None:
            t0 = time.perf_counter()
            session.update(upd)
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
    return Run(words, displays, compute, len(audio) / SAMPLE_RATE, windows, display_s=display_s)


def offline_run(texts: list[str], spans: list[Span], compute_s: float, audio_s: float) -> Run:
    """Per-sentence offline output as a Run: every word 'emitted' at its sentence's end."""
    words = [Word(w, s.end_s, s.end_s) for t, s in zip(texts, spans) for w in t.split()]
    return Run(words, [], compute_s, audio_s)


# -- systems --------------------------------------------------------------------------------------------------
@dataclass
class Context:
    backend: object
    bundle: object
    out: Path
    fresh: bool
    reuse: bool = False  # Dragoman runs of the same commit and config are read from the cache
    engine_tree: str = ""  # with reuse: read the runs of this engine tree (git rev-parse --short HEAD:engine)
    # the clean engine tree this process imported, read once at start ("" if engine/ had uncommitted changes):
    # only runs of this tree are computed and cached, so a commit made while a run is going on labels nothing
    loaded_tree: str = ""


def _clips(stream) -> list[np.ndarray]:
    return [stream.audio[int(s * SAMPLE_RATE) : int(e * SAMPLE_RATE)] for s, e, _ in stream.sentences]


def _peer_version() -> str:
    from importlib.metadata import version

    return f"wlk{version('whisperlivekit')}-fw{version('faster-whisper')}"


def _code_version() -> str:
    """The engine code Dragoman's runs come from (the committed engine/ tree: commits elsewhere keep the key);
    a tree with uncommitted engine changes is never cached."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD:engine"], cwd=root, capture_output=True, text=True
    ).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "engine"], cwd=root, capture_output=True, text=True).stdout
    return "" if dirty.strip() or not head.strip() else head.strip()


def _cached(ctx: Context, system: str, stream, fn: Callable[[], Run] | None, version: str | None = None) -> Run:
    """A run from the cache when the same audio was run by the same system version before (peers: their
    package versions; Dragoman with --reuse: the same commit and config); fn None: read only."""
    key = hashlib.sha1(stream.audio.tobytes()).hexdigest()[:12]
    path = ctx.out / "runs" / f"{system}-{stream.name}-{key}-{version or _peer_version()}.json"
    if path.exists() and (not ctx.fresh or fn is None):
        d = json.loads(path.read_text())
        return Run(
            [Word(*w) for w in d["words"]],
            [],
            d["compute_s"],
            d["audio_s"],
            n_erased=d["n_erased"],
            shown=d.get("shown"),
        )
    if fn is None:
        raise SystemExit(
            f"no cached run {path.name}: --engine-tree {version} only reads runs that engine tree "
            f"made (this checkout's engine tree is {ctx.loaded_tree or 'modified'})"
        )
    run = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "words": run.words,
                "compute_s": run.compute_s,
                "audio_s": run.audio_s,
                "n_erased": run.erased(),
                "shown": run.shown_times(),
            }
        )
    )
    tmp.replace(path)
    return run


def run_system(ctx: Context, system: str, stream, spans: list[Span], variant: dict | None = None) -> Run:
    from engine.streaming.session import SessionConfig

    if system == "dragoman":
        over = dict(variant or {})
        if isinstance(over.get("vad"), dict):
            from engine.streaming.vad import VadConfig

            over["vad"] = VadConfig(**over["vad"])
        # a variant may set the language too ({"language": null}: detected, as the page's default "Auto-detect")
        cfg = SessionConfig(**{"task": stream.task, "language": stream.lang, **over})
        version = (ctx.engine_tree or ctx.loaded_tree) if ctx.reuse else ""
        if not version:
            return stream_once(ctx.backend, cfg, stream.audio)
        tag = hashlib.sha1(json.dumps(variant or {}, sort_keys=True).encode()).hexdigest()[:8]
        # another tree's runs are only read: computing one here would file this code's output under its name
        compute = (lambda: stream_once(ctx.backend, cfg, stream.audio)) if version == ctx.loaded_tree else None
        return _cached(ctx, f"dragoman-{tag}", stream, compute, version)
    if system == "offline-dragoman":
        from engine.models.whisper.transcribe import TranscribeOptions, transcribe

        t0 = time.perf_counter()
        # `dragoman file`'s defaults: beam 5
        opts = TranscribeOptions(task=stream.task, language=stream.lang, beam_size=5, condition_on_previous_text=False)
        texts = [transcribe(ctx.bundle, c, opts).text for c in _clips(stream)]
        return offline_run(texts, spans, time.perf_counter() - t0, stream.duration_s)
    from benchmarks import peers

    if system == "whisper_streaming":
        return _cached(
            ctx,
            system,
            stream,
            lambda: peers.run_whisper_streaming(stream.audio, stream.lang, stream.task, PEER_CHUNK_S),
        )
    if system == "simulstreaming":
        return _cached(
            ctx, system, stream, lambda: peers.run_simulstreaming(stream.audio, stream.lang, stream.task, PEER_CHUNK_S)
        )
    if system == "offline-fw":

        def fw() -> Run:
            t0 = time.perf_counter()
            texts = peers.offline_faster_whisper(_clips(stream), stream.lang, stream.task)
            return offline_run(texts, spans, time.perf_counter() - t0, stream.duration_s)

        return _cached(ctx, system, stream, fw)
    raise ValueError(f"unknown system {system!r}")


# -- main -----------------------------------------------------------------------------------------------------
def _streams(lang: str, set_name: str, cache: Path):
    from benchmarks import corpus

    if set_name == "real":
        return corpus.build_real_streams(lang, cache) if lang in ("fr", "es") else []
    return corpus.build_streams(lang, set_name, cache)


def _truncate(stream, max_s: float):
    """The stream's first `max_s` seconds, with the sentences that end inside them (cost runs)."""
    import dataclasses

    keep = [placed for placed in stream.sentences if placed.end_s <= max_s - 1.0]
    end = int((keep[-1].end_s + 1.0) * SAMPLE_RATE) if keep else int(max_s * SAMPLE_RATE)
    return dataclasses.replace(stream, name=f"{stream.name}-{max_s:g}s", audio=stream.audio[:end], sentences=keep)


def main(argv: list[str] | None = None) -> int:
    import torch

    from benchmarks import corpus
    from engine.backend import make_backend
    from engine.models.loading import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="own,dev", help="own, dev, real (comma-separated)")
    ap.add_argument("--langs", default="de,fr,es,en")
    ap.add_argument("--systems", default=",".join(ALL_SYSTEMS))
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help='an extra Dragoman row with SessionConfig overrides, e.g. la=\'{"policy": "local-agreement"}\'',
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--quantize",
        default="auto",
        choices=("auto", "none", "decoder"),
        help="Dragoman's decoder weights (auto: int8 on the CPU, the shipped default)",
    )
    ap.add_argument(
        "--max-s",
        type=float,
        default=0.0,
        help="only each stream's first seconds (a cost run: RTF side by side on a quiet machine)",
    )
    ap.add_argument(
        "--snr",
        type=float,
        default=None,
        help="pink noise under every stream, this many dB below its speech (the same noise for every system)",
    )
    ap.add_argument("--fresh", action="store_true", help="rerun the peers instead of reading their cached runs")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="read Dragoman runs of the same commit and config from the cache (clean engine/ only)",
    )
    ap.add_argument(
        "--engine-tree",
        default="",
        help="with --reuse: Dragoman runs cached for this engine tree (an earlier run's, to add peers)",
    )
    ap.add_argument("--out", default="benchmarks/results", help="plots, cached peer runs, results.json (git-ignored)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    bundle = load_model(quantize=args.quantize)
    import engine.streaming.session  # noqa: F401  (imported now, with the tree read next: the code the runs come from)

    ctx = Context(make_backend(bundle), bundle, out, args.fresh, args.reuse, args.engine_tree, _code_version())
    systems: list[tuple[str, str, dict | None]] = [(s, s, None) for s in args.systems.split(",") if s]
    for v in args.variant:
        name, _, js = v.partition("=")
        systems.insert(1, (f"dragoman:{name}", "dragoman", json.loads(js)))
    sets = args.sets.split(",")
    audio_cache = Path(tempfile.gettempdir()) / "dragoman-bench-speech"

    results: dict[str, dict[str, dict]] = {}
    for lang in args.langs.split(","):
        streams = [s for set_name in sets for s in _streams(lang, set_name, audio_cache)]
        if args.max_s:
            streams = [_truncate(s, args.max_s) for s in streams]
        if args.snr is not None:
            streams = [corpus.with_noise(s, args.snr) for s in streams]
        if not streams:
            continue
        n_sent = sum(len(s.sentences) for s in streams)
        print(
            f"\n## {lang} ({streams[0].task}): {len(streams)} streams, {n_sent} sentences, "
            f"{sum(s.duration_s for s in streams) / 60:.1f} min, sets {'+'.join(sets)}",
            flush=True,
        )
        print(
            "| system | BLEU | chrF | WER % | StreamLAAL CU s | StreamLAAL CA s | shown LAAL s | final lag s | "
            "erasure | RTF |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        results[lang] = {}
        for label, system, variant in systems:
            score = SetScore()
            for st in streams:
                spans = [Span(a, b, s.reference) for a, b, s in st.sentences]
                run = run_system(ctx, system, st, spans, variant)
                score.add(run, spans, timed=not system.startswith("offline"))
            m = score.metrics()
            results[lang][label] = m
            print(
                f"| {label} | {m['bleu']:.1f} | {m['chrf']:.1f} | {m['wer']:.1f} | {m['laal']:.2f} | "
                f"{m['laal_ca']:.2f} | {m['laal_shown']:.2f} | {m['final_lag']:.2f} | {m['erasure']:.2f} | "
                f"{m['rtf']:.3f} |",
                flush=True,
            )
    print(ratios(results))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, out)
    return 0


def ratios(results: dict[str, dict[str, dict]]) -> str:
    """Dragoman rows against each streaming peer: BLEU difference, WER difference, StreamLAAL CU ratio."""
    lines = [
        "\n## Dragoman vs the peers (same audio, same weights, this run)",
        "| lang | row | vs | BLEU diff | WER diff | StreamLAAL CU ratio |",
        "|---|---|---|---|---|---|",
    ]
    for lang, rows in results.items():
        for label, m in rows.items():
            if not label.startswith("dragoman"):
                continue
            for peer in ("whisper_streaming", "simulstreaming"):
                if peer in rows:
                    p = rows[peer]
                    lines.append(
                        f"| {lang} | {label} | {peer} | {m['bleu'] - p['bleu']:+.1f} | "
                        f"{m['wer'] - p['wer']:+.1f} | {m['laal'] / p['laal']:.2f} |"
                    )
    return "\n".join(lines)


def plot(results: dict[str, dict[str, dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.8), squeeze=False)
    for ax, (lang, rows) in zip(axes[0], results.items()):
        quality = "wer" if lang == "en" else "bleu"
        for label, m in rows.items():
            if label.startswith("offline"):
                ax.axhline(m[quality], linestyle="--", linewidth=1, color="grey" if "fw" in label else "black")
                ax.text(0.1, m[quality], label, fontsize=7, va="bottom")
            else:
                ax.scatter([m["laal"]], [m[quality]], marker="o" if label.startswith("dragoman") else "s")
                ax.annotate(label, (m["laal"], m[quality]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("StreamLAAL CU (s)")
        ax.set_ylabel("WER % (lower is better)" if quality == "wer" else "BLEU")
        ax.set_title(lang)
        ax.set_xlim(left=0)
    fig.tight_layout()
    fig.savefig(out / "quality_latency.png", dpi=120)
    plt.close(fig)
    print(f"\nplot: {out / 'quality_latency.png'}")


if __name__ == "__main__":
    sys.exit(main())
