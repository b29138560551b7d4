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
from torch import Tensor

from ..backend import Backend
from ..kv_cache import DecoderState
from .policy import Policy, attended_frame


@dataclass(frozen=True)
class DecodeResult:
    tokens: list[int]  # generated text tokens after the committed prefix (no end-of-text)
    attention: np.ndarray | None  # (n_tokens, heads, n_frames) alignment-head attention per token
    next_token: int | None  # the token decoding stopped before (end-of-text or the policy's stop), if any
    sum_logprob: float
    n_stepped: int  # generated tokens whose keys/values are now in the cache
    loop_cut: bool  # a repetition loop was cut off
    logprobs: tuple[float, ...] = ()  # per token (greedy updates; empty after beam search)


class DecodeJob:
    """One stream's greedy continuation, one token at a time, so that several streams can share each step.

    The caller feeds the decoder: `prefill()` runs the stream's own prefix on its own state, then each step's
    logits and attention go to `accept()`, which returns the token to feed next or None when this stream is done.
    `decode_update` drives one job alone; `decode_batch` drives several in one batched forward pass per step.
    """

    def __init__(self, backend: Backend, state: DecoderState, *, sequence: list[int], n_committed: int,
                 n_frames: int, policy: Policy, final: bool, max_new_tokens: int, refill: bool, beam_size: int = 1,
                 prior: list[tuple[int, int]] = ()) -> None:
        """`sequence`: start tokens + committed tokens, whose last `n_committed` are the committed ones; `n_frames`:
        encoder frames of real audio; `final`: the segment's last update; `refill`: re-run the whole sequence
        (else only its last token, on the cached prefix). Keywords only: nine values of like types in a row."""
        self.backend, self.state, self.policy, self.final = backend, state, policy, final
        self.beam_size = beam_size  # > 1: beam search (only for a segment's last update: nothing is held back)
        self.prior = list(prior)  # (token, encoder frame) of committed tokens whose alignment is known
        self.sequence, self.n_committed, self.n_frames, self.refill = sequence, n_committed, n_frames, refill
        self.committed = sequence[len(sequence) - n_committed :] if n_committed else []
        self.max_new_tokens = max_new_tokens
        self.budget = 0
        self.out: list[int] = []
        self.lps: list[float] = []  # log-probability of each token in `out`
        self.rows: list[np.ndarray] = []
        self.frames: list[int] = []  # attended_frame of each row, kept alongside (reread_cut runs every step)
        self.total, self.next_token, self.loop_cut, self.done = 0.0, None, False, False
        self.n_stepped = 0  # tokens generated and fed back (their keys/values are cached)

    @property
    def n_valid(self) -> int:
        """Encoder frames of this stream (padding of a batch excluded; a padded encoder window included)."""
        st = self.state
        return int(st.cross_valid[0].sum()) if st.cross_valid is not None else st.cross_k[0].shape[2]

    def prefill(self) -> tuple[Tensor, Tensor]:
        """Run the prefix on the job's own state: the whole sequence (refill) or only its last token."""
        st = self.state
        device = st.cross_k[0].device if st.cross_k else torch.device("cpu")
        self.out, self.rows, self.lps, self.frames = [], [], [], []  # a job may be re-run after a failed batch
        self.total, self.next_token, self.loop_cut, self.done, self.n_stepped = 0.0, None, False, False, 0
        self.policy.begin_update()
        if not self.refill and st.offset >= len(self.sequence) - 1:
            st.truncate(len(self.sequence) - 1)
        if self.refill:
            st.reset()
            feed = self.sequence
        else:
            assert st.offset == len(self.sequence) - 1, "incremental cache must hold sequence[:-1]"
            feed = self.sequence[-1:]
        logits, att = self.backend.step_with_alignment(torch.tensor([feed], device=device), st)
        self.budget = max(0, min(self.max_new_tokens, backend_ctx(self.backend) - st.offset - 1))
        return logits[0, -1], (att[0, :, -1] if att is not None and att.numel() else None)

    def accept(self, logits: Tensor, att: Tensor | None) -> int | None:
        """The last position's logits (V,) and alignment attention (heads, S) -> the token to feed, or None: done."""
        if self.done:
            return None
        if len(self.out) >= self.budget:
            return self._stop()
        lg = logits.float().clone()[None]  # (1, V)
        self.backend.filter_logits(lg, self.n_committed + len(self.out))
        tok = int(lg.argmax(-1))
        row = None if att is None else att[:, : self.n_valid].float().cpu().numpy()
        if tok == self.backend.eot or self.policy.should_stop(row, self.n_frames, self.final,
                                                              content=self._is_content(tok)):
            self.next_token = tok
            return self._stop()
        lp = float(lg.log_softmax(-1)[0, tok])
        self.total += lp
        self.out.append(tok)
        self.lps.append(lp)
        if row is not None:
            self.rows.append(row)
            self.frames.append(attended_frame(row))
        # loops are looked for across the committed text too: a loop can span several updates
        cut = repetition_cut(self.committed + self.out)
        if cut is not None:
            cut = max(0, cut - len(self.committed))
            self._truncate(cut)
            return self._stop()
        if self.rows and len(self.rows) == len(self.out):
            cut = reread_cut(self.out, self.frames, self._is_content)
            if cut is not None:
                self._truncate(cut)
                return self._stop()
        if len(self.out) >= self.budget:
            return self._stop()
        self.n_stepped += 1
        return tok

    def _truncate(self, n: int) -> None:
        """Keep the first n generated tokens (a loop or a re-read was cut off)."""
        self.out, self.rows, self.lps, self.frames = self.out[:n], self.rows[:n], self.lps[:n], self.frames[:n]
        self.loop_cut = True

    def _is_content(self, tok: int) -> bool:
        return any(c.isalnum() for c in self.backend.token_bytes(tok).decode("utf-8", "ignore")) \
            or self.backend.token_bytes(tok)[:1] >= b"\x80"  # part of a multi-byte character

    def _stop(self) -> None:
        self.done = True
        return None

    def result(self) -> DecodeResult:
        attention = np.stack(self.rows) if self.rows and len(self.rows) == len(self.out) else None
        lps = tuple(self.lps) if len(self.lps) == len(self.out) else ()
        return DecodeResult(self.out, attention, self.next_token, self.total, self.n_stepped, self.loop_cut, lps)


