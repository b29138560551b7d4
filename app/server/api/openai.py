"""OpenAI-compatible audio endpoints: POST /v1/audio/transcriptions and /v1/audio/translations, GET /v1/models.

What the official `openai` clients send and expect (docs/api.md): a multipart form with `file` (any format Dragoman
reads), `model` (any name; Dragoman's model answers), `language`, `prompt`, `response_format` (json, text, srt,
vtt, verbose_json), `timestamp_granularities[]`, `temperature`, `stream`. Errors come in OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`, with the status codes its clients map to exceptions.

Two decoders serve a file:
- without `stream`, the offline decoder of `dragoman file` (engine/models/whisper/transcribe.py: ≤ 30 s windows, beam 5,
  temperature fallback) runs in one file worker thread beside the live engine; at most `FileLimits.max_jobs`
  requests decode (the upload, then the speech) or wait (429 beyond), one runs the model at a time;
- with `stream=true`, the file is fed to a live session on the shared Engine at `max_realtime` (4) x real time, as a
  fast live client would, and each commit is sent as a `transcript.text.delta` server-sent event the moment it is
  made; `transcript.text.done` carries the whole text. It takes a live session slot (503 when none is free).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from engine.audio import SAMPLE_RATE, load_audio
from engine.errors import AudioError, ConfigError
from engine.events import Commit, Error
from engine.languages import known_languages, parse_language

from ..files import JobCancelled, JobsFull

if TYPE_CHECKING:
    from app.runtime import LiveSession

    from ..hub import DragomanHub

log = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")
MAX_PROMPT_CHARS = 2000  # Whisper reads at most 223 prompt tokens; more is truncated from the front


class ApiError(Exception):
    """An error answer in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class TooLarge(Exception):
    """The request body passed FileLimits.max_upload_bytes."""


@dataclass(frozen=True)
class FileRequest:
    """A validated transcription/translation request."""

    task: str  # "transcribe" or "translate"
    audio: np.ndarray  # 16 kHz float32 mono
    language: str | None
    prompt: str
    response_format: str
    temperature: float
    words: bool  # timestamp_granularities[] includes "word"
    stream: bool
    job: threading.Event  # this request's slot in the file worker's line (its cancel flag); release when done

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True)
class Piece:
    """A stretch of text with its times: an offline segment, or a live commit."""

    text: str
    start_s: float
    end_s: float


def _form_value(form: Any, name: str, default: str | None = None) -> str | None:
    value = form.get(name)
    if value is None:
        return default
    if isinstance(value, UploadFile):
        raise ApiError(400, f"'{name}' must be a form field, not a file", param=name)
    return str(value)


def _parse_bool(value: str | None, name: str) -> bool:
    if value is None or value == "":
        return False
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ApiError(400, f"'{name}' must be true or false, got {value!r}", param=name)


async def _read_form(request: Request, max_bytes: int) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise ApiError(
            413, f"the upload is {int(length)} bytes; this server takes at most {max_bytes}", code="file_too_large"
        )
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(400, "send the audio as multipart/form-data with a 'file' field", param="file")
    received = 0
    receive = request.receive

    async def limited() -> Any:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > max_bytes:
            raise TooLarge
        return message

    try:
        return await Request(request.scope, limited).form(max_files=1, max_fields=32, max_part_size=64 * 1024)
    except TooLarge:
        raise ApiError(
            413, f"the upload is over {max_bytes} bytes, the most this server takes", code="file_too_large"
        ) from None
    except Exception as e:  # starlette's MultiPartException / HTTPException for a malformed body
        raise ApiError(400, f"malformed multipart body: {getattr(e, 'detail', None) or e}") from None


