"""The OpenAI-compatible audio endpoints, driven by the real `openai` client (pinned in the test extra) against a
real server on 127.0.0.1 with the embedded model and synthesised speech; and their refusals of bad input."""

from __future__ import annotations

import asyncio
import io
import json
import urllib.request

import numpy as np
import openai
import pytest
import srt
import webvtt
from openai import AsyncOpenAI
from websockets.asyncio.client import connect

from app.runtime import Engine, EngineConfig
from app.server import DragomanServer, ServerConfig
from app.server.auth import AccessConfig
from app.server.limits import FileLimits
from engine.audio import SAMPLE_RATE
from tests.server_clients import serving, words
from tests.speech import SENTENCES, speech, write_wav

TOKEN = "openai-test-token-5d1e"
EN_WORDS = {"morning", "everyone", "weather", "london", "price", "coffee"}  # SENTENCES["en"][0]
DE_WORDS = {"morning", "weather", "berlin", "park", "afternoon"}  # SENTENCES["de"][0]'s English


@pytest.fixture
async def server(backend):
    files = FileLimits(max_upload_bytes=4 * 2**20, max_audio_s=60.0)
    async with serving(backend, max_sessions=2, access=AccessConfig(token=TOKEN), files=files) as srv:
        yield srv


def client(srv: DragomanServer, key: str = TOKEN) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"http://127.0.0.1:{srv.port}/v1", api_key=key, max_retries=0, timeout=300)


@pytest.fixture
def english_wav(audio_dir):
    audio, _ = speech("en", 0, audio_dir)
    return write_wav(audio_dir / "api-en0.wav", audio)


@pytest.mark.slow
async def test_translation_of_german_speech(server, audio_dir):
    """translations.create turns a German recording into English text."""
    audio, utt = speech("de", 0, audio_dir)
    path = write_wav(audio_dir / "api-de0.wav", audio)
    with open(path, "rb") as f:
        result = await client(server).audio.translations.create(model="whisper-1", file=f)
    assert len(words(result.text) & DE_WORDS) >= 3, result.text


