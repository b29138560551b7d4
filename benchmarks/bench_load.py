"""Load test on loopback: N clients stream real synthesised German speech in real time while M others send garbage.

    .venv/bin/python -m benchmarks.bench_load                       # 3 speakers + 3 garbage clients, ~1 min
    .venv/bin/python -m benchmarks.bench_load --clients 4 --garbage 6 --repeat 2
    .venv/bin/python -m benchmarks.bench_load --replicas 2 --clients 4 --garbage 0 --max-sessions 2   # needs [ray]

Each well-behaved client streams its own recording (two sentences with a pause) at 1x real time and reports its lag
(from the server's `stats`), how long `end` took after `stop`, and errors. Streaming output depends on update timing,
so "expected" is not an exact transcript: a client's transcript is complete when it got `end`, no error, and
commits covering every sentence it spoke (each sentence ends in a pause, which commits it). Word recall against the
English references is printed for the same speakers in a quiet run (no garbage) and under load, to show the garbage
costs no quality.
Garbage clients loop over the hostile behaviours of issue 7 (malformed JSON, unknown types, bad fields, audio before
start, start twice, odd/NaN frames, tiny-frame floods, multi-MB frames, mid-stream disconnects, never reading) and
junk for the compatible APIs of issue 11 (Realtime and Deepgram sockets, uploads that are not audio) until the
speakers are done. Exit status 1 if any speaker's transcript is incomplete. Loopback only; bounded time.

`--replicas N` runs the same clients against `dragoman serve --replicas N` (a local Ray cluster of N replicas, each
with `--threads` torch threads and `--max-sessions` sessions; docs/deploy.md) instead of an in-process server, and
reports which replica served each speaker. Every open socket takes one of a replica's `--max-sessions` slots there,
garbage ones included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.audio import SAMPLE_RATE  # noqa: E402
from tests.server_clients import junk_socket, pcm16, stream_pcm, upload_status  # noqa: E402
from tests.speech import speech  # noqa: E402

_WORD = re.compile(r"[a-z']+")


def word_list(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def recall(reference: str, got: str) -> float:
    """Share of the reference's words (with multiplicity) that the transcript contains."""
    ref, hyp = Counter(word_list(reference)), Counter(word_list(got))
    total = sum(ref.values())
    return sum((ref & hyp).values()) / total if total else 1.0


@dataclass
class Speaker:
    name: str
    audio: np.ndarray
    spans: list[tuple[float, float, str]]  # (start_s, end_s, English reference) per sentence
    commit_spans: list[tuple[float, float]] = field(default_factory=list)
    commits: int = 0
    text: str = ""
    lags: list[float] = field(default_factory=list)
    end_delay_s: float = float("nan")
    errors: list[str] = field(default_factory=list)
    ended: bool = False
    replica: str = "-"  # which replica served it (--replicas)


async def speak(url: str, sp: Speaker) -> None:
    t0 = time.monotonic()
    out = await stream_pcm(url, sp.audio, realtime=1.0, language="de", timeout_s=300)
    sp.end_delay_s = time.monotonic() - t0 - len(sp.audio) / SAMPLE_RATE
    sp.commits = len(out.commits)
    sp.commit_spans = [(c["start_s"], c["end_s"]) for c in out.commits]
    sp.text = out.text
    sp.lags = [m["lag_s"] for m in out.messages if m["type"] == "stats"]
    sp.errors = [m["code"] for m in out.errors()]
    sp.replica = next((m.get("replica") or "-" for m in out.messages if m["type"] == "ready"), "-")
    sp.ended = out.types()[-1:] == ["end"]


# --- garbage ------------------------------------------------------------------------------------------------------


async def _exchange(url: str, sends: list, read_s: float = 0.5, start: bool = False) -> list[str]:
    codes: list[str] = []
    try:
        async with connect(url, max_size=2**20, close_timeout=1) as ws:
            if start:
                await ws.send('{"type":"start"}')
            for item in sends:
                await ws.send(item)
            try:
                async with asyncio.timeout(read_s):
                    async for raw in ws:
                        msg = json.loads(raw)
                        if msg["type"] == "error":
                            codes.append(msg["code"])
            except TimeoutError:
                pass
    except ConnectionClosed as e:
        codes.append(f"close {e.rcvd.code if e.rcvd else 1006}")
    except OSError as e:  # refused at the handshake (503 beyond max connections)
        codes.append(type(e).__name__)
    return codes