async def parse_request(request: Request, hub: DragomanHub, task: str) -> FileRequest:
    limits = hub.config.files
    form = await _read_form(request, limits.max_upload_bytes)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "a 'file' field with the audio is required", param="file")
        response_format = _form_value(form, "response_format", "json") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise ApiError(
                400,
                f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {response_format!r}",
                param="response_format",
            )
        try:
            language = parse_language(
                _form_value(form, "language"), known_languages(hub.engine.backend), detect="leave it out"
            )
        except ConfigError as e:
            raise ApiError(400, str(e), param="language") from None
        prompt = _form_value(form, "prompt", "") or ""
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ApiError(400, f"prompt is over {MAX_PROMPT_CHARS} characters", param="prompt")
        raw_t = _form_value(form, "temperature")
        try:
            temperature = float(raw_t) if raw_t not in (None, "") else 0.0
        except ValueError:
            raise ApiError(400, f"temperature must be a number, got {raw_t!r}", param="temperature") from None
        if not (math.isfinite(temperature) and 0.0 <= temperature <= 1.0):
            raise ApiError(400, "temperature must be between 0 and 1", param="temperature")
        granularities = [
            str(g) for g in form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
        ]
        for g in granularities:
            if g not in GRANULARITIES:
                raise ApiError(
                    400,
                    f"timestamp_granularities must be word and/or segment, got {g!r}",
                    param="timestamp_granularities",
                )
        if granularities and response_format != "verbose_json":
            raise ApiError(
                400, "timestamp_granularities needs response_format=verbose_json", param="timestamp_granularities"
            )
        stream = _parse_bool(_form_value(form, "stream"), "stream")
        # the body is in (reading it costs no CPU); decoding it does: from here on the request holds a job slot
        try:
            job = hub.files.admit()
        except JobsFull as e:
            raise ApiError(
                429,
                f"{e.active} file transcriptions are decoding or waiting; try again later",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": "10"},
            ) from None
        try:
            audio = await _decode_upload(upload, limits.max_audio_s)
        except BaseException:
            hub.files.release(job)
            raise
    finally:
        await form.close()
    return FileRequest(
        task=task,
        audio=audio,
        language=language,
        prompt=prompt,
        response_format=response_format,
        temperature=temperature,
        words="word" in granularities,
        stream=stream,
        job=job,
    )


async def _decode_upload(upload: UploadFile, max_audio_s: float) -> np.ndarray:
    """The upload as 16 kHz mono float32 (decoded in a thread: ffmpeg on an hour of MP3 takes seconds)."""
    data_file = upload.file
    data_file.seek(0, 2)
    size = data_file.tell()
    data_file.seek(0)
    if size == 0:
        raise ApiError(400, "the uploaded file is empty", param="file", code="invalid_file")
    suffix = Path(upload.filename or "audio").suffix[:12] or ".bin"

    def decode() -> np.ndarray:
        with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
            while chunk := data_file.read(1 << 20):
                tmp.write(chunk)
            tmp.flush()
            return load_audio(tmp.name)

    try:
        audio = await asyncio.to_thread(decode)
    except AudioError:
        raise ApiError(
            400,
            "the file is not audio Dragoman can decode (WAV, FLAC, MP3, OGG, M4A, WebM, ...)",
            param="file",
            code="invalid_file",
        ) from None
    except Exception as e:  # a decoder crashing on a hostile file is still the file's fault
        log.info("upload refused: %s: %s", type(e).__name__, e)
        raise ApiError(400, "the file is not audio Dragoman can decode", param="file", code="invalid_file") from None
    if audio.size == 0:
        raise ApiError(400, "the file holds no audio samples", param="file", code="invalid_file")
    if audio.size / SAMPLE_RATE > max_audio_s:
        raise ApiError(
            413,
            f"the recording is {audio.size / SAMPLE_RATE:.0f} s long; this server takes at most {max_audio_s:.0f} s",
            param="file",
            code="file_too_large",
        )
    return audio


# --- decoding -----------------------------------------------------------------------------------------------------


def _offline(hub: DragomanHub, req: FileRequest, cancel: threading.Event) -> tuple[str | None, list[Piece]]:
    """Runs in the file worker: the whole recording through `dragoman file`'s decoder."""
    from engine.models.whisper.transcribe import TranscribeOptions, transcribe

    backend = hub.engine.backend
    bundle = backend.bundle

    def progress(done: float, total: float) -> None:
        if cancel.is_set():
            raise JobCancelled

    if cancel.is_set():
        raise JobCancelled
    temperatures = TranscribeOptions.temperatures if req.temperature == 0 else (req.temperature,)
    options = TranscribeOptions(
        task=req.task,
        language=req.language,
        beam_size=5,
        temperatures=temperatures,
        initial_prompt=tuple(backend.text_tokens(" " + req.prompt.strip())) if req.prompt.strip() else (),
    )
    result = transcribe(bundle, req.audio, options, progress=progress)
    return result.language, [Piece(s.text, s.start_s, s.end_s) for s in result.segments if s.text.strip()]