@pytest.mark.slow
async def test_transcription_in_every_response_format(server, english_wav):
    """json, text, srt, vtt and verbose_json (segments and words) all carry the English sentence."""
    c = client(server)

    async def transcribe(**kwargs):
        with open(english_wav, "rb") as f:
            return await c.audio.transcriptions.create(model="gpt-4o-transcribe", file=f, language="en", **kwargs)

    as_json = await transcribe()
    assert len(words(as_json.text) & EN_WORDS) >= 4, as_json.text
    text = await transcribe(response_format="text")
    assert isinstance(text, str) and words(text) & EN_WORDS == words(as_json.text) & EN_WORDS
    subs = list(srt.parse(await transcribe(response_format="srt")))
    assert subs and len(words(" ".join(s.content for s in subs)) & EN_WORDS) >= 4
    assert all(a.start <= a.end <= b.start for a, b in zip(subs, subs[1:]))
    captions = webvtt.from_buffer(io.StringIO(await transcribe(response_format="vtt")))
    assert len(captions) >= 1 and len(words(" ".join(c.text for c in captions)) & EN_WORDS) >= 4
    verbose = await transcribe(response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert verbose.language == "en" and 5 < verbose.duration < 12
    assert verbose.segments and verbose.segments[0].start >= 0
    assert all(s.start <= s.end for s in verbose.segments)
    assert verbose.words and [w.word for w in verbose.words][:2] == verbose.text.split()[:2]
    assert all(a.end <= b.start + 1e-6 for a, b in zip(verbose.words, verbose.words[1:]))
    assert verbose.words[-1].end <= verbose.duration + 0.5


@pytest.mark.slow
async def test_streaming_deltas_concatenate_to_the_final_text(server, english_wav):
    """stream=True yields transcript.text.delta events, then transcript.text.done with their concatenation."""
    with open(english_wav, "rb") as f:
        stream = await client(server).audio.transcriptions.create(model="whisper-1", file=f, language="en", stream=True)
        deltas, done = [], None
        async for event in stream:
            if event.type == "transcript.text.delta":
                deltas.append(event.delta)
            elif event.type == "transcript.text.done":
                done = event.text
    assert done is not None and len(deltas) >= 2, deltas
    assert "".join(deltas).strip() == done
    assert len(words(done) & EN_WORDS) >= 4, done


@pytest.mark.slow
async def test_a_full_file_queue_answers_429_and_others_still_decode(backend, english_wav):
    """With one file job allowed, a second request while the first decodes is the client's RateLimitError."""
    async with (
        Engine(backend, EngineConfig(max_sessions=1)) as engine,
        DragomanServer(
            engine, ServerConfig(port=0, access=AccessConfig(token=TOKEN), files=FileLimits(max_jobs=1))
        ) as srv,
    ):
        c = client(srv)
        data = english_wav.read_bytes()
        first = asyncio.ensure_future(c.audio.transcriptions.create(model="whisper-1", file=("a.wav", data)))
        async with asyncio.timeout(30):
            while srv.hub.files.active == 0:
                await asyncio.sleep(0.01)
        with pytest.raises(openai.RateLimitError):
            await c.audio.transcriptions.create(model="whisper-1", file=("b.wav", data))
        assert len(words((await first).text) & EN_WORDS) >= 4


async def test_streaming_without_a_free_session_slot_is_503(backend, english_wav):
    """stream=true needs a live session slot: with none free the answer is 503 before any event (a 5xx error)."""
    async with (
        Engine(backend, EngineConfig(max_sessions=1)) as engine,
        DragomanServer(engine, ServerConfig(port=0, access=AccessConfig(token=TOKEN))) as srv,
    ):
        async with connect(srv.ws_url + "?token=" + TOKEN) as ws:
            await ws.send('{"type": "start", "language": "en"}')
            assert json.loads(await ws.recv())["type"] == "ready"
            with pytest.raises(openai.InternalServerError) as refused:
                with open(english_wav, "rb") as f:
                    await client(srv).audio.transcriptions.create(model="whisper-1", file=f, stream=True)
        assert refused.value.status_code == 503 and refused.value.body["code"] == "server_busy"


@pytest.mark.slow
async def test_a_client_leaving_a_stream_frees_its_session(server, audio_dir):
    """A client that stops reading the event stream and closes it ends the live session (its slot comes free)."""
    # 40 s of speech: still being decoded when the first delta arrives (one short sentence could be decoded to
    # its end before the client looked at the engine, which then had no session left to free)
    audio, _ = speech("en", 0, audio_dir)
    gap = np.zeros(SAMPLE_RATE // 2, np.float32)
    long_wav = write_wav(
        audio_dir / "api-en0-long.wav", np.concatenate([audio, gap] * int(40 * SAMPLE_RATE / (len(audio) + len(gap))))
    )
    with open(long_wav, "rb") as f:
        stream = await client(server).audio.transcriptions.create(model="whisper-1", file=f, stream=True)
        async for event in stream:
            assert event.type == "transcript.text.delta"
            break
        assert server.engine.n_sessions == 1
        await stream.close()
    async with asyncio.timeout(10):
        while server.engine.n_sessions:
            await asyncio.sleep(0.05)


async def test_wrong_key_is_the_clients_authentication_error(server, english_wav):
    """A wrong API key gets 401, which the client raises as openai.AuthenticationError, on every endpoint."""
    with open(english_wav, "rb") as f:
        with pytest.raises(openai.AuthenticationError):
            await client(server, "wrong-key-123456").audio.transcriptions.create(model="whisper-1", file=f)
    with pytest.raises(openai.AuthenticationError):
        await client(server, TOKEN[:-1]).models.list()


async def test_models_lists_what_is_served(server):
    """GET /v1/models lists the embedded model; retrieving it by id works, an unknown id is a 404."""
    c = client(server)
    models = await c.models.list()
    assert [m.id for m in models.data] == [server.hub.model_name]
    assert (await c.models.retrieve(server.hub.model_name)).id == server.hub.model_name
    with pytest.raises(openai.NotFoundError):
        await c.models.retrieve("gpt-9")


async def test_bad_uploads_get_openai_errors(server, english_wav, tmp_path):
    """Not audio, empty, too large, bad fields: 400/413 in OpenAI's error shape, raised by the client as such."""
    c = client(server)
    cases = [
        ({"file": ("notes.txt", b"this is not audio at all" * 100)}, openai.BadRequestError, "invalid_file"),
        ({"file": ("empty.wav", b"")}, openai.BadRequestError, "invalid_file"),
        ({"file": ("huge.wav", b"\0" * (5 * 2**20))}, openai.APIStatusError, "file_too_large"),
        ({"file": english_wav.read_bytes(), "response_format": "pdf"}, openai.BadRequestError, None),
        ({"file": english_wav.read_bytes(), "language": "klingon"}, openai.BadRequestError, None),
        ({"file": english_wav.read_bytes(), "temperature": 7}, openai.BadRequestError, None),
        (
            {
                "file": english_wav.read_bytes(),
                "timestamp_granularities": ["syllable"],
                "response_format": "verbose_json",
            },
            openai.BadRequestError,
            None,
        ),
    ]
    for kwargs, error, code in cases:
        kwargs = dict(kwargs)
        with pytest.raises(error) as raised:
            await c.audio.transcriptions.create(model="whisper-1", **kwargs)
        assert raised.value.status_code in (400, 413), kwargs.keys()
        body = raised.value.body
        assert isinstance(body, dict) and body.get("message"), body
        if code is not None:
            assert body.get("code") == code, body
    # under the byte limit but longer than the server's 60 s of audio: 413 as well
    long_audio = write_wav(tmp_path / "long.wav", np.zeros(16000 * 70, np.float32))
    with pytest.raises(openai.APIStatusError) as raised:
        with open(long_audio, "rb") as f:
            await c.audio.transcriptions.create(model="whisper-1", file=f)
    assert raised.value.status_code == 413


async def test_not_multipart_and_garbage_bodies(server):
    """A JSON or garbage body, or a GET, is refused cleanly; the server goes on serving."""
    url = f"http://127.0.0.1:{server.port}/v1/audio/transcriptions"

    def post(body: bytes, content_type: str) -> tuple[int, dict]:
        req = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": content_type, "Authorization": f"Bearer {TOKEN}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    for body, ctype in [
        (b'{"file": "x"}', "application/json"),
        (b"\xff" * 1000, "multipart/form-data; boundary=zz"),
        (
            b'--zz\r\nContent-Disposition: form-data; name="model"\r\n\r\nw\r\n--zz--\r\n',
            "multipart/form-data; boundary=zz",
        ),
    ]:
        status, answer = await asyncio.to_thread(post, body, ctype)
        assert status == 400 and answer["error"]["message"], (ctype, status, answer)
    assert (await client(server).models.list()).data


def test_english_sentence_is_the_one_the_words_come_from():
    """(Guard) the key words are in the sentence the tests speak."""
    assert EN_WORDS <= words(SENTENCES["en"][0].text)
