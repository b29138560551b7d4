"""The Dragoman WebSocket protocol, sans-I/O: parse and validate what a client sends, build what the server sends.

Nothing here touches a socket, the event loop or the engine, so the rules can be tested (and fuzzed, issue 7)
without a server. `ConnectionProtocol` tracks one connection's phase and turns each incoming WebSocket message
into a typed message or a `ProtocolError` with a stable `code`; what the server sends is a typed message too
(`ServerMessage`), written to JSON only when it is sent; connection.py runs a connection over these rules. The
wire format is documented in docs/protocol.md; bump PROTOCOL_VERSION when it changes incompatibly.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

from engine.errors import ConfigError
from engine.languages import parse_language

PROTOCOL_VERSION = 1

Task = Literal["translate", "transcribe"]
Encoding = Literal["pcm_s16le", "pcm_f32le"]
TASKS: tuple[str, ...] = ("translate", "transcribe")
ENCODINGS: dict[str, np.dtype] = {"pcm_s16le": np.dtype("<i2"), "pcm_f32le": np.dtype("<f4")}

# caption targets (`start.target`): ISO codes, or NLLB-200 codes such as "ast_Latn"
_TARGET_RE = re.compile(r"^[a-z]{2,3}(_[A-Z][a-z]{3})?$")
MAX_TARGETS = 4  # target languages one session may ask for
MAX_VOCABULARY_CHARS = 300  # `start.vocabulary`; the model sees at most ~64 tokens of it anyway


class ErrorCode(str, enum.Enum):  # noqa: UP042 (StrEnum changes str() and format() of members)
    """Stable, machine-readable error codes sent in `{"type": "error", "code": ...}`. Never renumber or rename."""

    BAD_JSON = "bad_json"  # a text message that is not a JSON object
    BAD_MESSAGE = "bad_message"  # missing/ill-typed field or out-of-range value
    UNKNOWN_TYPE = "unknown_type"  # "type" is not one this protocol version knows
    UNSUPPORTED_VERSION = "unsupported_version"  # the client asked for a protocol version we do not speak
    NOT_STARTED = "not_started"  # audio, stop or signalling before "start" (or after "stop")
    ALREADY_STARTED = "already_started"  # "start" while a session is running
    BAD_AUDIO = "bad_audio"  # a binary frame that is empty, misaligned or holds NaN/inf
    TOO_LARGE = "too_large"  # a message over the configured size limit
    BUSY = "busy"  # the server runs its maximum number of sessions
    SLOW_CLIENT = "slow_client"  # the client does not read fast enough; the connection is closed
    WEBRTC_FAILED = "webrtc_failed"  # the offer could not be answered or the media path broke
    INTERNAL = "internal"  # a bug on our side; the session ends
    # added in issue 7 (hardening); additive, so still protocol version 1
    RATE_LIMITED = "rate_limited"  # audio/messages arrive faster than allowed: the server reads more slowly
    TIMEOUT = "timeout"  # idle too long, or the session reached its time limit: flushed, `end`, then closed
    SHUTTING_DOWN = "shutting_down"  # the server is stopping: the session is flushed, `end`, then closed
    # added in issue 14 (rooms); additive
    READ_ONLY = "read_only"  # a viewer socket sent something: viewers only receive captions


class ProtocolError(Exception):
    """A client message broke the protocol. `fatal` errors close the connection; others only reject the message."""

    def __init__(self, code: ErrorCode, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal


@dataclass(frozen=True)
class ProtocolLimits:
    """Size and value limits the parser enforces. Defaults suit a browser client; issue 7 tunes them."""

    max_text_bytes: int = 64 * 1024  # one JSON message; an SDP offer with many candidates is ~5-10 KB
    # one binary frame: 1.4 s of 48 kHz float32 or 8 s of 16 kHz int16, far above the 20 ms the page sends. It is
    # also uvicorn's `ws_max_size` (any WebSocket message, all APIs) and so bounds each connection's receive buffer.
    max_audio_frame_bytes: int = 256 * 1024
    min_sample_rate: int = 8000  # below this speech is unintelligible to the model
    max_sample_rate: int = 192000  # the highest rate a sound card offers
    max_sdp_bytes: int = 32 * 1024
    max_candidate_bytes: int = 1024  # one ICE candidate line


# --- client -> server ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Open a session. Audio follows as binary frames, or as a WebRTC track after an `Offer`."""

    task: Task = "translate"
    language: str | None = None  # source language code; None = detect
    sample_rate: int = 16000  # rate of the binary PCM frames (unused for WebRTC)
    encoding: Encoding = "pcm_s16le"  # sample format of the binary PCM frames
    targets: tuple[str, ...] = ()  # caption languages through the MT stage (`target`); () = the speech model's text
    room: bool = False  # share the captions with viewers (docs/protocol.md, "Rooms"); the server answers `room`
    vocabulary: str = ""  # names and terms given to the model as its prompt (`start.vocabulary`)


