"""Whole recordings of any length: Whisper over successive ≤ 30 s windows, seeking by predicted timestamps
(as openai's transcribe does), with temperature fallback against loops and no-speech skipping."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from ...audio import HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE, log_mel_spectrogram
from ...backend import OfflineOptions, Progress, Segment, Transcript
from .decoding import DecodingOptions, DecodingResult, Task, decode, detect_language
from .load import WhisperBundle

INPUT_STRIDE = 2  # mel frames per encoder frame (one timestamp step = 0.02 s)


@dataclass(frozen=True)
class TranscribeOptions:
    task: Task = "transcribe"
    language: str | None = None  # None: detected on the first window, then kept
    beam_size: int = 1
    condition_on_previous_text: bool = True  # previous window's text as the prompt (consistency across windows)
    initial_prompt: tuple[int, ...] = ()  # text tokens before the first window (spellings, names, style)
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # fallback when output loops or is unsure
    compression_ratio_threshold: float = 2.4  # above: a repetition loop
    logprob_threshold: float = -1.0  # below: unsure
    no_speech_threshold: float = 0.6  # with an unsure decode above this: the window is silence
    # How a window shorter than 30 s is filled. "zero": the window's log-mel is padded with 0.0 (faster-whisper's
    # way); "silence": 30 s of digital silence is appended to the audio before the log-mel (openai's), which fills
    # the window with the normalisation floor (about -0.7) instead. Default "zero": on 40 German dev sentences
    # (benchmarks/bench_offline.py) it matched faster-whisper word for word far more often and scored higher
    # (see benchmarks/README.md, "Offline decoding vs faster-whisper").
    mel_padding: Literal["zero", "silence"] = "zero"


@torch.inference_mode()
def transcribe(
    bundle: WhisperBundle,
    audio: npt.NDArray[np.float32],
    options: TranscribeOptions = TranscribeOptions(),
    progress: Progress | None = None,
) -> Transcript:
    """Transcribe or translate `audio` (16 kHz float32 mono) window by window."""
    ts_begin = bundle.tokenizer.special.timestamp_begin
    zero_pad = options.mel_padding == "zero"
    # "zero": one hop of padding so the last content frame exists, as faster-whisper does
    mel = log_mel_spectrogram(audio, bundle.model.config.n_mels, pad_samples=HOP_LENGTH if zero_pad else N_SAMPLES)
    content_frames = len(audio) // HOP_LENGTH
    language = options.language
    prompt: list[int] = list(options.initial_prompt[-223:])
    segments: list[Segment] = []
    seek = 0
    while seek < content_frames:
        window_frames = min(N_FRAMES, content_frames - seek)
        offset_s = seek * HOP_LENGTH / SAMPLE_RATE
        window = mel[:, seek : seek + (window_frames if zero_pad else N_FRAMES)]
        window = torch.nn.functional.pad(window, (0, N_FRAMES - window.shape[1]))  # (n_mels, N_FRAMES)
        encoder_out = bundle.model.encode(window[None])
        if language is None:
            language = detect_language(bundle, encoder_out)[0]
        base = DecodingOptions(
            task=options.task,
            language=language,
            beam_size=options.beam_size,
            timestamps=True,
            prompt=tuple(prompt) if options.condition_on_previous_text else (),
            audio_duration_s=window_frames * HOP_LENGTH / SAMPLE_RATE,
        )
        result = _decode_with_fallback(bundle, encoder_out, base=base, options=options)
        silent = result.no_speech_prob > options.no_speech_threshold and result.avg_logprob < options.logprob_threshold
        if silent:
            seek += window_frames
        else:
            new, advance = _split_segments(
                bundle, result.tokens, offset_s=offset_s, window_frames=window_frames, ts_begin=ts_begin
            )
            segments += [s for s in new if s.text.strip()]
            seek += advance
            prompt = (prompt + result.tokens)[-223:] if result.compression_ratio <= 2.0 else []
        if progress is not None:
            progress(min(seek, content_frames) * HOP_LENGTH / SAMPLE_RATE, content_frames * HOP_LENGTH / SAMPLE_RATE)
    return Transcript(language=language, segments=segments)


def transcribe_offline(
    bundle: WhisperBundle, audio: np.ndarray, options: OfflineOptions, progress: Progress | None = None
) -> Transcript:
    """The family's offline entry (engine.backend.transcribe): TranscribeOptions' defaults, the caller's choices."""
    return transcribe(
        bundle,
        audio,
        TranscribeOptions(task=options.task, language=options.language, beam_size=options.beam_size),
        progress,
    )


def _decode_with_fallback(
    bundle: WhisperBundle, encoder_out: torch.Tensor, *, base: DecodingOptions, options: TranscribeOptions
) -> DecodingResult:
    """Decode at the first temperature whose result neither loops nor is unsure. When every temperature fails,
    the most confident result that does not loop wins (faster-whisper's rule), not the last one: the last is a
    sample at temperature 1.0, and a translation that is merely unsure (avg logprob < -1 is common for
    translate) would otherwise be replaced by noise."""
    tried: list[DecodingResult] = []
    for t in options.temperatures:
        opts = replace(
            base, temperature=t, beam_size=base.beam_size if t == 0 else 1, prompt=base.prompt if t < 0.5 else ()
        )
        result = decode(bundle, encoder_out, opts)
        looping = result.compression_ratio > options.compression_ratio_threshold
        unsure = result.avg_logprob < options.logprob_threshold
        if result.no_speech_prob > options.no_speech_threshold and unsure:
            return result  # silence: no point retrying
        if not looping and not unsure:
            return result
        tried.append(result)
    assert tried, "options.temperatures is empty"
    not_looping = [r for r in tried if r.compression_ratio <= options.compression_ratio_threshold]
    return max(not_looping or tried, key=lambda r: r.avg_logprob)


def _split_segments(
    bundle: WhisperBundle, tokens: list[int], *, offset_s: float, window_frames: int, ts_begin: int
) -> tuple[list[Segment], int]:
    """Segments from timestamp-delimited tokens, and how many mel frames to advance."""
    tok = bundle.tokenizer
    is_ts = [t >= ts_begin for t in tokens]
    single_ending = len(tokens) >= 2 and is_ts[-1] and not is_ts[-2]
    consecutive = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    segments: list[Segment] = []
    if consecutive:
        slices = consecutive + ([len(tokens)] if single_ending else [])
        last = 0
        for cut in slices:
            piece = tokens[last:cut]
            start = (piece[0] - ts_begin) * 0.02 if piece and piece[0] >= ts_begin else 0.0
            end = (piece[-1] - ts_begin) * 0.02 if piece and piece[-1] >= ts_begin else start
            segments.append(Segment(offset_s + start, offset_s + end, tok.decode([t for t in piece if t < tok.eot])))
            last = cut
        if single_ending:
            advance = window_frames
        else:
            advance = (tokens[last - 1] - ts_begin) * INPUT_STRIDE
    else:
        duration = window_frames * HOP_LENGTH / SAMPLE_RATE
        stamps = [t for t in tokens if t >= ts_begin]
        if stamps and stamps[-1] != ts_begin:
            duration = (stamps[-1] - ts_begin) * 0.02
        start = (stamps[0] - ts_begin) * 0.02 if stamps and len(stamps) > 1 else 0.0
        segments.append(Segment(offset_s + start, offset_s + duration, tok.decode([t for t in tokens if t < tok.eot])))
        advance = window_frames
    if advance <= 0:  # never loop on the same window
        advance = window_frames
    return segments, min(advance, window_frames)
