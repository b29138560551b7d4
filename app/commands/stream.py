"""`dragoman stream AUDIO`: feed a recording as a live stream; live captions, optional JSONL event log.

Without --realtime the recording is fed as fast as the model goes, but still in small pieces with a
decoder update every chunk_s of audio, so the events are the ones a live stream would get (only sooner).
With --realtime it is fed at wall-clock pace through the asyncio Engine, exactly like a microphone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import TextIO

import numpy as np

from app.cli import add_model_options, add_session_options, session_config
from app.translation import add_mt_options
from engine.errors import ConfigError
from engine.events import Commit, Error, Event, Partial
from engine.languages import known_languages, parse_language

FEED_S = 0.1  # audio per feed_audio call: a microphone's typical buffer


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("stream", help="feed a recording as a live stream and show live captions")
    p.add_argument("audio", help="path of the recording (WAV/FLAC/MP3/OGG, any rate)")
    add_model_options(p)
    add_session_options(p)
    p.add_argument("--realtime", action="store_true", help="feed at wall-clock pace, like a live microphone")
    p.add_argument("--events", default=None, metavar="FILE.jsonl", help="write one JSON object per event")
    p.add_argument("--vtt", default=None, help="write WebVTT captions (cues appear as text is committed)")
    p.add_argument("--srt", default=None, help="write SRT captions (cues appear as text is committed)")
    add_mt_options(p)
    return p


class EventLog:
    """Writes events as JSON lines: type, text, start_s, end_s, t_audio, t_wall."""

    def __init__(self, path: str | None) -> None:
        try:
            self.file: TextIO | None = open(path, "w", encoding="utf-8") if path else None
        except OSError as e:
            raise ConfigError(f"cannot write events to {path}: {e.strerror or e}") from e
        self.t0 = time.monotonic()

    def write(self, event: Event, t_audio: float) -> None:
        if self.file is None:
            return
        record: dict = {"type": type(event).__name__.lower()}
        if isinstance(event, Error):
            record.update(code=event.code, message=event.message)
        else:
            record.update(text=event.text, start_s=event.start_s, end_s=event.end_s)
        record.update(t_audio=round(t_audio, 3), t_wall=round(time.monotonic() - self.t0, 3))
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def run(args: argparse.Namespace) -> int:
    from app.terminal import LiveCaptions
    from engine.audio import SAMPLE_RATE, load_audio
    from engine.backend import make_backend
    from engine.models.loading import load_model

    config = session_config(args)  # before the audio and the model: a bad flag fails fast
    audio = load_audio(args.audio)  # before the model: a bad file fails fast
    backend = make_backend(load_model(args.model, args.device))
    parse_language(config.language, known_languages(backend))  # a code the model does not know: ConfigError
    from app.captions import CaptionWriter
    from app.translation import live_translation

    config, mt = live_translation(args, config, backend)  # captions in other languages (None without --target)

    log = EventLog(args.events)
    files = [CaptionWriter(path) for path in (args.vtt, args.srt) if path]
    captions = LiveCaptions()
    errors = 0

    def show(event: Event, t_audio: float) -> None:
        nonlocal errors
        log.write(event, t_audio)
        if mt is not None and not isinstance(event, Error):
            for target_event in mt.feed(event, t_audio):
                show_target(target_event, t_audio)
        elif isinstance(event, Commit):
            captions.commit(event.text)
            for f in files:
                f.add(event)
        elif isinstance(event, Partial):
            captions.partial(event.text)
        elif isinstance(event, Error):
            errors += 1

    def show_target(event, t_audio: float) -> None:
        """The first target's captions on screen and in the caption files; every target in the event log."""
        from app.translation import target_record
        from engine.mt.stage import TargetCommit

        if log.file is not None:
            log.file.write(json.dumps(target_record(event, t_audio), ensure_ascii=False) + "\n")
        if event.target != mt.primary:
            return
        if isinstance(event, TargetCommit):
            captions.commit(event.text)
            for f in files:
                f.add(Commit(text=event.text, start_s=event.start_s, end_s=event.end_s))
        else:
            captions.partial(event.text)

    try:
        if args.realtime:
            asyncio.run(_realtime(backend, config, audio, show, mt))
        else:
            _fast(backend, config, audio, show, SAMPLE_RATE, mt)
        if mt is not None:
            end_s = len(audio) / SAMPLE_RATE
            for target_event in mt.finish(end_s):
                show_target(target_event, end_s)
    finally:
        captions.close()
        log.close()
        for f in files:
            f.close()
    if mt is not None:
        import sys

        print(mt.summary(), file=sys.stderr)
    return 1 if errors else 0


def _fast(backend, config, audio: np.ndarray, show, sample_rate: int, mt=None) -> None:
    from engine.streaming.session import StreamingSession

    session = StreamingSession(backend, config)
    if mt is not None:  # the MT stage reads the language the session detects
        mt.language_of = lambda: session.language
    step = int(FEED_S * sample_rate)
    for i in range(0, len(audio), step):
        session.feed_audio(audio[i : i + step], sample_rate)
        session.process()
        for event in session.drain_events():
            show(event, session.audio_s)
    session.finish()
    session.process()
    for event in session.drain_events():
        show(event, session.audio_s)


async def _realtime(backend, config, audio: np.ndarray, show, mt=None) -> None:
    from app.runtime import Engine
    from engine.audio import SAMPLE_RATE

    async with Engine(backend) as engine:
        live = engine.open_session(config)
        if mt is not None:
            mt.language_of = lambda: live.session.language

        async def consume() -> None:
            async for event in live.events():
                show(event, live.audio_s)

        consumer = asyncio.create_task(consume())
        step = int(FEED_S * SAMPLE_RATE)
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(audio), step)):
            live.feed_audio(audio[i : i + step], SAMPLE_RATE)
            # pace against the start time, not the previous chunk: sleep jitter does not accumulate
            await asyncio.sleep(max(0.0, t0 + (n + 1) * FEED_S - time.monotonic()))
        await live.finish()
        await consumer