@dataclass(frozen=True)
class Stop:
    """No more audio: flush the final commits, then the server sends `end`."""


@dataclass(frozen=True)
class Offer:
    """A WebRTC SDP offer carrying the microphone track; answered with `answer`."""

    sdp: str


@dataclass(frozen=True)
class Ice:
    """A trickled ICE candidate from the browser; `candidate` None (or "") marks the end of candidates."""

    candidate: str | None
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None


@dataclass(frozen=True)
class SetLanguage:
    """The speaker corrects the spoken language mid-session (`language` null: detect again); answered with
    `restarted` once the session runs in it (same connection, room and audio)."""

    language: str | None


ClientMessage = Start | Stop | Offer | Ice | SetLanguage


@dataclass(frozen=True)
class Audio:
    """A decoded binary frame: float32 mono samples in [-1, 1] at `sample_rate`."""

    samples: np.ndarray = field(repr=False)
    sample_rate: int


def _get(
    obj: dict[str, Any], key: str, types: type | tuple[type, ...], default: Any = ..., *, nullable: bool = False
) -> Any:
    if key not in obj:
        if default is ...:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{obj.get('type')!r} message needs a {key!r} field")
        return default
    value = obj[key]
    if value is None and nullable:
        return None
    # bool is an int subclass in Python; never accept true/false for a number
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        value_ok = False
    else:
        value_ok = isinstance(value, types)
    if not value_ok:
        want = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            f"field {key!r} must be {want}{' or null' if nullable else ''}, got {type(value).__name__}",
        )
    return value


def _language(obj: dict[str, Any]) -> str | None:
    """`language`: a code such as "de" (engine/languages.py), or None for "detect" (null, "" or "auto")."""
    return check_language(_get(obj, "language", str, None, nullable=True))


def check_language(value: str | None, known: Collection[str] | None = None) -> str | None:
    """engine/languages.py's rule (and, given `known`, the model's codes) as a BAD_MESSAGE with its message."""
    try:
        return parse_language(value, known, detect="null")
    except ConfigError as e:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, str(e)) from None


def parse_start(obj: dict[str, Any], limits: ProtocolLimits, defaults: Start = Start()) -> Start:
    """A `start` object -> Start; omitted task/language fall back to `defaults` (`dragoman serve --task/--language`)."""
    version = _get(obj, "protocol", int, PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"this server speaks protocol version {PROTOCOL_VERSION}, the client asked for {version}",
        )
    task = _get(obj, "task", str, defaults.task)
    if task not in TASKS:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if "language" not in obj:
        language = defaults.language  # absent: the server's default; an explicit null still means "detect"
    else:
        language = _language(obj)
    rate = _get(obj, "sample_rate", (int, float), 16000)
    if not (isinstance(rate, int) or (math.isfinite(rate) and rate == int(rate))):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"sample_rate must be a whole number of Hz, got {rate!r}")
    rate = int(rate)
    if not limits.min_sample_rate <= rate <= limits.max_sample_rate:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            f"sample_rate must be within {limits.min_sample_rate}..{limits.max_sample_rate} Hz, got {rate}",
        )
    encoding = _get(obj, "encoding", str, "pcm_s16le")
    if encoding not in ENCODINGS:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    room = _get(obj, "room", bool, False)
    vocabulary = _get(obj, "vocabulary", str, "", nullable=True) or ""
    vocabulary = " ".join(vocabulary.split())  # newlines and runs of spaces from a text field: one line
    if len(vocabulary) > MAX_VOCABULARY_CHARS:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            f"vocabulary is limited to {MAX_VOCABULARY_CHARS} characters "
            f"(names and terms, comma-separated), got {len(vocabulary)}",
        )
    return Start(
        task=task,
        language=language,
        sample_rate=rate,
        encoding=encoding,
        targets=_targets(obj),
        room=room,
        vocabulary=vocabulary,
    )


