"""`WS /v1/listen`: Deepgram's live streaming API, for anything built on Deepgram's SDKs (docs/api.md).

The handshake's query parameters configure the stream (`encoding`, `sample_rate`, `channels`, `language`,
`interim_results`, `punctuate`, `endpointing`, `utterance_end_ms`, `vad_events`, and `model`, which clients always
send and which is accepted whatever it names); binary messages carry the audio as a byte stream (frames may split
samples); text messages are `KeepAlive`, `Finalize` and `CloseStream`. Dragoman answers with `Results`:
its commits as finals (`is_final: true`), its tentative tail as interims (`is_final: false`, with
`interim_results=true`), `speech_final: true` on the finals that close a segment at a pause, and `Metadata` before
closing. The Dragoman extension `task=translate` turns the stream into English captions.

Parsing (`ListenParams`, `PcmStream`) is sans-I/O; `ListenConnection` is the Connection subclass that speaks it.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import re
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import ConfigError
from engine.events import Commit, Error, Partial
from engine.languages import known_languages, parse_language

from .. import protocol as p
from ..sockets import MessageSocket
from .common import TABLES, HandshakeRefused, JsonEvent, TurnConnection, downmix
from .openai import Piece, word_times

if TYPE_CHECKING:
    from app.runtime import LiveSession

    from ..hub import DragomanHub

ENCODINGS = ("linear16", "mulaw", "alaw")  # and no encoding: a WAV stream (its header says the format)
_PUNCTUATION = re.compile(r"[^\w\s'’-]")


@dataclass(frozen=True)
class ListenParams:
    """The query parameters of a /v1/listen handshake, validated."""

    encoding: str | None = None  # None: the stream is a WAV file (header first)
    sample_rate: int = 16000
    channels: int = 1
    language: str | None = "en"  # None: detect ("multi")
    task: str = "transcribe"  # Dragoman extension: "translate" gives English whatever is spoken
    interim_results: bool = False
    punctuate: bool = True  # Whisper always punctuates; false strips punctuation from transcripts
    endpointing: bool = True  # false: no speech_final (segments still end at pauses)
    utterance_end_ms: int | None = None  # send UtteranceEnd after a segment's last word
    vad_events: bool = False  # send SpeechStarted
    model: str = "nova-3"  # accepted whatever it is; Dragoman's model answers

    @staticmethod
    def parse(query: str, known_languages: Any = None, default_language: str | None = "en") -> ListenParams:
        """From a query string; HandshakeRefused(400) with a message naming the parameter otherwise."""
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}

        def flag(name: str, default: bool) -> bool:
            value = q.get(name)
            if value is None or value == "":
                return default
            if value.lower() in ("true", "1"):
                return True
            if value.lower() in ("false", "0"):
                return False
            raise HandshakeRefused(400, f"{name} must be true or false, got {value!r}")

        def integer(name: str, default: int | None, lo: int, hi: int) -> int | None:
            value = q.get(name)
            if value is None or value == "":
                return default
            try:
                n = int(value)
            except ValueError:
                raise HandshakeRefused(400, f"{name} must be a whole number, got {value!r}") from None
            if not lo <= n <= hi:
                raise HandshakeRefused(400, f"{name} must be within {lo}..{hi}, got {n}")
            return n

        encoding = q.get("encoding") or None
        if encoding is not None and encoding not in ENCODINGS:
            raise HandshakeRefused(
                400,
                f"encoding {encoding!r} is not supported; use {', '.join(ENCODINGS)}, or send "
                "a WAV stream without an encoding",
            )
        if encoding is not None and not q.get("sample_rate"):
            raise HandshakeRefused(400, "sample_rate is required with encoding")
        sample_rate = integer("sample_rate", 16000, 8000, 192000)
        channels = integer("channels", 1, 1, 8)
        code = q.get("language") or default_language or "multi"
        try:
            language = None if code.lower() == "multi" else parse_language(code, known_languages, detect="multi")
        except ConfigError as e:
            raise HandshakeRefused(400, str(e)) from None
        task = q.get("task") or "transcribe"
        if task not in p.TASKS:
            raise HandshakeRefused(400, f"task must be transcribe or translate, got {task!r}")
        endpointing = q.get("endpointing")
        if endpointing not in (None, "", "false", "true") and not (endpointing or "").isdigit():
            raise HandshakeRefused(400, f"endpointing must be a number of milliseconds or false, got {endpointing!r}")
        return ListenParams(
            encoding=encoding,
            sample_rate=sample_rate or 16000,
            channels=channels or 1,
            language=language,
            task=task,
            interim_results=flag("interim_results", False),
            punctuate=flag("punctuate", True) or flag("smart_format", False),
            endpointing=endpointing != "false",
            utterance_end_ms=integer("utterance_end_ms", None, 0, 60000),
            vad_events=flag("vad_events", False),
            model=q.get("model") or "nova-3",
        )


MAX_WAV_HEADER = 64 * 1024


class PcmStream:
    """Binary messages -> float32 mono samples. The audio is a byte stream: a sample split across two messages is
    joined; a WAV stream's header is read (and may itself span messages) before its data."""

    def __init__(self, params: ListenParams) -> None:
        self.encoding = params.encoding
        self.sample_rate, self.channels = params.sample_rate, params.channels
        self.width = 1 if self.encoding in TABLES else 2
        self.header: bytes | None = b"" if self.encoding is None else None  # collecting a WAV header
        self.rest = b""

    def _parse_wav(self) -> int | None:
        """Once the header is complete: the offset where samples start (and the format is set); else None."""
        h = self.header or b""
        if len(h) >= 4 and h[:4] != b"RIFF":
            raise p.ProtocolError(
                p.ErrorCode.BAD_AUDIO,
                "without an encoding parameter the stream must be a WAV file "
                "(RIFF header); raw PCM needs encoding=linear16&sample_rate=",
            )
        pos, fmt = 12, None
        while pos + 8 <= len(h):
            cid, size = h[pos : pos + 4], int.from_bytes(h[pos + 4 : pos + 8], "little")
            if cid == b"data":
                if fmt is None:
                    raise p.ProtocolError(p.ErrorCode.BAD_AUDIO, "WAV data before its fmt chunk")
                return pos + 8
            if pos + 8 + size > len(h):
                return None
            if cid == b"fmt ":
                fmt = h[pos + 8 : pos + 8 + size]
                tag, channels, rate = (
                    int.from_bytes(fmt[0:2], "little"),
                    int.from_bytes(fmt[2:4], "little"),
                    int.from_bytes(fmt[4:8], "little"),
                )
                bits = int.from_bytes(fmt[14:16], "little")
                if tag not in (1, 0xFFFE) or bits != 16 or not 1 <= channels <= 8 or not 8000 <= rate <= 192000:
                    raise p.ProtocolError(
                        p.ErrorCode.BAD_AUDIO,
                        "only 16-bit PCM WAV streams are supported "
                        f"(got format {tag}, {bits} bits, {channels} ch, {rate} Hz)",
                    )
                self.channels, self.sample_rate, self.width = channels, rate, 2
            pos += 8 + size + (size & 1)
        return None

    def decode(self, data: bytes) -> np.ndarray:
        if self.header is not None:
            self.header += data
            start = self._parse_wav()
            if start is None:
                if len(self.header) > MAX_WAV_HEADER:
                    raise p.ProtocolError(p.ErrorCode.BAD_AUDIO, "the WAV header is over 64 KiB")
                return np.zeros(0, np.float32)
            data, self.header = self.header[start:], None
        data = self.rest + data
        frame = self.width * self.channels
        n = len(data) // frame * frame
        data, self.rest = data[:n], data[n:]
        if self.encoding in TABLES:
            samples = TABLES[self.encoding][np.frombuffer(data, np.uint8)]
        else:
            samples = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
        return downmix(samples, self.channels)


