"""Concurrency and serving memory: N real-time streams on one Engine (lag, completeness, RTF) and the peak RSS
of a serving process.

    .venv/bin/python -m benchmarks.bench_concurrency            # N = 1, 2, 4 (batched and not), RSS with 1 and 4
    .venv/bin/python -m benchmarks.bench_concurrency --n 1,4 --no-rss
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.audio import SAMPLE_RATE

FEED_S = 0.1


def _stream_audio() -> np.ndarray:
    """German continuous speech from the benchmark corpus (the first own stream, ~2.5 min)."""
    from benchmarks.corpus import build_streams

    return build_streams("de", "own", Path(tempfile.gettempdir()) / "dragoman-bench-speech")[0].audio


# -- concurrency ------------------------------------------------------------------------------------------
async def concurrent(backend, config, audio: np.ndarray, n: int, batch: bool) -> dict:
    """n streams fed at wall-clock pace into one Engine: lag over time per stream."""
    from app.runtime import Engine, EngineConfig

    lags: list[list[tuple[float, float]]] = [[] for _ in range(n)]
    texts = ["" for _ in range(n)]
    async with Engine(backend, EngineConfig(max_sessions=max(8, n), batch=batch)) as engine:
        lives = [engine.open_session(config, session_id=f"c{i}") for i in range(n)]

        async def drain(j, lv):
            from engine.events import Commit

            async for ev in lv.events():
                if isinstance(ev, Commit):
                    texts[j] += ev.text

        drains = [asyncio.create_task(drain(j, lv)) for j, lv in enumerate(lives)]
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
    max_lag = max(lag for series in lags for _, lag in series)
    return {
        "n": n,
        "batch": batch,
        "max_lag": max_lag,
        "p50_lag": float(np.median([lag for s in lags for _, lag in s])),
        "drain_s": drain_s,
        "rtf_sum": sum(rtfs),
        "lags": lags,
        "texts": texts,
    }


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
    from engine.streaming.session import SessionConfig

    torch.set_num_threads(threads)
    audio = _stream_audio()  # synthesised by the parent: only cached WAVs are read
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

    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_concurrency", "--serving-child", str(n), "--threads", str(threads)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- main ----------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    import torch

    from engine.backend import make_backend
    from engine.models.loading import load_model
    from engine.streaming.session import SessionConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="1,2,4", help="numbers of concurrent streams")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--config", default="{}", help="SessionConfig overrides as JSON, e.g. '{\"chunk_s\": 0.5}'")
    ap.add_argument("--serving-child", type=int, default=0, help=argparse.SUPPRESS)  # see serving_rss
    args = ap.parse_args(argv)
    if args.serving_child:
        return serving_child(args.serving_child, args.threads)
    torch.set_num_threads(args.threads)
    config = SessionConfig(**{"task": "translate", "language": "de", **json.loads(args.config)})
    audio = _stream_audio()
    backend = make_backend(load_model())
    print(
        f"## concurrency (German, {len(audio) / SAMPLE_RATE:.0f} s paced in real time, session config "
        f"{args.config if args.config != '{}' else 'default'})"
    )
    print("| N | batched | max lag s | median lag s | drain after end s | sum of RTFs | words per stream (min..max) |")
    print("|---|---|---|---|---|---|---|")
    for n in (int(x) for x in args.n.split(",")):
        for batch in (True, False) if n > 1 else (True,):
            c = asyncio.run(concurrent(backend, config, audio, n, batch))
            words = [len(t.split()) for t in c["texts"]]
            print(
                f"| {n} | {'yes' if batch else 'no'} | {c['max_lag']:.2f} | {c['p50_lag']:.2f} | "
                f"{c['drain_s']:.2f} | {c['rtf_sum']:.2f} | {min(words)}..{max(words)} |",
                flush=True,
            )
    if not args.no_rss:
        print("\n## serving memory: a fresh process with the default model and N real-time German streams (Engine)")
        print("| N | RSS after import MB | after model load MB | peak MB | after the streams MB |")
        print("|---|---|---|---|---|")
        for n in (1, 4):
            m = serving_rss(n, args.threads)
            print(f"| {n} | {m['start']:.0f} | {m['model']:.0f} | {m['peak']:.0f} | {m['after']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
