"""`dragoman serve --replicas 2` as a user runs it: a local Ray cluster (2 CPUs, no dashboard), two replicas of the
embedded model behind one address, real German speech from real WebSocket clients at 1x real time.

After the autoscaling test (its own one-replica cluster, stopped before the next starts), the tests share one
cluster of two replicas and run in file order: routing, the endpoints, waiting for a slot, a replica killed
mid-stream, then SIGTERM, which ends the cluster. Every process a cluster started lives in the server's own session
and is gone at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests import REPO
from tests.server_clients import Transcript, pcm16, stream_pcm, words
from tests.speech import speech, write_wav

# Ray is never imported into the test process (it replaces sys.excepthook and warning filters): only the
# subprocesses here import it.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None, reason="the ray extra: scripts/setup.sh --test installs it"
    ),
]
MAX_SESSIONS = 2  # per replica: two replicas hold the four clients of the first test exactly
MAX_WAITING = 4  # connections the proxy holds while both replicas are full (no fewer than the first test's burst)
# Words the English translation of SENTENCES["de"][i] must bring (the two Whisper base streams reliably)
KEY_WORDS = {
    0: {"morning", "weather", "berlin", "park", "afternoon"},
    3: {"sister", "works", "hospital", "doctor", "helps", "people"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_processes(sid: int) -> list[psutil.Process]:
    """Every process in the session `dragoman serve` leads: the driver, Ray's GCS, raylet, workers, replicas."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


@dataclass
class Cluster:
    proc: subprocess.Popen
    port: int
    started_s: float
    stderr: list[str] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def healthz(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=10) as r:
            return json.loads(r.read())

    def replica_pids(self, n: int = 2, timeout_s: float = 60.0) -> dict[str, int]:
        """Replica name -> process id, from /healthz, once `n` replicas answered. Only while the replicas are equally
        loaded: the router sends each request to the less loaded of two, so then either may answer."""
        pids: dict[str, int] = {}
        deadline = time.monotonic() + timeout_s
        while len(pids) < n and time.monotonic() < deadline:
            h = self.healthz()
            pids[h["replica"]] = h["pid"]
            time.sleep(0.1)
        return pids


def read_stderr(proc: subprocess.Popen, into: list[str]) -> None:
    for line in proc.stderr:
        into.append(line)


@contextlib.contextmanager
def running_cluster(*flags: str) -> Iterator[Cluster]:
    """`dragoman serve --replicas ...` in its own session on a free port, until the block ends (then SIGTERM, and
    every process of the session killed)."""
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_DEDUP_LOGS="0")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--ray-cpus",
            "2",
            "--threads",
            "1",
            "--port",
            str(port),
            "--language",
            "de",
            *flags,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    c = Cluster(proc, port, 0.0)
    threading.Thread(target=read_stderr, args=(proc, c.stderr), daemon=True).start()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"dragoman serve --replicas exited {proc.wait()}: {''.join(c.stderr)[-3000:]}")
            if "is live at" in line:
                break
        else:
            raise AssertionError(f"no address printed in 240 s: {''.join(c.stderr)[-3000:]}")
        c.started_s = time.monotonic() - t0
        print(f"\n`serve {' '.join(flags)}` live in {c.started_s:.1f} s")
        yield c
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                pass
        for p in session_processes(proc.pid):  # nothing may outlive the tests, whatever happened
            p.kill()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster(
        "--replicas",
        "2",
        "--max-sessions",
        str(MAX_SESSIONS),
        "--max-waiting",
        str(MAX_WAITING),
        "--shutdown-timeout",
        "20",
    ) as c:
        yield c


