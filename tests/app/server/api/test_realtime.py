"""`WS /v1/realtime` with the real `openai` client's Realtime connection (pinned in the test extra) against a real
server with the embedded model: server VAD turns, manual commits, the older transcription_session events, and
refusals of bad events."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
from openai import AsyncOpenAI
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from app.server import DragomanServer
from app.server.api.realtime import EnergyGate, TurnDetection
from app.server.auth import AccessConfig
from engine.audio import resample
from tests.server_clients import pcm16, serving, words
from tests.speech import speech

TOKEN = "realtime-test-token-3c9f"
EN_WORDS = {"morning", "everyone", "weather", "london", "price", "coffee"}  # SENTENCES["en"][0]
# SENTENCES["en"][1]; Whisper base often hears "the meetings are set at 9 o'clock", so more of its words count
EN1_WORDS = {"meeting", "meetings", "starts", "nine", "o'clock", "please", "bring", "your", "notes", "laptop"}


@pytest.fixture
async def server(backend):
    async with serving(backend, max_sessions=3, access=AccessConfig(token=TOKEN)) as srv:
        yield srv


def client(srv: DragomanServer, key: str = TOKEN) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"http://127.0.0.1:{srv.port}/v1", api_key=key, max_retries=0)


def b64_chunks(audio_16k: np.ndarray, rate: int = 24000, chunk_s: float = 0.1) -> list[str]:
    audio = resample(audio_16k, 16000, rate)
    n = int(rate * chunk_s)
    return [base64.b64encode(pcm16(audio[i : i + n])).decode() for i in range(0, len(audio), n)]


async def collect_until(conn, done, timeout_s: float = 120.0) -> list:
    events = []
    async with asyncio.timeout(timeout_s):
        async for event in conn:
            events.append(event)
            if done(events):
                return events
    return events


async def commit_turn(conn, audio_16k: np.ndarray) -> list:
    """Append the audio in 0.1 s chunks (5x real time), commit it by hand: every event up to the turn's transcript."""
    for chunk in b64_chunks(audio_16k):
        await conn.input_audio_buffer.append(audio=chunk)
        await asyncio.sleep(0.02)
    await conn.input_audio_buffer.commit()
    return await collect_until(conn, lambda ev: ev[-1].type == "conversation.item.input_audio_transcription.completed")


@pytest.mark.slow
async def test_server_vad_turns_with_the_openai_realtime_client(server, audio_dir):
    """Two sentences with a pause: speech_started/stopped, committed, deltas and a completed transcript per turn."""
    a, _ = speech("en", 0, audio_dir)
    b, _ = speech("en", 1, audio_dir)
    silence = np.zeros(16000, np.float32)
    audio = np.concatenate([silence[:4000], a, silence, b, silence])
    async with client(server).realtime.connect(
        model="gpt-4o-transcribe", extra_query={"intent": "transcription"}
    ) as conn:
        first = await conn.recv()
        assert first.type == "session.created"
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 600},
                    }
                },
            }
        )

        async def send() -> None:
            for chunk in b64_chunks(audio):
                await conn.input_audio_buffer.append(audio=chunk)
                await asyncio.sleep(0.025)

        sender = asyncio.ensure_future(send())
        events = await collect_until(
            conn, lambda ev: sum(e.type == "conversation.item.input_audio_transcription.completed" for e in ev) == 2
        )
        await sender
    types = [e.type for e in events]
    assert types[0] == "session.updated"
    assert types.count("input_audio_buffer.speech_started") == 2, types
    assert types.count("input_audio_buffer.speech_stopped") == 2 and types.count("input_audio_buffer.committed") == 2
    completed = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    committed = [e for e in events if e.type == "input_audio_buffer.committed"]
    assert [c.item_id for c in completed] == [c.item_id for c in committed]
    assert committed[1].previous_item_id == committed[0].item_id
    assert len(words(completed[0].transcript) & EN_WORDS) >= 4, completed[0].transcript
    assert len(words(completed[1].transcript) & EN1_WORDS) >= 4, completed[1].transcript
    for c in completed:
        deltas = [
            e.delta
            for e in events
            if e.type == "conversation.item.input_audio_transcription.delta" and e.item_id == c.item_id
        ]
        assert deltas and "".join(deltas).strip() == c.transcript
    started = [e for e in events if e.type == "input_audio_buffer.speech_started"]
    assert 0 <= started[0].audio_start_ms < 600 and started[1].audio_start_ms > len(a) / 16 - 300


