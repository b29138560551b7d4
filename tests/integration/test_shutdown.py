"""Graceful shutdown of `dragoman serve` as a user runs it: SIGTERM while a client streams speech gives that client
its final commits and `end` before the process exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from websockets.asyncio.client import connect

from tests import REPO
from tests.server_clients import pcm16, words
from tests.speech import speech

pytestmark = pytest.mark.slow
TOKEN = "shutdown-test-token-81c2"


def start_server() -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", DRAGOMAN_TOKEN=TOKEN)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "-v", "serve", "--port", "0", "--threads", "2", "--language", "de"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.search(r"(http://[\d.]+:\d+/)", line):
            return proc, m.group(1).replace("http", "ws") + "ws"
    proc.kill()
    raise AssertionError(f"no address printed: {proc.stderr.read()}")


async def stream_until_end(url: str, audio, proc: subprocess.Popen) -> list[dict]:
    """Stream in real time; halfway through the speech, SIGTERM the server; read until `end` and the close."""
    out: list[dict] = []
    async with connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        await ws.send('{"type":"start"}')  # no language: the server's --language de applies

        async def receive() -> None:
            async for raw in ws:
                out.append(json.loads(raw))

        receiver = asyncio.ensure_future(receive())
        t0 = time.monotonic()
        try:
            for i in range(0, len(audio), 320):
                if i == len(audio) * 3 // 4 // 320 * 320:
                    proc.send_signal(signal.SIGTERM)
                await ws.send(pcm16(audio[i : i + 320]))
                await asyncio.sleep(max(0.0, t0 + (i + 320) / 16000 - time.monotonic()))
        except Exception:  # the server stops reading (and closes) once it is shutting down
            pass
        await asyncio.wait_for(receiver, 60)
        assert ws.close_code == 1001, ws.close_code
    return out


def test_sigterm_flushes_open_sessions_then_exits_0(audio_dir):
    """SIGTERM mid-stream: the client gets shutting_down, the commits of what it sent, `end`, 1001; exit code 0."""
    audio, _ = speech("de", 3, audio_dir)
    proc, url = start_server()
    try:
        out = asyncio.run(stream_until_end(url, audio, proc))
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read()
    types = [m["type"] for m in out]
    assert types[0] == "ready" and types[-1] == "end", types
    assert [m["code"] for m in out if m["type"] == "error"] == ["shutting_down"]
    text = "".join(m["text"] for m in out if m["type"] == "commit")
    assert len(words(text) & {"sister", "works", "hospital", "doctor"}) >= 2, text  # the first 3/4 of the speech
    assert rc == 0, stderr
    assert "stopping: flushing 1 connection" in stderr
    assert TOKEN not in stderr  # -v logging on: still no token
