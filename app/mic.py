"""Desktop microphone capture with sounddevice (PortAudio): device listing/selection and a bounded capture queue.

The PortAudio callback runs on a real-time audio thread: it only copies the block into a bounded, thread-safe
queue and counts what it could not keep. Everything else (resampling, the model) happens on the consumer's side,
so a slow model never makes the device overflow; when the consumer falls far behind, whole blocks are dropped and
counted instead of blocking the audio thread.

Capture runs at the device's native rate (asking PortAudio for another rate makes some host APIs fail and others
resample badly); `Microphone.blocks()` yields float32 mono at the device rate. The streaming session converts to
the model's rate with one stateful resampler per stream (engine.audio.StreamResampler: no clicks at block edges).

Errors a user can act on are MicError subclasses with a message that says what to do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType, TracebackType

import numpy as np

from engine.errors import EngineError

log = logging.getLogger(__name__)


class MicError(EngineError):
    """The microphone cannot be used."""


class PortAudioMissing(MicError):
    pass


class NoInputDevice(MicError):
    pass


class DeviceNotFound(MicError):
    pass


class DeviceLost(MicError):
    """The device stopped delivering audio while capturing (unplugged, audio server gone)."""


@dataclass(frozen=True)
class InputDevice:
    index: int  # PortAudio device index (stable only while the device list does not change)
    name: str
    channels: int  # max input channels
    sample_rate: int  # the device's native (default) rate
    host_api: str
    is_default: bool


@dataclass(frozen=True)
class MicConfig:
    device: str | int | None = None  # a name (exact or unique substring), an index, or None for the default input
    block_s: float = 0.05  # seconds per callback block: small enough for low latency, large enough to be cheap
    queue_s: float = 20.0  # audio the queue holds before blocks are dropped (consumer far behind real time)
    first_block_timeout_s: float = 10.0  # a fresh PortAudio stream may take ~2 s to deliver its first block
    stall_timeout_s: float = 3.0  # no block for this long after the first one means the device is gone

    def __post_init__(self) -> None:
        if not 0.005 <= self.block_s <= 1.0:
            raise MicError("block_s must be between 5 ms and 1 s")
        if self.queue_s < self.block_s:
            raise MicError("queue_s must hold at least one block")


def import_sounddevice() -> ModuleType:
    """The sounddevice module, or PortAudioMissing when the PortAudio library cannot be loaded."""
    try:
        import sounddevice
    except OSError as e:  # sounddevice raises OSError when libportaudio cannot be found or loaded
        raise PortAudioMissing(
            f"cannot use the microphone: the PortAudio library is missing ({e}); "
            "install it (Debian/Ubuntu: apt-get install libportaudio2, macOS: brew install portaudio)"
        ) from e
    except ImportError as e:
        raise PortAudioMissing(
            f"cannot use the microphone: the sounddevice package is not installed ({e}); pip install sounddevice"
        ) from e
    return sounddevice


def list_input_devices(sd: ModuleType | None = None) -> list[InputDevice]:
    """All devices that can record, in PortAudio's order."""
    sd = sd or import_sounddevice()
    try:
        devices = sd.query_devices()
        apis = sd.query_hostapis()
        default_in = sd.default.device[0]
    except sd.PortAudioError as e:
        raise NoInputDevice(f"cannot list audio devices: {e}") from e
    if default_in is None or default_in < 0:  # PortAudio's own idea of the default input
        default_in = next((api["default_input_device"] for api in apis if api["default_input_device"] >= 0), -1)
    return [
        InputDevice(
            index=d["index"],
            name=d["name"],
            channels=d["max_input_channels"],
            sample_rate=int(round(d["default_samplerate"])),
            host_api=apis[d["hostapi"]]["name"],
            is_default=d["index"] == default_in,
        )
        for d in devices
        if d["max_input_channels"] > 0
    ]


def resolve_device(spec: str | int | None, devices: list[InputDevice]) -> InputDevice:
    """The input device `spec` names: None = default, an index, an exact name, or a unique part of a name."""
    if not devices:
        raise NoInputDevice(
            "no audio input device found: connect a microphone (or start the audio server, "
            "e.g. PulseAudio/PipeWire) and try again"
        )
    if spec is None or spec == "":
        default = next((d for d in devices if d.is_default), None)
        if default is None:  # PortAudio names no default: the first input is the best guess
            default = devices[0]
        return default
    names = ", ".join(f"{d.index}: {d.name!r}" for d in devices)
    if isinstance(spec, int) or spec.strip().lstrip("-").isdigit():
        index = int(spec)
        for d in devices:
            if d.index == index:
                return d
        raise DeviceNotFound(
            f"no input device with index {index}; input devices are {names} (dragoman mic --list-devices)"
        )
    wanted = spec.strip().lower()
    exact = [d for d in devices if d.name.lower() == wanted]
    if exact:
        return exact[0]
    partial = [d for d in devices if wanted in d.name.lower()]
    if len(partial) == 1:
        return partial[0]
    if partial:
        raise DeviceNotFound(
            f"input device name {spec!r} is ambiguous: it matches "
            + ", ".join(f"{d.index}: {d.name!r}" for d in partial)
            + "; give the index instead"
        )
    raise DeviceNotFound(f"no input device named {spec!r}; input devices are {names} (dragoman mic --list-devices)")