def decode_update(backend: Backend, state: DecoderState, sequence: list[int], n_committed: int, n_frames: int,
                  policy: Policy, final: bool, max_new_tokens: int, refill: bool) -> DecodeResult:
    """Greedy continuation of `sequence` (prompt + committed) against the audio installed in `state`.

    refill=True re-runs the whole sequence in one forward pass (exact mode, or a fresh state); otherwise
    only its last token is run on top of the cached prefix (incremental mode).
    """
    job = DecodeJob(backend, state, sequence=sequence, n_committed=n_committed, n_frames=n_frames, policy=policy,
                    final=final, max_new_tokens=max_new_tokens, refill=refill)
    return decode_batch(backend, [job])[0]


def decode_batch(backend: Backend, jobs: list[DecodeJob]) -> list[DecodeResult]:
    """Drive several streams' jobs: each prefix alone, then every generation step batched across the streams.

    Prefixes differ in length and in what is cached, so each runs on its own state (one forward pass each);
    the many one-token steps after it are where batching pays. The active rows' caches are merged once,
    left-padded to a common length (DecoderState.left_pad) with each row's encoder frames masked
    (cross_valid); a row that finishes gets its cache back and leaves the batch. Rows are independent:
    batched and unbatched decoding give the same tokens (up to float rounding).
    """
    with torch.inference_mode():
        active: list[tuple[DecodeJob, int]] = []
        for job in jobs:
            logits, att = job.prefill()
            if job.beam_size > 1:
                beam_search(backend, job, logits)
                continue
            tok = job.accept(logits, att)
            if tok is not None:
                active.append((job, tok))
        if len(active) == 1:
            job, tok = active[0]
            device = job.state.cross_k[0].device
            while tok is not None:
                logits, att = backend.step_with_alignment(torch.tensor([[tok]], device=device), job.state)
                tok = job.accept(logits[0, -1], att[0, :, -1] if att is not None and att.numel() else None)
        elif active:
            _run_merged(backend, active)
        return [job.result() for job in jobs]


