"""The audio front end: mel filterbank and log-mel against transformers' Whisper feature extractor, resampling,
and decoding real (synthesised) speech from every container we promise at several sample rates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from engine.audio import (
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    StreamResampler,
    load_audio,
    log_mel_spectrogram,
    mel_filters,
    resample,
    to_mono_float32,
)
from engine.errors import AudioError
from tests.speech import speech


@pytest.fixture(scope="module")
def english(audio_dir: Path) -> np.ndarray:
    """Five seconds of synthesised English at 16 kHz."""
    return speech("en", 0, audio_dir)[0]


def _envelope(x: np.ndarray, frame: int = 320) -> np.ndarray:
    n = len(x) // frame
    return np.sqrt((x[: n * frame].reshape(n, frame) ** 2).mean(axis=1))


# -- filterbank and log-mel ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_match_transformers_slaney_filterbank(n_mels: int) -> None:
    """Our hand-written filterbank equals transformers' Slaney-scale, Slaney-normalised bank (librosa's formula)."""
    from transformers.audio_utils import mel_filter_bank

    ref = mel_filter_bank(
        num_frequency_bins=201,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    ).T  # (n_mels, 201)
    ours = mel_filters(n_mels)
    assert ours.shape == (n_mels, 201)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)


def test_mel_filters_match_whisper_feature_extractor() -> None:
    """The 80-mel bank is the one transformers' WhisperFeatureExtractor ships for Whisper."""
    from transformers import WhisperFeatureExtractor

    np.testing.assert_allclose(mel_filters(80), WhisperFeatureExtractor().mel_filters.T, rtol=1e-5, atol=1e-7)