# --- the connection -----------------------------------------------------------------------------------------------


class ListenConnection(TurnConnection):
    """One Deepgram live stream."""

    def __init__(self, server: DragomanHub, ws: MessageSocket, params: ListenParams) -> None:
        super().__init__(server, ws)
        self._init_turns()
        self.params = params
        self.task, self.language, self.sample_rate = params.task, params.language, params.sample_rate
        self.pcm = PcmStream(params)
        self.request_id = str(uuid.uuid4())
        self.model_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, "dragoman:" + server.model_name))
        self.sha = hashlib.sha256()
        self.finals: list[Commit] = []  # commits of the current engine update, sent together
        self.flush_scheduled = False
        self.in_speech = False
        self.last_word_end = 0.0
        self.metadata_sent = False

    @classmethod
    def from_scope(cls, hub: DragomanHub, sock: MessageSocket, scope: dict[str, Any]) -> ListenConnection:
        languages = known_languages(hub.engine.backend)
        params = ListenParams.parse((scope.get("query_string") or b"").decode("latin-1"), languages)
        if hub.capacity_left <= 0:
            raise HandshakeRefused(503, "every live session slot is in use; try again later")
        return cls(hub, sock, params)

    # wire format -------------------------------------------------------------------------------------------------

    def _error_message(self, code: p.ErrorCode | str, message: str) -> JsonEvent:
        code = code.value if isinstance(code, p.ErrorCode) else code
        return JsonEvent({"type": "Error", "variant": code, "description": message, "message": message}, ascii=True)

    def _results(
        self,
        pieces: list[Piece],
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
        at_s: float | None = None,
    ) -> JsonEvent:
        offset = self.turn_offset_s
        shifted = [Piece(x.text, x.start_s + offset, x.end_s + offset) for x in pieces]
        text = " ".join(x.text.strip() for x in shifted if x.text.strip())
        if not self.params.punctuate:
            text = _PUNCTUATION.sub("", text)
        start = shifted[0].start_s if shifted else (at_s if at_s is not None else self.received_s)
        end = shifted[-1].end_s if shifted else start
        words = []
        for w in word_times(shifted):
            bare = _PUNCTUATION.sub("", w["word"]).lower() or w["word"]
            words.append(
                {"word": bare, "start": w["start"], "end": w["end"], "confidence": 1.0, "punctuated_word": w["word"]}
            )
        if words:
            self.last_word_end = words[-1]["end"]
        # interim results are superseded by the next one: they are what backpressure drops first
        return JsonEvent(
            {
                "type": "Results",
                "is_final": is_final,
                "speech_final": speech_final,
                "from_finalize": from_finalize,
                "channel_index": [0, 1],
                "start": round(start, 3),
                "duration": round(max(0.0, end - start), 3),
                "channel": {"alternatives": [{"transcript": text, "confidence": 1.0, "words": words}]},
                "metadata": {
                    "request_id": self.request_id,
                    "model_uuid": self.model_uuid,
                    "model_info": {"name": self.server.model_name, "version": "dragoman", "arch": "whisper"},
                },
            },
            droppable=not is_final,
        )

    def _send_finals(self, speech_final: bool = False, from_finalize: bool = False) -> None:
        self.flush_scheduled = False
        if not self.finals:
            return
        pieces = [Piece(c.text, c.start_s, c.end_s) for c in self.finals]
        self.finals = []
        self.post(
            self._results(
                pieces,
                is_final=True,
                speech_final=speech_final and self.params.endpointing,
                from_finalize=from_finalize,
            )
        )
        if speech_final:
            self._utterance_end()

    def _utterance_end(self) -> None:
        self.in_speech = False
        if self.params.utterance_end_ms is not None:
            self.post(
                JsonEvent({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": self.last_word_end}, ascii=True)
            )

    def _speech(self, start_s: float | None) -> None:
        if not self.in_speech:
            self.in_speech = True
            if self.params.vad_events:
                t = self.turn_offset_s + (start_s or 0.0)
                self.post(JsonEvent({"type": "SpeechStarted", "channel": [0, 1], "timestamp": round(t, 3)}, ascii=True))

    def _render(self, event: Commit | Partial | Error, live: LiveSession) -> list[p.Outgoing]:
        # The engine delivers one update's events together: commits are held until the update's last event, so a
        # segment's final commits and the cleared tail that closes it become one final with speech_final.
        if isinstance(event, Commit):
            self._speech(event.start_s)
            self.finals.append(event)
            if not self.flush_scheduled:
                self.flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._send_finals)
            return []
        if isinstance(event, Partial):
            if not event.text:
                if self.finals:
                    self._send_finals(speech_final=True)
                return []
            self._send_finals()
            self._speech(event.start_s)
            if self.params.interim_results:
                start = event.start_s or 0.0
                return [self._results([Piece(event.text, start, event.end_s or start)], is_final=False)]
            return []
        return [self._error_message(event.code, event.message)]

    def on_turn_over(self, live: LiveSession) -> None:
        finalize = not self.closing_after_flush  # (else CloseStream or the server ending the stream)
        had = bool(self.finals)
        self._send_finals(speech_final=True, from_finalize=finalize)
        if finalize and not had:  # Finalize always answers, even when nothing was pending
            self.post(self._results([], is_final=True, from_finalize=True, at_s=self.received_s))

    def _metadata(self) -> JsonEvent:
        self.metadata_sent = True
        return JsonEvent(
            {
                "type": "Metadata",
                "transaction_key": "deprecated",
                "request_id": self.request_id,
                "sha256": self.sha.hexdigest(),
                "created": datetime.datetime.now(datetime.UTC).isoformat(),
                "duration": round(self.received_s, 3),
                "channels": self.params.channels,
                "models": [self.model_uuid],
                "model_info": {
                    self.model_uuid: {"name": self.server.model_name, "version": "dragoman", "arch": "whisper"}
                },
            },
            ascii=True,
        )

    def on_close_stream(self) -> None:
        if not self.metadata_sent:
            self.post(self._metadata())
        self._spawn(self._drain_and_close())

    async def _drain_and_close(self) -> None:
        await self._drain(self.config.send_timeout_s)
        await self._close_socket(1000, "")

    async def end_by_server(self, code: p.ErrorCode, message: str, close_code: int, reason: str) -> None:
        self.closing_after_flush = True
        await super().end_by_server(code, message, close_code, reason)

    def _session_over_metadata(self) -> None:
        if not self.metadata_sent:
            self.post(self._metadata())

    async def _session_over(self, live: LiveSession) -> None:
        await super()._session_over(live)
        if self.ending:
            self._session_over_metadata()

    # input -------------------------------------------------------------------------------------------------------

    async def _on_text(self, text: str) -> None:
        if len(text) > self.config.limits.max_text_bytes:
            raise p.ProtocolError(
                p.ErrorCode.TOO_LARGE, f"text message is over {self.config.limits.max_text_bytes} bytes"
            )
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            raise p.ProtocolError(
                p.ErrorCode.BAD_JSON, "text messages must be JSON: KeepAlive, Finalize or CloseStream"
            ) from None
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind == "KeepAlive":
            return
        if kind == "Finalize":
            if not self.flush():
                self._send_finals(from_finalize=True)
                self.post(self._results([], is_final=True, from_finalize=True, at_s=self.received_s))
            return
        if kind == "CloseStream":
            self.closing_after_flush = True
            if not self.flush() and self.flushing is None:
                self.on_close_stream()
            return
        raise p.ProtocolError(
            p.ErrorCode.UNKNOWN_TYPE, f"unknown message type {str(kind)[:40]!r} (KeepAlive, Finalize, CloseStream)"
        )

    def _on_binary(self, data: bytes) -> None:
        if not data:  # Deepgram's older way to say CloseStream
            self.closing_after_flush = True
            if not self.flush() and self.flushing is None:
                self.on_close_stream()
            return
        if self.closing_after_flush:
            raise p.ProtocolError(p.ErrorCode.NOT_STARTED, "audio after CloseStream is ignored")
        self.sha.update(data)
        samples = self.pcm.decode(data)
        if samples.size:
            if not np.isfinite(samples).all():  # (cannot happen for integer PCM; guards future encodings)
                raise p.ProtocolError(p.ErrorCode.BAD_AUDIO, "non-finite samples")
            self.feed_turn(samples, self.pcm.sample_rate)
