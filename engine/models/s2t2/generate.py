"""Speech2Text2's decoding: greedy or beam search (models/search.py, token-identical to HF `generate`) over one
encoder window, behind the Backend seam (the family supplies step / new_state / filter_logits / eot).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ...backend import Backend, OfflineOptions, Progress, Segment, Transcript
from ..search import BeamOptions, beam, greedy
from .backend import MAX_WINDOW_S, S2T2Backend
from .load import S2T2Bundle
from .wav2vec2 import SAMPLE_RATE


@dataclass(frozen=True)
class SearchOptions(BeamOptions):
    max_length: int = 200  # tokens in the output sequence, the start token included (HF's meaning)
    suppress: bool = False  # apply backend.filter_logits (the reference does not; streaming does)


@torch.inference_mode()
def generate(
    backend: Backend,
    encoder_out: Tensor,
    options: SearchOptions,
    *,
    valid: Tensor | None = None,
    start: list[int] | None = None,
) -> list[int]:
    """Decode one window (encoder_out (1, S, d)): the whole sequence, start token(s) and final eos included."""
    start = list(start) if start is not None else backend.start_tokens("translate", None, [])
    state = backend.new_state(encoder_out, valid)
    device = state.cross_k[0].device if state.cross_k else None

    def step(tokens: Tensor, n_tokens: int) -> Tensor:
        logits = backend.step(tokens, state)[:, -1].float()  # (B, V)
        if options.suppress:
            backend.filter_logits(logits, n_tokens - len(start))
        return logits

    if options.num_beams == 1:
        return greedy(step, start, eos=backend.eot, max_length=options.max_length, device=device)
    return beam(step, state, start, options=options, eos=backend.eot, n_prompt=len(start), device=device)


def search_options(bundle: S2T2Bundle, beam_size: int | None = None, max_length: int | None = None) -> SearchOptions:
    """SearchOptions from a bundle's generation config, with the caller's beam size / length when given."""
    gen = bundle.generation
    limit = bundle.model.n_text_ctx
    return SearchOptions(
        num_beams=beam_size or gen.num_beams,
        max_length=min(max_length or gen.max_length, limit),
        length_penalty=gen.length_penalty,
        early_stopping=gen.early_stopping,
    )


def translate_window(bundle: S2T2Bundle, audio: np.ndarray, beam_size: int) -> str:
    """Translate one window of 16 kHz float32 audio (≤ 30 s) with the checkpoint's generation settings."""
    backend = S2T2Backend(bundle)
    if len(audio) == 0:
        return ""
    tokens = generate(backend, backend.encode(audio), search_options(bundle, beam_size))
    return bundle.tokenizer.decode(tokens)


def translate_offline(
    bundle: S2T2Bundle, audio: np.ndarray, options: OfflineOptions, progress: Progress | None = None
) -> Transcript:
    """The family's offline entry (engine.backend.transcribe): no timestamps to seek by, so ≤ 30 s windows cut at
    the quietest 0.1 s in the last 5 s of each. Translates whatever the task (the checkpoint's one task); the
    language is the caller's, as given (one source language per checkpoint, nothing detected)."""
    sr, max_len = SAMPLE_RATE, int(MAX_WINDOW_S) * SAMPLE_RATE
    segments: list[Segment] = []
    start = 0
    while start < len(audio):
        end = min(len(audio), start + max_len)
        if end < len(audio):  # cut in a pause: lowest-energy 100 ms block in the last 5 s of the window
            tail = audio[end - 5 * sr : end]
            energy = np.convolve(tail**2, np.ones(sr // 10), mode="valid")[:: sr // 100]
            end = end - 5 * sr + int(np.argmin(energy)) * (sr // 100) + sr // 20
        text = translate_window(bundle, audio[start:end], options.beam_size)
        segments.append(Segment(start / sr, end / sr, text))
        start = end
        if progress is not None:
            progress(start / sr, len(audio) / sr)
    return Transcript(language=options.language, segments=segments)