def _targets(obj: dict[str, Any]) -> tuple[str, ...]:
    """`target`: a code, a list of codes (several caption languages for one speaker), or null/absent."""
    value = _get(obj, "target", (str, list), None, nullable=True)
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if len(items) > MAX_TARGETS or not all(isinstance(t, str) for t in items):
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, f"target must be a language code or a list of at most {MAX_TARGETS} codes"
        )
    out = []
    for t in items:
        t = t.strip()
        if not _TARGET_RE.match(t):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"target must be a language code such as 'de', got {t[:20]!r}")
        out.append(t)
    return tuple(dict.fromkeys(out))


def parse_offer(obj: dict[str, Any], limits: ProtocolLimits) -> Offer:
    sdp = _get(obj, "sdp", str)
    if len(sdp.encode()) > limits.max_sdp_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"SDP offer is over {limits.max_sdp_bytes} bytes")
    if not sdp.startswith("v=0"):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "sdp does not look like an SDP offer (it must start with 'v=0')")
    return Offer(sdp=sdp)


def parse_ice(obj: dict[str, Any], limits: ProtocolLimits) -> Ice:
    candidate = _get(obj, "candidate", str, None, nullable=True)
    if candidate is not None and len(candidate.encode()) > limits.max_candidate_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"ICE candidate is over {limits.max_candidate_bytes} bytes")
    sdp_mid = _get(obj, "sdpMid", str, None, nullable=True)
    index = _get(obj, "sdpMLineIndex", int, None, nullable=True)
    if index is not None and not 0 <= index < 64:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"sdpMLineIndex out of range: {index}")
    return Ice(candidate=candidate or None, sdp_mid=sdp_mid, sdp_mline_index=index)


def parse_text(text: str, limits: ProtocolLimits = ProtocolLimits(), defaults: Start = Start()) -> ClientMessage:
    """One JSON text message -> a typed message, or ProtocolError. Does not look at the connection's phase."""
    if len(text) > limits.max_text_bytes or len(text.encode("utf-8", "surrogatepass")) > limits.max_text_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"text message is over {limits.max_text_bytes} bytes")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ProtocolError(ErrorCode.BAD_JSON, f"text messages must be JSON objects: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, f"text messages must be JSON objects, got {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "message needs a string 'type' field")
    if kind == "start":
        return parse_start(obj, limits, defaults)
    if kind == "stop":
        return Stop()
    if kind == "offer":
        return parse_offer(obj, limits)
    if kind == "ice":
        return parse_ice(obj, limits)
    if kind == "language":
        return SetLanguage(_language(obj))
    raise ProtocolError(
        ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind[:40]!r} (expected start, stop, offer, ice or language)"
    )


def decode_audio(data: bytes, encoding: Encoding, sample_rate: int, limits: ProtocolLimits = ProtocolLimits()) -> Audio:
    """One binary frame -> float32 mono samples, or ProtocolError(BAD_AUDIO / TOO_LARGE)."""
    if len(data) > limits.max_audio_frame_bytes:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"audio frame of {len(data)} bytes is over {limits.max_audio_frame_bytes} bytes; send frames of ~20-100 ms",
        )
    dtype = ENCODINGS[encoding]
    if not data:
        raise ProtocolError(ErrorCode.BAD_AUDIO, "empty audio frame")
    if len(data) % dtype.itemsize:
        raise ProtocolError(
            ErrorCode.BAD_AUDIO, f"{encoding} frames must be a multiple of {dtype.itemsize} bytes, got {len(data)}"
        )
    raw = np.frombuffer(data, dtype=dtype)
    if dtype.kind == "i":
        samples = raw.astype(np.float32) / 32768.0
    else:
        samples = raw.astype(np.float32)
        if not np.isfinite(samples).all():
            raise ProtocolError(ErrorCode.BAD_AUDIO, "pcm_f32le frame contains NaN or infinite samples")
        # Out-of-range floats are clipped rather than rejected: browsers produce slightly >1.0 peaks
        np.clip(samples, -1.0, 1.0, out=samples)
    return Audio(samples=samples, sample_rate=sample_rate)