def _behaviours(rng: random.Random) -> dict:
    nan = np.array([np.nan, np.inf, 0.5], "<f4").tobytes()
    return {
        "malformed json": lambda url: _exchange(url, ["{nope", "[1,2", "\x00"]),
        "unknown type": lambda url: _exchange(url, ['{"type":"explode"}', '{"type":42}']),
        "bad fields": lambda url: _exchange(
            url,
            [
                '{"type":"start","sample_rate":1}',
                '{"type":"start","encoding":"mp3"}',
                '{"type":"start","language":"klingon"}',
            ],
        ),
        "audio before start": lambda url: _exchange(url, [b"\x00\x00" * 160] * 5),
        "start twice": lambda url: _exchange(url, ['{"type":"start"}'], start=True),
        "odd / NaN frames": lambda url: _exchange(url, [b"\x00" * 3, b"", nan], start=True),
        "tiny-frame flood": lambda url: _exchange(url, [b"\x00\x00"] * 1000, read_s=1.0, start=True),
        "multi-MB frame": lambda url: _exchange(url, [bytes(5 * 2**20)], start=True),
        "disconnect mid-stream": _disconnect,
        "never reads": _never_reads,
        "random bytes": lambda url: _exchange(
            url, [rng.randbytes(rng.randint(1, 4000)) for _ in range(20)], start=rng.random() < 0.5
        ),
        # the compatible APIs (docs/api.md) on the same port
        "realtime junk": lambda url: _api_junk(
            url.replace("/ws", "/v1/realtime"),
            [
                "{nope",
                '{"type": "response.create"}',
                '{"type": "input_audio_buffer.append", "audio": "***"}',
                '{"type": "input_audio_buffer.commit"}',
                '{"type": "session.update", "session": {"type": "realtime"}}',
                '{"type": "input_audio_buffer.append", "audio": "' + "A" * 400_000 + '"}',
            ],
        ),
        "listen junk": lambda url: _api_junk(
            url.replace("/ws", "/v1/listen") + "?encoding=linear16&sample_rate=16000",
            ["{nope", '{"type": "Dance"}', rng.randbytes(3001), b"\x00", bytes(5 * 2**20), '{"type": "CloseStream"}'],
        ),
        "listen bad params": lambda url: _api_junk(url.replace("/ws", "/v1/listen") + "?encoding=opus", []),
        "upload junk": lambda url: _upload_junk(url, rng.randbytes(rng.randint(1, 50_000))),
    }


async def _api_junk(url: str, sends: list) -> list[str]:
    """A Realtime or Deepgram client sending junk: what came back, by error code (or close code)."""

    def error_code(msg: dict) -> str | None:
        if msg["type"] not in ("error", "Error"):
            return None
        return "api " + str(msg.get("error", {}).get("code") or msg.get("variant"))

    return await junk_socket(url, sends, label=error_code, read_s=0.5, close_timeout_s=1)


async def _upload_junk(ws_url: str, payload: bytes) -> list[str]:
    """POST random bytes as a file to /v1/audio/transcriptions: the status code."""
    http = "http" + ws_url[len("ws") :].rsplit("/", 1)[0]
    return [f"http {await asyncio.to_thread(upload_status, http, payload)}"]


async def _disconnect(url: str) -> list[str]:
    ws = await connect(url)
    await ws.send('{"type":"start"}')
    for _ in range(50):
        await ws.send(pcm16(np.random.default_rng().normal(0, 0.1, 320).astype(np.float32)))
    ws.transport.abort()
    return ["aborted"]


