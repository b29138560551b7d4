"""A private PulseAudio server as a virtual microphone (recipe: shared/notes/real-audio-tests.md, part B).

A null sink `vmic` plays whatever `paplay` sends it; its monitor, remapped as the source `vmic_src`, is the default
input, so PortAudio's `default`/`pulse` devices record exactly the played file, paced in real time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PA_CONF = """\
load-module module-native-protocol-unix auth-anonymous=1
load-module module-null-sink sink_name=vmic rate=48000 channels=1 sink_properties=device.description=VirtualSpeaker
load-module module-remap-source master=vmic.monitor source_name=vmic_src source_properties=device.description=VirtualMic
set-default-sink vmic
set-default-source vmic_src
"""


def pulse_available() -> bool:
    """True when the PulseAudio tools are installed, and always under CI: there a missing install step must make
    the tests fail, not skip (scripts/setup.sh --test installs them)."""
    return bool(os.environ.get("CI")) or all(shutil.which(tool) for tool in ("pulseaudio", "pactl", "paplay"))


@dataclass
class PulseServer:
    runtime_dir: Path
    process: subprocess.Popen
    log_path: Path

    @property
    def env(self) -> dict[str, str]:
        """Environment for clients (paplay, a `dragoman mic` subprocess) that must reach this server."""
        env = dict(os.environ, PULSE_RUNTIME_PATH=str(self.runtime_dir))
        env.pop("PULSE_SERVER", None)
        return env

    def play(self, wav: Path, wait: bool = True) -> subprocess.Popen:
        """Plays a WAV into the virtual microphone (real-time paced)."""
        proc = subprocess.Popen(["paplay", str(wav)], env=self.env, stderr=subprocess.PIPE)
        if wait:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"paplay failed: {err.decode(errors='replace')}"
        return proc

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextmanager
def pulse_server(directory: Path) -> Iterator[PulseServer]:
    """Starts a private PulseAudio server and points this process's PortAudio at it."""
    directory.mkdir(parents=True, exist_ok=True)
    runtime = directory / "pulse-runtime"
    runtime.mkdir(exist_ok=True)
    conf = directory / "pa.conf"
    conf.write_text(PA_CONF)
    log_path = directory / "pa.log"
    old = {k: os.environ.get(k) for k in ("PULSE_RUNTIME_PATH", "PULSE_SERVER")}
    os.environ["PULSE_RUNTIME_PATH"] = str(runtime)  # PortAudio's ALSA pulse plugin in this process reads it
    os.environ.pop("PULSE_SERVER", None)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            ["pulseaudio", "-n", "-F", str(conf), "--daemonize=no", "--exit-idle-time=-1", "--log-target=stderr"],
            stderr=log,
            env=dict(os.environ),
        )
    server = PulseServer(runtime, proc, log_path)
    try:
        for _ in range(200):
            if subprocess.run(["pactl", "info"], env=server.env, capture_output=True).returncode == 0:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        else:
            raise RuntimeError(f"pulseaudio did not come up: {log_path.read_text()[-2000:]}")
        refresh_portaudio()
        yield server
    finally:
        server.kill()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        refresh_portaudio()


def refresh_portaudio() -> None:
    """PortAudio lists devices once at initialisation: re-initialise it if sounddevice is already imported."""
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()