# --- connection phase ---------------------------------------------------------------------------------------------


class Phase(enum.Enum):
    IDLE = "idle"  # no session: only "start" is allowed
    STREAMING = "streaming"  # session open: audio, signalling and "stop"
    STOPPING = "stopping"  # "stop" received; waiting for the final commits and "end"


class ConnectionProtocol:
    """One connection's protocol state: validates each message against the phase and advances it.

    Sans-I/O: the adapter calls `receive_text` / `receive_binary` with what arrived and `session_ended` when the
    engine has flushed; every method returns data or raises ProtocolError, and never does I/O itself.
    """

    def __init__(self, limits: ProtocolLimits = ProtocolLimits(), defaults: Start = Start()) -> None:
        self.limits = limits
        self.defaults = defaults  # task/language for a `start` that omits them
        self.phase = Phase.IDLE
        self.start: Start | None = None  # the running session's parameters
        self.webrtc = False  # an offer was accepted: audio arrives as a media track

    def receive_text(self, text: str) -> ClientMessage:
        message = parse_text(text, self.limits, self.defaults)
        if isinstance(message, Start):
            if self.phase is not Phase.IDLE:
                raise ProtocolError(
                    ErrorCode.ALREADY_STARTED,
                    "a session is already running on this connection; send 'stop' and wait for 'end' first",
                )
            self.phase, self.start, self.webrtc = Phase.STREAMING, message, False
        elif self.phase is not Phase.STREAMING:
            what = (
                "stop"
                if isinstance(message, Stop)
                else "language"
                if isinstance(message, SetLanguage)
                else "signalling"
            )
            raise ProtocolError(ErrorCode.NOT_STARTED, f"{what} without a running session: send 'start' first")
        elif isinstance(message, Stop):
            self.phase = Phase.STOPPING
        elif isinstance(message, Offer):
            if self.webrtc:
                raise ProtocolError(ErrorCode.BAD_MESSAGE, "this session already has a WebRTC connection")
            self.webrtc = True
        return message

    def receive_binary(self, data: bytes) -> Audio:
        if self.phase is not Phase.STREAMING or self.start is None:
            raise ProtocolError(ErrorCode.NOT_STARTED, "audio without a running session: send 'start' first")
        return decode_audio(data, self.start.encoding, self.start.sample_rate, self.limits)

    def server_stop(self) -> bool:
        """The server ends the session on its own (timeout, shutdown): no more input. Whether one was running."""
        if self.phase is not Phase.STREAMING:
            return False
        self.phase = Phase.STOPPING
        return True

    def session_ended(self) -> None:
        """The engine flushed the session (or it failed): the connection may `start` again."""
        self.phase, self.start, self.webrtc = Phase.IDLE, None, False


# --- server -> client ---------------------------------------------------------------------------------------------


class Outgoing(Protocol):
    """Anything a connection sends: these messages, or a compatible API's events (app/server/api/). It is queued as
    it is and serialised at the send; under backpressure the `droppable` ones go first."""

    @property
    def droppable(self) -> bool: ...

    def to_json(self) -> str: ...


def _dump(obj: dict[str, Any]) -> str:
    # compact, and UTF-8 text as it is (not \u-escaped): half the bytes on the wire for most languages
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _seconds(value: float | None) -> float | None:
    # Rounded to the millisecond: more digits are noise, and NaN would make the JSON invalid
    return None if value is None or not math.isfinite(value) else round(float(value), 3)


@dataclass(frozen=True)
class ServerMessage:
    """A message of this protocol to the client: `{"type": TYPE, ...body()}`, fields in the order documented in
    docs/protocol.md. Times are kept as given and rounded when the message is written."""

    type: ClassVar[str]
    # a later message of the same type supersedes this one: under backpressure it is dropped first (never a commit)
    droppable: ClassVar[bool] = False

    def body(self) -> dict[str, Any]:
        """The fields after `type`, as written on the wire: by default the dataclass's fields in their order, those
        typed float (seconds, rates) rounded by _seconds. A message whose wire form differs overrides this."""
        return {
            f.name: _seconds(getattr(self, f.name)) if "float" in str(f.type) else getattr(self, f.name)
            for f in fields(self)
        }

    def to_json(self) -> str:
        return _dump({"type": self.type, **self.body()})


