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

import torch
from torch import Tensor

from ..kv_cache import DecoderState
from ..models.search import BeamOptions, beam, greedy
from .model import MTModel


@dataclass(frozen=True)
class MTSearchOptions(BeamOptions):
    max_length: int = 256  # tokens in the output, the start token included (HF's meaning)
    eos: int = 0
    forced_eos: int | None = None  # forced as the last token when max_length is reached (Marian)
    banned: tuple[int, ...] = field(default=())  # never generated (Marian's <pad>)


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
def search(
    model: MTModel, state: DecoderState, start: list[int], options: MTSearchOptions, *, n_scored_prompt: int = 1
) -> Hypothesis:
    """Decode after `start` (decoder start token + forced tokens) over a fresh `state` (cross keys/values set).

    `n_scored_prompt`: how many leading tokens are the prompt proper (not counted by the length penalty)."""
    if len(start) >= options.max_length:
        return Hypothesis(list(start), False)

    def step(tokens: Tensor, n_tokens: int) -> Tensor:
        return model.step(tokens, state)[:, -1]  # (B, V), in the model's dtype (fp16 on a GPU), as the reference

    def process(scores: Tensor, n_tokens: int) -> Tensor:
        return _process(scores, n_tokens, options)

    if options.num_beams == 1:
        tokens = greedy(
            step, start, eos=options.eos, max_length=options.max_length, process=process, device=model.device
        )
    else:
        tokens = beam(
            step,
            state,
            start,
            options=options,
            eos=options.eos,
            n_prompt=n_scored_prompt,
            process=process,
            device=model.device,
        )
    # greedy and beam append at least one token after `start`; the sequence finished iff it ends with eos
    return Hypothesis(tokens, tokens[-1] == options.eos)
