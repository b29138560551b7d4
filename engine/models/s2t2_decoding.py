"""Greedy and beam search over a DecoderState for families without Whisper's prompt machinery (Speech2Text2).

Both follow HF `generate` (transformers 4.46) step for step, so that outputs are token-identical to it: sequences
start with the decoder start token, end with eos when it fits within `max_length` (which counts the start token), and
beam search ranks hypotheses by sum(logprob) / n_generated ** length_penalty with HF's stopping rules. They run on
any Backend (the model family only supplies step/new_state/eot), with the cache reordered through the state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..backend import Backend
from ..errors import ConfigError
from ..kv_cache import DecoderState


@dataclass(frozen=True)
class SearchOptions:
    num_beams: int = 1  # 1 = greedy
    max_length: int = 200  # tokens in the output sequence, the start token included (HF's meaning)
    length_penalty: float = 1.0  # beam ranking: sum(logprob) / n_generated ** length_penalty
    early_stopping: bool | Literal["never"] = False  # HF: True stops at num_beams finished hypotheses
    suppress: bool = False  # apply backend.filter_logits (the reference does not; streaming does)

    def __post_init__(self) -> None:
        if self.num_beams < 1:
            raise ConfigError("num_beams must be >= 1")
        if self.max_length < 2:
            raise ConfigError("max_length must leave room for at least one token after the start token")


@torch.inference_mode()
def generate(backend: Backend, encoder_out: Tensor, options: SearchOptions, valid: Tensor | None = None,
             start: list[int] | None = None) -> list[int]:
    """Decode one window (encoder_out (1, S, d)): the whole sequence, start token(s) and final eos included."""
    start = list(start) if start is not None else backend.start_tokens("translate", None, [])
    state = backend.new_state(encoder_out, valid)
    if options.num_beams == 1:
        return _greedy(backend, state, start, options)
    return _beam(backend, state, start, options)


def _next_logits(backend: Backend, tokens: Tensor, state: DecoderState, n_generated: int, suppress: bool) -> Tensor:
    logits = backend.step(tokens, state)[:, -1].float()  # (B, V)
    if suppress:
        backend.filter_logits(logits, n_generated)
    return logits


def _greedy(backend: Backend, state: DecoderState, start: list[int], options: SearchOptions) -> list[int]:
    device = state.cross_k[0].device if state.cross_k else None
    seq = list(start)
    logits = _next_logits(backend, torch.tensor([seq], device=device), state, 0, options.suppress)
    while True:
        token = int(logits[0].argmax())
        seq.append(token)
        if token == backend.eot or len(seq) >= options.max_length:
            return seq
        logits = _next_logits(backend, torch.tensor([[token]], device=device), state, len(seq) - len(start),
                              options.suppress)


class _Hypotheses:
    """HF's BeamHypotheses: the n best finished sequences and the rule for when no open beam can beat them."""

    def __init__(self, num_beams: int, length_penalty: float, early_stopping: bool | str, max_length: int) -> None:
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.max_length = max_length
        self.beams: list[tuple[float, list[int]]] = []
        self.worst_score = 1e9

    def add(self, seq: list[int], sum_logprobs: float, generated_len: int) -> None:
        score = sum_logprobs / (generated_len**self.length_penalty)
        if len(self.beams) < self.num_beams or score > self.worst_score:
            self.beams.append((score, seq))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs: float, cur_len: int, prompt_len: int) -> bool:
        if len(self.beams) < self.num_beams:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping is False or self.length_penalty <= 0.0:
            best = best_sum_logprobs / (cur_len - prompt_len) ** self.length_penalty
        else:  # "never" with a positive penalty: the longest possible hypothesis bounds the best score
            best = best_sum_logprobs / (self.max_length - prompt_len) ** self.length_penalty
        return self.worst_score >= best

    def best(self) -> list[int]:
        return sorted(self.beams, key=lambda b: b[0])[-1][1]  # stable sort: among ties the last added wins, as HF


def _beam(backend: Backend, state: DecoderState, start: list[int], options: SearchOptions) -> list[int]:
    device = state.cross_k[0].device if state.cross_k else None
    n_beams, eos = options.num_beams, backend.eot
    prompt_len = len(start)
    logits = _next_logits(backend, torch.tensor([start], device=device), state, 0, options.suppress)
    # every beam starts as the same prompt: compute it once, then copy the cache
    state.repeat(n_beams)
    logits = logits.expand(n_beams, -1)
    seqs = [list(start) for _ in range(n_beams)]
    beam_scores = torch.zeros(n_beams, device=logits.device)
    beam_scores[1:] = -1e9  # only the first copy may expand at the first step (HF's value, not -inf)
    hyps = _Hypotheses(n_beams, options.length_penalty, options.early_stopping, options.max_length)
    done = False
    while True:
        scores = logits.log_softmax(dim=-1) + beam_scores[:, None]  # (beams, V)
        vocab = scores.shape[-1]
        top_scores, top_ids = scores.view(-1).topk(2 * n_beams, largest=True, sorted=True)
        cur_len = len(seqs[0]) + 1  # length once this step's token is appended
        rows, tokens, new_scores = [], [], []
        for rank, (score, flat) in enumerate(zip(top_scores.tolist(), top_ids.tolist())):
            row, token = divmod(flat, vocab)
            if token == eos:
                if rank < n_beams:  # an eos outside the top num_beams candidates is not a hypothesis
                    hyps.add(list(seqs[row]), score, cur_len - prompt_len)
            else:
                rows.append(row)
                tokens.append(token)
                new_scores.append(score)
            if len(rows) == n_beams:
                break
        done = hyps.is_done(float(top_scores.max()), cur_len, prompt_len)
        seqs = [seqs[r] + [t] for r, t in zip(rows, tokens)]
        beam_scores = torch.tensor(new_scores, device=logits.device)
        if done or cur_len >= options.max_length:
            break
        state.reorder(torch.tensor(rows, device=device))
        logits = _next_logits(backend, torch.tensor(tokens, device=device)[:, None], state, cur_len - prompt_len,
                              options.suppress)
    if not done:  # open beams compete with the finished ones, unpunished for lacking an eos
        for seq, score in zip(seqs, beam_scores.tolist()):
            hyps.add(seq, score, len(seq) - prompt_len)
    best = hyps.best()
    return best + [eos] if len(best) < options.max_length else best


def search_options(bundle, beam_size: int | None = None, max_length: int | None = None) -> SearchOptions:
    """SearchOptions from a bundle's generation config, with the caller's beam size / length when given."""
    gen = bundle.generation
    limit = bundle.model.n_text_ctx
    return SearchOptions(
        num_beams=beam_size or gen.num_beams,
        max_length=min(max_length or gen.max_length, limit),
        length_penalty=gen.length_penalty,
        early_stopping=gen.early_stopping,
    )


def translate_window(bundle, audio: np.ndarray, beam_size: int) -> str:
    """Translate one window of 16 kHz float32 audio (≤ 30 s) with the checkpoint's generation settings."""
    from ..backend import make_backend

    backend = make_backend(bundle)
    if len(audio) == 0:
        return ""
    tokens = generate(backend, backend.encode(audio), search_options(bundle, beam_size))
    return bundle.tokenizer.decode(tokens)
