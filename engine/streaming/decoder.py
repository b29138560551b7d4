"""One streaming decoder update over a session's DecoderState: greedy, a token at a time (DecodeJob), or beam
search for a segment's last update.

Greedy updates verify a draft first: the tokens the previous update showed after the committed text. They are fed
in the prefix's forward pass, and every draft token the model's own argmax agrees with is taken without a step of
its own (speculative decoding with the last hypothesis as the draft). The tokens are those step-by-step greedy
decoding gives (up to rounding: the int8 decoder quantises a multi-token pass's activations with one scale);
consecutive updates mostly agree, so most of the draft's steps are saved.

Only the Backend protocol is used, so Whisper and Speech2Text2 stream the same way. The cache invariant a
session keeps between updates (incremental mode): the state holds `sequence[:-1]` — prompt plus committed
tokens except the last, whose step must be re-run to get the next token's logits against the new audio.
Several streams' jobs run together in batch.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..backend import Backend
from ..kv_cache import DecoderState
from ..models.search import whisper_beam_step
from ..text import ends_sentence
from .guards import is_stutter, repetition_cut, reread_cut, reread_spans, stutter_spans
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
    loop_next: int | None = None  # a stutter loop was cut off (guards.is_stutter): the first token of its copies


class DecodeJob:
    """One stream's greedy continuation, one token at a time, so that several streams can share each step.

    The caller feeds the decoder: `start()` runs the stream's own prefix (and verifies the draft) on its own state
    and returns the first token to feed; then each step's logits and attention go to `accept()`, which returns the
    token to feed next or None when this stream is done.
    batch.py drives them: `decode_batch`, one job alone or several in one batched forward pass per step.
    """

    def __init__(
        self,
        backend: Backend,
        state: DecoderState,
        *,
        sequence: list[int],
        n_committed: int,
        n_frames: int,
        policy: Policy,
        final: bool,
        max_new_tokens: int,
        refill: bool,
        beam_size: int = 1,
        prior: Sequence[tuple[int, int]] = (),
        draft: Sequence[int] = (),
        banned_first: Sequence[int] = (),
        banned: Sequence[int] = (),
        context_frames: int = 0,
    ) -> None:
        """`sequence`: start tokens + committed tokens, whose last `n_committed` are the committed ones; `n_frames`:
        encoder frames of real audio; `final`: the segment's last update; `refill`: re-run the whole sequence
        (else only its last token, on the cached prefix). Keywords only: nine values of like types in a row."""
        self.backend, self.state, self.policy, self.final = backend, state, policy, final
        self.beam_size = beam_size  # > 1: beam search (only for a segment's last update: nothing is held back)
        self.prior = list(prior)  # (token, encoder frame) of committed tokens whose alignment is known
        # tokens expected after the committed prefix (the previous update's tentative ones), verified in start()
        self.draft = list(draft) if beam_size == 1 else []
        self.sequence, self.n_committed, self.n_frames, self.refill = sequence, n_committed, n_frames, refill
        self.committed = sequence[len(sequence) - n_committed :] if n_committed else []
        self.max_new_tokens = max_new_tokens
        self.banned_first = list(banned_first)  # tokens the first new token may not be (a loop's restart)
        self.banned = list(banned)  # tokens no new token may be (the spoken language's words, after a drift)
        # encoder frames of the carried context at the window's front (its text is in `sequence`): a new word read
        # there is the context translated again
        self.context_frames = context_frames
        self.budget = 0
        self.out: list[int] = []
        self.lps: list[float] = []  # log-probability of each token in `out`
        self.rows: list[np.ndarray] = []
        self.frames: list[int] = []  # attended_frame of each row, kept alongside (reread_cut runs every step)
        self.total, self.loop_cut, self.done = 0.0, False, False
        self.next_token: int | None = None
        self.loop_next: int | None = None
        self.n_stepped = 0  # tokens generated and fed back (their keys/values are cached)

    @property
    def n_valid(self) -> int:
        """Encoder frames of this stream (padding of a batch excluded; a padded encoder window included)."""
        st = self.state
        return int(st.cross_valid[0].sum()) if st.cross_valid is not None else st.n_frames

    def prefill(self, draft: Sequence[int] = ()) -> tuple[Tensor, Tensor | None]:
        """Run the prefix on the job's own state: the whole sequence (refill) or only its last token, then `draft`;
        logits (T, V) and alignment attention (heads, T, S) of the draft's positions and the one after it."""
        st = self.state
        device = st.cross_k[0].device if st.cross_k else torch.device("cpu")
        self.out, self.rows, self.lps, self.frames = [], [], [], []  # a job may be re-run after a failed batch
        self.total, self.next_token, self.loop_cut, self.done, self.n_stepped = 0.0, None, False, False, 0
        self.loop_next = None
        self.policy.begin_update()
        if not self.refill and st.offset >= len(self.sequence) - 1:
            st.truncate(len(self.sequence) - 1)
        if self.refill:
            st.reset()
            feed = self.sequence
        else:
            assert st.offset == len(self.sequence) - 1, "incremental cache must hold sequence[:-1]"
            feed = self.sequence[-1:]
        room = backend_ctx(self.backend) - len(self.sequence) - 1  # positions left after the prefix
        self.budget = max(0, min(self.max_new_tokens, room))
        draft = list(draft)[: max(0, self.budget - 1)]
        logits, att = self.backend.step_with_alignment(torch.tensor([feed + draft], device=device), st)
        first = len(feed) - 1  # the position whose logits give the first new token
        return logits[0, first:], (att[0, :, first:] if att is not None and att.numel() else None)

    def start(self) -> int | None:
        """Prefill with the draft, then accept each draft token the model agrees with; the first token still to
        be fed (None: this job is done). The state then holds the prefix plus the accepted draft tokens."""
        draft = self.draft
        logits, att = self.prefill(draft)
        n_draft = logits.shape[0] - 1
        base = len(self.sequence)  # cached positions once the prefix is in
        for j in range(n_draft + 1):
            tok = self.accept(logits[j], None if att is None else att[:, j])
            if tok is None or j == n_draft or tok != draft[j]:
                self.state.truncate(base + j)  # keep what was accepted; drop the draft's rejected rest
                return tok
        raise AssertionError("unreachable: the loop returns at j == n_draft")

    def accept(self, logits: Tensor, att: Tensor | None) -> int | None:
        """The last position's logits (V,) and alignment attention (heads, S) -> the token to feed, or None: done."""
        if self.done:
            return None
        if len(self.out) >= self.budget:
            self.done = True
            return None
        lg = logits.float().clone()[None]  # (1, V)
        self.backend.filter_logits(lg, self.n_committed + len(self.out))
        if not self.out and self.banned_first:
            lg[0, self.banned_first] = float("-inf")
        if self.banned:
            lg[0, self.banned] = float("-inf")
        tok = int(lg.argmax(-1))
        row = None if att is None else att[:, : self.n_valid].float().cpu().numpy()
        if (
            tok == self.backend.eot
            or self.policy.should_stop(row, self.n_frames, final=self.final, content=self._is_content(tok))
            or self._rereads_context(tok, row)
        ):
            self.next_token = tok
            self.done = True
            return None
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
            stalled = is_stutter(self.committed + self.out, cut, self._ends_sentence)
            cut = max(0, cut - len(self.committed))
            restart = self.out[cut] if stalled and cut < len(self.out) else None
            self._truncate(cut)
            self.loop_next, self.done = restart, True
            return None
        if self.rows and len(self.rows) == len(self.out):
            cut = reread_cut(self.out, self.frames, self._is_content)
            if cut is not None:
                self._truncate(cut)
                self.done = True
                return None
        if len(self.out) >= self.budget:
            self.done = True
            return None
        self.n_stepped += 1
        return tok

    def _rereads_context(self, tok: int, row: np.ndarray | None) -> bool:
        """A word (not a segment's last decode's: its beam drops such sentences whole) read in the carried context."""
        if not self.context_frames or self.final or row is None or not self._is_content(tok):
            return False
        return attended_frame(row) < self.context_frames

    def _truncate(self, n: int) -> None:
        """Keep the first n generated tokens (a loop or a re-read was cut off)."""
        self.out, self.rows, self.lps, self.frames = self.out[:n], self.rows[:n], self.lps[:n], self.frames[:n]
        self.loop_cut = True

    def _ends_sentence(self, tok: int) -> bool:
        return ends_sentence(self.backend.token_bytes(tok))

    def _is_content(self, tok: int) -> bool:
        return (
            any(c.isalnum() for c in self.backend.token_bytes(tok).decode("utf-8", "ignore"))
            or self.backend.token_bytes(tok)[:1] >= b"\x80"
        )  # part of a multi-byte character

    def result(self) -> DecodeResult:
        attention = np.stack(self.rows) if self.rows and len(self.rows) == len(self.out) else None
        lps = tuple(self.lps) if len(self.lps) == len(self.out) else ()
        return DecodeResult(
            self.out, attention, self.next_token, self.total, self.n_stepped, self.loop_cut, lps, self.loop_next
        )