async def _never_reads(url: str) -> list[str]:
    """Starts a session, sends errors' worth of junk and never reads a reply, for a few seconds."""
    ws = await connect(url, max_queue=1)
    await ws.send('{"type":"start"}')
    try:
        async with asyncio.timeout(3):
            while True:
                await ws.send(b"\x00")
                await asyncio.sleep(0.001)
    except (TimeoutError, ConnectionClosed):
        pass
    ws.transport.abort()
    return ["never read"]


async def garbage(url: str, seed: int, until: asyncio.Event, tally: Counter, runs: Counter) -> None:
    rng = random.Random(seed)
    behaviours = _behaviours(rng)
    while not until.is_set():
        name = rng.choice(list(behaviours))
        runs[name] += 1
        try:
            for code in await behaviours[name](url):
                tally[code] += 1
        except Exception as e:  # noqa: BLE001 - a garbage client's own failure is reported, not fatal
            tally[f"client {type(e).__name__}"] += 1


# --- main ---------------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def in_process_server(backend, max_sessions: int):
    """(ws_url, processes whose memory counts) of a DragomanServer in this process."""
    from app.runtime import Engine, EngineConfig
    from app.server import DragomanServer, ServerConfig

    async with (
        Engine(backend, EngineConfig(max_sessions=max_sessions)) as engine,
        DragomanServer(engine, ServerConfig(port=0, stats_interval_s=0.5)) as server,
    ):
        yield server.ws_url, [psutil.Process()]


class ReplicatedServer:
    """`dragoman serve --replicas N` in a subprocess (its own session, so every Ray process it starts is found)."""

    def __init__(self, replicas: int, max_sessions: int, threads: int) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--replicas",
                str(replicas),
                "--threads",
                str(threads),
                "--replica-cpus",
                str(threads),
                "--ray-cpus",
                str(max(os.cpu_count() or 1, replicas * threads)),
                "--max-sessions",
                str(max_sessions),
                "--max-waiting",
                "256",
                "--port",
                str(self.port),
                "--language",
                "de",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        for line in self.proc.stdout:
            if "is live at" in line:
                break
        else:
            raise SystemExit(f"dragoman serve --replicas {replicas} exited with {self.proc.wait()}")
        self.started_s = time.monotonic() - t0
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"

    def processes(self) -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter():
            with contextlib.suppress(ProcessLookupError, psutil.Error):
                if os.getsid(p.pid) == self.proc.pid:
                    found.append(p)
        return found

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        finally:
            for p in self.processes():
                p.kill()


def rss_mb(processes: list[psutil.Process]) -> float:
    total = 0
    for p in processes:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