@dataclass
class LiveClient:
    """One speaker streaming at 1x real time; records every message and how the connection ended."""

    url: str
    audio: np.ndarray
    out: Transcript = field(default_factory=Transcript)
    closed_at: float | None = None  # monotonic time the connection ended
    close_code: int | None = None
    ws: ClientConnection | None = None
    sent_s: float = 0.0

    @property
    def replica(self) -> str | None:
        ready = [m for m in self.out.messages if m["type"] == "ready"]
        return ready[0].get("replica") if ready else None

    async def open(self) -> None:
        self.ws = await connect(self.url, max_size=2**20, open_timeout=60)
        await self.ws.send(
            json.dumps(
                {"type": "start", "task": "translate", "language": "de", "sample_rate": 16000, "encoding": "pcm_s16le"}
            )
        )
        self.out.messages.append(json.loads(await asyncio.wait_for(self.ws.recv(), 30)))

    async def run(self, send_stop: bool = True) -> None:
        """Stream the rest of the audio in real time, then `stop`; read until `end` or the connection ends."""
        assert self.ws is not None
        receiver = asyncio.ensure_future(self._receive())
        t0 = time.monotonic()
        n = 320
        try:
            for i in range(0, len(self.audio), n):
                if receiver.done():
                    break
                await self.ws.send(pcm16(self.audio[i : i + n]))
                self.sent_s = (i + n) / 16000
                await asyncio.sleep(max(0.0, t0 + self.sent_s - time.monotonic()))
            if send_stop and not receiver.done():
                await self.ws.send(json.dumps({"type": "stop"}))
        except ConnectionClosed:
            pass
        await asyncio.wait_for(receiver, 120)

    async def _receive(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                self.out.messages.append(msg)
                if msg["type"] == "end":
                    break
        except ConnectionClosed:
            pass
        finally:
            self.closed_at = time.monotonic()
            await self.ws.close()
            self.close_code = self.ws.close_code


async def reconnect(url: str, audio: np.ndarray, attempts: int = 5) -> LiveClient:
    """What the page does when its connection drops: connect again, a few times, a second apart."""
    for attempt in range(attempts):
        client = LiveClient(url, audio)
        try:
            await client.open()
            return client
        except (OSError, ConnectionClosed, InvalidStatus):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(1.0)
    raise AssertionError("unreachable")


def assert_translates(t: Transcript, index: int, audio_s: float) -> None:
    """The whole German sentence came back in English: its key words, and commits reaching the audio's end."""
    types = t.types()
    assert types[0] == "ready" and types[-1] == "end", types
    assert not t.errors(), t.errors()
    hits = KEY_WORDS[index] & words(t.text)
    assert len(hits) >= 3, f"expected words of {sorted(KEY_WORDS[index])} in {t.text!r}"
    assert t.commits[-1]["end_s"] >= audio_s - 2.5, (t.commits[-1], audio_s)


def test_without_replicas_ray_is_never_imported():
    """`dragoman serve`'s flags, its server configuration and the whole server import no Ray."""
    code = (
        "import sys; from app.cli import build_parser; from app.commands.serve import server_config; "
        "import app.server.app, app.server.connection; server_config(build_parser().parse_args(['serve'])); "
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", (out.stdout, out.stderr)


def test_serve_flags_become_the_deployment():
    """The flags of `dragoman serve` (as `app_builder` reads them for a Serve config file or KubeRay) set replicas,
    one ongoing request per session slot, the waiting bound, and each replica's CPUs, GPUs and device; a port Ray's
    proxy cannot bind is refused before anything starts."""
    code = """if True:
        import json
        from app.scale.builder import app_builder
        app = app_builder({"flags": "--replicas 3 --max-sessions 5 --max-waiting 7 --replica-gpus 0.5 --language de"})
        d = app._bound_deployment
        (spec,) = d.init_args
        print(json.dumps([d.num_replicas, d._deployment_config.max_ongoing_requests,
                          d._deployment_config.max_queued_requests, d.ray_actor_options["num_gpus"],
                          spec.device, spec.max_sessions, spec.server.defaults.language]))
    """
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.splitlines()[-1]) == [3, 5, 7, 0.5, "cuda", 5, "de"]
    refused = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--replicas", "2", "--port", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "--port must be a fixed port" in refused.stderr, refused.stderr


def test_a_full_cluster_grows_and_the_waiting_speaker_is_served_by_the_new_replica(audio_dir):
    """`--replicas 1 --max-replicas 2`: two sessions fill the one replica; a third speaker's connection waits, Serve
    adds a replica on the open-connection count, and the new replica serves the waiting speaker."""
    with running_cluster("--replicas", "1", "--max-replicas", "2", "--max-sessions", "2") as c:

        async def main() -> tuple[list[LiveClient], dict[str, Any], float]:
            held = [LiveClient(c.ws_url, np.zeros(0, np.float32)) for _ in range(2)]
            for h in held:
                await h.open()
            assert held[0].replica == held[1].replica
            t0 = time.monotonic()
            third = LiveClient(c.ws_url, np.zeros(0, np.float32))
            await asyncio.wait_for(third.open(), 150)
            waited_s = time.monotonic() - t0
            ready = third.out.messages[0]
            for client in (*held, third):
                assert client.ws is not None
                await client.ws.close()
            return held, ready, waited_s

        held, ready, waited_s = asyncio.run(main())
        assert ready["type"] == "ready" and ready["replica"] != held[0].replica, (ready, held[0].replica)
        print(f"\nthe waiting speaker was served by a new replica {waited_s:.1f} s after it connected")


def test_four_clients_spread_over_two_replicas_and_complete(cluster, audio_dir):
    """Four simultaneous German speakers on two replicas of two sessions: two per replica, each gets its own whole
    translation; `ready` and /healthz name the replica."""
    clips = {i: speech("de", i, audio_dir)[0] for i in (0, 3)}
    order = [0, 3, 0, 3]

    async def main() -> list[Transcript]:
        return await asyncio.gather(*(stream_pcm(cluster.ws_url, clips[i], realtime=1.0) for i in order))

    outs = asyncio.run(main())
    replicas = [o.messages[0].get("replica") for o in outs]
    assert all(replicas) and len(set(replicas)) == 2 and max(replicas.count(r) for r in replicas) == 2, replicas
    for i, o in zip(order, outs):
        assert_translates(o, i, len(clips[i]) / 16000)
        other = 3 if i == 0 else 0
        assert not words(o.text) & KEY_WORDS[other] - {"morning"}, o.text  # no captions of another speaker
    pids = cluster.replica_pids()
    assert set(pids) == set(replicas) and len(set(pids.values())) == 2, pids


def test_page_openai_and_deepgram_endpoints_through_the_proxy(cluster, audio_dir, tmp_path):
    """Behind Ray's proxy the replicas serve what one server serves: the page, an OpenAI translation upload and a
    Deepgram live socket (with the real client packages)."""
    from deepgram import AsyncDeepgramClient
    from deepgram.environment import DeepgramClientEnvironment
    from openai import AsyncOpenAI

    base = f"127.0.0.1:{cluster.port}"
    with urllib.request.urlopen(f"http://{base}/", timeout=10) as r:
        assert r.status == 200 and b"<html" in r.read().lower()
    with urllib.request.urlopen(f"http://{base}/app.js", timeout=10) as r:
        assert r.status == 200 and b"WebSocket" in r.read()
    german, _ = speech("de", 3, audio_dir)
    english, _ = speech("en", 0, audio_dir)
    wav = write_wav(tmp_path / "de.wav", german)

    async def main() -> tuple[str, str]:
        openai = AsyncOpenAI(base_url=f"http://{base}/v1", api_key="unused", max_retries=0, timeout=300)
        with wav.open("rb") as f:
            upload = await openai.audio.translations.create(model="whisper-1", file=f)
        env = DeepgramClientEnvironment(
            base=f"http://{base}", production=f"ws://{base}", agent=f"ws://{base}", agent_rest=f"http://{base}"
        )
        finals: list[str] = []
        async with AsyncDeepgramClient(api_key="unused", environment=env).listen.v1.connect(
            model="nova-3", encoding="linear16", sample_rate=16000, language="en"
        ) as sock:

            async def listen() -> None:
                async for m in sock:
                    if getattr(m, "type", None) == "Results" and m.is_final:
                        finals.append(m.channel.alternatives[0].transcript)

            listener = asyncio.ensure_future(listen())
            for i in range(0, len(english), 1600):  # 100 ms at 4x real time
                await sock.send_media(pcm16(english[i : i + 1600]))
                await asyncio.sleep(0.025)
            await sock.send_close_stream()
            await asyncio.wait_for(listener, 120)
        return upload.text, " ".join(finals)

    upload_text, live_text = asyncio.run(main())
    assert len(KEY_WORDS[3] & words(upload_text)) >= 3, upload_text
    assert len({"morning", "everyone", "weather", "london", "price", "coffee"} & words(live_text)) >= 4, live_text


def test_open_socket_holds_its_slot_until_it_closes(cluster):
    """A WebSocket is one ongoing request for its whole life: with every session slot held by idle sessions, a new
    connection waits (no answer for seconds), and is served as soon as one of them closes; beyond the connections
    allowed to wait, the handshake is refused with 503."""

    async def main() -> None:
        held = []
        for _ in range(2 * MAX_SESSIONS):
            c = LiveClient(cluster.ws_url, np.zeros(0, np.float32))
            await c.open()
            assert c.out.messages[0]["type"] == "ready", c.out.messages
            held.append(c)
        waiting = asyncio.ensure_future(connect(cluster.ws_url, open_timeout=60))
        await asyncio.sleep(4.0)
        assert not waiting.done(), "a fifth connection was let in while four sessions held every slot"
        more = [asyncio.ensure_future(connect(cluster.ws_url, open_timeout=60)) for _ in range(MAX_WAITING)]
        await asyncio.wait(more, timeout=5.0)
        refused = [f for f in more if f.done() and isinstance(f.exception(), InvalidStatus)]
        assert len(refused) == 1 and all(not f.done() for f in more if f not in refused), more
        status = refused[0].exception().response.status_code
        assert status == 503, status
        for f in more:
            f.cancel()
        t_free = time.monotonic()
        freed = held.pop(0)
        assert freed.ws is not None
        await freed.ws.close()
        ws = await asyncio.wait_for(waiting, 30)
        served_after_s = time.monotonic() - t_free
        await ws.send(json.dumps({"type": "start", "language": "de"}))
        ready = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert ready["type"] == "ready" and ready["replica"] == freed.replica, (ready, freed.replica)
        print(f"\nthe waiting connection was served {served_after_s:.2f} s after a slot freed")
        await ws.close()
        for c in held:
            assert c.ws is not None
            await c.ws.close()

    asyncio.run(main())


def test_killed_replica_cuts_only_its_clients_who_reconnect_to_the_survivor(cluster, audio_dir):
    """SIGKILL one replica's process mid-stream: its client's connection ends within seconds (no hang); the client
    reconnects at once and the surviving replica serves it to the end; the survivor's own client never notices."""
    audio0, _ = speech("de", 0, audio_dir)
    audio3, _ = speech("de", 3, audio_dir)
    pids = cluster.replica_pids()
    assert len(pids) == 2, pids

    async def main() -> tuple[LiveClient, LiveClient, LiveClient, float]:
        a = LiveClient(cluster.ws_url, audio0)
        await a.open()
        b = LiveClient(cluster.ws_url, audio3)
        await b.open()
        if b.replica == a.replica:  # the router chose the same replica twice: ask again (it has a slot left)
            b2 = LiveClient(cluster.ws_url, audio3)
            await b2.open()
            assert b.ws is not None
            await b.ws.close()
            b = b2
        assert a.replica != b.replica and {a.replica, b.replica} == set(pids), (a.replica, b.replica, pids)
        runs = [asyncio.ensure_future(a.run()), asyncio.ensure_future(b.run())]
        await asyncio.sleep(len(audio0) / 16000 / 2)  # halfway through the speech
        killed_at = time.monotonic()
        os.kill(pids[a.replica], signal.SIGKILL)
        await asyncio.wait_for(runs[0], 30)  # a's connection ends: no hang
        again = await reconnect(cluster.ws_url, audio0)
        await asyncio.gather(again.run(), runs[1])
        return a, b, again, killed_at

    a, b, again, killed_at = asyncio.run(main())
    assert a.closed_at is not None and a.closed_at - killed_at < 15, a.closed_at - killed_at
    assert "end" not in a.out.types()  # cut, not finished
    assert a.close_code == 1012, a.close_code  # "service restart", from app/scale/proxy.py (else 1006: no close)
    print(
        f"\nkilled replica's client saw its connection end {a.closed_at - killed_at:.2f} s after the kill "
        f"(close code {a.close_code})"
    )
    assert again.replica == b.replica, (again.replica, b.replica)
    assert_translates(again.out, 0, len(audio0) / 16000)
    assert_translates(b.out, 3, len(audio3) / 16000)
    assert b.close_code == 1000


@pytest.mark.e2e
def test_page_keeps_its_captions_when_its_replica_dies_and_goes_on_with_the_other(cluster, audio_dir, tmp_path):
    """The page in Chromium through Ray's proxy: German from the fake microphone becomes English captions; when the
    replica serving it is killed, the page says why, keeps its captions, reconnects and the other replica captions
    the rest of the speech."""
    from playwright.async_api import async_playwright

    from engine.audio import resample
    from tests.e2e.pages import Chromium, require_chromium

    require_chromium()
    first, _ = speech("de", 0, audio_dir)
    second, _ = speech("de", 3, audio_dir)
    x = np.concatenate(
        [np.zeros(8000, np.float32), first, np.zeros(24000, np.float32), second, np.zeros(48000, np.float32)]
    )
    wav = write_wav(tmp_path / "mic48k.wav", resample(x, 16000, 48000), 48000, "PCM_16")
    commits_js = "[...document.querySelectorAll('#captions .commit')].map(s => s.textContent).join(' ')"

    pids = cluster.replica_pids()  # (a replica killed by the previous test may still be being replaced)
    assert len(pids) == 2, pids
    readies: list[dict[str, Any]] = []  # the `ready` messages the page received, read off its WebSocket frames

    def watch_socket(ws: Any) -> None:
        def frame(payload: str | bytes) -> None:
            if isinstance(payload, str) and '"ready"' in payload:
                readies.append(json.loads(payload))

        ws.on("framereceived", frame)

    async def main() -> tuple[str, str, str]:
        async with async_playwright() as pw, Chromium(pw, tmp_path).page(wav) as page:
            page.on("websocket", watch_socket)
            await page.goto(f"http://127.0.0.1:{cluster.port}/")
            await page.click("#start")
            await page.wait_for_selector("#captions .commit", timeout=60000)
            before = await page.evaluate(commits_js)
            assert len(readies) == 1 and readies[0]["replica"] in pids, (readies, pids)
            os.kill(pids[readies[0]["replica"]], signal.SIGKILL)
            await page.wait_for_selector("body[data-state=reconnecting]", timeout=10000)
            status = await page.inner_text("#status")
            await page.wait_for_selector("body[data-state=live]", timeout=30000)
            await page.wait_for_function(
                """([js, keys]) => { const t = eval(js).toLowerCase();
                                      return keys.filter(k => t.includes(k)).length >= 2; }""",
                arg=[commits_js, sorted(KEY_WORDS[3])],
                timeout=60000,
            )
            after = await page.evaluate(commits_js)
            await page.click("#stop")
            await page.wait_for_selector("body[data-state=idle]", timeout=30000)
            return before, status, after

    before, status, after = asyncio.run(main())
    assert "replica serving this session stopped" in status, status
    assert len(readies) == 2 and readies[1]["replica"] in pids and readies[1]["replica"] != readies[0]["replica"]
    assert after.startswith(before), (before, after)  # the captions shown before the loss are kept as they were
    assert len(KEY_WORDS[3] & words(after)) >= 2, after


def test_sigterm_drains_every_replica_then_leaves_no_ray_process(cluster, audio_dir):
    """SIGTERM to `dragoman serve --replicas 2` mid-stream: each open session gets `shutting_down`, the commits of
    what it sent, `end` and close 1001; then the process exits 0 and every Ray process it started is gone."""
    audio, _ = speech("de", 3, audio_dir)
    # the cluster is whole again: the replica killed by the page test has been replaced
    assert len(cluster.replica_pids()) == 2

    async def main() -> list[LiveClient]:
        clients = [LiveClient(cluster.ws_url, audio) for _ in range(2)]
        for c in clients:
            await c.open()
        runs = [asyncio.ensure_future(c.run(send_stop=False)) for c in clients]
        await asyncio.sleep(len(audio) / 16000 * 3 / 4)
        cluster.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*runs), 90)
        return clients

    clients = asyncio.run(main())
    rc = cluster.proc.wait(timeout=90)
    for c in clients:
        types = c.out.types()
        assert types[0] == "ready" and types[-1] == "end", types
        assert [m["code"] for m in c.out.errors()] == ["shutting_down"], c.out.errors()
        hits = KEY_WORDS[3] & words(c.out.text)
        assert len(hits) >= 2, c.out.text  # the first three quarters of the speech
        # a clean close: the replica closes 1001, but Ray's proxy sometimes relays it as 1000 (seen once in CI
        # in 5 runs, after shutting_down and end had arrived); the protocol's end already told the client it is over
        assert c.close_code in (1000, 1001), c.close_code
    stderr = "".join(cluster.stderr)
    assert rc == 0, stderr[-3000:]
    assert "sessions ended on 2 replica(s)" in stderr and "not in time" not in stderr, stderr[-3000:]
    deadline = time.monotonic() + 20
    while (left := session_processes(cluster.proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, [p.name() for p in left]
