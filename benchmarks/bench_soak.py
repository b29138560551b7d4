"""Soak: an hour of stream time through one session, and an hour through many short sessions, faster than real time;
the process's RSS must stay within a stated bound.

    .venv/bin/python -m benchmarks.bench_soak                    # 60 + 60 minutes of stream time, a few minutes
    .venv/bin/python -m benchmarks.bench_soak --minutes 10        # quicker

How an hour fits in minutes: the stream is mostly quiet room noise with a German sentence every `--speech-every`
seconds, so the VAD skips most of it and the model only decodes the speech (~8% of the audio at the default 90 s).
Audio goes through the real server over loopback in 0.5 s frames with the per-session rate limit lifted
(`max_realtime`), so the server's buffers, the engine's queues and the session's state all see the full hour.
RSS is sampled every stream minute; growth is measured from the sample after a warm-up (the first 5 stream minutes:
allocator pools, torch workspaces, VAD copies) to the end, and must stay under `--max-growth-mb` (default 64 MB).
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
import psutil
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.audio import SAMPLE_RATE  # noqa: E402
from tests.server_clients import pcm16  # noqa: E402
from tests.speech import speech  # noqa: E402

FRAME_S = 0.5
WARMUP_MIN = 5


def minute_of_audio(sentences: list[np.ndarray], minute: int, speech_every_s: float, rng) -> np.ndarray:
    """One minute: quiet room noise (-50 dBFS) with a sentence starting every `speech_every_s` seconds."""
    x = rng.normal(0, 0.003, 60 * SAMPLE_RATE).astype(np.float32)
    t0 = minute * 60.0
    k = int(np.ceil(t0 / speech_every_s))
    while k * speech_every_s < t0 + 60:
        s = sentences[k % len(sentences)]
        at = int((k * speech_every_s - t0) * SAMPLE_RATE)
        n = min(len(s), len(x) - at)
        x[at : at + n] += s[:n]
        k += 1
    return x


async def session(url: str, minutes: list[np.ndarray], on_minute) -> tuple[int, bool, list[str]]:
    """One session streaming the given minutes as fast as the server reads; (commits, got end, error codes)."""
    commits, errors, ended = 0, [], False
    async with connect(url, max_size=2**20) as ws:
        await ws.send(json.dumps({"type": "start", "language": "de"}))

        async def receive() -> None:
            nonlocal commits, ended
            async for raw in ws:
                msg = json.loads(raw)
                commits += msg["type"] == "commit"
                if msg["type"] == "error" and msg["code"] != "rate_limited":
                    errors.append(msg["code"])  # rate_limited is the backlog bound doing its job: reading slows
                if msg["type"] == "end":
                    ended = True
                    return

        receiver = asyncio.ensure_future(receive())
        step = int(FRAME_S * SAMPLE_RATE)
        for m in minutes:
            for i in range(0, len(m), step):
                await ws.send(pcm16(m[i : i + step]))
            on_minute()
        await ws.send('{"type":"stop"}')
        await asyncio.wait_for(receiver, 600)
    return commits, ended, errors


async def soak(args, backend, sentences: list[np.ndarray]) -> dict:
    from app.runtime import Engine, EngineConfig
    from app.server import DragomanServer, ServerConfig
    from app.server.limits import ServerLimits

    proc = psutil.Process()
    rng = np.random.default_rng(0)
    results: dict = {}
    limits = ServerLimits(max_realtime=10_000.0, burst_audio_s=60.0, max_messages_per_s=10_000.0)
    async with (
        Engine(backend, EngineConfig(max_sessions=2)) as engine,
        DragomanServer(engine, ServerConfig(port=0, server_limits=limits)) as server,
    ):
        for name, per_session in (
            (f"one {args.minutes}-min session", args.minutes),
            (f"{args.minutes // args.short} short sessions of {args.short} min", args.short),
        ):
            rss: list[float] = []
            t0 = time.monotonic()
            done = 0
            commits, ends, errors = 0, 0, []

            def tick(rss: list[float] = rss) -> None:
                rss.append(proc.memory_info().rss / 2**20)

            while done < args.minutes:
                n = min(per_session, args.minutes - done)
                minutes = [minute_of_audio(sentences, done + j, args.speech_every, rng) for j in range(n)]
                c, ended, errs = await session(server.ws_url, minutes, tick)
                commits, ends, errors = commits + c, ends + ended, errors + errs
                done += n
            wall = time.monotonic() - t0
            base = rss[min(WARMUP_MIN, len(rss) - 1)]
            results[name] = {
                "stream_min": done,
                "wall_s": wall,
                "speed": done * 60 / wall,
                "commits": commits,
                "ends": ends,
                "sessions": -(-args.minutes // per_session),
                "errors": errors,
                "rss_start": rss[0],
                "rss_base": base,
                "rss_end": rss[-1],
                "rss_max": max(rss),
                "growth": rss[-1] - base,
            }
            print(f"{name}: done in {wall:.0f} s", file=sys.stderr, flush=True)
        results["sessions left open"] = engine.n_sessions
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=int, default=60, help="stream minutes per phase")
    ap.add_argument("--short", type=int, default=2, help="minutes per short session in the second phase")
    ap.add_argument("--speech-every", type=float, default=90.0, help="seconds between sentence starts")
    ap.add_argument("--max-growth-mb", type=float, default=64.0, help="allowed RSS growth after the warm-up")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.minutes <= WARMUP_MIN:
        ap.error(f"--minutes must exceed the {WARMUP_MIN}-minute warm-up")

    import torch

    from engine.backend import make_backend
    from engine.models.loading import load_model

    torch.set_num_threads(args.threads)
    backend = make_backend(load_model())
    audio_dir = Path(tempfile.mkdtemp(prefix="dragoman-soak-"))  # synthesised speech; never committed
    sentences = [speech("de", i, audio_dir)[0] for i in range(4)]
    r = asyncio.run(soak(args, backend, sentences))
    ok = r.pop("sessions left open") == 0
    print(
        f"\nsoak: speech every {args.speech_every:.0f} s in quiet noise, 0.5 s frames over loopback, "
        f"{args.threads} torch threads; RSS bound: growth after minute {WARMUP_MIN} <= {args.max_growth_mb:.0f} MB\n"
    )
    print(
        "| phase | stream min | wall s | x real time | sessions / ends | commits | errors "
        "| RSS start / after warm-up / end / max MB | growth MB | within bound |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, x in r.items():
        within = x["growth"] <= args.max_growth_mb
        ok &= within and x["ends"] == x["sessions"] and not x["errors"]
        print(
            f"| {name} | {x['stream_min']} | {x['wall_s']:.0f} | {x['speed']:.0f} | {x['sessions']} / {x['ends']} "
            f"| {x['commits']} | {', '.join(x['errors']) or 'none'} | {x['rss_start']:.0f} / {x['rss_base']:.0f} / "
            f"{x['rss_end']:.0f} / {x['rss_max']:.0f} | {x['growth']:+.0f} | {'yes' if within else 'NO'} |"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
