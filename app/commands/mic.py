"""`dragoman mic`: live captions from a microphone, in the terminal and optionally as WebVTT/SRT/JSONL files.

Ctrl-C or SIGTERM stops capture; the audio already captured is still decoded, the final commits are flushed and
the caption files are closed complete. A second Ctrl-C aborts at once (files keep every finished cue).
Microphone problems (no device, PortAudio missing, unknown name, device gone mid-stream) end with one message
and exit status 2; caption files keep everything committed until then.

`--device` names the *input* device here (as the issue's interface asks); the model's compute device, called
`--device` in the other commands, is `--model-device` for this one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from app.captions import CaptionWriter
from app.cli import add_model_options, add_session_options, session_config
from app.terminal import LiveCaptions
from app.translation import add_mt_options
from engine.errors import ConfigError
from engine.events import Commit, Error, Partial
from engine.languages import known_languages, parse_language

if TYPE_CHECKING:  # the heavy imports (torch, PortAudio) wait until the command runs
    from app.mic import Microphone
    from app.runtime import LiveSession
    from engine.backend import Backend
    from engine.streaming.config import SessionConfig

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "mic",
        help="live captions from a microphone",
        conflict_handler="resolve",
        description="Caption or translate what a microphone hears, live.",
    )
    add_model_options(p)
    # "resolve" drops the shared --device (compute device); it comes back as --model-device.
    p.add_argument(
        "--device",
        dest="input_device",
        default=None,
        metavar="NAME|INDEX",
        help="input device: index or (part of) its name; default: the system's default input",
    )
    p.add_argument(
        "--model-device", dest="device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs"
    )
    add_session_options(p)
    add_mt_options(p)  # captions in other languages (docs/mt.md)
    p.add_argument("--list-devices", action="store_true", help="list the input devices and exit")
    p.add_argument("--vtt", default=None, metavar="FILE", help="write WebVTT captions to FILE as they become final")
    p.add_argument("--srt", default=None, metavar="FILE", help="write SRT captions to FILE as they become final")
    p.add_argument("--events", default=None, metavar="FILE.jsonl", help="write every event as one JSON line")
    return p


def run(args: argparse.Namespace) -> int:
    from app.mic import quiet_audio_libraries

    with quiet_audio_libraries():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from app.mic import MicConfig, Microphone, describe_devices, list_input_devices

    if args.list_devices:
        print(describe_devices(list_input_devices()))
        return 0
    for path, suffix in ((args.vtt, ".vtt"), (args.srt, ".srt")):
        if path and Path(path).suffix.lower() != suffix:
            raise ConfigError(f"{path}: the file for --{suffix[1:]} must end in {suffix}")
    config = session_config(args)  # a bad flag fails before the microphone opens or the model loads
    # Resolve the device before loading the model: a wrong name should fail in a second, not after the load.
    mic = Microphone(MicConfig(device=args.input_device))
    outputs = Outputs.open(args.vtt, args.srt, args.events)
    try:
        from app.translation import live_translation
        from engine.backend import make_backend
        from engine.models.loading import load_model

        backend = make_backend(load_model(args.model, args.device))
        parse_language(config.language, known_languages(backend))  # as `stream`: before the microphone starts
        config, mt = live_translation(args, config, backend)  # None without --target
        rc = asyncio.run(_capture(args, mic, backend, outputs, config, mt))
        if mt is not None:
            print(mt.summary(), file=sys.stderr)
        return rc
    finally:
        mic.stop()
        outputs.close()


class Outputs:
    """Caption files, the JSONL event log and the terminal: everything a stream's events go to."""

    def __init__(self, captions: list[CaptionWriter], events: TextIO | None) -> None:
        self.captions = captions
        self.events = events
        self.display = make_display(sys.stdout)
        self.t0 = time.monotonic()

    @classmethod
    def open(cls, vtt: str | None, srt: str | None, events: str | None) -> Outputs:
        writers: list[CaptionWriter] = []
        try:
            writers += [CaptionWriter(path) for path in (vtt, srt) if path]
            try:
                events_file = open(events, "w", encoding="utf-8") if events else None
            except OSError as e:
                raise ConfigError(f"cannot write events to {events}: {e.strerror or e}") from e
        except BaseException:
            for w in writers:
                w.close()
            raise
        return cls(writers, events_file)

    def event(self, ev: Commit | Partial | Error, t_audio: float, lag_s: float | None) -> None:
        if self.events is not None:
            record = {
                "type": type(ev).__name__.lower(),
                "t_audio": round(t_audio, 3),
                "t_wall": round(time.monotonic() - self.t0, 3),
            }
            record.update(
                {"code": ev.code, "message": ev.message}
                if isinstance(ev, Error)
                else {"text": ev.text, "start_s": ev.start_s, "end_s": ev.end_s}
            )
            self.events.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.events.flush()  # a crash keeps every event written so far
        if isinstance(ev, Commit):
            for w in self.captions:
                w.add(ev)
            self.display.commit(ev.text)
        elif isinstance(ev, Partial):
            self.display.partial(ev.text)
        if lag_s is not None:
            self.display.lag(lag_s)

    def advance(self, t_audio: float) -> None:
        for w in self.captions:
            w.advance(t_audio)

    def close(self) -> None:
        for w in self.captions:
            w.close()
        if self.events is not None:
            self.events.close()
            self.events = None
        self.display.close()


