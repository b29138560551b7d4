"""Microphone capture: device selection, real capture through a virtual PulseAudio microphone, and every error path."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app.mic import (
    DeviceLost,
    DeviceNotFound,
    InputDevice,
    MicConfig,
    Microphone,
    NoInputDevice,
    PortAudioMissing,
    import_sounddevice,
    resolve_device,
)
from engine.audio import SAMPLE_RATE, resample
from tests import REPO
from tests.pulse import pulse_available, pulse_server
from tests.speech import speech, write_wav

DEVICES = [
    InputDevice(0, "Built-in Microphone", 2, 48000, "ALSA", False),
    InputDevice(3, "USB Headset Mic", 1, 44100, "ALSA", True),
    InputDevice(7, "USB Webcam Mic", 1, 16000, "ALSA", False),
]

needs_pulse = pytest.mark.skipif(
    not pulse_available(), reason="PulseAudio (pulseaudio, pactl, paplay) is not installed"
)


def _dragoman(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def _assert_one_clear_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("dragoman:")]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_resolve_device_by_default_index_name_and_part_of_name() -> None:
    """No spec picks the default input; an index, an exact name (any case) or a unique part of a name picks that device."""
    assert resolve_device(None, DEVICES).index == 3
    assert resolve_device("7", DEVICES).name == "USB Webcam Mic"
    assert resolve_device(0, DEVICES).name == "Built-in Microphone"
    assert resolve_device("usb headset mic", DEVICES).index == 3
    assert resolve_device("webcam", DEVICES).index == 7


def test_resolve_device_errors_name_the_choices() -> None:
    """Unknown, ambiguous or missing devices raise errors that list what exists and what to do."""
    with pytest.raises(DeviceNotFound, match=r"no input device named 'Studio'.*'USB Headset Mic'.*--list-devices"):
        resolve_device("Studio", DEVICES)
    with pytest.raises(DeviceNotFound, match=r"ambiguous.*USB Headset Mic.*USB Webcam Mic.*index"):
        resolve_device("usb", DEVICES)
    with pytest.raises(DeviceNotFound, match="no input device with index 5"):
        resolve_device("5", DEVICES)
    with pytest.raises(NoInputDevice, match="no audio input device found"):
        resolve_device(None, [])


def test_portaudio_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """When libportaudio cannot be found, importing sounddevice fails and we raise PortAudioMissing saying what to install."""
    import ctypes.util

    real = ctypes.util.find_library
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None if name == "portaudio" else real(name))
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)  # restored afterwards
    with pytest.raises(PortAudioMissing, match="PortAudio library is missing.*libportaudio2"):
        import_sounddevice()


@pytest.mark.slow
def test_cli_portaudio_missing(tmp_path: Path) -> None:
    """`dragoman mic` without PortAudio prints one message naming the package and exits 2 without a traceback."""
    code = (
        "import ctypes.util, sys; real = ctypes.util.find_library; "
        "ctypes.util.find_library = lambda n: None if n == 'portaudio' else real(n); "
        "from app.cli import main; sys.exit(main(['mic', '--vtt', sys.argv[1]]))"
    )
    out = tmp_path / "none.vtt"
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    _assert_one_clear_error(proc, "PortAudio library is missing", "libportaudio2")
    assert not out.exists()  # nothing was captured: no caption file replaces an existing one


@pytest.mark.slow
def test_cli_no_input_device(tmp_path: Path) -> None:
    """With no audio server and no sound card, `dragoman mic` says no input device was found and exits 2."""
    env = {k: v for k, v in os.environ.items() if k != "PULSE_SERVER"}
    env["PULSE_RUNTIME_PATH"] = str(tmp_path / "no-pulse-here")
    proc = _dragoman("mic", env=env)
    _assert_one_clear_error(proc, "no audio input device found")
    listing = _dragoman("mic", "--list-devices", env=env)
    assert listing.returncode == 0 and "no audio input devices found" in listing.stdout


@pytest.mark.slow
@needs_pulse
def test_cli_lists_and_rejects_devices(tmp_path: Path) -> None:
    """--list-devices shows the virtual microphone as default; an unknown --device name is one clear error, exit 2."""
    with pulse_server(tmp_path) as pulse:
        listing = _dragoman("mic", "--list-devices", env=pulse.env)
        assert listing.returncode == 0, listing.stderr
        assert any(line.startswith("*") and "default" in line for line in listing.stdout.splitlines())
        vtt = tmp_path / "x.vtt"
        proc = _dragoman("mic", "--device", "Studio Condenser", "--vtt", str(vtt), env=pulse.env)
        _assert_one_clear_error(proc, "no input device named 'Studio Condenser'", "default")
        assert not vtt.exists()  # checked before any file is opened: an existing caption file is not truncated
        proc = _dragoman("mic", "--device", "99", env=pulse.env)
        _assert_one_clear_error(proc, "no input device with index 99")


async def _record(mic: Microphone, seconds: float, on_first_block=None) -> np.ndarray:
    blocks, got = [], 0
    async for block in mic.blocks():
        if not blocks and on_first_block is not None:
            on_first_block()
        blocks.append(block)
        got += len(block)
        if got >= seconds * mic.sample_rate:
            mic.stop()
    return np.concatenate(blocks)


@pytest.mark.slow
@needs_pulse
def test_microphone_records_the_played_speech(tmp_path: Path, audio_dir: Path) -> None:
    """Speech played into the virtual microphone comes back at the device's native rate, matching the file."""
    audio, _ = speech("de", 1, audio_dir)
    wav = write_wav(tmp_path / "de.wav", audio)
    with pulse_server(tmp_path) as pulse:
        mic = Microphone(MicConfig())
        assert mic.device.is_default
        players = []
        with mic:
            recorded = asyncio.run(
                _record(mic, len(audio) / SAMPLE_RATE + 2.0, lambda: players.append(pulse.play(wav, wait=False)))
            )
        players[0].wait(timeout=60)
    assert mic.sample_rate in (44100, 48000) and mic.blocks_dropped == 0
    got = resample(recorded, mic.sample_rate, SAMPLE_RATE)
    # the recording starts somewhere before the speech: align by cross-correlation, then compare
    corr = np.correlate(got, audio[: SAMPLE_RATE * 2], mode="valid")
    lag = int(np.argmax(np.abs(corr)))
    aligned = got[lag : lag + len(audio)]
    assert len(aligned) == len(audio)
    r = np.corrcoef(aligned, audio)[0, 1]
    assert r > 0.9, f"recorded audio does not match the played speech (r={r:.2f})"
    assert 20 * np.log10(np.sqrt(np.mean(aligned**2))) > -40  # real speech level, not silence


