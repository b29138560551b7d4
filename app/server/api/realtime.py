"""`WS /v1/realtime`: OpenAI's Realtime API for transcription, for apps built on it (docs/api.md).

Client events: `session.update` (GA, `session.type = "transcription"`) or the older `transcription_session.update`,
`input_audio_buffer.append` (base64 audio: PCM16 at 24 kHz by default; G.711 µ-law/A-law at 8 kHz), `.commit`,
`.clear`. Server events: `session.created`, `session.updated` / `transcription_session.updated`, server VAD's
`input_audio_buffer.speech_started` / `speech_stopped` / `committed`, `input_audio_buffer.cleared`, and per turn
(item) `conversation.item.input_audio_transcription.delta` — one per Dragoman commit, sent while the speaker is
still talking — then `.completed` with the whole turn's transcript; `error` in OpenAI's shape.

Dragoman's extension lives in `session.dragoman` (either update event): `{"task": "translate"}` gives English
whatever is spoken; `{"partials": true}` adds `dragoman.transcription.partial` events carrying the tentative tail
(replace, don't append). Turn detection is an energy gate on the appended audio (`server_vad`: `threshold` 0..1
maps to -60..-20 dBFS, `silence_duration_ms`, `prefix_padding_ms`); `turn_detection: null` leaves turns to the
client's `commit`. Each turn is one engine session (api/common.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import ConfigError
from engine.events import Commit, Error, Partial
from engine.languages import known_languages, parse_language

from .. import protocol as p
from ..sockets import MessageSocket
from .common import TABLES, HandshakeRefused, JsonEvent, TurnConnection

if TYPE_CHECKING:
    from app.runtime import LiveSession

    from ..hub import DragomanHub

log = logging.getLogger("app.server")
FORMATS = {
    "audio/pcm": "pcm16",
    "pcm16": "pcm16",
    "audio/pcmu": "mulaw",
    "g711_ulaw": "mulaw",
    "audio/pcma": "alaw",
    "g711_alaw": "alaw",
}


@dataclass(frozen=True)
class TurnDetection:
    """server_vad's parameters (OpenAI's names and defaults)."""

    threshold: float = 0.5  # 0..1 -> an RMS gate from -60 dBFS (0) to -20 dBFS (1); 0.5 is -40 dBFS
    prefix_padding_ms: int = 300  # speech_started's audio_start_ms is this much before the gate opened
    silence_duration_ms: int = 500  # this much audio under the gate ends the turn

    @property
    def gate_rms(self) -> float:
        return 10 ** ((-60 + 40 * self.threshold) / 20)


@dataclass(frozen=True)
class RealtimeSettings:
    """A transcription session's settings, as the update events set them."""

    encoding: str = "pcm16"  # pcm16 | mulaw | alaw
    sample_rate: int = 24000
    language: str | None = None  # None: detect
    prompt: str = ""
    model: str = "gpt-4o-transcribe"  # accepted whatever it is; Dragoman's model answers
    turn_detection: TurnDetection | None = TurnDetection()
    task: str = "transcribe"  # Dragoman extension
    partials: bool = False  # Dragoman extension


