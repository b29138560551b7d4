"""`dragoman serve` as a user runs it: a subprocess that loads the model, prints its address and serves."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from app.cli import build_parser
from tests import REPO
from tests.server_clients import stream_pcm, words
from tests.speech import speech


def test_serve_options_parse():
    """The serve subcommand takes host, port, model options, session limit and repeatable ICE servers."""
    args = build_parser().parse_args(
        ["serve", "--port", "0", "--max-sessions", "2", "--ice-server", "stun:a:1", "--ice-server", "u:p@turn:b:2"]
    )
    assert (args.host, args.port, args.max_sessions) == ("127.0.0.1", 0, 2)
    assert args.ice_server == ["stun:a:1", "u:p@turn:b:2"]


def test_serve_refuses_a_bad_ice_server():
    """A malformed --ice-server fails before the model loads, with a message that shows the expected form."""
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--ice-server", "http://x"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "stun:host:port" in proc.stderr
    assert "loading model" not in proc.stderr


@pytest.mark.slow
def test_serve_command_end_to_end(audio_dir):
    """`dragoman serve --port 0` reports loading, prints its address, serves the page and translates over /ws."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", "0", "--threads", "2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        url = None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"(http://[\d.]+:\d+/)", line)
            if m:
                url = m.group(1)
                break
        assert url, f"no address printed; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and b"Dragoman" in r.read()
        audio, _ = speech("de", 0, audio_dir)
        out = asyncio.run(stream_pcm(url.replace("http", "ws") + "ws", audio, realtime=4.0))
        assert out.types()[-1] == "end"
        assert len(words(out.text) & {"morning", "weather", "berlin", "park"}) >= 3, out.text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        stderr = proc.stderr.read()
    assert "loading model" in stderr  # the progress message came before the address
    assert rc == 0, stderr