@pytest.mark.slow
@needs_pulse
def test_slow_consumer_loses_whole_blocks_and_never_blocks_capture(tmp_path: Path) -> None:
    """When nobody reads the queue, capture keeps running and counts dropped blocks instead of stalling."""
    with pulse_server(tmp_path):
        mic = Microphone(MicConfig(block_s=0.02, queue_s=0.2))  # room for 10 blocks
        with mic:
            deadline = time.monotonic() + 10
            while mic.blocks_dropped < 20 and time.monotonic() < deadline:
                time.sleep(0.1)
            queued = mic.read_nowait()
            first_drop = mic.blocks_dropped
            time.sleep(0.3)
            later = mic.read_nowait()
    assert first_drop >= 20 and len(queued) == 10
    assert later and mic.blocks_dropped >= first_drop  # still capturing after the overflow


@pytest.mark.slow
@needs_pulse
def test_device_that_disappears_mid_stream_raises_device_lost(tmp_path: Path) -> None:
    """Killing the audio server while capturing ends blocks() with DeviceLost naming the device, within seconds."""
    with pulse_server(tmp_path) as pulse:
        mic = Microphone(MicConfig())

        async def main() -> None:
            n = 0
            async for block in mic.blocks():
                n += len(block)
                if n >= mic.sample_rate * 0.5 and pulse.process.poll() is None:
                    pulse.kill()

        with mic:
            t0 = time.monotonic()
            with pytest.raises(DeviceLost, match=r"input device 'default' stopped") as info:
                asyncio.run(main())
    assert time.monotonic() - t0 < 15, info.value
