"""An audience does not slow the speaker: one speaker streams real speech at real time into `dragoman serve` (the real
default model) while 0 or 200 viewers read the room; the speaker's commit latency side by side, and whether every
viewer got every commit.

    .venv/bin/python -m benchmarks.bench_viewers                      # 0 and 200 viewers, twice each, alternating
    .venv/bin/python -m benchmarks.bench_viewers --viewers 0,50,200 --rounds 1 --seconds 30

Processes: the server (`python -m app.cli serve`), the speaker (this process) and the viewers (a child process
with its own event loop), so the speaker's clock never waits on the viewers' sockets. They share this machine's
cores, as a speaker's laptop serving a room would; the viewers' own CPU is part of what the speaker competes with.

Speaker latency of a commit = when the speaker received it - when the audio up to the commit's end_s had been sent
(the audio is paced at real time, so that is t0 + end_s). Viewer delay = when a viewer received a commit - when the
speaker received the same commit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.audio import SAMPLE_RATE

FRAME_S = 0.02  # what the page sends


@dataclass(frozen=True)
class Round:
    viewers: int
    commits: int  # the speaker's
    latency_s: list[float]  # per speaker commit
    finish_s: float  # stop -> end at the speaker
    complete: int  # viewers that got exactly the speaker's commits, then room_end
    viewer_delay_s: list[float]  # per viewer per commit


def speech(seconds: float) -> np.ndarray:
    """German sentences (espeak-ng + mbrola, tests/speech.py) with pauses, cut to about `seconds`."""
    from tests.speech import long_stream

    audio, _ = long_stream("de", Path(tempfile.gettempdir()) / "dragoman-bench-speech", repeat=3)
    return audio[: int(seconds * SAMPLE_RATE)]


# -- viewers: a child process ---------------------------------------------------------------------------------
def _viewer_process(url: str, n: int, conn: Any) -> None:
    """Connects n viewers, says so, then reads until room_end; sends back [(texts, receive times)] per viewer."""
    asyncio.run(_viewers(url, n, conn))


async def _viewers(url: str, n: int, conn: Any) -> None:
    from websockets.asyncio.client import connect

    sockets = []
    for i in range(0, n, 25):  # in waves: a handshake storm is not what this measures
        sockets += await asyncio.gather(*(connect(url, max_queue=None) for _ in range(min(25, n - i))))
    for ws in sockets:
        assert json.loads(await ws.recv())["type"] == "joined"
    conn.send("joined")

    async def read(ws) -> tuple[list[str], list[float], bool]:
        texts, times = [], []
        async for raw in ws:
            msg = json.loads(raw)
            if msg["type"] == "commit":
                texts.append(msg["text"])
                times.append(time.time())
            elif msg["type"] == "room_end":
                return texts, times, True
        return texts, times, False

    results = await asyncio.gather(*(read(ws) for ws in sockets))
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    conn.send(results)
    conn.close()


# -- the speaker ----------------------------------------------------------------------------------------------
async def run_round(ws_url: str, audio: np.ndarray, n_viewers: int, language: str = "de") -> Round:
    """One speaker session with `n_viewers` viewers on its room, audio sent at real time."""
    from websockets.asyncio.client import connect

    async with connect(ws_url, max_queue=None) as speaker:
        await speaker.send(
            json.dumps(
                {"type": "start", "task": "translate", "language": language, "sample_rate": SAMPLE_RATE, "room": True}
            )
        )
        assert json.loads(await speaker.recv())["type"] == "ready"
        room = json.loads(await speaker.recv())
        assert room["type"] == "room", room
        proc, parent = None, None
        if n_viewers:
            parent, child = mp.Pipe()
            base = ws_url.rsplit("/ws", 1)[0]
            proc = mp.get_context("spawn").Process(
                target=_viewer_process,
                args=(f"{base}/ws/watch/{room['room']}?token={room['viewer_token']}", n_viewers, child),
                daemon=True,
            )
            proc.start()
            await asyncio.get_running_loop().run_in_executor(None, parent.recv)  # "joined"

        commits: list[tuple[str, float, float]] = []  # text, end_s, received (time.time())
        ended = asyncio.Event()

        async def receive() -> None:
            async for raw in speaker:
                msg = json.loads(raw)
                if msg["type"] == "commit":
                    commits.append((msg["text"], msg["end_s"], time.time()))
                elif msg["type"] == "end":
                    ended.set()
                    return

        reader = asyncio.ensure_future(receive())
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
        step = int(FRAME_S * SAMPLE_RATE) * 2
        t0 = time.time()
        for i, at in enumerate(range(0, len(pcm), step)):
            await speaker.send(pcm[at : at + step])
            await asyncio.sleep(max(0.0, t0 + (i + 1) * FRAME_S - time.time()))
        t_stop = time.time()
        await speaker.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(ended.wait(), 300)
        finish_s = time.time() - t_stop
        await reader

    sent_until = len(audio) / SAMPLE_RATE
    # frame i (audio up to (i + 1) * FRAME_S) is sent at t0 + i * FRAME_S
    latency = [
        received - (t0 + max(0.0, min(end_s, sent_until) - FRAME_S))
        for _, end_s, received in commits
        if received <= t_stop
    ]  # commits of the final flush wait for stop, not for the model
    complete, delays = 0, []
    if proc is not None and parent is not None:
        results = await asyncio.get_running_loop().run_in_executor(None, parent.recv)
        proc.join(30)
        texts = [c[0] for c in commits]
        for v_texts, v_times, ended_ok in results:
            complete += v_texts == texts and ended_ok
            delays += [t - c[2] for t, c in zip(v_times, commits)]
    return Round(n_viewers, len(commits), latency, finish_s, complete, delays)


# -- the server -----------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, max_viewers: int, threads: int | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--max-viewers", str(max(1, max_viewers))]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300  # loading the model
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dragoman serve exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("dragoman serve did not come up in 300 s")


def _q(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.quantile(np.asarray(values), q))


def table(rounds: list[Round]) -> str:
    head = (
        f"{'viewers':>7} {'round':>5} {'commits':>7} {'latency p50':>11} {'p90':>6} {'max':>6} {'stop->end':>9} "
        f"{'viewers complete':>16} {'viewer delay p50':>16} {'p99':>6} {'max':>6}"
    )
    lines = [head, "-" * len(head)]
    seen: dict[int, int] = {}
    for r in rounds:
        seen[r.viewers] = seen.get(r.viewers, 0) + 1
        complete = f"{r.complete}/{r.viewers}" if r.viewers else "-"
        delay = (
            (
                f"{_q(r.viewer_delay_s, 0.5) * 1000:>14.0f}ms {_q(r.viewer_delay_s, 0.99) * 1000:>4.0f}ms "
                f"{max(r.viewer_delay_s) * 1000:>4.0f}ms"
            )
            if r.viewer_delay_s
            else f"{'-':>16} {'-':>6} {'-':>6}"
        )
        lines.append(
            f"{r.viewers:>7} {seen[r.viewers]:>5} {r.commits:>7} {_q(r.latency_s, 0.5):>10.2f}s "
            f"{_q(r.latency_s, 0.9):>5.2f}s {max(r.latency_s, default=float('nan')):>5.2f}s "
            f"{r.finish_s:>8.2f}s {complete:>16} {delay}"
        )
    lines.append("")
    for n in sorted(seen):
        lat = [x for r in rounds if r.viewers == n for x in r.latency_s]
        lines.append(
            f"{n:>4} viewers, all rounds: speaker commit latency median {statistics.median(lat):.2f} s, "
            f"p90 {_q(lat, 0.9):.2f} s ({len(lat)} commits)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", default="0,200", help="viewer counts, comma-separated (default 0,200)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per viewer count, interleaved (default 2)")
    ap.add_argument("--seconds", type=float, default=45.0, help="seconds of speech per round (default 45)")
    ap.add_argument("--threads", type=int, default=None, help="the server's model threads (default: all cores)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rounds as JSON here")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.viewers.split(",")]
    audio = speech(args.seconds)
    port = free_port()
    server = start_server(port, max(counts), args.threads)
    rounds: list[Round] = []
    try:
        for i in range(args.rounds):
            for n in counts:
                r = asyncio.run(run_round(f"ws://127.0.0.1:{port}/ws", audio, n))
                print(
                    f"round {i + 1}: {n} viewers, {r.commits} commits, median latency "
                    f"{_q(r.latency_s, 0.5):.2f} s, {r.complete}/{n} viewers complete",
                    file=sys.stderr,
                )
                rounds.append(r)
    finally:
        server.terminate()
        server.wait(60)
    print(
        f"one speaker, {len(audio) / SAMPLE_RATE:.0f} s of German speech at real time (translate), "
        f"dragoman serve with the default model, {os.cpu_count()} cores shared by server, speaker and viewers\n"
    )
    print(table(rounds))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rounds], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