class Microphone:
    """One capture stream. start()/stop() or `with`; consume with `async for block in mic.blocks()`."""

    def __init__(self, config: MicConfig = MicConfig(), sd: ModuleType | None = None) -> None:
        self.config = config
        self._sd = sd or import_sounddevice()
        self.device = resolve_device(config.device, list_input_devices(self._sd))
        self.sample_rate = self.device.sample_rate
        self.block_frames = max(1, round(config.block_s * self.sample_rate))
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=max(1, round(config.queue_s / config.block_s)))
        self._stream = None
        self._stopping = False
        self._finished = False  # PortAudio ended the stream on its own (device gone)
        self._last_block_t: float | None = None  # monotonic time of the latest callback
        self._started_t = 0.0
        self.frames_captured = 0
        self.input_overflows = 0  # blocks PortAudio flagged as overflowed before we saw them
        self.blocks_dropped = 0  # blocks our queue had no room for: the consumer fell far behind

    def start(self) -> None:
        sd = self._sd
        try:
            self._stream = sd.InputStream(
                device=self.device.index,
                samplerate=self.sample_rate,
                channels=1,
                dtype="float32",
                blocksize=self.block_frames,
                callback=self._callback,
                finished_callback=self._on_finished,
            )
            self._stream.start()
        except (sd.PortAudioError, ValueError) as e:
            raise DeviceLost(f"cannot open input device {self.device.name!r}: {e}") from e
        self._started_t = time.monotonic()
        log.info("capturing from %d: %r at %d Hz", self.device.index, self.device.name, self.sample_rate)

    def stop(self) -> None:
        """Stops capture; blocks already queued stay readable."""
        self._stopping = True
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception as e:  # the device may already be gone; stopping must not mask the real error
                log.debug("closing the input stream: %s", e)

    def __enter__(self) -> Microphone:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def seconds_captured(self) -> float:
        return self.frames_captured / self.sample_rate

    def _callback(self, indata: np.ndarray, frames: int, time_info: object, status: object) -> None:
        # Real-time audio thread: copy, enqueue, count. No logging, no locks that the consumer could hold long.
        if getattr(status, "input_overflow", False):
            self.input_overflows += 1
        self._last_block_t = time.monotonic()
        try:
            self._queue.put_nowait(indata[:, 0].copy())
        except queue.Full:
            self.blocks_dropped += 1

    def _on_finished(self) -> None:
        self._finished = True

    def read_nowait(self) -> list[np.ndarray]:
        """Every block queued so far (device rate), oldest first."""
        blocks = []
        while True:
            try:
                blocks.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for b in blocks:
            self.frames_captured += len(b)
        return blocks

    def check_alive(self) -> None:
        """Raises DeviceLost when the device has stopped delivering audio while we still capture."""
        if self._stopping:
            return
        now = time.monotonic()
        stream = self._stream
        if self._finished or (stream is not None and not stream.active):
            raise DeviceLost(f"input device {self.device.name!r} stopped (disconnected, or the audio server quit)")
        if self._last_block_t is None:
            if now - self._started_t > self.config.first_block_timeout_s:
                raise DeviceLost(
                    f"input device {self.device.name!r} delivered no audio within "
                    f"{self.config.first_block_timeout_s:.0f} s"
                )
        elif now - self._last_block_t > self.config.stall_timeout_s:
            raise DeviceLost(
                f"input device {self.device.name!r} stopped delivering audio "
                f"(no samples for {now - self._last_block_t:.1f} s: disconnected?)"
            )

    async def blocks(self, poll_s: float | None = None) -> AsyncIterator[np.ndarray]:
        """Captured blocks at the device rate until stop(); raises DeviceLost if the device goes away.

        Polls the thread-safe queue from the event loop: waking the loop from the audio thread
        (call_soon_threadsafe) would put an unbounded queue of callbacks behind our bounded one.
        """
        poll_s = poll_s if poll_s is not None else self.config.block_s / 2
        while True:
            blocks = self.read_nowait()
            for b in blocks:
                yield b
            if self._stopping:
                for b in self.read_nowait():  # whatever arrived while stopping
                    yield b
                return
            if not blocks:
                self.check_alive()
                await asyncio.sleep(poll_s)


def describe_devices(devices: list[InputDevice]) -> str:
    """The --list-devices table."""
    if not devices:
        return "no audio input devices found"
    rows = [
        f"{'*' if d.is_default else ' '} {d.index:>3}  {d.name}  ({d.channels} ch, {d.sample_rate} Hz, {d.host_api})"
        for d in devices
    ]
    return "\n".join(["  idx  name  (* = default input)", *rows])


# What PortAudio's ALSA host API and alsa-lib print straight to the C stderr when a device fails or is probed:
# internal detail under our own clear message (DeviceLost, NoInputDevice, ...).
_LIBRARY_NOISE = re.compile(rb"^(Expression '.*' failed in '.*'|ALSA lib |PaAlsaStream|Cannot connect to server)")


@contextmanager
def quiet_audio_libraries() -> Iterator[None]:
    """Drops PortAudio/ALSA diagnostics from the process's stderr (fd 2); every other line passes through.

    They are printed by C code, so sys.stderr cannot filter them: fd 2 is routed through a pipe read by a thread.
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def forward() -> None:
        dropped = 0
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            for line in iter(pipe.readline, b""):
                if _LIBRARY_NOISE.match(line):
                    dropped += 1
                else:
                    os.write(saved, line)
        if dropped:
            log.debug("dropped %d lines of audio library diagnostics", dropped)

    thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        import sys

        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the thread sees EOF and ends
        thread.join(timeout=2)
        os.close(saved)