@pytest.mark.slow
async def test_manual_commit_with_the_older_transcription_session_events(server, audio_dir):
    """transcription_session.update without turn detection: the client's commit ends the turn; translation works."""
    audio, _ = speech("de", 3, audio_dir)
    async with client(server).realtime.connect(model="whisper-1") as conn:
        await conn.recv()  # session.created
        await conn.send(
            {
                "type": "transcription_session.update",
                "session": {
                    "input_audio_format": "pcm16",
                    "turn_detection": None,
                    "input_audio_transcription": {"model": "whisper-1", "language": "de"},
                    "dragoman": {"task": "translate", "partials": True},
                },
            }
        )
        events = await commit_turn(conn, audio)
    types = [e.type for e in events]
    assert types[0] == "transcription_session.updated" and "input_audio_buffer.speech_started" not in types
    assert "dragoman.transcription.partial" in types and "input_audio_buffer.committed" in types
    assert len(words(events[-1].transcript) & {"sister", "works", "hospital", "doctor", "helps", "people"}) >= 3


@pytest.mark.slow
async def test_clear_drops_the_uncommitted_turn(server, audio_dir):
    """Audio appended then cleared is never transcribed; the next committed turn holds only what followed."""
    a, _ = speech("en", 0, audio_dir)
    b, _ = speech("en", 1, audio_dir)
    async with client(server).realtime.connect(model="whisper-1") as conn:
        await conn.recv()  # session.created
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {"input": {"turn_detection": None, "transcription": {"language": "en"}}},
            }
        )
        for chunk in b64_chunks(a)[: len(a) // 1600 // 2]:
            await conn.input_audio_buffer.append(audio=chunk)
        await asyncio.sleep(1.0)  # let the engine decode some of it
        await conn.input_audio_buffer.clear()
        events = await commit_turn(conn, b)
    types = [e.type for e in events]
    assert (
        "input_audio_buffer.cleared" in types
        and types.count("conversation.item.input_audio_transcription.completed") == 1
    )
    transcript = events[-1].transcript
    assert len(words(transcript) & EN1_WORDS) >= 4 and not words(transcript) & {"london", "coffee", "price"}, transcript
    cleared_at = types.index("input_audio_buffer.cleared")
    late = [e for e in events[cleared_at:] if e.type.endswith("transcription.delta")]
    assert all(e.item_id == events[-1].item_id for e in late)


async def test_bad_events_get_error_events_and_the_session_goes_on(server):
    """Garbage JSON, unknown events, bad base64, a wrong rate, an empty commit: `error` events; the socket lives."""
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=x"
    async with connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        bad = [
            "{nope",
            "[]",
            '{"type": "response.create"}',
            '{"type": "input_audio_buffer.append", "audio": "***"}',
            '{"type": "input_audio_buffer.append"}',
            '{"type": "session.update", "session": {"type": "transcription", "audio": {"input": '
            '{"format": {"type": "audio/pcm", "rate": 7}}}}}',
            '{"type": "session.update", "session": {"type": "realtime"}}',
            '{"type": "session.update", "session": {"audio": {"input": {"transcription": {"language": "xx"}}}}}',
            '{"type": "input_audio_buffer.commit"}',
        ]
        for text in bad:
            await ws.send(text)
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert msg["type"] == "error" and msg["error"]["message"] and msg["error"]["code"], (text, msg)
        await ws.send(b"\x00\x01")
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "error"
        await ws.send('{"type": "session.update", "session": {"type": "transcription"}}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.updated"
        silence = base64.b64encode(b"\x00" * 4801).decode()  # an odd byte count: half a sample waits
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": silence}))
        await ws.send('{"type": "input_audio_buffer.clear"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "input_audio_buffer.cleared"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers={"Authorization": "Bearer wrong-token-1234"}):
            pass
    assert refused.value.response.status_code == 401


def test_energy_gate_opens_on_speech_and_closes_after_the_silence():
    """60 ms over the gate opens a turn (start moved back by the prefix padding); silence_duration_ms closes it."""
    gate = EnergyGate(TurnDetection(threshold=0.5, prefix_padding_ms=100, silence_duration_ms=500), 24000)
    t = np.arange(24000) / 24000
    tone = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    quiet = np.zeros(24000, np.float32)
    events = gate.process(np.concatenate([quiet[:12000], tone, quiet]))
    assert [e[0] for e in events] == ["started", "stopped"]
    assert events[0][1] == pytest.approx(500 - 100, abs=25) and events[1][1] == pytest.approx(1500 + 500, abs=25)
    assert gate.process(np.full(480, 0.001, np.float32)) == []  # -60 dBFS hum is not speech
