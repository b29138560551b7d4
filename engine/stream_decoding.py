"""One streaming decoder update over a session's DecoderState, and the guards against Whisper's failures.

Only the Backend protocol is used, so Whisper and Speech2Text2 stream the same way. The cache invariant a
session keeps between updates (incremental mode): the state holds `sequence[:-1]` — prompt plus committed
tokens except the last, whose step must be re-run to get the next token's logits against the new audio.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from .backend import Backend
from .kv_cache import DecoderState
from .policy import Policy


@dataclass(frozen=True)
class DecodeResult:
    tokens: list[int]  # generated text tokens after the committed prefix (no end-of-text)
    attention: np.ndarray | None  # (n_tokens, heads, n_frames) alignment-head attention per token
    next_token: int | None  # the token decoding stopped before (end-of-text or the policy's stop), if any
    sum_logprob: float
    n_stepped: int  # generated tokens whose keys/values are now in the cache
    loop_cut: bool  # a repetition loop was cut off


def decode_update(backend: Backend, state: DecoderState, sequence: list[int], n_committed: int, n_frames: int,
                  policy: Policy, final: bool, max_new_tokens: int, refill: bool) -> DecodeResult:
    """Greedy continuation of `sequence` (prompt + committed) against the audio installed in `state`.

    refill=True re-runs the whole sequence in one forward pass (exact mode, or a fresh state); otherwise
    only its last token is run on top of the cached prefix (incremental mode).
    """
    with torch.inference_mode():
        device = state.cross_k[0].device if state.cross_k else torch.device("cpu")
        if refill:
            state.reset()
            feed = sequence
        else:
            assert state.offset == len(sequence) - 1, "incremental cache must hold sequence[:-1]"
            feed = sequence[-1:]
        logits, att = backend.step_with_alignment(torch.tensor([feed], device=device), state)
        committed = sequence[len(sequence) - n_committed :] if n_committed else []
        out: list[int] = []
        rows: list[np.ndarray] = []
        total, stepped, next_token, loop_cut = 0.0, 0, None, False
        budget = max(0, min(max_new_tokens, backend_ctx(backend) - state.offset - 1))
        for _ in range(budget):
            lg = logits[:, -1].float().clone()  # (1, V)
            backend.filter_logits(lg, n_committed + len(out))
            tok = int(lg.argmax(-1))
            row = _alignment_row(att, n_frames)
            if tok == backend.eot:
                next_token = tok
                break
            if not final and policy.should_stop(row, n_frames):
                next_token = tok
                break
            total += float(lg.log_softmax(-1)[0, tok])
            out.append(tok)
            if row is not None:
                rows.append(row)
            # loops are looked for across the committed text too: a loop can span several updates
            cut = repetition_cut(committed + out)
            if cut is not None:
                cut = max(0, cut - len(committed))
                out, rows, loop_cut = out[:cut], rows[:cut], True
                break
            if len(out) == budget:
                break
            logits, att = backend.step_with_alignment(torch.tensor([[tok]], device=device), state)
            stepped += 1
        attention = np.stack(rows) if rows and len(rows) == len(out) else None
        return DecodeResult(out, attention, next_token, total, stepped, loop_cut)


def backend_ctx(backend: Backend) -> int:
    """The decoder's context length in tokens (448 for Whisper)."""
    return int(getattr(backend, "max_text_tokens", 448))


def _alignment_row(att: torch.Tensor | None, n_frames: int) -> np.ndarray | None:
    # att: (1, heads, T, S) -> the last query position's attention over the real frames, (heads, n_frames)
    if att is None or att.numel() == 0:
        return None
    return att[0, :, -1, :n_frames].float().cpu().numpy()


def repetition_cut(tokens: list[int], min_repeats: int = 3, max_ngram: int = 12) -> int | None:
    """Where to cut a hypothesis ending in a loop (an n-gram repeated `min_repeats` times in a row): keep one copy."""
    n_tok = len(tokens)
    for n in range(1, max_ngram + 1):
        reps = min_repeats + 1 if n == 1 else min_repeats  # a single token may legitimately repeat twice ("no, no")
        if n_tok < n * reps:
            break
        tail = tokens[n_tok - n :]
        if all(tokens[n_tok - (r + 1) * n : n_tok - r * n] == tail for r in range(reps)):
            return n_tok - (reps - 1) * n
    return None


def is_prompt_echo(tokens: list[int], prompt: list[int], min_len: int = 4) -> bool:
    """The hypothesis starts by repeating a run of the previous-text prompt (Whisper's echo failure)."""
    n = min(len(tokens), 8)
    if n < min_len or len(prompt) < n:
        return False
    head = tokens[:n]
    return any(prompt[i : i + n] == head for i in range(len(prompt) - n + 1))


# Frequent function words that are not English words: their density tells a translation drifting into the
# source language. Deliberately short lists of unambiguous words (no "die", "a", "in", "son").
_SOURCE_WORDS = {
    "de": "und der das ist nicht ich wir sie mit ein eine auf für sind wird haben heute sehr auch nach dem den des "
          "zu von bitte vielen dank".split(),
    "fr": "le la les et est je nous vous avec pour une des du dans sur pas qui que très aujourd bonjour".split(),
    "es": "el los las y es que con por una para nosotros muy hoy buenos días gracias del".split(),
    "it": "il gli e è che con per una della sono molto oggi".split(),
    "nl": "de het een en is niet ik wij zijn met voor ook".split(),
}


def looks_like_source_language(text: str, language: str | None) -> bool:
    """Translate mode drifted into the spoken language: many of the words are that language's function words."""
    words = _SOURCE_WORDS.get(language or "")
    if not words:
        return False
    toks = re.findall(r"[^\W\d_]+", text.lower())
    if len(toks) < 3:
        return False
    hits = sum(t in words for t in toks)
    return hits / len(toks) >= 0.3
