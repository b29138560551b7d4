"""Greedy and beam search over an explicit DecoderState, token-identical to HF `generate` (transformers 4.46), for
the families without Whisper's prompt machinery: Speech2Text2 (models/s2t2/generate.py) and text MT (mt/search.py).

A family supplies one `step(tokens, n_tokens)`: run `tokens` (B, T) after the cached prefix and return the next
token's scores (B, V), where `n_tokens` is the sequence length once `tokens` are appended (a family that filters
raw logits does it there). An optional `process(scores, n_tokens)` acts like HF's logits processors: on raw scores
in greedy search and on log-probabilities in beam search, where the reference applies them.

Sequences start with the given start tokens and end with eos when that fits within `max_length` (which counts the
start tokens). Beam hypotheses are ranked by sum(logprob) / n_generated ** length_penalty, `n_prompt` leading
tokens not counted as generated, with HF's stopping rules.

Whisper's beam search (openai's and faster-whisper's flavour) is another: its offline decoder
(models/whisper/decoding.py) and the streaming decoder's last update (streaming/decoder.py) share its step,
whisper_beam_step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..errors import ConfigError
from ..kv_cache import DecoderState

Step = Callable[[Tensor, int], Tensor]  # (tokens (B, T), sequence length with them) -> next-token scores (B, V)
Process = Callable[[Tensor, int], Tensor]  # (scores (B, V), sequence length so far) -> scores, in place


@dataclass(frozen=True)
class BeamOptions:
    num_beams: int = 1  # 1 = greedy
    max_length: int = 200  # tokens in the output sequence, the start token included (HF's meaning)
    length_penalty: float = 1.0  # beam ranking: sum(logprob) / n_generated ** length_penalty
    early_stopping: bool | Literal["never"] = False  # HF: True stops at num_beams finished hypotheses

    def __post_init__(self) -> None:
        if self.num_beams < 1:
            raise ConfigError("num_beams must be >= 1")
        if self.max_length < 2:
            raise ConfigError("max_length must leave room for at least one token after the start token")


def greedy(
    step: Step,
    start: list[int],
    *,
    eos: int,
    max_length: int,
    process: Process | None = None,
    device: torch.device | None = None,
) -> list[int]:
    """The argmax token at every step until eos or `max_length`: the whole sequence, start tokens included."""
    seq = list(start)
    scores = step(torch.tensor([seq], device=device), len(seq))
    while True:
        if process is not None:
            scores = process(scores, len(seq))
        token = int(scores[0].argmax())
        seq.append(token)
        if token == eos or len(seq) >= max_length:
            return seq
        scores = step(torch.tensor([[token]], device=device), len(seq))


@dataclass(frozen=True)
class WhisperBeamStep:
    """One step of Whisper's beam search: the hypotheses that go on and those that end here."""

    rows: list[int]  # per continuing hypothesis: the beam it extends
    tokens: list[int]  # its next token
    scores: list[float]  # its summed log-probability
    ended_rows: list[int]  # per hypothesis ending with eot: the beam it ends
    ended_scores: list[float]  # its summed log-probability, eot included


def whisper_beam_step(sum_logprobs: Tensor, logprobs: Tensor, *, beam: int, eot: int, room: int) -> WhisperBeamStep:
    """Expand `beam` live hypotheses (summed log-probabilities (beam,), next-token log-probabilities (beam, V)):
    of the 2 * beam + 1 best continuations in order, the first `beam` that are not eot go on, and those that are
    eot end, at most `room` of them. A beam at -inf (not started yet) expands nothing."""
    cand = (sum_logprobs[:, None] + logprobs).view(-1)
    top_lp, top_idx = cand.topk(min(cand.numel(), 2 * beam + 1))
    rows: list[int] = []
    tokens: list[int] = []
    scores: list[float] = []
    ended_rows: list[int] = []
    ended_scores: list[float] = []
    for score, idx in zip(top_lp.tolist(), top_idx.tolist()):
        if score == float("-inf"):
            break
        row, token = divmod(idx, logprobs.shape[1])
        if token == eot:
            if len(ended_rows) < room:
                ended_rows.append(row)
                ended_scores.append(score)
            continue
        rows.append(row)
        tokens.append(token)
        scores.append(score)
        if len(rows) == beam:
            break
    return WhisperBeamStep(rows, tokens, scores, ended_rows, ended_scores)


class BeamHypotheses:
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
            best: float = best_sum_logprobs / (cur_len - prompt_len) ** self.length_penalty
        else:  # "never" with a positive penalty: the longest possible hypothesis bounds the best score
            best = best_sum_logprobs / (self.max_length - prompt_len) ** self.length_penalty
        return self.worst_score >= best

    def best(self) -> list[int]:
        return sorted(self.beams, key=lambda b: b[0])[-1][1]  # stable sort: among ties the last added wins, as HF


def beam(
    step: Step,
    state: DecoderState,
    start: list[int],
    *,
    options: BeamOptions,
    eos: int,
    n_prompt: int,
    process: Process | None = None,
    device: torch.device | None = None,
) -> list[int]:
    """Beam search over `state` (its cache is repeated and reordered here): the best sequence, start tokens
    included, with eos appended when it fits."""
    n_beams = options.num_beams
    logits = step(torch.tensor([start], device=device), len(start))
    state.repeat(n_beams)  # every beam starts as the same prompt: computed once, the cache copied
    logits = logits.expand(n_beams, -1)
    seqs = [list(start) for _ in range(n_beams)]
    beam_scores = torch.zeros(n_beams, device=logits.device)
    beam_scores[1:] = -1e9  # only the first copy may expand at the first step (HF's value, not -inf)
    hyps = BeamHypotheses(n_beams, options.length_penalty, options.early_stopping, options.max_length)
    done = False
    while True:
        logprobs = logits.log_softmax(dim=-1)
        if process is not None:
            logprobs = process(logprobs, len(seqs[0]))
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
        logits = step(torch.tensor(tokens, device=device)[:, None], cur_len)
    if not done:  # open beams compete with the finished ones, unpunished for lacking an eos
        for seq, score in zip(seqs, beam_scores.tolist()):
            hyps.add(seq, score, len(seq) - n_prompt)
    best = hyps.best()
    return best + [eos] if len(best) < options.max_length else best