class BadEvent(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def _object(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadEvent("invalid_type", f"{name} must be an object", name)
    return value


def parse_session(event: dict[str, Any], current: RealtimeSettings, known_languages: Any = None) -> RealtimeSettings:
    """The settings after a `session.update` or `transcription_session.update`; BadEvent if they cannot apply."""
    session = _object(event.get("session"), "session")
    s = current
    if event["type"] == "session.update":
        kind = session.get("type", "transcription")
        if kind != "transcription":
            raise BadEvent(
                "unsupported_session_type",
                f"this server only runs transcription sessions, not {str(kind)[:40]!r}",
                "session.type",
            )
        audio_in = _object(_object(session.get("audio"), "session.audio").get("input"), "session.audio.input")
        fmt = audio_in.get("format")
        if fmt is not None:
            fmt = _object(fmt, "session.audio.input.format")
            encoding = FORMATS.get(str(fmt.get("type", "audio/pcm")))
            if encoding is None:
                raise BadEvent(
                    "invalid_value", f"unsupported audio format {fmt.get('type')!r}", "session.audio.input.format.type"
                )
            rate = fmt.get("rate", 24000 if encoding == "pcm16" else 8000)
            s = replace(s, encoding=encoding, sample_rate=_rate(rate))
        transcription = audio_in.get("transcription", ...)
        turn = audio_in.get("turn_detection", ...)
    else:
        fmt = session.get("input_audio_format")
        if fmt is not None:
            encoding = FORMATS.get(str(fmt))
            if encoding is None:
                raise BadEvent("invalid_value", f"unsupported input_audio_format {fmt!r}", "input_audio_format")
            s = replace(s, encoding=encoding, sample_rate=24000 if encoding == "pcm16" else 8000)
        transcription = session.get("input_audio_transcription", ...)
        turn = session.get("turn_detection", ...)
    if transcription is not ... and transcription is not None:
        t = _object(transcription, "transcription")
        language = t.get("language")
        if language is not None:
            if not isinstance(language, str):
                raise BadEvent("invalid_type", "language must be a string", "transcription.language")
            try:
                language = parse_language(language, known_languages, detect="null")
            except ConfigError as e:
                raise BadEvent("invalid_value", str(e), "transcription.language") from None
        prompt = t.get("prompt") or ""
        if not isinstance(prompt, str):
            raise BadEvent("invalid_type", "prompt must be a string", "transcription.prompt")
        s = replace(s, language=language, prompt=prompt, model=str(t.get("model") or s.model))
    if turn is not ...:
        if turn is None:
            s = replace(s, turn_detection=None)
        else:
            t = _object(turn, "turn_detection")
            if t.get("type", "server_vad") not in ("server_vad", "semantic_vad"):
                raise BadEvent(
                    "invalid_value",
                    f"turn_detection.type must be server_vad, got {t.get('type')!r}",
                    "turn_detection.type",
                )
            base = s.turn_detection or TurnDetection()
            try:
                threshold = float(t.get("threshold", base.threshold))
                padding = int(t.get("prefix_padding_ms", base.prefix_padding_ms))
                silence = int(t.get("silence_duration_ms", base.silence_duration_ms))
            except (TypeError, ValueError):
                raise BadEvent("invalid_type", "turn_detection values must be numbers", "turn_detection") from None
            if not (0.0 <= threshold <= 1.0 and 0 <= padding <= 10000 and 100 <= silence <= 10000):
                raise BadEvent(
                    "invalid_value",
                    "turn_detection: threshold 0..1, prefix_padding_ms 0..10000, silence_duration_ms 100..10000",
                    "turn_detection",
                )
            s = replace(s, turn_detection=TurnDetection(threshold, padding, silence))
    ext = _object(session.get("dragoman"), "session.dragoman")
    if "task" in ext:
        if ext["task"] not in p.TASKS:
            raise BadEvent("invalid_value", "dragoman.task must be transcribe or translate", "session.dragoman.task")
        s = replace(s, task=ext["task"])
    if "partials" in ext:
        s = replace(s, partials=bool(ext["partials"]))
    return s


def _rate(value: Any) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value != int(value)
        or not 8000 <= value <= 192000
    ):
        raise BadEvent(
            "invalid_value",
            f"rate must be a whole number of Hz within 8000..192000 (OpenAI clients send 24000), got {value!r}",
            "session.audio.input.format.rate",
        )
    return int(value)


def _event_id() -> str:
    return "event_" + uuid.uuid4().hex[:20]


class EnergyGate:
    """server_vad: 20 ms frames over or under an RMS level; turns end after `silence_duration_ms` under it."""

    def __init__(self, config: TurnDetection, sample_rate: int) -> None:
        self.config, self.rate = config, sample_rate
        self.frame = max(1, sample_rate // 50)
        self.pending = np.zeros(0, np.float32)
        self.t_ms = 0.0  # audio time of the end of what was classified
        self.in_speech = False
        self.loud_ms = 0.0  # consecutive speech while closed (opening needs 60 ms: clicks are not speech)
        self.quiet_ms = 0.0

    def process(self, samples: np.ndarray) -> list[tuple[str, float]]:
        """("started", audio_start_ms) / ("stopped", audio_end_ms) events for the frames completed by `samples`."""
        data = np.concatenate([self.pending, samples]) if self.pending.size else samples
        n = len(data) // self.frame
        self.pending = data[n * self.frame :]
        out: list[tuple[str, float]] = []
        if n == 0:
            return out
        frames = data[: n * self.frame].reshape(n, self.frame)
        loud = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) >= self.config.gate_rms
        step = 1000.0 * self.frame / self.rate
        for is_loud in loud:
            self.t_ms += step
            if not self.in_speech:
                self.loud_ms = self.loud_ms + step if is_loud else 0.0
                if self.loud_ms >= 60:
                    self.in_speech, self.quiet_ms = True, 0.0
                    out.append(("started", max(0.0, self.t_ms - self.loud_ms - self.config.prefix_padding_ms)))
            else:
                self.quiet_ms = 0.0 if is_loud else self.quiet_ms + step
                if self.quiet_ms >= self.config.silence_duration_ms:
                    self.in_speech, self.loud_ms = False, 0.0
                    out.append(("stopped", self.t_ms))
        return out


class RealtimeConnection(TurnConnection):
    """One OpenAI Realtime transcription session."""

    def __init__(self, server: DragomanHub, ws: MessageSocket) -> None:
        super().__init__(server, ws)
        self._init_turns()
        self.settings = RealtimeSettings()
        self.session_id = "sess_" + uuid.uuid4().hex[:20]
        self.gate: EnergyGate | None = EnergyGate(self.settings.turn_detection, 24000)  # type: ignore[arg-type]
        self.rest = b""  # half a sample between appends
        self.item_id: str | None = None  # the open item (audio not yet committed)
        self.previous_item: str | None = None
        self.turn_items: dict[str, str] = {}  # engine session id -> item id
        self.turn_texts: dict[str, list[str]] = {}
        self.flush_pending = False
        self.next_turn_item: str | None = None  # committed while its audio waited for a flush to end
        self.beta = False  # the client speaks the older transcription_session.* events
        self.post(self._event("session.created", session=self._session_object()))

    @classmethod
    def from_scope(cls, hub: DragomanHub, sock: MessageSocket, scope: dict[str, Any]) -> RealtimeConnection:
        if hub.capacity_left <= 0:
            raise HandshakeRefused(503, "every live session slot is in use; try again later")
        return cls(hub, sock)

    # wire format -------------------------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> JsonEvent:
        # the tentative tail (a Dragoman extension) is superseded by the next one: what backpressure drops first
        return JsonEvent(
            {"type": kind, "event_id": _event_id(), **fields}, droppable=kind == "dragoman.transcription.partial"
        )

    def _session_object(self) -> dict[str, Any]:
        s = self.settings
        turn = (
            None
            if s.turn_detection is None
            else {
                "type": "server_vad",
                "threshold": s.turn_detection.threshold,
                "prefix_padding_ms": s.turn_detection.prefix_padding_ms,
                "silence_duration_ms": s.turn_detection.silence_duration_ms,
            }
        )
        transcription = {"model": s.model, "language": s.language, "prompt": s.prompt}
        fmt_type = {"pcm16": "audio/pcm", "mulaw": "audio/pcmu", "alaw": "audio/pcma"}[s.encoding]
        extension = {"task": s.task, "partials": s.partials, "model": self.server.model_name}
        if self.beta:
            return {
                "id": self.session_id,
                "object": "realtime.transcription_session",
                "input_audio_format": {"pcm16": "pcm16", "mulaw": "g711_ulaw", "alaw": "g711_alaw"}[s.encoding],
                "input_audio_transcription": transcription,
                "turn_detection": turn,
                "include": [],
                "dragoman": extension,
            }
        return {
            "type": "transcription",
            "id": self.session_id,
            "object": "realtime.transcription_session",
            "audio": {
                "input": {
                    "format": {"type": fmt_type, "rate": s.sample_rate},
                    "transcription": transcription,
                    "turn_detection": turn,
                    "noise_reduction": None,
                }
            },
            "include": [],
            "dragoman": extension,
        }

    def _error_message(self, code: p.ErrorCode | str, message: str, param: str | None = None) -> JsonEvent:
        code = code.value if isinstance(code, p.ErrorCode) else code
        kind = "server_error" if code in ("internal", "busy", "shutting_down", "timeout") else "invalid_request_error"
        return self._event(
            "error", error={"type": kind, "code": code, "message": message, "param": param, "event_id": None}
        )

    def _render(self, event: Commit | Partial | Error, live: LiveSession) -> list[p.Outgoing]:
        item = self.turn_items.get(str(live.id), self.item_id or "")
        if isinstance(event, Commit):
            texts = self.turn_texts.setdefault(str(live.id), [])
            delta = event.text if texts else event.text.lstrip()
            texts.append(delta)
            return [
                self._event(
                    "conversation.item.input_audio_transcription.delta", item_id=item, content_index=0, delta=delta
                )
            ]
        if isinstance(event, Partial):
            if not self.settings.partials:
                return []
            offset_ms = self.turn_offset_s * 1000
            return [
                self._event(
                    "dragoman.transcription.partial",
                    item_id=item,
                    text=event.text,
                    start_ms=None if event.start_s is None else round(offset_ms + event.start_s * 1000),
                    end_ms=None if event.end_s is None else round(offset_ms + event.end_s * 1000),
                )
            ]
        return [self._error_message(event.code, event.message)]

    # turns -------------------------------------------------------------------------------------------------------

    def _open_item(self) -> str:
        if self.item_id is None:
            self.item_id = "item_" + uuid.uuid4().hex[:20]
        return self.item_id

    def on_turn_started(self) -> None:
        assert self.live is not None
        item, self.next_turn_item = self.next_turn_item, None
        self.turn_items[str(self.live.id)] = item or self._open_item()

    def on_turn_over(self, live: LiveSession) -> None:
        key = str(live.id)
        item = self.turn_items.pop(key, None)
        transcript = "".join(self.turn_texts.pop(key, [])).strip()
        if item is None or live.failed:
            return
        self.post(
            self._event(
                "conversation.item.input_audio_transcription.completed",
                item_id=item,
                content_index=0,
                transcript=transcript,
                usage={"type": "duration", "seconds": round(live.audio_s, 3)},
            )
        )

    def commit_turn(self, reason: str) -> bool:
        """Commit the open item: `committed`, then the turn's flush and `completed`."""
        if self.live is None and not self.held:
            return False
        item = self._open_item()
        self.post(self._event("input_audio_buffer.committed", item_id=item, previous_item_id=self.previous_item))
        self.previous_item, self.item_id = item, None
        if not self.flush():
            # a flush is under way and this turn's audio waits for it: it is flushed, as `item`, once it starts
            self.flush_pending, self.next_turn_item = True, item
        log.debug("%sturn committed (%s)", self.prefix, reason)
        return True

    async def _session_over(self, live: LiveSession) -> None:
        await super()._session_over(live)
        if self.flush_pending and self.live is not None and self.flushing is None:
            self.flush_pending = False
            self.flush()

    # input -------------------------------------------------------------------------------------------------------

    def error_event(self, code: str, message: str, param: str | None = None) -> None:
        self.server.metrics.error(code)
        self.post(self._error_message(code, message, param))

    async def _on_text(self, text: str) -> None:
        try:
            self._handle(text)
        except BadEvent as e:
            self.error_event(e.code, e.message, e.param)

    def _handle(self, text: str) -> None:
        try:
            event = json.loads(text)
        except (ValueError, RecursionError):
            raise BadEvent("invalid_json", "client events must be JSON objects") from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise BadEvent("invalid_json", "client events must be JSON objects with a string 'type'")
        kind = event["type"]
        if kind in ("session.update", "transcription_session.update"):
            languages = known_languages(self.server.engine.backend)
            settings = parse_session(event, self.settings, languages)
            if (self.live is not None or self.held) and (settings.encoding, settings.sample_rate) != (
                self.settings.encoding,
                self.settings.sample_rate,
            ):
                raise BadEvent(
                    "invalid_value",
                    "the audio format cannot change once audio was appended; commit or clear first",
                    "session",
                )
            self.settings, self.beta = settings, kind == "transcription_session.update"
            self.task, self.language, self.sample_rate = settings.task, settings.language, settings.sample_rate
            self.gate = (
                None if settings.turn_detection is None else EnergyGate(settings.turn_detection, settings.sample_rate)
            )
            self.post(
                self._event(
                    "transcription_session.updated" if self.beta else "session.updated", session=self._session_object()
                )
            )
        elif kind == "input_audio_buffer.append":
            self._append(event.get("audio"))
        elif kind == "input_audio_buffer.commit":
            if not self.commit_turn("client"):
                raise BadEvent(
                    "input_audio_buffer_commit_empty", "the input audio buffer is empty: append audio before committing"
                )
        elif kind == "input_audio_buffer.clear":
            self._clear()
        else:
            raise BadEvent(
                "unknown_event",
                f"unsupported event type {kind[:60]!r}: this server transcribes "
                "(session.update, input_audio_buffer.append/commit/clear)",
                "type",
            )

    def _append(self, audio: Any) -> None:
        if not isinstance(audio, str) or not audio:
            raise BadEvent("invalid_value", "input_audio_buffer.append needs 'audio': base64-encoded audio", "audio")
        try:
            data = self.rest + base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise BadEvent("invalid_value", "'audio' is not valid base64", "audio") from None
        s = self.settings
        if s.encoding == "pcm16":
            n = len(data) // 2 * 2
            data, self.rest = data[:n], data[n:]
            samples = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
        else:
            samples, self.rest = TABLES[s.encoding][np.frombuffer(data, np.uint8)], b""
        if samples.size == 0:
            return
        if self.gate is not None:
            for what, t_ms in self.gate.process(samples):
                if what == "started":
                    self.post(
                        self._event(
                            "input_audio_buffer.speech_started", audio_start_ms=round(t_ms), item_id=self._open_item()
                        )
                    )
                else:
                    self.post(
                        self._event(
                            "input_audio_buffer.speech_stopped", audio_end_ms=round(t_ms), item_id=self._open_item()
                        )
                    )
                    self.feed_turn(samples, s.sample_rate)  # the audio up to the stop belongs to this turn
                    samples = samples[:0]
                    self.commit_turn("server_vad")
        self.feed_turn(samples, s.sample_rate)

    def _clear(self) -> None:
        live = self.live
        if live is not None and self.flushing is not live:
            self.turn_items.pop(str(live.id), None)
            self.turn_texts.pop(str(live.id), None)
            self.live = None  # abandoned at once (the next append opens a new turn): nothing more is decoded
            live.close()
            self.server.metrics.session_closed()
        self.held, self.held_s, self.item_id, self.rest = [], 0.0, None, b""
        self.flush_pending, self.next_turn_item = False, None
        if self.gate is not None:
            self.gate = EnergyGate(self.gate.config, self.gate.rate)
        self.post(self._event("input_audio_buffer.cleared"))

    def _on_binary(self, data: bytes) -> None:
        raise p.ProtocolError(
            p.ErrorCode.BAD_MESSAGE,
            "binary messages are not part of the Realtime API; send input_audio_buffer.append events with base64 audio",
        )
