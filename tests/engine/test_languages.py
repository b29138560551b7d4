"""Spoken-language codes (engine/languages.py): one rule and one message for a bad code, whichever way it comes in:
the CLI's file, stream, mic and serve; the WebSocket `start` and `language` messages; the OpenAI, Deepgram and
Realtime APIs. Fast tier: a tiny random Whisper behind the real tokenizer stands in for the model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import openai
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from app.cli import main
from engine.errors import ConfigError
from engine.languages import known_languages, language_error, parse_language
from tests.server_clients import serving
from tests.speech import write_wav

# what every entry point says about an unknown code, before its own way of asking for detection
UNKNOWN_XX = "unknown language 'xx'; use a code such as de, fr, es"


def test_codes_are_normalised_and_detect_has_three_spellings(tiny_whisper_bundle) -> None:
    """None, "" and "auto" mean detect; case, spaces and a region subtag are ignored; the model's codes are checked."""
    known = known_languages(tiny_whisper_bundle)
    assert known is not None and "de" in known and "haw" in known and "xx" not in known
    for detect in (None, "", "auto", " AUTO "):
        assert parse_language(detect, known) is None
    assert parse_language(" DE ", known) == "de"
    assert parse_language("en-US", known) == "en"
    assert parse_language("haw", known) == "haw"
    assert parse_language("xx") == "xx"  # well-formed: without the model's codes it cannot be refused
    for bad in ("xx", "german", "d", "de_DE", "e1", 7):
        with pytest.raises(ConfigError) as raised:
            parse_language(bad, known)
        assert str(raised.value) == language_error(bad)
    assert known_languages(object()) is None  # a family without language tokens (S2T2) takes any code


@pytest.fixture
def tiny_model(monkeypatch: pytest.MonkeyPatch, tiny_whisper_bundle) -> list[str | None]:
    """Every command's load_model returns the tiny Whisper; the list records which models were asked for."""
    import engine.models.loading

    loads: list[str | None] = []

    def load_model(name=None, device="auto", *args, **kwargs):
        loads.append(name)
        return tiny_whisper_bundle

    monkeypatch.setattr(engine.models.loading, "load_model", load_model)
    return loads


class FakeMicrophone:
    """Stands in for app.mic.Microphone: resolves to a device, never captures (the language fails first)."""

    started = False

    def __init__(self, config) -> None:
        self.config = config

    def start(self) -> None:
        FakeMicrophone.started = True

    def stop(self) -> None:
        pass


def _cli_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Runs `dragoman argv` in this process; it must fail with exit 2 and one error line, which is returned."""
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dragoman: error:")]
    assert len(lines) == 1, lines
    return lines[0].removeprefix("dragoman: error: ")


def test_every_command_refuses_an_unknown_language_alike(tmp_path: Path, capsys, monkeypatch, tiny_model) -> None:
    """`--language xx` (well-formed, unknown to the model) gets the same message from file, stream, mic and serve;
    mic says so before its microphone starts capturing."""
    import app.mic

    monkeypatch.setattr(app.mic, "Microphone", FakeMicrophone)
    wav = str(write_wav(tmp_path / "quiet.wav", np.zeros(16000, np.float32)))
    expected = language_error("xx")
    assert expected.startswith(UNKNOWN_XX)
    for argv in (["file", wav], ["stream", wav], ["mic"], ["serve", "--port", "0"]):
        assert _cli_error(capsys, [*argv, "--language", "xx"]) == expected, argv
    assert len(tiny_model) == 4  # each found it out from the model's own codes
    assert not FakeMicrophone.started


def test_a_malformed_language_fails_before_the_model_loads(tmp_path: Path, capsys, monkeypatch, tiny_model) -> None:
    """A --language that is no code at all fails every command with the same message without loading a model."""
    import app.mic

    monkeypatch.setattr(app.mic, "Microphone", FakeMicrophone)
    wav = str(write_wav(tmp_path / "quiet.wav", np.zeros(16000, np.float32)))
    for argv in (["file", wav], ["stream", wav], ["mic"], ["serve", "--port", "0"]):
        assert _cli_error(capsys, [*argv, "--language", "german"]) == language_error("german"), argv
    assert tiny_model == []


def test_the_protocol_refuses_a_malformed_language_with_the_same_message() -> None:
    """A `start` or `language` message whose language is no code: BAD_MESSAGE with the rule's message (null: detect)."""
    from app.server.protocol import ErrorCode, ProtocolError, parse_text

    for text in ('{"type": "start", "language": "german"}', '{"type": "language", "language": "german"}'):
        with pytest.raises(ProtocolError) as raised:
            parse_text(text)
        assert raised.value.code == ErrorCode.BAD_MESSAGE
        assert raised.value.message == language_error("german", "null")


@pytest.fixture
async def tiny_server(tiny_backend):
    async with serving(tiny_backend, max_sessions=2) as srv:
        yield srv


async def test_every_server_api_refuses_an_unknown_language_alike(tiny_server, tmp_path: Path) -> None:
    """`xx` through the WebSocket start and language messages, an OpenAI upload, a Deepgram handshake and a Realtime
    session.update: each answers in its own error shape with the same message (its own word for "detect")."""
    srv = tiny_server
    messages: dict[str, str] = {}
    async with connect(srv.ws_url) as ws:
        await ws.send('{"type": "start", "language": "xx"}')
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert (msg["type"], msg["code"]) == ("error", "bad_message")
        messages["start"] = msg["message"]
        await ws.send('{"type": "start", "language": "de"}')  # the connection is still usable
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
        await ws.send('{"type": "language", "language": "xx"}')
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert (msg["type"], msg["code"]) == ("error", "bad_message")
        messages["language"] = msg["message"]

    wav = write_wav(tmp_path / "quiet.wav", np.zeros(16000, np.float32))
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{srv.port}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.audio.transcriptions.create(model="whisper-1", file=wav.read_bytes(), language="xx")
    messages["openai"] = refused.value.body["message"]

    with pytest.raises(InvalidStatus) as handshake:
        async with connect(f"ws://127.0.0.1:{srv.port}/v1/listen?language=xx"):
            pass
    assert handshake.value.response.status_code == 400
    messages["deepgram"] = handshake.value.response.body.decode()

    async with connect(f"ws://127.0.0.1:{srv.port}/v1/realtime?model=x") as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(
            json.dumps(
                {"type": "session.update", "session": {"audio": {"input": {"transcription": {"language": "xx"}}}}}
            )
        )
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert msg["type"] == "error" and msg["error"]["param"] == "transcription.language", msg
        messages["realtime"] = msg["error"]["message"]

    for via, detect in (("start", "null"), ("language", "null"), ("openai", "leave it out"), ("realtime", "null")):
        assert messages[via] == language_error("xx", detect), via
    assert language_error("xx", "multi") in messages["deepgram"]  # the refusal's body may wrap it
