"""One WebSocket connection: its session on the shared engine, its bounded send queue, its limits.

Nothing here awaits a client while holding shared state; see app.py for the rules this follows. Nothing here knows
the web framework either: the socket is a `sockets.MessageSocket`. `Connection` speaks Dragoman's own protocol
(docs/protocol.md); the OpenAI Realtime and Deepgram sockets (api/realtime.py, api/deepgram.py) subclass it and
override only the hooks marked "wire format", so limits, backpressure, timeouts and shutdown are the same code for
every protocol. Messages are queued as objects (`protocol.Outgoing`) and written to JSON by the sender task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import AudioError, EngineError
from engine.events import Commit, Error, Partial
from engine.languages import known_languages

from . import protocol as p
from .limits import TokenBucket
from .mt import is_target_event, open_stage, render_target, translated_events
from .sockets import MessageSocket, SocketClosed
from .webrtc import WebRTCAudioReceiver

if TYPE_CHECKING:
    from app.runtime import LiveSession
    from engine.streaming.config import SessionConfig

    from .hub import DragomanHub
    from .rooms import Room

log = logging.getLogger("app.server")  # one logger for the server's story, per-connection prefixes inside


def start_session_config(template: SessionConfig | None, start: p.Start) -> SessionConfig:
    """A `start`'s session: the server's template (`dragoman serve --policy/--mode/--chunk`), else SessionConfig's
    defaults, with the task and language the client asked for."""
    from engine.streaming.config import SessionConfig

    extra = {"vocabulary": start.vocabulary} if start.vocabulary else {}
    return dataclasses.replace(template or SessionConfig(), task=start.task, language=start.language, **extra)


class Connection:
    """One WebSocket client: protocol state, its live session, its outgoing queue and its tasks."""

    def __init__(self, server: DragomanHub, ws: MessageSocket) -> None:
        self.server = server
        self.config = server.config
        self.ws = ws
        self.proto = p.ConnectionProtocol(self.config.limits, self.config.defaults)
        self.out: asyncio.Queue[p.Outgoing] = asyncio.Queue(maxsize=self.config.send_queue_messages)
        self.limits = self.config.server_limits
        self.messages = TokenBucket(self.limits.max_messages_per_s, self.limits.burst_messages)
        self.audio: TokenBucket | None = None  # audio seconds; one bucket per session
        self.delay_s = 0.0  # how long to stop reading after the current message (rate limit)
        self.rate_noticed = False  # `rate_limited` is sent once per session
        self.last_input = time.monotonic()  # last message or WebRTC audio: the idle clock
        self.ending = False  # the server is ending this connection (timeout, shutdown): input is ignored
        self.pump: asyncio.Task[None] | None = None
        self.live: LiveSession | None = None
        self.stage = None  # the session's MT stage (engine.mt.stage.MTStage) when `start` asked for a target
        self.rtc: WebRTCAudioReceiver | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.prefix = f"[{ws.peer}] "
        self.dropped = 0  # partial/stats messages dropped under backpressure
        self.cut_off = False  # the client was too slow: nothing more is queued, the connection is closing
        self.room: Room | None = None  # the session's audience (`start.room`), rooms.py
        self.language_sent: tuple[str, str, bool] | None = None  # (session id, language, decided) last announced

    # outgoing ----------------------------------------------------------------------------------------------------

    def post(self, message: p.Outgoing) -> None:
        """Queue a message for the client without waiting; never blocks the caller."""
        if message.droppable and self.out.qsize() >= self.out.maxsize // 2:
            self.dropped += 1  # a later partial/stats supersedes this one; keep room for commits
            return
        if self.cut_off:
            return
        try:
            self.out.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("%sclient does not read its captions; closing", self.prefix)
            self.cut_off = True
            self.server.metrics.error("slow_client")
            self._spawn(self._close_socket(1008, "slow_client: captions are not being read"))

    async def _send_loop(self) -> None:
        while True:
            message = await self.out.get()
            try:
                await asyncio.wait_for(self.ws.send(message.to_json()), self.config.send_timeout_s)
            except TimeoutError:
                log.warning("%sclient accepted nothing for %.0f s; closing", self.prefix, self.config.send_timeout_s)
                self.ws.abort()  # a polite close would wait on the same stuck socket
                return
            except SocketClosed:
                return
            finally:
                self.out.task_done()

    async def _drain(self, timeout_s: float) -> None:
        """Wait (bounded) until everything queued so far has been handed to the socket."""
        join = asyncio.ensure_future(self.out.join())
        await asyncio.wait({join}, timeout=timeout_s)
        join.cancel()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _close_socket(self, code: int, reason: str) -> None:
        """A polite close, bounded: a client that does not read cannot hold it (then the connection is cut)."""
        try:
            async with asyncio.timeout(self.config.send_timeout_s):
                await self.ws.close(code, reason)
        except TimeoutError:
            self.ws.abort()

    def error(self, code: p.ErrorCode | str, message: str) -> None:
        self.server.metrics.error(code.value if isinstance(code, p.ErrorCode) else code)
        self.post(self._error_message(code, message))

    # wire format: what subclasses speaking another protocol override --------------------------------------------

    def _error_message(self, code: p.ErrorCode | str, message: str) -> p.Outgoing:
        return p.ErrorMessage(code, message)

    def _render(self, event: Commit | Partial | Error, live: LiveSession) -> list[p.Outgoing]:
        """The messages one engine event becomes."""
        if is_target_event(event):  # captions in another language (mt.py)
            return [render_target(event)]
        if isinstance(event, Commit):
            return [*self._language(live), p.CommitMessage(event.text, event.start_s, event.end_s)]
        if isinstance(event, Partial):
            return [*self._language(live), p.PartialMessage(event.text, event.start_s, event.end_s)]
        return [p.ErrorMessage(event.code, event.message)]

    def _language(self, live: LiveSession) -> list[p.Outgoing]:
        """A session that detects its language announces it (and when it is no longer a guess) before the text
        decoded in it, so the page can show it and the speaker can correct it (docs/protocol.md, `language`)."""
        session = getattr(live, "session", None)
        detector = getattr(session, "language_id", None)  # None: the language was given, or cannot be detected
        language = getattr(session, "language", None)
        if detector is None or language is None:
            return []
        now = (str(live.id), str(language), bool(detector.decided))
        if now == self.language_sent:
            return []
        self.language_sent = now
        return [p.LanguageMessage(now[1], now[2])]

    def _announce(self, live: LiveSession) -> None:
        """The session is open."""
        self.post(
            p.ReadyMessage(
                str(live.id), tuple(s.to_browser() for s in self.config.webrtc.ice_servers), replica=self.config.replica
            )
        )

    async def _session_over(self, live: LiveSession) -> None:
        """The session's last event has been forwarded: say so, free it."""
        self.post(p.StatsMessage(live.lag_s, live.rtf, live.audio_s))
        self.post(p.EndMessage())
        await self._close_session()

    def _server_stop(self) -> bool:
        """The server ends the session: True if a flush must be started (False: one is already under way)."""
        return self.proto.server_stop()

    # incoming ----------------------------------------------------------------------------------------------------

    def _idle_left_s(self) -> float:
        return self.last_input + self.limits.idle_timeout_s - time.monotonic()

    async def run(self) -> None:
        sender = asyncio.ensure_future(self._send_loop())
        try:
            while True:
                left = self._idle_left_s()
                try:
                    if left <= 0:
                        raise TimeoutError
                    async with asyncio.timeout(left):
                        message = await self.ws.recv()
                except TimeoutError:
                    if self._idle_left_s() > 0:
                        continue  # WebRTC audio kept the connection alive meanwhile
                    await self._time_out(f"nothing received for {self.limits.idle_timeout_s:.0f} s", "idle timeout")
                    return  # closed (or cut off) by now
                self.last_input = time.monotonic()
                if self.ending or not self.ws.open:
                    # being flushed: nothing the client says changes that; closed: what is still buffered comes
                    # from a client that has gone (closing abandons the session), so it is skipped, not decoded
                    continue
                try:
                    if isinstance(message, str):
                        await self._on_text(message)
                    else:
                        self._on_binary(message)
                except p.ProtocolError as e:
                    log.debug("%sprotocol error %s: %s", self.prefix, e.code.value, e.message)
                    self.error(e.code, e.message)
                    if e.fatal:
                        await self._close_socket(1008, e.code.value)
                await self._throttle()
        except SocketClosed:
            pass
        finally:
            # the socket is closed by now: whatever is still queued has nobody to go to
            await self._teardown()
            sender.cancel()

    def _rate_notice(self, what: str) -> None:
        if not self.rate_noticed:
            self.rate_noticed = True
            log.info("%srate limited: %s", self.prefix, what)
            self.error(p.ErrorCode.RATE_LIMITED, f"{what}; the server reads this connection more slowly")

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once if the connection closes (its handler must not linger)."""
        try:
            async with asyncio.timeout(seconds):
                await self.ws.wait_closed()
        except TimeoutError:
            pass

    async def _throttle(self) -> None:
        """After each message: pause reading while the client is over its rates or its session's backlog is full."""
        delay = max(self.delay_s, self.messages.take(1, time.monotonic()))
        self.delay_s = 0.0
        if delay > 0:  # the bucket is in debt: its burst (seconds of audio) is spent, not just jitter
            self._rate_notice(
                f"over {self.limits.max_messages_per_s:.0f} messages/s or {self.limits.max_realtime:g}x real-time audio"
            )
            await self._pause(delay)
        live = self.live
        if live is not None and live.lag_s > self.limits.max_backlog_s:
            self._rate_notice(f"over {self.limits.max_backlog_s:.0f} s of audio wait for the model")
            while self.live is live and not live.closed and live.lag_s > self.limits.max_backlog_s and self.ws.open:
                await self._pause(0.05)
        self.last_input = time.monotonic()  # our own pause is not the client's idleness

    async def _on_text(self, text: str) -> None:
        message = self.proto.receive_text(text)
        if isinstance(message, p.Start):
            self._start(message)
        elif isinstance(message, p.Stop):
            await self._stop()
        elif isinstance(message, p.SetLanguage):
            await self._relanguage(message.language)
        elif isinstance(message, p.Offer):
            await self._offer(message)
        elif isinstance(message, p.Ice):
            if self.rtc is None:
                raise p.ProtocolError(p.ErrorCode.BAD_MESSAGE, "ICE candidate before an offer")
            try:
                await self.rtc.add_candidate(message)
            except Exception as e:  # a malformed candidate line from aiortc's parser
                raise p.ProtocolError(p.ErrorCode.BAD_MESSAGE, f"bad ICE candidate: {e}") from None

    def _on_binary(self, data: bytes) -> None:
        if self.proto.webrtc:
            raise p.ProtocolError(p.ErrorCode.BAD_MESSAGE, "this session takes audio over WebRTC, not binary frames")
        audio = self.proto.receive_binary(data)
        self._feed(audio.samples, audio.sample_rate)

    def _feed_track(self, samples: np.ndarray, sample_rate: int) -> None:
        """WebRTC audio: a peer cannot be slowed from here, so audio over its rate is refused (dropped)."""
        self.last_input = time.monotonic()
        if self.audio is not None and not self.audio.try_take(samples.size / sample_rate, time.monotonic()):
            self._rate_notice(f"WebRTC audio over {self.limits.max_realtime:g}x real time is dropped")
            return
        self._feed(samples, sample_rate, counted=True)

    def _feed(self, samples: np.ndarray, sample_rate: int, *, counted: bool = False) -> None:
        if self.live is None:
            return
        if self.audio is not None and not counted:
            self.delay_s = max(self.delay_s, self.audio.take(samples.size / sample_rate, time.monotonic()))
        try:
            # any rate: the session resamples to the model's rate with filter state kept across frames
            self.live.feed_audio(samples, sample_rate)
            self.server.metrics.audio_in(samples.size / sample_rate)
        except AudioError as e:
            self.error(p.ErrorCode.BAD_AUDIO, str(e))
        except EngineError as e:  # audio racing a stop: nothing to do but say so
            log.debug("%saudio refused: %s", self.prefix, e)

    # session lifecycle -------------------------------------------------------------------------------------------

    def _start(self, start: p.Start) -> None:
        from app.runtime import EngineBusy

        try:
            # checked here: in the engine's worker it would only surface later as an `internal` failure
            p.check_language(start.language, known_languages(self.server.engine.backend))
            self.stage, start = open_stage(self.server, start)  # `target`: the MT stage and the task it needs
        except p.ProtocolError:
            self.proto.session_ended()
            raise
        session_config = start_session_config(self.config.session, start)
        try:
            live = self.server.engine.open_session(session_config)
        except EngineBusy as e:
            self.proto.session_ended()
            raise p.ProtocolError(p.ErrorCode.BUSY, f"the server is at its session limit, try again later ({e})") from e
        except EngineError as e:
            self.proto.session_ended()
            raise p.ProtocolError(p.ErrorCode.BAD_MESSAGE, str(e)) from None
        self.live = live
        self.audio = TokenBucket(self.limits.max_realtime, self.limits.burst_audio_s)
        self.rate_noticed = False
        self.prefix = f"[{live.id}] "
        log.info(
            "%ssession started: task=%s language=%s rate=%d %s",
            self.prefix,
            start.task,
            start.language or "auto",
            start.sample_rate,
            start.encoding,
        )
        self.server.metrics.session_opened()
        self._announce(live)
        rooms = getattr(self.server, "rooms", None)
        if start.room and rooms is not None:
            self.room = rooms.open()
            log.info("%sroom %s opened", self.prefix, self.room.id)
            self.post(p.RoomMessage(self.room.id, self.room.viewer_token, rooms.limits.max_viewers))
        self.pump = self._spawn(self._pump(live))
        self._spawn(self._stats(live))
        self._spawn(self._deadline(live))

    async def _relanguage(self, language: str | None) -> None:
        """The speaker corrected the spoken language: the session starts anew in it on the same connection, audio
        transport and room (viewers keep their link). What was committed stays committed; audio not yet committed
        goes with the old session, which heard it as the wrong language."""
        old, start = self.live, self.proto.start
        if old is None or start is None or self.ending:
            return
        p.check_language(language, known_languages(self.server.engine.backend))
        start = dataclasses.replace(start, language=language)
        stage, engine_start = open_stage(self.server, start)
        if self.pump is not None:
            self.pump.cancel()  # the old session's remaining events are dropped with it
        self.live = None
        old.close()
        self.server.metrics.session_closed()
        try:
            live = self.server.engine.open_session(start_session_config(self.config.session, engine_start))
        except EngineError as e:  # its slot was just freed; another connection may have taken it meanwhile
            log.info("%scould not restart in %s: %s", self.prefix, language or "auto", e)
            self.error(
                p.ErrorCode.BUSY, f"the session could not restart in the corrected language ({e}); press Start again"
            )
            self.post(p.EndMessage())
            await self._close_session()
            return
        self.proto.start, self.stage, self.live = start, stage, live
        log.info("%srestarted as %s in %s", self.prefix, live.id, language or "auto")
        self.prefix = f"[{live.id}] "
        self.server.metrics.session_opened()
        self.post(p.RestartedMessage(str(live.id), language))
        self.pump = self._spawn(self._pump(live))
        self._spawn(self._stats(live))
        self._spawn(self._deadline(live))

    async def _pump(self, live: LiveSession) -> None:
        """Forward the session's events to the client; after the final flush, send `end`."""
        try:
            events = live.events() if self.stage is None else translated_events(live, self.stage)
            async for event in events:
                if isinstance(event, Commit):
                    self.server.metrics.commit(max(0.0, live.audio_s - event.end_s))
                elif isinstance(event, Error):
                    self.server.metrics.error(event.code)
                for message in self._render(event, live):
                    self.post(message)
                    if self.room is not None:
                        self.room.publish(message)  # never waits: a slow viewer is dropped, not waited for
        except asyncio.CancelledError:
            raise
        except Exception as e:  # contained: this session ends, the server goes on
            log.exception("%ssession failed", self.prefix)
            self.error(p.ErrorCode.INTERNAL, f"the session failed: {e}")
        if self.live is live:
            log.info("%ssession ended: %.1f s of audio, rtf %.2f", self.prefix, live.audio_s, live.rtf)
            self.server.metrics.session_rtf(live.rtf)
            await self._session_over(live)

    async def _deadline(self, live: LiveSession) -> None:
        await asyncio.sleep(self.limits.max_session_s)
        if self.live is live:
            await self._time_out(
                f"the session reached its time limit of {self.limits.max_session_s:.0f} s; start a new one",
                "session time limit",
            )

    async def _time_out(self, message: str, reason: str) -> None:
        """A time limit ran out (idle or session): log and send `message`, then end with close code 1008, `reason`."""
        log.info("%s%s; ending", self.prefix, message)
        await self.end_by_server(p.ErrorCode.TIMEOUT, message, 1008, reason)

    async def end_by_server(self, code: p.ErrorCode, message: str, close_code: int, reason: str) -> None:
        """End this connection on the server's initiative: say why, flush the session (final commits, `end`), close.

        Used for idle and session time limits and for shutdown. Bounded by `shutdown_timeout_s`: a client that
        does not read, or a flush that does not finish, is cut off after it.
        """
        if self.ending:
            return
        self.ending = True
        deadline = time.monotonic() + self.limits.shutdown_timeout_s
        live, pump = self.live, self.pump
        self.error(code, message)
        if live is not None and pump is not None:
            if self._server_stop():  # (after a client `stop` the flush is already under way)
                if self.rtc is not None:
                    await self.rtc.close()
                self._spawn(self._finish(live))
            await asyncio.wait({pump}, timeout=max(0.0, deadline - time.monotonic()))
        await self._drain(max(0.0, deadline - time.monotonic()))
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                await self.ws.close(close_code, reason)
        except TimeoutError:
            self.ws.abort()

    async def _stats(self, live: LiveSession) -> None:
        while self.live is live:
            await asyncio.sleep(self.config.stats_interval_s)
            if self.live is live and live.audio_s > 0:
                self.post(p.StatsMessage(live.lag_s, live.rtf, live.audio_s))

    async def _stop(self) -> None:
        live = self.live
        if live is None:
            return
        if self.rtc is not None:
            await self.rtc.close()  # no more audio after stop; what is buffered in the engine still gets decoded
        # finish() flushes in the engine; the pump sends the final commits and `end` once events() ends
        self._spawn(self._finish(live))

    async def _finish(self, live: LiveSession) -> None:
        try:
            await live.finish()
        except EngineError as e:
            self.error(p.ErrorCode.INTERNAL, f"the session could not be finished: {e}")

    async def _offer(self, offer: p.Offer) -> None:
        live = self.live
        assert live is not None  # the protocol allows offers only while streaming

        def failed(message: str) -> None:
            self.error(p.ErrorCode.WEBRTC_FAILED, message)

        self.rtc = WebRTCAudioReceiver(
            self.config.webrtc, on_audio=self._feed_track, on_failure=failed, log_prefix=self.prefix
        )
        try:
            answer = await self.rtc.accept(offer.sdp)
        except Exception as e:
            log.info("%sWebRTC offer refused: %s", self.prefix, e)
            await self.rtc.close()
            self.rtc = None
            raise p.ProtocolError(p.ErrorCode.WEBRTC_FAILED, f"cannot answer the WebRTC offer: {e}") from None
        self.post(p.AnswerMessage(answer))

    def _end_room(self, reason: str) -> None:
        room, self.room = self.room, None
        if room is not None:
            self.server.rooms.close(room, reason)
            log.info("%sroom %s ended (%s)", self.prefix, room.id, reason)

    async def _close_session(self) -> None:
        live, rtc = self.live, self.rtc
        self.live, self.rtc = None, None
        self._end_room("the speaker's session ended" if self.ws.open else "the speaker disconnected")
        self.proto.session_ended()
        if rtc is not None:
            await rtc.close()
        if live is not None:
            live.close()
            self.server.metrics.session_closed()

    async def _teardown(self) -> None:
        """The client went away (or the server stops): abandon the session without waiting for a flush."""
        await self._close_session()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