def make_display(stream: TextIO) -> LiveCaptions:
    """The live caption renderer shared with `dragoman stream`, with its lag indicator on (a live talk lags)."""
    return LiveCaptions(stream, show_lag=True)


async def _capture(
    args: argparse.Namespace, mic: Microphone, backend: Backend, outputs: Outputs, config: SessionConfig, mt=None
) -> int:
    from app.mic import DeviceLost
    from app.runtime import Engine, EngineConfig

    loop = asyncio.get_running_loop()
    stopping = False

    def request_stop(signum: int) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            print(f"dragoman: {signal.Signals(signum).name}: finishing the captions ...", file=sys.stderr, flush=True)
            mic.stop()
            # a second Ctrl-C aborts at once (KeyboardInterrupt; cli.main turns it into exit 130)
            loop.remove_signal_handler(signal.SIGINT)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, request_stop, sig)

    errors: list[str] = []
    lost: DeviceLost | None = None
    async with Engine(backend, EngineConfig()) as engine:
        live = engine.open_session(config)
        seconds_fed = 0.0
        if mt is not None:
            mt.language_of = lambda: live.session.language

        def show_targets(events: list) -> None:
            """With --target: the first target's captions on screen and in the files (app/translation.py)."""
            from app.translation import as_caption_event

            for te in events:
                if te.target == mt.primary:
                    outputs.event(as_caption_event(te), seconds_fed, getattr(live, "lag_s", None))

        async def consume() -> None:
            async for ev in live.events():
                if isinstance(ev, Error):
                    errors.append(f"{ev.code}: {ev.message}")
                    print(f"dragoman: engine error: {ev.message}", file=sys.stderr, flush=True)
                if mt is None or isinstance(ev, Error):
                    outputs.event(ev, seconds_fed, getattr(live, "lag_s", None))
                else:  # translated off the event loop: the microphone keeps flowing
                    show_targets(await asyncio.to_thread(mt.feed, ev, seconds_fed))

        consumer = asyncio.create_task(consume())
        mic.start()
        announced = False
        try:
            async for block in mic.blocks():
                if not announced:  # the first block: audio really flows (a fresh stream takes up to ~2 s)
                    announced = True
                    print(
                        f"dragoman: listening on {mic.device.name!r} ({mic.sample_rate} Hz); Ctrl-C to stop",
                        file=sys.stderr,
                        flush=True,
                    )
                live.feed_audio(block, mic.sample_rate)  # the session resamples, statefully, to the model's rate
                seconds_fed += len(block) / mic.sample_rate
                outputs.advance(_committed_until(live, seconds_fed))
                outputs.display.lag(live.lag_s)  # keeps the indicator current between events (silence)
        except DeviceLost as e:
            lost = e  # still flush what was heard before raising
        finally:
            mic.stop()
            await live.finish()
            await consumer
            if mt is not None:
                show_targets(await asyncio.to_thread(mt.finish, seconds_fed))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    if mic.blocks_dropped or mic.input_overflows:
        print(
            f"dragoman: warning: lost audio: {mic.blocks_dropped} blocks dropped (model too slow), "
            f"{mic.input_overflows} device overflows",
            file=sys.stderr,
        )
    log.info("captured %.1f s; rtf %s", seconds_fed, getattr(live, "rtf", None))
    if lost is not None:
        raise lost
    return 1 if errors else 0


def _committed_until(live: LiveSession, seconds_fed: float) -> float:
    """How far caption writers may treat the stream as final: audio received minus the engine's lag (the session
    counts silence as done, so a pause after the last words shows up here and closes their cue)."""
    return getattr(live, "audio_s", seconds_fed) - live.lag_s
