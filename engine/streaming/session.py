"""One live stream, sans I/O: audio in (feed_audio), events out (drain_events), model work through one protocol.

The flow per stream:
  feed_audio -> inbox (validated, resampled to 16 kHz; no model work, safe from any thread)
  the Segmenter: Silero VAD cuts the audio into speech segments (silence is never decoded)
  per segment, every `update_s` of new speech (chunk_s by task), an update: encode the segment's audio, continue
  the decoder from the committed tokens (modes.py), let the Guards drop hallucinations, the policy pick what is
  stable and the Committer turn it into Commit / Partial events
  a pause (or the window limit) closes a segment: its last update commits everything
  without a pause, a window past `trim_s` loses the audio of its committed text from the front (trim.py);
  that text becomes the previous-text prompt, so the window stays short
A session that falls behind simply finds more audio at its next update: it never queues updates.

The protocol (the one way in for model work; the scheduler batches steps 2 and 4 across sessions):
  1. upd = session.next_update()            what is due (VAD, segmentation; no model work); None: nothing
  2. enc = backend.encode(upd.encoder_audio)  the encoder
  3. step = session.begin_decode(upd, enc, valid)   language identification step, the decoder job
  4. res = decode_batch(backend, [step.job])[0]      the decoder
  5. session.end_decode(step, res)          guards, policy, commits; a decode that cannot stand is decoded again
                                            there, outside the batch (redecode.py: retries and last-decode repairs)
update() runs 2-5 for one update alone and process() loops it over every due update (tests, CLI).

What is cached and what is committed (see Segment): committed tokens stay in the decoder's self-attention
cache across updates; a new encoder output only replaces the cross-attention keys/values. Because the
encoder is bidirectional, the committed prefix's cache was computed against older audio: mode="exact"
re-fills it in one forward pass per update instead.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

import numpy as np
from torch import Tensor

from ..audio import SAMPLE_RATE
from ..backend import Backend
from ..errors import ConfigError
from ..events import Event, TimedEvent
from .batch import decode_batch
from .carry import Carried, carried_from, carry_into
from .committer import Committer
from .config import Mode, SessionConfig  # noqa: F401 (re-exported: callers import them from here)
from .decoder import DecodeResult
from .guards import Guards
from .language_id import LanguageId, identify
from .mailbox import Inbox, Outbox
from .modes import mode_for
from .policy import Hypothesis, Policy, policy_for
from .prompt import Prompt
from .redecode import Redecoder
from .repeats import Repeats
from .segment import PendingDecode, Segment, Stats, Update
from .segmenter import Segmenter
from .trim import trim

log = logging.getLogger(__name__)


class _Prefixed(logging.LoggerAdapter[logging.Logger]):
    """Every log line of a session starts with its id."""

    def __init__(self, logger: logging.Logger, session_id: str) -> None:
        super().__init__(logger, {"session": session_id})
        self.session_id = session_id

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"[{self.session_id}] {msg}", kwargs


class StreamingSession:
    """One stream. feed_audio/drain_events/finish are safe from the I/O thread; model work runs the protocol."""

    def __init__(
        self, backend: Backend, config: SessionConfig = SessionConfig(), session_id: str | None = None
    ) -> None:
        if config.task not in backend.tasks:
            raise ConfigError(f"model {backend.name} cannot {config.task}; it supports {', '.join(backend.tasks)}")
        self.backend = backend
        self.config = config
        self.id = session_id or uuid.uuid4().hex[:8]
        self.log = _Prefixed(log, self.id)
        self.policy: Policy = policy_for(config)
        self.mode = mode_for(backend, config)
        self.language = config.language
        # None: the language is given (or the family has nothing to detect); else detection's state
        self.language_id: LanguageId | None = LanguageId() if config.language is None else None
        self.stats = Stats()
        self.inbox = Inbox()
        self.outbox = Outbox()
        self.done = False  # finish() was processed: every commit is out
        self.segmenter = Segmenter(config, self._idle_until, self.log, backend.trained_window_s)
        self.guards = Guards(backend, config, self.log)
        self.repeats = Repeats(backend, config.max_tokens_per_s, self.log)
        self.committer = Committer(backend, config, self.policy)
        self.prompt = Prompt(backend, config)
        self.redecoder = Redecoder(
            backend, config, self.mode, self.policy, self.guards, self.prompt, self.segmenter, self.log
        )
        self._committed_until_s = 0.0
        self._carried: Carried | None = None  # the last segment, to go in front of the next (carry.py)

    # -- I/O side ----------------------------------------------------------------------------------------
    def feed_audio(self, samples: np.ndarray, sample_rate: int) -> None:
        """Accept a chunk of PCM (any rate, mono or (n, channels)); raises AudioError on unusable input."""
        self.inbox.feed(samples, sample_rate)

    def finish(self) -> None:
        """No more audio: the next process() decodes what is left and commits all of it."""
        self.inbox.finish()

    def drain_events(self) -> list[Event]:
        return [timed.event for timed in self.drain_timed_events()]

    def drain_timed_events(self) -> list[TimedEvent]:
        """Events with the stream time (seconds of audio processed) at which each was decided."""
        return self.outbox.drain()

    @property
    def n_received(self) -> int:
        """Samples at 16 kHz accepted so far."""
        return self.inbox.n_received

    @property
    def audio_s(self) -> float:
        return self.n_received / SAMPLE_RATE

    @property
    def n_consumed(self) -> int:
        """Samples that went through the VAD."""
        return self.segmenter.n_consumed

    @property
    def transcript(self) -> str:
        """Everything committed so far (== the concatenation of all Commit texts)."""
        return self.committer.text_out

    @property
    def lag_s(self) -> float:
        """How far the committed text trails the audio received."""
        return max(0.0, self.audio_s - self._committed_until_s)

    @property
    def rtf(self) -> float:
        return self.stats.compute_s / self.audio_s if self.audio_s else 0.0

    @property
    def pending_s(self) -> float:
        """Audio received but not yet looked at by the model."""
        return (self.n_received - self.n_consumed) / SAMPLE_RATE + self.segmenter.pending_s

    # -- model side: the protocol ----------------------------------------------------------------------------
    def process(self) -> int:
        """Do every update that is due, one at a time (single-session path: tests, CLI); returns how many ran."""
        n = 0
        while (upd := self.next_update()) is not None:
            t0 = time.perf_counter()
            self.update(upd)
            self.stats.compute_s += time.perf_counter() - t0
            n += 1
        return n

    def update(self, upd: Update) -> None:
        """Steps 2-5 of the protocol for one update, unbatched."""
        step = self.begin_decode(upd, self.backend.encode(upd.encoder_audio), None)
        self.end_decode(step, decode_batch(self.backend, [step.job])[0])

    def has_work(self) -> bool:
        return not self.done and (self.inbox.has_audio() or self.inbox.finishing or self.segmenter.due() is not None)

    def next_update(self) -> Update | None:
        """Step 1: run the VAD over new audio and return the next decoder update that is due, if any."""
        if self.done:
            return None
        new, finishing = self.inbox.take()
        for x in new:
            self.segmenter.feed(x)
        if finishing and not self.inbox.has_audio():
            self.segmenter.close_all()
        upd = self.segmenter.due()
        if upd is not None and not upd.segment.n_decoded:
            carried, self._carried = self._carried, None
            if carry_into(upd.segment, carried, self.config):
                upd = self.segmenter.due()  # the same update, on the longer window
        if upd is None and finishing and not self.segmenter.segments:
            self._finish_stream()
        return upd

    def begin_decode(self, upd: Update, encoder_out: Tensor, valid: Tensor | None) -> PendingDecode:
        """Step 3: install the update's encoder output (1, S, d) and set up its decoder job."""
        seg = upd.segment
        self.stats.n_updates += 1
        seg.n_decoded = len(upd.audio)
        n_all = encoder_out.shape[1] if valid is None else int(valid[0].sum())
        # the policy judges attention against the end of the real audio, not of the padding
        n_frames = min(n_all, int(len(upd.audio) / SAMPLE_RATE / self.backend.frame_s))
        changed = self._identify_language(upd, encoder_out)
        # A segment's last update always re-fills the prefix (one forward pass per segment, cheap): the tail
        # is decoded against exact keys/values even in incremental mode.
        refill = self.mode.refills_every_update or upd.final or seg.refill
        seg.refill = False
        if seg.state is None or changed:
            self.redecoder.start(seg, encoder_out, valid, self.language)
            refill = True
        else:
            self.backend.set_audio(seg.state, encoder_out, valid)
        job = self.mode.job(seg, upd, n_frames=n_frames, refill=refill, policy=self.policy)
        return PendingDecode(upd=upd, job=job, n_frames=n_frames, encoder_out=encoder_out, valid=valid)

    def end_decode(self, pending: PendingDecode, res: DecodeResult) -> None:
        """Step 5: guards, policy, commits and partials for one decoded update."""
        upd, n_frames = pending.upd, pending.n_frames
        seg = upd.segment
        res = self.mode.hypothesis(seg, res)
        if upd.final:
            pending, res = self.redecoder.repair_last(pending, res, self.language, self.pending_s)
            upd, n_frames = pending.upd, pending.n_frames
        tokens = res.tokens
        guards, final = self.guards, upd.final
        if tokens and not seg.committed and guards.looks_hallucinated(seg, tokens, res, self.language, final=final):
            if seg.context:  # decoded after a carried segment: once more on this segment's own audio alone
                pending, res = self.redecoder.uncarried(pending, "no speech after the carried segment", self.language)
                upd, n_frames, tokens = pending.upd, pending.n_frames, res.tokens
            elif seg.use_prompt and seg.prompt:  # retry once without the previous text (echo / drift)
                res = self.redecoder.without_prompt(pending, self.language)
                tokens = res.tokens
            if tokens and guards.looks_hallucinated(seg, tokens, res, self.language, final=final):
                tokens, res = self.redecoder.salvage(pending, tokens, res, self.language)
        elif seg.use_prompt and guards.echoes_prompt(seg, tokens):  # later in a segment: only the echo
            res = self.redecoder.without_prompt(pending, self.language)
            tokens = res.tokens
        elif final and seg.committed and self.mode.continues and guards.drifted(tokens, self.language):
            # the sentence's rest written out untranslated
            res = self.redecoder.translated_again(pending, self.language) or res
            tokens = res.tokens
        k = self._stable_count(seg, upd, tokens, res, n_frames)
        if k:
            text_out = self.committer.text_out
            hidden = (0, self.repeats.repeated_prefix(seg, tokens[:k], res.attention, text_out))
            if upd.final and hidden[1] < k:
                hidden = self.repeats.repeated_sentence(
                    tokens[:k], hidden, text_out, res.attention, n_frames, window=seg.committed
                )
            commit, end_s = self.committer.commit(seg, tokens[:k], res.attention, upd, hidden=hidden)
            self._committed_until_s = max(self._committed_until_s, end_s)
            if commit is not None:
                self._emit(upd, commit)
            self.policy.committed(k)
        self.mode.keep_cache(seg)
        seg.tentative = list(tokens[k:])
        if seg.tentative:
            seg.last_shown = seg.tentative
        partial = self.committer.show(tokens[k:], seg, upd)
        if partial is not None:
            self._emit(upd, partial)
        if upd.final:
            self._end_segment(seg)
        elif self.config.trim_s:
            self._trim(seg)  # after every event of this update: they are timed against the untrimmed window

    # -- the steps ---------------------------------------------------------------------------------------------
    def _identify_language(self, upd: Update, encoder_out: Tensor) -> bool:
        """Model step: update the language guess from this update's audio (language_id.identify); True: the
        decoder's language token changes."""
        lid = self.language_id
        if lid is None or (lid.decided and not upd.final):
            return False
        found = identify(lid, self.backend, upd.audio, final=upd.final, encoder_out=encoder_out)
        if found is None:  # one language per checkpoint
            self.language_id = None
            return False
        language, decided_now = found
        if decided_now:
            self.log.info("language %s (after %.1f s of a segment)", language, len(upd.audio) / SAMPLE_RATE)
        changed, self.language = language != self.language, language
        return changed

    def _stable_count(self, seg: Segment, upd: Update, tokens: list[int], res: DecodeResult, n_frames: int) -> int:
        """How many leading tokens to commit: the policy's stable prefix, cut back to the commit unit."""
        lps = res.logprobs[: len(tokens)] if len(res.logprobs) >= len(tokens) else ()
        k = min(
            self.policy.stable_count(Hypothesis(tuple(tokens), res.attention, n_frames, upd.final, lps)), len(tokens)
        )
        if upd.final:
            return k
        if self.language_id is not None and not self.language_id.decided:
            return 0  # the language is still a guess: show it, commit nothing (see LanguageId)
        heard = seg.n_trimmed + len(upd.audio) - seg.n_context  # of this segment's own speech
        if heard < self.config.first_commit_s * SAMPLE_RATE:
            return 0  # guessed from too little of the segment: show it, commit nothing (see first_commit_s)
        return self.committer.stable_end(tokens, k, res.next_token)

    def _trim(self, seg: Segment) -> None:
        """Drop committed audio from the window's front; its text moves into the prompt (see SessionConfig.trim_s)."""
        cut = trim(seg, self.config, self.backend.token_bytes)
        if cut is None:
            return
        kept = seg.committed[cut.n_tokens :]
        seg.context = []  # its audio left first; its text is in the history already
        self.prompt.remember(cut.moved)
        self.prompt.start(seg, kept, self.language)
        seg.refill = True  # the cache holds the old start tokens
        self.log.debug(
            "trimmed %.2f s (%d tokens to the prompt); window now %.2f s",
            cut.n_samples / SAMPLE_RATE,
            len(cut.moved),
            seg.n_samples / SAMPLE_RATE,
        )

    def _end_segment(self, seg: Segment) -> None:
        self._carried = carried_from(seg, self.prompt.close(seg.shown()), self.config)
        self.segmenter.pop()
        self._committed_until_s = max(self._committed_until_s, seg.end_s)
        self.policy.reset()
        seg.state = None  # free the cache

    def _idle_until(self, t_s: float) -> None:
        self._committed_until_s = t_s  # nothing is pending up to t_s: silence counts as done

    def _finish_stream(self) -> None:
        self.done = True
        self._committed_until_s = self.audio_s
        self.log.debug(
            "finished: %.1f s audio, %d updates, %.2f s compute",
            self.audio_s,
            self.stats.n_updates,
            self.stats.compute_s,
        )

    def _emit(self, upd: Update, event: Event) -> None:
        self.outbox.put(upd.segment.start_s + len(upd.audio) / SAMPLE_RATE, event)
