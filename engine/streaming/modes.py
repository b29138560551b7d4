"""Decoding modes (SessionConfig.mode): how each update's decoder job reuses what earlier updates computed.

  incremental  committed tokens stay cached across updates; only the last one is re-run on new audio
  exact        the committed prefix is re-run against the current audio every update (one forward pass)
  redecode     the whisper_streaming-style baseline: the whole segment is decoded again from the task prompt
               every update and the committed tokens are dropped from the hypothesis afterwards

Chosen once per session (mode_for); the session asks the mode object instead of comparing the mode's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..audio import SAMPLE_RATE
from ..backend import Backend
from .config import SessionConfig
from .decoder import DecodeJob, DecodeResult
from .policy import Policy
from .segment import Segment, Update


@dataclass(frozen=True)
class Incremental:
    """Continue from the cached committed prefix."""

    backend: Backend
    config: SessionConfig
    refills_every_update: bool = False
    continues: bool = True  # job() can decode on from given tokens (`forced`)

    def job(
        self,
        seg: Segment,
        upd: Update,
        *,
        n_frames: int,
        refill: bool,
        policy: Policy,
        forced: Sequence[int] = (),
        banned_first: Sequence[int] = (),
        banned: Sequence[int] = (),
    ) -> DecodeJob:
        """The decoder job for one update of `seg` (its state already holds the update's audio); `forced`: tokens
        taken as if committed, the job decodes what follows them (needs refill); `banned_first`: tokens the first
        new one may not be; `banned`: tokens none may be."""
        assert seg.state is not None, "begin_decode installs the state first"
        assert refill or not forced, "forced tokens are not in the cache"
        audio_s = len(upd.audio) / SAMPLE_RATE
        committed = seg.committed + list(forced)
        budget = int(self.config.max_tokens_per_s * audio_s) + 8 - len(committed)
        # where in this window each committed token was read (the last update drops text read twice: reread_spans)
        prior = [
            (t, int((s - seg.start_s) / self.backend.frame_s))
            for t, s in zip(seg.committed, seg.token_s)
            if s is not None and s >= seg.start_s
        ]
        return DecodeJob(
            self.backend,
            seg.state,
            sequence=seg.sequence + list(forced),
            n_committed=len(committed),
            n_frames=n_frames,
            policy=policy,
            final=upd.final,
            max_new_tokens=max(budget, 4),
            refill=refill,
            beam_size=self.config.final_beam if upd.final else 1,
            prior=prior,
            # the last update's hypothesis after the committed text: verified, not trusted
            draft=seg.tentative if self.config.draft and not forced else (),
            banned_first=banned_first,
            banned=banned,
            context_frames=int(seg.n_carried / SAMPLE_RATE / self.backend.frame_s),
        )

    def hypothesis(self, seg: Segment, res: DecodeResult) -> DecodeResult:
        """The decoded tokens after what is committed."""
        return res

    def keep_cache(self, seg: Segment) -> None:
        """After the commits: the cache invariant for the next update, sequence[:-1] (the committed prefix minus
        its last token)."""
        if seg.state is not None:
            seg.state.truncate(min(seg.state.offset, len(seg.sequence) - 1))


@dataclass(frozen=True)
class Exact(Incremental):
    """As incremental, but the whole prefix is re-filled against the current audio every update."""

    refills_every_update: bool = True


@dataclass(frozen=True)
class Redecode(Incremental):
    """Decode the whole segment from the task prompt; what is already committed is dropped afterwards."""

    refills_every_update: bool = True
    continues: bool = False  # its hypotheses restart from the task prompt

    def job(
        self,
        seg: Segment,
        upd: Update,
        *,
        n_frames: int,
        refill: bool,
        policy: Policy,
        forced: Sequence[int] = (),
        banned_first: Sequence[int] = (),
        banned: Sequence[int] = (),
    ) -> DecodeJob:
        assert seg.state is not None, "begin_decode installs the state first"
        assert not (forced or banned_first or banned), "redecode does not continue from given tokens"
        audio_s = len(upd.audio) / SAMPLE_RATE
        budget = int(self.config.max_tokens_per_s * audio_s) + 8
        start = seg.sequence[: seg.n_start]
        return DecodeJob(
            self.backend,
            seg.state,
            sequence=start,
            n_committed=0,
            n_frames=n_frames,
            policy=policy,
            final=upd.final,
            max_new_tokens=budget,
            refill=True,
        )

    def hypothesis(self, seg: Segment, res: DecodeResult) -> DecodeResult:
        # the hypothesis covers the whole segment; drop what is already committed, by position
        c = len(seg.committed)
        att = res.attention[c:] if res.attention is not None else None
        if seg.state is not None:
            seg.state.reset()  # the invariant truncates to sequence[:-1]; nothing is reused anyway
        return replace(res, tokens=res.tokens[c:], attention=att, n_stepped=0, logprobs=res.logprobs[c:])

    def keep_cache(self, seg: Segment) -> None:
        pass  # nothing is reused


DecodeMode = Incremental  # the interface every mode object offers
MODES: dict[str, type[DecodeMode]] = {"incremental": Incremental, "exact": Exact, "redecode": Redecode}


def mode_for(backend: Backend, config: SessionConfig) -> DecodeMode:
    """The mode object for `config.mode`."""
    return MODES[config.mode](backend, config)