async def run(
    args: argparse.Namespace, backend, speakers: list[Speaker], cluster: ReplicatedServer | None = None
) -> tuple[Counter, Counter, dict]:
    max_sessions = args.max_sessions or args.clients + args.garbage * 2
    if cluster is not None:

        @contextlib.asynccontextmanager
        async def cluster_server():
            yield cluster.ws_url, cluster.processes()

        server = cluster_server()
    else:
        server = in_process_server(backend, max_sessions)
    async with server as (ws_url, processes):
        rss0 = rss_mb(processes)
        done = asyncio.Event()
        tally: Counter = Counter()
        runs: Counter = Counter()
        junk = [asyncio.ensure_future(garbage(ws_url, seed, done, tally, runs)) for seed in range(args.garbage)]
        t0 = time.monotonic()
        await asyncio.gather(*(speak(ws_url, sp) for sp in speakers))
        wall = time.monotonic() - t0
        done.set()
        if junk:
            await asyncio.wait(junk, timeout=30)
        rss1 = rss_mb(processes)
    return tally, runs, {"wall_s": wall, "rss_mb": (rss0, rss1), "max_sessions": max_sessions}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=3, help="well-behaved speakers streaming in real time")
    ap.add_argument("--garbage", type=int, default=3, help="hostile clients running meanwhile")
    ap.add_argument("--repeat", type=int, default=1, help="sentence pairs per speaker (longer streams)")
    ap.add_argument("--max-sessions", type=int, default=0, help="engine session slots (default: enough for all)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (per replica with --replicas)")
    ap.add_argument(
        "--replicas",
        type=int,
        default=0,
        help="run against `dragoman serve --replicas N` on a local Ray cluster (--max-sessions per "
        "replica) instead of an in-process server",
    )
    args = ap.parse_args(argv)

    cluster: ReplicatedServer | None = None
    backend = None
    if args.replicas:
        max_sessions = args.max_sessions or -(-(args.clients + args.garbage * 2) // args.replicas)
        args.max_sessions = max_sessions
        print(f"starting {args.replicas} replica(s) ...", file=sys.stderr, flush=True)
        cluster = ReplicatedServer(args.replicas, max_sessions, args.threads)
        print(f"{args.replicas} replica(s) live in {cluster.started_s:.1f} s", file=sys.stderr, flush=True)
    else:
        import torch

        from engine.backend import make_backend
        from engine.models.loading import load_model

        torch.set_num_threads(args.threads)
        backend = make_backend(load_model())
    try:
        return _measure(args, backend, cluster)
    finally:
        if cluster is not None:
            cluster.stop()


def _measure(args: argparse.Namespace, backend, cluster: ReplicatedServer | None) -> int:
    audio_dir = Path(tempfile.mkdtemp(prefix="dragoman-load-"))  # synthesised speech; never committed
    pause = np.zeros(SAMPLE_RATE, np.float32)
    speakers = []
    for i in range(args.clients):
        pieces, spans, t = [], [], 0.0
        for r in range(args.repeat):
            for k in (i % 4, (i + 1 + r) % 4):
                audio, utt = speech("de", k, audio_dir)
                spans.append((t, t + len(audio) / SAMPLE_RATE, utt.english))
                pieces += [audio, pause]
                t += (len(audio) + len(pause)) / SAMPLE_RATE
        speakers.append(Speaker(f"speaker {i + 1}", np.concatenate(pieces), spans))
    print("quiet run (no garbage) ...", file=sys.stderr, flush=True)
    quiet_args = argparse.Namespace(**{**vars(args), "garbage": 0})
    quiet = [Speaker(sp.name, sp.audio, sp.spans) for sp in speakers]
    asyncio.run(run(quiet_args, backend, quiet, cluster))
    print("load run ...", file=sys.stderr, flush=True)
    tally, runs, info = asyncio.run(run(args, backend, speakers, cluster))

    where = (
        f"{args.replicas} replicas on a local Ray cluster (started in {cluster.started_s:.1f} s), "
        f"{args.threads} torch threads and {info['max_sessions']} session slots each"
        if cluster is not None
        else f"{args.threads} torch threads, {info['max_sessions']} session slots"
    )
    print(
        f"\n{args.clients} speakers at 1x real time + {args.garbage} garbage clients, loopback, {where}, "
        f"wall {info['wall_s']:.1f} s\n"
    )
    print(
        "| client | replica | audio s | commits | sentences committed | recall quiet / load | lag mean / max s "
        "| end after stop s | errors | complete |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    ok = True
    for sp, q in zip(speakers, quiet):
        reference = " ".join(e for _, _, e in sp.spans)
        covered = sum(any(a < e + 0.5 and b > s0 for a, b in sp.commit_spans) for s0, e, _ in sp.spans)
        complete = sp.ended and not sp.errors and covered == len(sp.spans)
        ok &= complete
        lag = f"{np.mean(sp.lags):.2f} / {max(sp.lags):.2f}" if sp.lags else "-"
        print(
            f"| {sp.name} | {sp.replica} | {len(sp.audio) / SAMPLE_RATE:.1f} | {sp.commits} "
            f"| {covered} / {len(sp.spans)} "
            f"| {recall(reference, q.text):.0%} / {recall(reference, sp.text):.0%} | {lag} | {sp.end_delay_s:.2f} "
            f"| {', '.join(sp.errors) or 'none'} | {'yes' if complete else 'NO'} |"
        )
    print(f"\ngarbage behaviours run: {dict(runs)}")
    print(f"what garbage clients got back: {dict(tally)}")
    print(f"RSS {info['rss_mb'][0]:.0f} MB -> {info['rss_mb'][1]:.0f} MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