def beam_search(backend: Backend, job: DecodeJob, logits: Tensor) -> None:
    """Beam search for a segment's last update, after job.prefill() gave the first logits (V,).

    Everything it finds is committed, so no policy stops it and no attention is kept; the beams run on a copy
    of the state (the job's own state keeps the prefix only, as the guards expect). Ranking as Whisper and
    faster-whisper do: finished hypotheses by sum of log-probabilities over length, patience 1."""
    beam, eot = job.beam_size, backend.eot
    st = job.state.clone()
    st.repeat(beam)
    device = st.cross_k[0].device
    logits = logits.float()[None].repeat(beam, 1)
    sum_lp = torch.zeros(beam, device=device)
    sum_lp[1:] = float("-inf")  # all beams start identical: expand only the first
    seqs: list[list[int]] = [[] for _ in range(beam)]
    finished: list[tuple[list[int], float]] = []
    for _ in range(job.budget):
        lg = logits.float().clone()
        backend.filter_logits(lg, job.n_committed + len(seqs[0]))
        cand = (sum_lp[:, None] + lg.log_softmax(-1)).view(-1)
        top_lp, top_idx = cand.topk(min(cand.numel(), 2 * beam + 1))
        rows, toks, lps = [], [], []
        for score, idx in zip(top_lp.tolist(), top_idx.tolist()):
            if score == float("-inf"):
                break
            row, tok = divmod(idx, lg.shape[1])
            if tok == eot:
                if len(finished) < beam:
                    finished.append((seqs[row], score))
                continue
            rows.append(row)
            toks.append(tok)
            lps.append(score)
            if len(rows) == beam:
                break
        if len(finished) >= beam or not rows:
            break
        st.reorder(torch.tensor(rows, device=device))
        seqs = [seqs[r] + [t] for r, t in zip(rows, toks)]
        sum_lp = torch.tensor(lps, device=device)
        logits = backend.step(torch.tensor([[t] for t in toks], device=device), st)[:, -1]
    if finished:
        best, score = max(finished, key=lambda c: c[1] / (len(c[0]) + 1))
        job.next_token = eot
    else:  # the budget ran out: the best live beam
        i = int(sum_lp.argmax())
        best, score = seqs[i], float(sum_lp[i])
    cut = repetition_cut(job.committed + best)
    if cut is not None:
        best, job.loop_cut = best[: max(0, cut - len(job.committed))], True
    rows = _alignment_rows(backend, job, best)
    if rows:
        frames = [attended_frame(r) for r in rows]
        while (cut := reread_cut(best, frames, job._is_content)) is not None:
            best, rows, frames, job.loop_cut = best[:cut], rows[:cut], frames[:cut], True
        for a, b in reversed(reread_spans(best, frames, backend.token_bytes, job._is_content, job.prior)):
            best, rows, frames, job.loop_cut = best[:a] + best[b:], rows[:a] + rows[b:], frames[:a] + frames[b:], True
    job.out, job.rows, job.total, job.done = list(best), rows, score, True


def _alignment_rows(backend: Backend, job: DecodeJob, tokens: list[int]) -> list[np.ndarray]:
    """The alignment heads' attention behind each of `tokens` (as greedy decoding records it: the step that
    produced the token), from one forward pass over them on a copy of the job's prefix cache."""
    if not tokens or not job.sequence:
        return []
    probe = job.state.clone()
    probe.truncate(len(job.sequence) - 1)
    device = probe.cross_k[0].device
    feed = torch.tensor([job.sequence[-1:] + tokens[:-1]], device=device)
    _, att = backend.step_with_alignment(feed, probe)
    if att is None or not att.numel():
        return []
    return [att[0, :, i, : job.n_valid].float().cpu().numpy() for i in range(len(tokens))]