def _session_config(hub: DragomanHub, req: FileRequest) -> Any:
    from ..connection import start_session_config
    from ..protocol import Start

    return start_session_config(hub.config.session, Start(task=req.task, language=req.language))  # type: ignore


def _open_live(hub: DragomanHub, req: FileRequest) -> LiveSession:
    """A live session for a file, or ApiError 503 when every slot is taken."""
    from app.runtime import EngineBusy

    try:
        live = hub.engine.open_session(_session_config(hub, req))
    except EngineBusy:
        raise ApiError(
            503,
            "every live session slot is in use; try again later",
            type="server_error",
            code="server_busy",
            headers={"Retry-After": "5"},
        ) from None
    hub.metrics.session_opened()
    return live


async def _feed_paced(live: LiveSession, audio: np.ndarray, speed: float) -> None:
    """Feed a recording as a fast live client would: `speed` x real time in 0.5 s pieces, then finish. (All at once,
    the first update would see a whole segment and commit it in one piece: nothing to stream.)"""
    step = SAMPLE_RATE // 2
    t0 = time.monotonic()
    for i in range(0, len(audio), step):
        if live.closed:
            return
        live.feed_audio(audio[i : i + step], SAMPLE_RATE)
        await asyncio.sleep(max(0.0, t0 + (i + step) / SAMPLE_RATE / speed - time.monotonic()))
    await live.finish()


async def _live_pieces(hub: DragomanHub, req: FileRequest, live: LiveSession) -> AsyncIterator[Piece]:
    """Feed the recording to a live session at `max_realtime` x real time; yield each commit as it is made."""
    feeder = asyncio.ensure_future(_feed_paced(live, req.audio, hub.config.server_limits.max_realtime))
    try:
        async for event in live.events():
            if isinstance(event, Commit) and event.text:
                yield Piece(event.text, event.start_s, event.end_s)
            elif isinstance(event, Error):
                raise ApiError(500, f"decoding failed: {event.message}", type="server_error", code=event.code)
        await feeder
        hub.metrics.session_rtf(live.rtf)
    finally:
        feeder.cancel()
        live.close()
        hub.metrics.session_closed()


def _uses_offline(hub: DragomanHub) -> bool:
    """Whisper's offline decoder takes what this endpoint offers (temperatures, a prompt); other families stream."""
    from engine.models.whisper import WhisperBundle

    return isinstance(getattr(hub.engine.backend, "bundle", None), WhisperBundle)


async def decode_file(hub: DragomanHub, req: FileRequest) -> tuple[str | None, list[Piece]]:
    if not _uses_offline(hub):  # families without the offline decoder: the live path, collected
        return req.language, [piece async for piece in _live_pieces(hub, req, _open_live(hub, req))]
    t0 = time.perf_counter()
    try:
        language, pieces = await hub.files.run(lambda: _offline(hub, req, req.job))
    except JobCancelled:
        raise ApiError(503, "the server is shutting down", type="server_error", code="shutting_down") from None
    if req.duration_s > 0:
        hub.metrics.file_rtf.observe((time.perf_counter() - t0) / req.duration_s)
    return language, pieces


# --- answers ------------------------------------------------------------------------------------------------------


def word_times(pieces: list[Piece]) -> list[dict[str, Any]]:
    """Words with start/end. A piece's time span is shared among its words in proportion to their length: word
    times are interpolated within each segment (or commit), not aligned one by one."""
    out: list[dict[str, Any]] = []
    for piece in pieces:
        tokens = piece.text.split()
        if not tokens:
            continue
        weights = [len(w) + 1 for w in tokens]
        span, total, t = max(0.0, piece.end_s - piece.start_s), sum(weights), piece.start_s
        for w, weight in zip(tokens, weights):
            end = t + span * weight / total
            out.append({"word": w, "start": round(t, 3), "end": round(end, 3)})
            t = end
    return out


def _text(pieces: list[Piece]) -> str:
    return " ".join(p.text.strip() for p in pieces if p.text.strip())


