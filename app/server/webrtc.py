"""WebRTC audio input (aiortc): answer a browser's offer, pull its microphone track, hand 16 kHz mono to a callback.

Signalling travels over the Dragoman WebSocket (connection.py); this module only owns the peer connection.
Frames are pulled with `track.recv()`, so a slow consumer slows the pull instead of growing a queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.audio import SAMPLE_RATE, StreamResampler, to_mono_float32

from .protocol import Ice

log = logging.getLogger(__name__)

_ICE_SCHEMES = ("stun:", "turn:", "turns:")


@dataclass(frozen=True)
class IceServer:
    """One STUN/TURN server, given to both aiortc and the browser."""

    url: str  # stun:host:port, turn:host:port?transport=udp, turns:...
    username: str | None = None
    credential: str | None = None

    def to_browser(self) -> dict[str, Any]:
        """The RTCIceServer dictionary the page passes to `new RTCPeerConnection`."""
        d: dict[str, Any] = {"urls": [self.url]}
        if self.username is not None:
            d["username"] = self.username
            d["credential"] = self.credential or ""
        return d

    def __repr__(self) -> str:  # never print TURN credentials into logs
        return f"IceServer({self.url!r}{', with credentials' if self.username else ''})"


def parse_ice_server(spec: str) -> IceServer:
    """'stun:host:port' or 'user:password@turn:host:port' -> IceServer; ValueError with a hint otherwise."""
    spec = spec.strip()
    username = credential = None
    if "@" in spec:
        userinfo, rest = spec.rsplit("@", 1)
        if rest.startswith(_ICE_SCHEMES):
            username, _, credential = userinfo.partition(":")
            spec = rest
    if not spec.startswith(_ICE_SCHEMES) or len(spec) <= len("stun:"):
        raise ValueError(f"ICE server must look like 'stun:host:port' or 'user:pass@turn:host:port', got {spec!r}")
    return IceServer(url=spec, username=username, credential=credential)


@dataclass(frozen=True)
class WebRTCConfig:
    """How the server's peer connections are built."""

    # Empty means host candidates only, which is all loopback and a LAN need. aiortc would otherwise default to
    # Google's public STUN server, which stalls ICE gathering for seconds on a machine without internet.
    ice_servers: tuple[IceServer, ...] = ()
    target_rate: int = SAMPLE_RATE  # what the callback receives (the model's rate)


def frame_to_mono(frame: Any) -> tuple[np.ndarray, int]:
    """An av.AudioFrame (packed or planar, any channel count) -> (float32 mono samples, sample_rate)."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        interleaved = data.T  # (channels, n) -> (n, channels)
    else:
        interleaved = data.reshape(-1, channels)  # packed: (1, n * channels) -> (n, channels)
    return to_mono_float32(interleaved), int(frame.sample_rate)


class WebRTCAudioReceiver:
    """One browser peer connection whose first audio track feeds `on_audio(samples_16k, rate)`.

    `on_audio` runs on the event loop and must not block (LiveSession.feed_audio never does).
    `on_failure(message)` is called once if the media path breaks before `close()`.
    """

    def __init__(
        self,
        config: WebRTCConfig,
        on_audio: Callable[[np.ndarray, int], None],
        on_failure: Callable[[str], None] | None = None,
        log_prefix: str = "",
    ) -> None:
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

        self.config = config
        self._on_audio = on_audio
        self._on_failure = on_failure
        self._prefix = log_prefix
        servers = [RTCIceServer(urls=s.url, username=s.username, credential=s.credential) for s in config.ice_servers]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self.frames = 0  # frames pulled from the track
        self.audio_s = 0.0  # seconds of audio handed to on_audio

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind != "audio" or self._reader is not None:
                log.debug("%signoring %s track", self._prefix, track.kind)
                return
            log.info("%sWebRTC audio track received", self._prefix)
            self._reader = asyncio.ensure_future(self._read(track))

        @self.pc.on("connectionstatechange")
        async def on_state() -> None:
            state = self.pc.connectionState
            log.debug("%sWebRTC connection %s", self._prefix, state)
            if state == "failed" and not self._closed:
                self._fail("the WebRTC connection failed (ICE could not connect: check --ice-server)")

    async def accept(self, offer_sdp: str) -> str:
        """Apply the browser's offer and return the answer SDP (all candidates included: aiortc does not trickle)."""
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    async def add_candidate(self, ice: Ice) -> None:
        """Add a candidate the browser trickled after its offer (None marks the end of candidates)."""
        from aiortc.sdp import candidate_from_sdp

        if ice.candidate is None:
            return  # aiortc needs no end-of-candidates signal
        line = ice.candidate.removeprefix("candidate:")
        candidate = candidate_from_sdp(line)
        candidate.sdpMid = ice.sdp_mid
        candidate.sdpMLineIndex = ice.sdp_mline_index
        await self.pc.addIceCandidate(candidate)

    async def _read(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        resampler: StreamResampler | None = None
        try:
            while True:
                frame = await track.recv()
                samples, rate = frame_to_mono(frame)
                if resampler is None or resampler.from_rate != rate:
                    resampler = StreamResampler(rate, self.config.target_rate)  # Opus decodes to 48 kHz
                out = resampler.process(samples)
                self.frames += 1
                if out.size:
                    self.audio_s += out.size / self.config.target_rate
                    self._on_audio(out, self.config.target_rate)
        except MediaStreamError:
            log.debug("%sWebRTC track ended after %d frames", self._prefix, self.frames)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # contained: one broken track must not take the server down
            log.exception("%sWebRTC audio reader failed", self._prefix)
            self._fail(f"WebRTC audio could not be decoded: {e}")

    def _fail(self, message: str) -> None:
        if self._on_failure is not None and not self._closed:
            callback, self._on_failure = self._on_failure, None
            callback(message)

    async def close(self) -> None:
        """Stop pulling audio and close the peer connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
        await self.pc.close()
