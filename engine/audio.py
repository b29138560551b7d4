"""Audio constants, decoding, resampling and the Whisper log-mel front end."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from .errors import AudioError

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms windows
HOP_LENGTH = 160  # 10 ms hop
CHUNK_LENGTH_S = 30  # Whisper's context
N_SAMPLES = CHUNK_LENGTH_S * SAMPLE_RATE  # 480000 samples in a 30 s window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in a window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames per second
ENCODER_STRIDE = 2  # the encoder's second conv halves the frame rate
SECONDS_PER_ENCODER_FRAME = ENCODER_STRIDE / FRAMES_PER_SECOND  # 0.02 s: also Whisper's timestamp resolution

MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 384000


def check_sample_rate(sample_rate: int) -> int:
    """Return `sample_rate` as an int, or raise AudioError when it is not a plausible audio rate."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer, float)):
        raise AudioError(f"sample rate must be a number, got {type(sample_rate).__name__}")
    if not np.isfinite(sample_rate) or int(sample_rate) != sample_rate:
        raise AudioError(f"sample rate must be a whole number of Hz, got {sample_rate!r}")
    sr = int(sample_rate)
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(f"sample rate {sr} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    return sr


def to_mono_float32(samples: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """Convert int or float PCM of shape (n,) or (n, channels) to float32 mono in [-1, 1]; reject NaN/inf."""
    x = np.asarray(samples)
    if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[1] == 0):  # (n, 0): no channel to take (found by fuzzing)
        raise AudioError(f"audio must have shape (n,) or (n, channels >= 1), got {x.shape}")
    if x.dtype.kind == "i":
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    elif x.dtype.kind == "u":
        info = np.iinfo(x.dtype)
        mid = (info.max + 1) / 2
        x = (x.astype(np.float32) - mid) / mid
    elif x.dtype.kind == "f":
        x = x.astype(np.float32, copy=False)
    else:
        raise AudioError(f"unsupported sample type {x.dtype}")
    # mix down only after scaling: the mean of int channels is float64 and would skip the int scaling above
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    if x.size and not np.isfinite(x).all():
        raise AudioError("audio contains NaN or infinite samples")
    return x


def resample(samples: npt.NDArray[Any], from_rate: int, to_rate: int = SAMPLE_RATE) -> npt.NDArray[np.float32]:
    """High-quality resampling (soxr). Float32 mono in, float32 mono out."""
    from_rate = check_sample_rate(from_rate)
    if from_rate == to_rate or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    import soxr

    resampled: npt.NDArray[Any] = soxr.resample(samples, from_rate, to_rate, quality="HQ")
    return resampled.astype(np.float32, copy=False)


class StreamResampler:
    """Chunk-by-chunk resampling that keeps filter state between chunks (no clicks at chunk edges)."""

    def __init__(self, from_rate: int, to_rate: int = SAMPLE_RATE) -> None:
        import soxr

        self.from_rate = check_sample_rate(from_rate)
        self.to_rate = to_rate
        self._rs = None if self.from_rate == to_rate else soxr.ResampleStream(self.from_rate, to_rate, 1, "float32")

    def process(self, samples: npt.NDArray[Any], last: bool = False) -> npt.NDArray[np.float32]:
        if self._rs is None:
            return samples.astype(np.float32, copy=False)
        out: npt.NDArray[np.float32] = self._rs.resample_chunk(samples.astype(np.float32, copy=False), last=last)
        return out


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> npt.NDArray[np.float32]:
    """Decode an audio file (WAV/FLAC/OGG/MP3/... at any rate, mono or stereo) to float32 mono at `sample_rate`."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"expected an audio file, got a directory: {path}")
    try:
        import soundfile as sf

        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as sf_error:  # libsndfile refuses some containers; PyAV (ffmpeg) reads almost anything
        try:
            data, sr = _load_with_av(path)
        except Exception:
            raise AudioError(f"cannot decode audio file {path}: {sf_error}") from None
    audio = to_mono_float32(data)
    return resample(audio, int(sr), sample_rate)


def _load_with_av(path: Path) -> tuple[npt.NDArray[np.float32], int]:
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise AudioError(f"no audio stream in {path}")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=stream.rate or SAMPLE_RATE)
        chunks: list[npt.NDArray[Any]] = []  # float32: the resampler's format "flt"
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
        rate = stream.rate or SAMPLE_RATE
    if not chunks:
        raise AudioError(f"no audio samples in {path}")
    return np.concatenate(chunks)[:, None], rate


@functools.lru_cache(maxsize=4)
def mel_filters(n_mels: int = 80, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> npt.NDArray[np.float32]:
    """Slaney-style mel filterbank (as librosa.filters.mel builds it), shape (n_mels, n_fft // 2 + 1)."""
    fftfreqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)

    # Slaney mel scale: linear below 1 kHz, logarithmic above
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0

    def hz_to_mel(f: npt.ArrayLike) -> npt.NDArray[np.float64]:
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    mel_pts = np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2)
    hz_pts = mel_to_hz(mel_pts)
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_pts[2 : n_mels + 2] - hz_pts[:n_mels]))[:, None]  # area normalisation
    return weights.astype(np.float32)


def log_mel_spectrogram(audio: npt.NDArray[Any] | torch.Tensor, n_mels: int = 80, pad_samples: int = 0) -> torch.Tensor:
    """Whisper's log-mel features, shape (n_mels, n_frames) with n_frames = (len + pad) // HOP_LENGTH.

    `pad_samples` zeros are appended first (openai pads with a full 30 s window, so the normalisation's
    max sees the same context as in training).
    """
    x = torch.as_tensor(audio, dtype=torch.float32)
    if pad_samples > 0:
        x = torch.nn.functional.pad(x, (0, pad_samples))
    n_frames = x.shape[-1] // HOP_LENGTH
    if n_frames == 0:  # under one hop (10 ms): no frame yet, rather than an error from torch.stft
        return torch.zeros(n_mels, 0, device=x.device)
    if x.shape[-1] <= N_FFT // 2:
        # stft's reflect padding needs more than n_fft // 2 samples: zero-extend a 10-12.5 ms input to one frame
        x = torch.nn.functional.pad(x, (0, N_FFT // 2 + 1 - x.shape[-1]))
    window = torch.hann_window(N_FFT, device=x.device)
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2  # (n_fft/2+1, frames); the last frame is dropped as openai does
    filters = torch.from_numpy(mel_filters(n_mels)).to(x.device)
    mel = filters @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0