def render(req: FileRequest, language: str | None, pieces: list[Piece]) -> Response:
    from app.captions import build_cues, format_captions

    text = _text(pieces)
    fmt = req.response_format
    if fmt == "text":
        return Response(text + "\n", media_type="text/plain; charset=utf-8")
    if fmt in ("srt", "vtt"):
        commits = [
            Commit(text=" " + p.text.strip(), start_s=p.start_s, end_s=max(p.end_s, p.start_s))
            for p in pieces
            if p.text.strip()
        ]
        body = format_captions(build_cues(commits), fmt)  # type: ignore[arg-type]
        return Response(body, media_type="text/vtt; charset=utf-8" if fmt == "vtt" else "text/plain; charset=utf-8")
    usage = {"type": "duration", "seconds": math.ceil(req.duration_s)}
    if fmt == "json":
        return JSONResponse({"text": text, "usage": usage})
    body: dict[str, Any] = {
        "task": "translate" if req.task == "translate" else "transcribe",
        "language": "en" if req.task == "translate" else language,  # a translation's language is its output's
        "duration": round(req.duration_s, 3),
        "text": text,
        "segments": [
            {
                "id": i,
                "seek": int(p.start_s * 100),
                "start": round(p.start_s, 3),
                "end": round(p.end_s, 3),
                "text": p.text,
                "tokens": [],
                "temperature": req.temperature,
                "avg_logprob": None,
                "compression_ratio": None,
                "no_speech_prob": None,
            }
            for i, p in enumerate(pieces)
        ],
        "usage": usage,
    }
    if req.words:
        body["words"] = word_times(pieces)
    return JSONResponse(body)


def _sse(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


async def _stream(hub: DragomanHub, req: FileRequest, live: LiveSession) -> AsyncIterator[bytes]:
    parts: list[str] = []
    try:
        async for piece in _live_pieces(hub, req, live):
            delta = piece.text if parts else piece.text.lstrip()
            parts.append(delta)
            yield _sse({"type": "transcript.text.delta", "delta": delta, "logprobs": None})
    except ApiError as e:
        yield _sse({"type": "error", "error": {"message": e.message, "type": e.type, "code": e.code}})
        return
    usage = {"type": "duration", "seconds": math.ceil(req.duration_s)}
    yield _sse({"type": "transcript.text.done", "text": "".join(parts).strip(), "logprobs": None, "usage": usage})


def routes(hub: DragomanHub) -> list[Route]:
    def guarded(endpoint: Callable[[Request], Any], name: str) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            try:
                denial = hub.check(request.scope)
                if denial is not None:
                    raise ApiError(
                        denial.status,
                        denial.reason,
                        type="invalid_request_error",
                        code="invalid_api_key" if denial.status == 401 else "forbidden_origin",
                        headers={"WWW-Authenticate": 'Bearer realm="dragoman"'} if denial.status == 401 else None,
                    )
                if hub.closing:
                    raise ApiError(503, "the server is shutting down", type="server_error", code="shutting_down")
                if hub.engine is None:
                    raise ApiError(503, "no model is loaded", type="server_error", code="not_ready")
                response = await endpoint(request)
            except ApiError as e:
                hub.metrics.error(e.code or str(e.status))
                response = e.response()
            hub.metrics.request(name, response.status_code)
            return response

        return handle

    def audio(task: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            req = await parse_request(request, hub, task)
            try:
                hub.metrics.audio_in(req.duration_s)
                if req.stream:
                    hub.files.release(req.job)  # decoded: the live engine does the rest, in its own session slot
                    live = _open_live(hub, req)  # before the 200 of the event stream: a busy server answers 503
                    return StreamingResponse(
                        _stream(hub, req, live),
                        media_type="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                    )
                language, pieces = await decode_file(hub, req)
                return render(req, language, pieces)
            finally:
                hub.files.release(req.job)

        return endpoint

    def model_entry() -> dict[str, Any]:
        return {"id": hub.model_name, "object": "model", "created": 0, "owned_by": "dragoman"}

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_entry()]})

    async def model(request: Request) -> Response:
        if request.path_params["model"] != hub.model_name:
            raise ApiError(
                404,
                f"this server serves {hub.model_name!r}; any model name is accepted by the audio endpoints",
                code="model_not_found",
                param="model",
            )
        return JSONResponse(model_entry())

    return [
        Route("/v1/audio/transcriptions", guarded(audio("transcribe"), "transcriptions"), methods=["POST"]),
        Route("/v1/audio/translations", guarded(audio("translate"), "translations"), methods=["POST"]),
        Route("/v1/models", guarded(models, "models"), methods=["GET"]),
        Route("/v1/models/{model:path}", guarded(model, "models"), methods=["GET"]),
    ]