def test_log_mel_matches_whisper_feature_extractor_on_speech(english: np.ndarray) -> None:
    """On real speech padded to 30 s, our log-mel equals transformers' WhisperFeatureExtractor frame for frame."""
    from transformers import WhisperFeatureExtractor

    ref = WhisperFeatureExtractor()(english, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
    padded = np.pad(english, (0, N_SAMPLES - len(english)))
    ours = log_mel_spectrogram(padded).numpy()
    assert ours.shape == ref.shape == (80, N_FRAMES)
    # both are float32 pipelines (STFT, power, log10) that differ in summation order; 1e-3 on values in [-1.5, 1.5]
    np.testing.assert_allclose(ours, ref, atol=2e-3)
    assert np.abs(ours - ref).mean() < 1e-4


def test_pad_samples_gives_the_same_window_as_explicit_padding(english: np.ndarray) -> None:
    """pad_samples=N_SAMPLES cut to 3000 frames equals padding the audio to exactly 30 s (openai's transcribe)."""
    explicit = log_mel_spectrogram(np.pad(english, (0, N_SAMPLES - len(english))))
    via_pad = log_mel_spectrogram(english, pad_samples=N_SAMPLES)[:, :N_FRAMES]
    torch.testing.assert_close(via_pad, explicit, atol=1e-4, rtol=0)


def test_log_mel_frame_count_and_range(english: np.ndarray) -> None:
    """Unpadded features have len // hop frames and Whisper's normalised range (max - min <= 2, max <= 2)."""
    mel = log_mel_spectrogram(english)
    assert mel.shape == (80, len(english) // 160)
    assert float(mel.max() - mel.min()) <= 2.0 + 1e-6
    assert float(mel.max()) <= 2.0


@pytest.mark.parametrize("n_samples", [0, 1, 159, 160, 200, 201, 320, 479])
def test_log_mel_of_very_short_audio_has_len_over_hop_frames(english: np.ndarray, n_samples: int) -> None:
    """The first 0-30 ms of speech (a stream's first chunk) give len // 160 frames, never an error."""
    mel = log_mel_spectrogram(english[8000 : 8000 + n_samples])
    assert mel.shape == (80, n_samples // 160)
    assert torch.isfinite(mel).all()


# -- resampling ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resample_keeps_pitch_length_and_loudness(rate: int) -> None:
    """A 440 Hz tone resampled to 16 kHz keeps its frequency, duration and amplitude."""
    t = np.arange(int(1.5 * rate)) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    out = resample(tone, rate)
    assert out.dtype == np.float32
    assert abs(len(out) - round(1.5 * SAMPLE_RATE)) <= 1
    spectrum = np.abs(np.fft.rfft(out[2000:-2000] * np.hanning(len(out) - 4000)))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / (len(out) - 4000)
    assert abs(peak_hz - 440.0) < 2.0
    assert abs(np.abs(out[2000:-2000]).max() - 0.5) < 0.01


def test_resample_is_identity_at_16k(english: np.ndarray) -> None:
    """Audio already at 16 kHz is passed through untouched."""
    np.testing.assert_array_equal(resample(english, SAMPLE_RATE), english)


def test_stream_resampler_in_chunks_equals_one_shot(english: np.ndarray) -> None:
    """Resampling 44.1 kHz speech in odd-sized chunks gives the one-shot result (no clicks at chunk edges)."""
    x = soxr.resample(english, SAMPLE_RATE, 44100).astype(np.float32)
    whole = resample(x, 44100)
    rs = StreamResampler(44100)
    pieces, i = [], 0
    for size in [1000, 4410, 7, 12345, 999] * 100:
        if i >= len(x):
            break
        pieces.append(rs.process(x[i : i + size]))
        i += size
    pieces.append(rs.process(np.zeros(0, np.float32), last=True))
    chunked = np.concatenate(pieces)
    assert abs(len(chunked) - len(whole)) <= 2
    n = min(len(chunked), len(whole))
    np.testing.assert_allclose(chunked[:n], whole[:n], atol=1e-4)


@pytest.mark.parametrize("bad", [0, 100, 10**7, 16000.5, float("nan"), "16000", True])
def test_implausible_sample_rates_raise_audio_error(bad: object) -> None:
    """Rates that are not whole, plausible numbers of Hz raise AudioError rather than resampling garbage."""
    with pytest.raises(AudioError):
        resample(np.zeros(100, np.float32), bad)  # type: ignore[arg-type]


def test_to_mono_float32_converts_int_pcm_and_stereo() -> None:
    """int16 stereo becomes float32 mono in [-1, 1] (the mean of the channels); NaN is refused."""
    stereo = np.array([[32767, -32768], [16384, 16384], [0, 0]], dtype=np.int16)
    mono = to_mono_float32(stereo)
    assert mono.dtype == np.float32
    np.testing.assert_allclose(mono, [-0.5 / 32768, 0.5, 0.0], atol=1e-6)
    with pytest.raises(AudioError):
        to_mono_float32(np.array([0.0, np.nan], dtype=np.float32))


# -- files ---------------------------------------------------------------------------------------------------
FORMATS = [
    ("wav", "WAV", "PCM_16", 8000, 1),
    ("wav", "WAV", "PCM_24", 44100, 1),
    ("wav", "WAV", "FLOAT", 48000, 2),
    ("flac", "FLAC", "PCM_16", 22050, 1),
    ("flac", "FLAC", "PCM_24", 96000, 2),
    ("ogg", "OGG", "VORBIS", 48000, 2),
    ("mp3", "MP3", "MPEG_LAYER_III", 44100, 1),
    ("mp3", "MP3", "MPEG_LAYER_III", 22050, 2),
]


@pytest.mark.parametrize("ext,fmt,subtype,rate,channels", FORMATS)
def test_load_audio_decodes_speech_in_every_format(
    english: np.ndarray, tmp_path: Path, ext: str, fmt: str, subtype: str, rate: int, channels: int
) -> None:
    """Speech written as WAV/FLAC/OGG/MP3 at 8-96 kHz, mono or stereo, comes back as the same 16 kHz mono signal."""
    x = soxr.resample(english, SAMPLE_RATE, rate).astype(np.float32)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    path = tmp_path / f"speech.{ext}"
    sf.write(str(path), data, rate, format=fmt, subtype=subtype)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(english)) <= 0.02 * SAMPLE_RATE  # lossy codecs may pad a few ms
    n = min(len(y), len(english))
    # lossless formats are sample-exact up to quantisation and resampling; lossy ones keep the waveform to ~1e-3
    assert np.corrcoef(english[:n], y[:n])[0, 1] > 0.99
    e1, e2 = _envelope(english[:n]), _envelope(y[:n])
    assert np.corrcoef(e1, e2)[0, 1] > 0.99


def test_load_audio_averages_stereo_channels(english: np.ndarray, tmp_path: Path) -> None:
    """Speech on the left channel and silence on the right loads as speech at half amplitude."""
    path = tmp_path / "left.wav"
    sf.write(str(path), np.stack([english, np.zeros_like(english)], axis=1), SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), english / 2, atol=1e-6)


def test_load_audio_falls_back_to_pyav_for_other_containers(english: np.ndarray, tmp_path: Path) -> None:
    """An AAC-in-MP4 file (which libsndfile cannot read) is decoded through PyAV."""
    av = pytest.importorskip("av")
    path = tmp_path / "speech.m4a"
    rate = 44100
    x = soxr.resample(english, SAMPLE_RATE, rate).astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    y = load_audio(path)
    assert abs(len(y) - len(english)) <= 0.1 * SAMPLE_RATE  # AAC adds priming samples
    e1, e2 = _envelope(english), _envelope(y)
    # align on the envelope's cross-correlation: the AAC encoder delay is a few frames
    lag = int(np.argmax(np.correlate(e2, e1, "full"))) - (len(e1) - 1)
    assert 0 <= lag <= 5
    m = min(len(e1), len(e2) - lag)
    assert np.corrcoef(e1[:m], e2[lag : lag + m])[0, 1] > 0.98


def test_missing_file_raises_audio_error(tmp_path: Path) -> None:
    """A path that does not exist raises AudioError naming it."""
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_directory_raises_audio_error(tmp_path: Path) -> None:
    """A directory is not an audio file."""
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)


@pytest.mark.parametrize(
    "name,content",
    [
        ("garbage.wav", np.random.default_rng(0).bytes(4096)),
        ("empty.mp3", b""),
        ("notes.ogg", b"this is a text file, not audio\n" * 20),
        ("truncated.flac", b"fLaC\x00\x00\x00\x22"),
    ],
)
def test_undecodable_files_raise_audio_error(tmp_path: Path, name: str, content: bytes) -> None:
    """Random bytes, an empty file, text and a truncated header all raise AudioError naming the file."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioError, match=name):
        load_audio(path)
