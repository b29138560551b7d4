"""Property-based tests over a real server for the compatible APIs: random event sequences on /v1/realtime and
/v1/listen, random multipart bodies on /v1/audio/transcriptions. Nothing crashes a handler or the server, every reply
is a well-formed message of that API (errors with a code), and afterwards each API still works."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.server import DragomanServer
from tests.server_clients import server_in_thread

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
REALTIME_TYPES = {
    "session.created",
    "session.updated",
    "transcription_session.updated",
    "error",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
    "dragoman.transcription.partial",
}
LISTEN_TYPES = {"Results", "Metadata", "Error", "SpeechStarted", "UtteranceEnd"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**9) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
audio_b64 = st.binary(max_size=4801).map(lambda b: base64.b64encode(b).decode())
realtime_events = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=64),
    st.fixed_dictionaries({"type": st.just("input_audio_buffer.append"), "audio": audio_b64 | json_values}),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                ["input_audio_buffer.commit", "input_audio_buffer.clear", "response.create", "conversation.item.create"]
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["session.update", "transcription_session.update"]),
            "session": st.fixed_dictionaries(
                {},
                optional={
                    "type": st.sampled_from(["transcription", "realtime"]) | json_values,
                    "audio": st.fixed_dictionaries(
                        {
                            "input": st.fixed_dictionaries(
                                {},
                                optional={
                                    "format": st.fixed_dictionaries(
                                        {
                                            "type": st.sampled_from(["audio/pcm", "audio/pcmu", "audio/pcma", "mp3"]),
                                            "rate": json_values,
                                        }
                                    ),
                                    "turn_detection": st.none()
                                    | st.dictionaries(
                                        st.sampled_from(["type", "threshold", "silence_duration_ms"]), json_values
                                    ),
                                    "transcription": st.dictionaries(
                                        st.sampled_from(["language", "prompt", "model"]), json_values
                                    ),
                                },
                            )
                        }
                    ),
                    "input_audio_format": st.sampled_from(["pcm16", "g711_ulaw", "opus"]) | json_values,
                    "dragoman": st.dictionaries(st.sampled_from(["task", "partials"]), json_values),
                },
            )
            | json_values,
        }
    ),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
).map(lambda e: e if isinstance(e, (str, bytes)) else json.dumps(e))
listen_messages = st.one_of(
    st.binary(max_size=3201),
    st.text(max_size=60),
    st.sampled_from(['{"type": "KeepAlive"}', '{"type": "Finalize"}', '{"type": "CloseStream"}']),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3).map(json.dumps),
)
listen_queries = st.sampled_from(
    [
        "encoding=linear16&sample_rate=16000",
        "encoding=mulaw&sample_rate=8000",
        "encoding=linear16&sample_rate=44100&channels=2&interim_results=true",
        "",
        "encoding=alaw&sample_rate=8000&language=multi&vad_events=true",
    ]
)


@pytest.fixture(scope="module")
def live_server(backend):
    with server_in_thread(backend) as server:
        yield server


async def talk(url: str, messages: list, marker: str, is_marker, quiet_s: float = 3.0) -> tuple[list[dict], int]:
    """Send everything and a marker; read until the marker's reply (or the close, or quiet)."""
    replies: list[dict] = []
    code = 1000
    try:
        async with connect(url, max_size=2**20, close_timeout=2) as ws:
            for m in messages:
                await ws.send(m)
            await ws.send(marker)
            while True:
                try:
                    raw = await asyncio.wait_for(ws.recv(), quiet_s)
                except TimeoutError:
                    break
                assert isinstance(raw, str), "these APIs only send text"
                replies.append(json.loads(raw))
                if is_marker(replies[-1]):
                    break
    except ConnectionClosed as e:
        code = e.rcvd.code if e.rcvd else 1006
    return replies, code


def run(server: DragomanServer, coro):
    return asyncio.run_coroutine_threadsafe(coro, server.engine._loop).result(90)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.lists(realtime_events, max_size=15))
def test_random_realtime_events(live_server, events):
    """Whatever a Realtime client sends, replies are known events; errors carry a code; the socket stays usable."""
    url = live_server.ws_url.replace("/ws", "/v1/realtime")
    marker = '{"type": "fuzz.marker"}'
    replies, code = run(live_server, talk(url, events, marker, lambda r: "fuzz.marker" in json.dumps(r)))
    assert code in (1000, 1001, 1008, 1009), code
    for r in replies:
        assert r["type"] in REALTIME_TYPES and r["event_id"], r
        if r["type"] == "error":
            assert isinstance(r["error"]["code"], str) and isinstance(r["error"]["message"], str), r
    if code == 1000:
        assert replies and replies[0]["type"] == "session.created"
        assert "fuzz.marker" in json.dumps(replies[-1]), replies[-3:]


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(listen_queries, st.lists(listen_messages, max_size=15))
def test_random_listen_streams(live_server, query, messages):
    """Whatever a Deepgram client streams, replies are Results/Metadata/Error...; CloseStream ends with Metadata."""
    url = live_server.ws_url.replace("/ws", "/v1/listen") + "?" + query
    marker = '{"type": "FuzzMarker"}'
    replies, code = run(
        live_server, talk(url, messages, marker, lambda r: "FuzzMarker" in json.dumps(r) or r["type"] == "Metadata")
    )
    assert code in (1000, 1001, 1008, 1009), code
    for r in replies:
        assert r["type"] in LISTEN_TYPES, r
        if r["type"] == "Error":
            assert r["variant"] and isinstance(r["description"], str), r
        if r["type"] == "Results":
            assert isinstance(r["channel"]["alternatives"][0]["transcript"], str) and r["duration"] >= 0


multipart_fields = st.dictionaries(
    st.sampled_from(
        ["model", "language", "prompt", "response_format", "temperature", "stream", "timestamp_granularities[]", "junk"]
    ),
    st.text(max_size=12),
    max_size=5,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(multipart_fields, st.binary(max_size=2000), st.booleans())
def test_random_uploads_are_refused_cleanly(live_server, fields, payload, with_file):
    """Random form fields and non-audio files get 4xx answers in OpenAI's error shape, never a 5xx."""
    boundary = "fuzzboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode("utf-8", "surrogatepass")
        for k, v in fields.items()
    ]
    if with_file:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.wav"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode()
            + payload
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(
        live_server.url + "v1/audio/transcriptions",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, answer = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, answer = e.code, e.read()
    assert status < 500, (status, answer[:300])
    if status >= 400:
        assert json.loads(answer)["error"]["message"]


def test_each_api_still_works_after_the_fuzzing(live_server):
    """After the random traffic every slot is free and each socket API opens, answers and closes normally."""

    async def check() -> None:
        for _ in range(100):
            if live_server.engine.n_sessions == 0 and live_server.n_connections == 0:
                break
            await asyncio.sleep(0.1)
        assert live_server.engine.n_sessions == 0
        base = live_server.ws_url.replace("/ws", "")
        async with connect(base + "/v1/listen?encoding=linear16&sample_rate=16000") as ws:
            await ws.send(b"\0\0" * 1600)
            await ws.send('{"type": "CloseStream"}')
            assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "Metadata"
        async with connect(base + "/v1/realtime") as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            await ws.send('{"type": "session.update", "session": {"type": "transcription"}}')
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.updated"

    run(live_server, check())