@dataclass(frozen=True)
class ReadyMessage(ServerMessage):
    """The session is open. `replica` names the replica serving it when several do (`dragoman serve --replicas`)."""

    type: ClassVar[str] = "ready"
    session: str
    ice_servers: tuple[dict[str, Any], ...] = ()
    sample_rate: int = 16000
    replica: str | None = None

    def body(self) -> dict[str, Any]:
        replica = {"replica": self.replica} if self.replica is not None else {}
        return {
            "session": self.session,
            "protocol": PROTOCOL_VERSION,
            "sample_rate": self.sample_rate,
            "ice_servers": list(self.ice_servers),
            **replica,
        }


@dataclass(frozen=True)
class PartialMessage(ServerMessage):
    """The tentative tail: replaces the previous partial."""

    type: ClassVar[str] = "partial"
    droppable: ClassVar[bool] = True
    text: str
    start_s: float | None = None
    end_s: float | None = None


@dataclass(frozen=True)
class CommitMessage(ServerMessage):
    """Final text, appended to what was committed before."""

    type: ClassVar[str] = "commit"
    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class TargetPartialMessage(ServerMessage):
    """The tentative translation into `target` of the source text not yet translated for good."""

    type: ClassVar[str] = "target_partial"
    droppable: ClassVar[bool] = True
    target: str
    text: str
    source_text: str


@dataclass(frozen=True)
class TargetCommitMessage(ServerMessage):
    """Final translation into `target` of `source_text`."""

    type: ClassVar[str] = "target_commit"
    target: str
    text: str
    source_text: str
    start_s: float
    end_s: float
    latency_s: float


@dataclass(frozen=True)
class StatsMessage(ServerMessage):
    """How far the session lags behind the audio, and how fast it decodes."""

    type: ClassVar[str] = "stats"
    droppable: ClassVar[bool] = True
    lag_s: float
    rtf: float
    audio_s: float


@dataclass(frozen=True)
class LanguageMessage(ServerMessage):
    """With auto-detection: the language the session decodes as; `decided` False while it is still a guess."""

    type: ClassVar[str] = "language"
    language: str
    decided: bool


@dataclass(frozen=True)
class RestartedMessage(ServerMessage):
    """After the client's `language`: the session runs anew in `language` (null: detecting); stream time is 0 again."""

    type: ClassVar[str] = "restarted"
    session: str
    language: str | None


@dataclass(frozen=True)
class AnswerMessage(ServerMessage):
    """The SDP answer to the client's WebRTC offer."""

    type: ClassVar[str] = "answer"
    sdp: str


@dataclass(frozen=True)
class ErrorMessage(ServerMessage):
    """`code` is an ErrorCode (or an engine error's code string); `message` says what to do about it."""

    type: ClassVar[str] = "error"
    code: ErrorCode | str
    message: str

    def body(self) -> dict[str, Any]:
        return {
            "code": self.code.value if isinstance(self.code, ErrorCode) else str(self.code),
            "message": self.message,
        }


@dataclass(frozen=True)
class EndMessage(ServerMessage):
    """The session's last message: everything was flushed and committed."""

    type: ClassVar[str] = "end"


@dataclass(frozen=True)
class RoomMessage(ServerMessage):
    """To the speaker, after `ready`: how viewers join the session's room."""

    type: ClassVar[str] = "room"
    room: str
    viewer_token: str
    viewers: int  # how many viewers the room takes

    def body(self) -> dict[str, Any]:
        return {
            "room": self.room,
            "viewer_token": self.viewer_token,
            "watch_path": f"/watch/{self.room}?token={self.viewer_token}",
            "viewers": self.viewers,
        }


@dataclass(frozen=True)
class RoomEndMessage(ServerMessage):
    """To a viewer: the speaker's session is over, the room closes."""

    type: ClassVar[str] = "room_end"
    reason: str


@dataclass(frozen=True)
class JoinedMessage(ServerMessage):
    """To a viewer, first: the room it joined, whether it is still live, how many commits are replayed."""

    type: ClassVar[str] = "joined"
    room: str
    live: bool
    replayed: int