def ends_sentence(piece: bytes) -> bool:
    """The token (its bytes) ends a sentence: '.', '?' or '!' before any trailing space."""
    return piece.rstrip()[-1:] in (b".", b"?", b"!")


def reread_spans(tokens: list[int], frames: list[int], token_bytes, is_content,
                 prior: list[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """Sentences [a, b) of a segment's last hypothesis that read again audio already turned into text: most of
    their words are the same tokens at the same frames (within _REREAD_FRAMES) as earlier ones, in the hypothesis
    or in `prior` ((token, frame) of the committed text). "Good morning and welcome ... Chicago." committed, then
    "Good evening and welcome ... Chicago." from the same audio. A speaker who really says it again is heard at
    other frames; heads parked on padding or sinks only miss a word or two."""
    seen: dict[int, list[int]] = {}
    for t, f in prior:
        seen.setdefault(t, []).append(f)
    spans: list[tuple[int, int]] = []
    a = 0
    while a < len(tokens):
        b = a + 1
        while b < len(tokens) and not (ends_sentence(token_bytes(tokens[b - 1]))
                                       and token_bytes(tokens[b])[:1] == b" "):
            b += 1  # a new word after a sentence end starts the next sentence ("5.2" stays one word)
        content = [(tokens[i], frames[i]) for i in range(a, b) if is_content(tokens[i])]
        same = sum(any(abs(f - g) <= _REREAD_FRAMES for g in seen.get(t, ())) for t, f in content)
        if len(content) >= 2 and same >= max(2, 0.6 * len(content)):
            spans.append((a, b))
        for t, f in content:
            seen.setdefault(t, []).append(f)
        a = b
    return spans


def _run_merged(backend: Backend, active: list[tuple[DecodeJob, int]]) -> None:
    states = [job.state for job, _ in active]
    batch = merge_states(states)
    ctx = backend_ctx(backend)
    for job, _ in active:  # the batch's cache is as long as its longest row: keep every row inside the context
        job.budget = min(job.budget, len(job.out) + ctx - batch.offset - 1)
    device = batch.cross_k[0].device
    valid = [job.n_valid for job, _ in active]
    toks = [tok for _, tok in active]
    rows = list(range(len(active)))  # row of the batch -> index into `active`
    while rows:
        logits, att = backend.step_with_alignment(torch.tensor([[t] for t in toks], device=device), batch)
        keep, next_toks = [], []
        for b, i in enumerate(rows):
            job = active[i][0]
            a = att[b, :, -1, : valid[i]] if att is not None and att.numel() else None
            tok = job.accept(logits[b, -1], a)
            if tok is None:
                split_row(batch, b, job.state)
            else:
                keep.append(b)
                next_toks.append(tok)
        if len(keep) < len(rows):
            if keep:
                batch.reorder(torch.tensor(keep, device=device))
            rows = [rows[b] for b in keep]
        toks = next_toks


def merge_states(states: list[DecoderState]) -> DecoderState:
    """One batch state from single-row states: self caches left-padded to the longest, encoder frames masked."""
    n_layers = states[0].n_layers
    t_max = max(st.offset for st in states)
    s_max = max(st.cross_k[0].shape[2] for st in states)
    ref = states[0].cross_k[0]
    valid = torch.zeros(len(states), s_max, dtype=torch.bool, device=ref.device)
    for i, st in enumerate(states):
        n = st.cross_k[0].shape[2]
        valid[i, :n] = st.cross_valid[0, :n] if st.cross_valid is not None else True

    def pad_to(x: Tensor, n: int, left: bool) -> Tensor:  # (1, H, T, D) -> (1, H, n, D)
        if x.shape[2] == n:
            return x
        z = x.new_zeros(x.shape[0], x.shape[1], n - x.shape[2], x.shape[3])
        return torch.cat([z, x] if left else [x, z], dim=2)

    out = DecoderState(n_layers=n_layers)
    for layer in range(n_layers):
        if t_max:
            out.self_k[layer] = torch.cat([pad_to(st.self_k[layer], t_max, True) for st in states])
            out.self_v[layer] = torch.cat([pad_to(st.self_v[layer], t_max, True) for st in states])
    out.cross_k = [torch.cat([pad_to(st.cross_k[l], s_max, False) for st in states]) for l in range(n_layers)]
    out.cross_v = [torch.cat([pad_to(st.cross_v[l], s_max, False) for st in states]) for l in range(n_layers)]
    out.cross_valid = None if bool(valid.all()) else valid
    out.offset = t_max
    out.left_pad = torch.tensor([t_max - st.offset for st in states], dtype=torch.long, device=ref.device)
    return out


def split_row(batch: DecoderState, row: int, into: DecoderState) -> None:
    """Copy one batch row's self cache (without its left padding) back into that stream's own state."""
    pad = int(batch.left_pad[row]) if batch.left_pad is not None else 0
    for layer in range(batch.n_layers):
        k, v = batch.self_k[layer], batch.self_v[layer]
        into.self_k[layer] = k[row : row + 1, :, pad:].clone()
        into.self_v[layer] = v[row : row + 1, :, pad:].clone()
    into.offset = batch.offset - pad


def backend_ctx(backend: Backend) -> int:
    """The decoder's context length in tokens (448 for Whisper)."""
    return int(getattr(backend, "max_text_tokens", 448))


def repetition_cut(tokens: list[int], min_repeats: int = 3, max_ngram: int = 40) -> int | None:
    """Where to cut a hypothesis ending in a loop (an n-gram repeated `min_repeats` times in a row): keep one copy.
    A run of _LONG_NGRAM tokens or more needs only two copies: nobody says a whole clause twice in a row, but
    Whisper does ("How long has it been since ... How long has it been since ...")."""
    n_tok = len(tokens)
    for n in range(1, max_ngram + 1):
        # a single token may legitimately repeat twice ("no, no"); a long run never does
        reps = min_repeats + 1 if n == 1 else 2 if n >= _LONG_NGRAM else min_repeats
        if n_tok < n * reps:
            continue
        tail = tokens[n_tok - n :]
        if all(tokens[n_tok - (r + 1) * n : n_tok - r * n] == tail for r in range(reps)):
            return n_tok - (reps - 1) * n
    return None


_LONG_NGRAM = 8
# A repeated phrase counts as a re-reading when its copy looks (median frame of its words) no further than this
# many encoder frames past the first one (a speaker repeating himself is heard later: 0.3 s and more)
_REREAD_FRAMES = 10


def reread_cut(tokens: list[int], frames: list[int], is_content, max_ngram: int = 20) -> int | None:
    """Where to cut a hypothesis that ends by reading the same audio twice ("Good evening. Good evening." from
    one second of speech): the last n tokens equal the n before them and their attention did not move on."""
    n_tok = len(tokens)
    for n in range(2, min(max_ngram, n_tok // 2) + 1):
        if tokens[n_tok - n :] != tokens[n_tok - 2 * n : n_tok - n]:
            continue
        first = [f for t, f in zip(tokens[n_tok - 2 * n : n_tok - n], frames[n_tok - 2 * n : n_tok - n]) if is_content(t)]
        second = [f for t, f in zip(tokens[n_tok - n :], frames[n_tok - n :]) if is_content(t)]
        if not second:
            continue
        # medians: a head parked on the padding or a sink frame does not make a copy look new
        if float(np.median(second)) <= float(np.median(first)) + _REREAD_FRAMES:
            return n_tok - n
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
