"""Greedy and beam search over an MT model's DecoderState, token-identical to HF `generate` (transformers 4.46).

The sequence starts with the decoder start token, then any forced tokens (M2M100/NLLB's target language, which the
reference forces with forced_bos_token_id; a streaming policy may also force the target text it has committed);
it ends with eos when that fits within `max_length` (which counts the start token). As in the reference, the
logits processors (banned tokens, the forced final eos) act on raw logits in greedy search and on log-probabilities
in beam search, and beam hypotheses are ranked by sum(logprob) / n_generated ** length_penalty, the forced tokens
counted as generated.

Forced tokens are fed in one step with the start token: a forced token scores 0 and every beam copy but the first
keeps its -1e9, exactly the beams the reference holds after forcing them one step at a time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from ..errors import ConfigError
from ..kv_cache import DecoderState
from ..models.s2t2_decoding import _Hypotheses
from .model import MTModel


@dataclass(frozen=True)
class MTSearchOptions:
    num_beams: int = 1  # 1 = greedy
    max_length: int = 256  # tokens in the output, the start token included (HF's meaning)
    length_penalty: float = 1.0
    early_stopping: bool | Literal["never"] = False
    eos: int = 0
    forced_eos: int | None = None  # forced as the last token when max_length is reached (Marian)
    banned: tuple[int, ...] = field(default=())  # never generated (Marian's <pad>)

    def __post_init__(self) -> None:
        if self.num_beams < 1:
            raise ConfigError("num_beams must be >= 1")
        if self.max_length < 2:
            raise ConfigError("max_length must leave room for at least one token after the start token")


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # start token, forced tokens, generated tokens, final eos when it fits
    finished: bool  # ended with eos (False: cut by max_length)


def _process(logits: Tensor, cur_len: int, options: MTSearchOptions) -> Tensor:
    """HF's NoBadWords and ForcedEOS processors, in place on (B, V) scores; `cur_len` = tokens so far."""
    if options.banned:
        logits[:, list(options.banned)] = float("-inf")
    if options.forced_eos is not None and cur_len == options.max_length - 1:
        logits[:, :] = float("-inf")
        logits[:, options.forced_eos] = 0.0
    return logits


@torch.inference_mode()
def search(model: MTModel, state: DecoderState, start: list[int], options: MTSearchOptions,
           n_scored_prompt: int = 1) -> Hypothesis:
    """Decode after `start` (decoder start token + forced tokens) over a fresh `state` (cross keys/values set).

    `n_scored_prompt`: how many leading tokens are the prompt proper (not counted by the length penalty)."""
    if len(start) >= options.max_length:
        return Hypothesis(list(start), False)
    if options.num_beams == 1:
        return _greedy(model, state, start, options)
    return _beam(model, state, start, options, n_scored_prompt)


def _greedy(model: MTModel, state: DecoderState, start: list[int], options: MTSearchOptions) -> Hypothesis:
    device = model.device
    seq = list(start)
    logits = model.step(torch.tensor([seq], device=device), state)[:, -1]
    while True:
        token = int(_process(logits, len(seq), options)[0].argmax())
        seq.append(token)
        if token == options.eos:
            return Hypothesis(seq, True)
        if len(seq) >= options.max_length:
            return Hypothesis(seq, False)
        logits = model.step(torch.tensor([[token]], device=device), state)[:, -1]


def _beam(model: MTModel, state: DecoderState, start: list[int], options: MTSearchOptions,
          n_prompt: int) -> Hypothesis:
    device = model.device
    n_beams, eos = options.num_beams, options.eos
    logits = model.step(torch.tensor([start], device=device), state)[:, -1]
    state.repeat(n_beams)  # every beam starts as the same prompt: computed once, the cache copied
    logits = logits.expand(n_beams, -1)
    seqs = [list(start) for _ in range(n_beams)]
    beam_scores = torch.zeros(n_beams, device=logits.device)
    beam_scores[1:] = -1e9  # only the first copy may expand at first (the reference's value, not -inf)
    hyps = _Hypotheses(n_beams, options.length_penalty, options.early_stopping, options.max_length)
    done = False
    while True:
        logprobs = _process(logits.log_softmax(dim=-1), len(seqs[0]), options)
        scores = logprobs + beam_scores[:, None]  # (beams, V)
        vocab = scores.shape[-1]
        top_scores, top_ids = scores.view(-1).topk(2 * n_beams, largest=True, sorted=True)
        cur_len = len(seqs[0]) + 1  # length once this step's token is appended
        rows, tokens, new_scores = [], [], []
        for rank, (score, flat) in enumerate(zip(top_scores.tolist(), top_ids.tolist())):
            row, token = divmod(flat, vocab)
            if token == eos:
                if rank < n_beams:  # an eos outside the top num_beams candidates is not a hypothesis
                    hyps.add(list(seqs[row]), score, cur_len - n_prompt)
            else:
                rows.append(row)
                tokens.append(token)
                new_scores.append(score)
            if len(rows) == n_beams:
                break
        done = hyps.is_done(float(top_scores.max()), cur_len, n_prompt)
        seqs = [seqs[r] + [t] for r, t in zip(rows, tokens)]
        beam_scores = torch.tensor(new_scores, device=logits.device)
        if done or cur_len >= options.max_length:
            break
        state.reorder(torch.tensor(rows, device=device))
        logits = model.step(torch.tensor(tokens, device=device)[:, None], state)[:, -1]
    if not done:  # open beams compete with the finished ones, unpunished for lacking an eos
        for seq, score in zip(seqs, beam_scores.tolist()):
            hyps.add(seq, score, len(seq) - n_prompt)
    best = hyps.best()
    if len(best) < options.max_length:
        return Hypothesis(best + [eos], True)
    return Hypothesis(best, best[-1] == eos)