def beam_search(backend: Backend, job: DecodeJob, logits: Tensor) -> None:
    """Beam search for a segment's last update, after job.prefill() gave the first logits (1, V).

    Everything it finds is committed, so no policy stops it and no attention is kept; the beams run on a copy
    of the state (the job's own state keeps the prefix only, as the guards expect). Ranking as Whisper and
    faster-whisper do: finished hypotheses by sum of log-probabilities over length, patience 1."""
    beam, eot = job.beam_size, backend.eot
    st = job.state.clone()
    st.repeat(beam)
    device = st.device
    logits = logits.float()[-1:].repeat(beam, 1)
    sum_lp = torch.zeros(beam, device=device)
    sum_lp[1:] = float("-inf")  # all beams start identical: expand only the first
    seqs: list[list[int]] = [[] for _ in range(beam)]
    finished: list[tuple[list[int], float]] = []
    for _ in range(job.budget):
        lg = logits.float().clone()
        backend.filter_logits(lg, job.n_committed + len(seqs[0]))
        if not seqs[0] and job.banned_first:
            lg[:, job.banned_first] = float("-inf")
        if job.banned:
            lg[:, job.banned] = float("-inf")
        nxt = whisper_beam_step(sum_lp, lg.log_softmax(-1), beam=beam, eot=eot, room=beam - len(finished))
        finished += [(seqs[r], score) for r, score in zip(nxt.ended_rows, nxt.ended_scores)]
        if len(finished) >= beam or not nxt.rows:
            break
        st.reorder(torch.tensor(nxt.rows, device=device))
        seqs = [seqs[r] + [t] for r, t in zip(nxt.rows, nxt.tokens)]
        sum_lp = torch.tensor(nxt.scores, device=device)
        logits = backend.step(torch.tensor([[t] for t in nxt.tokens], device=device), st)[:, -1]
    if finished:
        best, score = max(finished, key=lambda c: c[1] / (len(c[0]) + 1))
        job.next_token = eot
    else:  # the budget ran out: the best live beam
        i = int(sum_lp.argmax())
        best, score = seqs[i], float(sum_lp[i])
    cut = repetition_cut(job.committed + best)
    if cut is not None:
        keep = max(0, cut - len(job.committed))
        stalled = keep < len(best) and is_stutter(job.committed + best, cut, job._ends_sentence)
        job.loop_next = best[keep] if stalled else None  # the session decodes on past a stall
        best, job.loop_cut = best[:keep], True
    for a, b in reversed(stutter_spans(best)):
        best, job.loop_cut = best[:a] + best[b:], True
    rows = alignment_rows(backend, job, best)
    if rows:
        frames = [attended_frame(r) for r in rows]
        while (cut := reread_cut(best, frames, job._is_content)) is not None:
            best, rows, frames, job.loop_cut = best[:cut], rows[:cut], frames[:cut], True
        for a, b in reversed(
            reread_spans(best, frames, backend.token_bytes, job._is_content, job.prior, job.context_frames)
        ):
            best, rows, frames, job.loop_cut = best[:a] + best[b:], rows[:a] + rows[b:], frames[:a] + frames[b:], True
    job.out, job.rows, job.total, job.done = list(best), rows, score, True


def alignment_rows(backend: Backend, job: DecodeJob, tokens: list[int]) -> list[np.ndarray]:
    """The alignment heads' attention behind each of `tokens` (as greedy decoding records it: the step that
    produced the token), from one forward pass over them on a copy of the job's prefix cache."""
    if not tokens or not job.sequence:
        return []
    probe = job.state.clone()
    probe.truncate(len(job.sequence) - 1)
    device = probe.device
    feed = torch.tensor([job.sequence[-1:] + tokens[:-1]], device=device)
    _, att = backend.step_with_alignment(feed, probe)
    if att is None or not att.numel():
        return []
    return [att[0, :, i, : job.n_valid].float().cpu().numpy() for i in range(len(tokens))]


def backend_ctx(backend: Backend) -> int:
    """The decoder's context length in tokens (448 for Whisper)."""
    return int(getattr(backend, "max_text_tokens", 448))
