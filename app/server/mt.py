"""Captions in other languages over the WebSocket protocol: the MT models a server offers (`dragoman serve
--target de,es --mt-model ...`), a session's MT stage opened from `start.target`, and its events interleaved with
the speech events. Translations run in a worker thread, never on the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from engine.errors import ConfigError

from . import protocol as p

log = logging.getLogger("app.server")


@dataclass
class ServerTranslation:
    """What `serve` loaded: the targets it offers and the MT models (one Translator each, shared by sessions)."""

    targets: tuple[str, ...]
    models: list = field(default_factory=list)  # engine.mt.loading.MTBundle
    unit: str = "sentence"
    translators: dict = field(default_factory=dict)  # model name -> Translator

    def open(self, start: p.Start):
        """(MTStage, the Start with the speech task the targets need) for a session; ProtocolError otherwise."""
        from engine.mt.cascade import plan_all, routes_for, speech_task
        from engine.mt.policy import MTPolicyConfig
        from engine.mt.stage import MTStage

        missing = [t for t in start.targets if t not in self.targets]
        if missing:
            raise p.ProtocolError(
                p.ErrorCode.BAD_MESSAGE,
                f"this server does not caption in {', '.join(missing)} "
                f"(it offers {', '.join(self.targets) or 'no other languages'})",
            )
        try:
            plans = plan_all(list(start.targets), start.language, self.models)
            task = speech_task(plans)
        except ConfigError as e:
            raise p.ProtocolError(p.ErrorCode.BAD_MESSAGE, str(e)) from None
        stage = MTStage(routes_for(plans, self.translators), MTPolicyConfig(unit=self.unit))  # type: ignore[arg-type]
        return stage, replace(start, task=task)


def open_stage(hub, start: p.Start):
    """(MTStage or None, Start) for a `start`: None and the Start unchanged when it asks for no target."""
    if not start.targets:
        return None, start
    translation: ServerTranslation | None = getattr(hub.config, "translation", None)
    if translation is None:
        raise p.ProtocolError(
            p.ErrorCode.BAD_MESSAGE,
            "this server has no MT model: start it with --target LANG --mt-model DIR to caption in other languages",
        )
    return translation.open(start)


async def translated_events(live, stage) -> AsyncIterator:
    """The session's events as they come, and the target events they cause as soon as they are translated.

    The source events are forwarded at once, while the stage translates in a worker thread: a slow MT model
    delays the target captions, never the source ones. Each event is fed to the stage with the stream time and the
    language of the moment it arrived; the stage's last events follow the session's last one."""
    merged: asyncio.Queue = asyncio.Queue()
    todo: asyncio.Queue = asyncio.Queue()
    done = object()

    async def source() -> None:
        async for event in live.events():
            merged.put_nowait(event)
            todo.put_nowait((event, live.audio_s, live.session.language))
        todo.put_nowait(done)

    async def translate() -> None:
        audio_s = 0.0
        while (item := await todo.get()) is not done:
            event, audio_s, language = item
            stage.set_spoken_language(language)
            for target_event in await asyncio.to_thread(stage.feed, event, audio_s):
                merged.put_nowait(target_event)
        for target_event in await asyncio.to_thread(stage.finish, max(audio_s, live.audio_s)):
            merged.put_nowait(target_event)

    async def run() -> None:
        try:
            await asyncio.gather(source(), translate())
        except BaseException as e:  # surfaces in the consumer (the connection's pump contains it)
            merged.put_nowait(e)
            raise
        finally:
            merged.put_nowait(done)

    task = asyncio.ensure_future(run())
    try:
        while (item := await merged.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def render_target(event) -> p.TargetCommitMessage | p.TargetPartialMessage:
    from engine.mt.stage import TargetCommit

    if isinstance(event, TargetCommit):
        return p.TargetCommitMessage(
            event.target, event.text, event.source_text, event.start_s, event.end_s, event.latency_s
        )
    return p.TargetPartialMessage(event.target, event.text, event.source_text)


def is_target_event(event) -> bool:
    from engine.mt.stage import TargetCommit, TargetPartial

    return isinstance(event, (TargetCommit, TargetPartial))
