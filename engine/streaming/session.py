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
  5. session.end_decode(step, res)          guards (the retry-without-prompt decode step), policy, commits
update() runs 2-5 for one update alone and process() loops it over every due update (tests, CLI).

What is cached and what is committed (see Segment): committed tokens stay in the decoder's self-attention
cache across updates; a new encoder output only replaces the cross-attention keys/values. Because the
encoder is bidirectional, the committed prefix's cache was computed against older audio: mode="exact"
re-fills it in one forward pass per update instead.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import MutableMapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from ..audio import SAMPLE_RATE
from ..backend import Backend
from ..errors import ConfigError
from ..events import Event, TimedEvent
from .batch import decode_batch
from .carry import Carried, carried_from, carry_into, uncarry
from .committer import Committer
from .config import Mode, SessionConfig  # noqa: F401 (re-exported: callers import them from here)
from .decoder import DecodeJob, DecodeResult, alignment_rows
from .guards import Guards
from .language_id import LanguageId, identify
from .mailbox import Inbox, Outbox
from .modes import mode_for
from .policy import Hypothesis, Policy, attended_frame, policy_for
from .prompt import Prompt
from .repeats import Repeats
from .segment import PendingDecode, Segment, Stats, Update
from .segmenter import Segmenter
from .trim import trim

log = logging.getLogger(__name__)

# A last decode that loops with more than this many encoder frames (1 s for Whisper) of its audio after the last
# token kept is continued past the loop (StreamingSession._continue_past_loop)
_LOOP_UNHEARD_FRAMES = 50
# A last decode that ends (end-of-text) with more than this many encoder frames (1.5 s for Whisper: more than the
# VAD's closing pause and its padding) of its audio after the furthest frame it read is decoded on from the text
# shown before it (StreamingSession._continue_cut_short)
_CUT_SHORT_UNHEARD_FRAMES = 75
# ...if the shown text and what follows it read at least this many frames (1 s) further: under 20 dB of noise,
# German, the one other candidate read 0.5 s further ("put it in the blinker." for "put it in front of you.")
_CUT_SHORT_FURTHER_FRAMES = 50
# A session with more audio than this waiting (seconds) skips the whole-window retry of an unsure last decode
# (SessionConfig.window_retry_logprob): it is behind real time, and the retry would put it further behind. A
# session that keeps up has at most an update's worth (1 s) plus the VAD's pause waiting.
RETRY_MAX_PENDING_S = 2.0


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
            self._start_decoder(seg, encoder_out, valid)
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
        if upd.final and self._unsure_of_short_window(upd, res):
            pending, res = self._decode_whole_window(pending, res)
        if upd.final and res.loop_next is not None and self.mode.continues:
            res = self._continue_past_loop(pending, res)
        elif upd.final and self.mode.continues:
            res = self._continue_cut_short(pending, res)
        if upd.final and seg.context and not seg.committed and not res.tokens and res.loop_cut:
            # the guards cut all of the last decode away (the carried segment translated again, dropped as a
            # re-read; or a loop) and nothing of this segment is committed: its speech would vanish. With committed
            # words an empty last decode may simply be done.
            pending, res = self._uncarried(pending, "the last decode was cut away whole after the carried segment")
            upd, n_frames = pending.upd, pending.n_frames
        tokens = res.tokens
        guards, final = self.guards, upd.final
        if tokens and not seg.committed and guards.looks_hallucinated(seg, tokens, res, self.language, final=final):
            if seg.context:  # decoded after a carried segment: once more on this segment's own audio alone
                pending, res = self._uncarried(pending, "no speech after the carried segment")
                upd, n_frames, tokens = pending.upd, pending.n_frames, res.tokens
            elif seg.use_prompt and seg.prompt:  # retry once without the previous text (echo / drift)
                res = self._retry_without_prompt(pending)
                tokens = res.tokens
            if tokens and guards.looks_hallucinated(seg, tokens, res, self.language, final=final):
                tokens, res = self._salvage(pending, tokens, res)
        elif seg.use_prompt and guards.echoes_prompt(seg, tokens):  # later in a segment: only the echo
            res = self._retry_without_prompt(pending)
            tokens = res.tokens
        elif final and seg.committed and self.mode.continues and guards.drifted(tokens, self.language):
            res = self._translated_again(pending) or res  # the sentence's rest written out untranslated
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

    def _retry_without_prompt(self, pending: PendingDecode) -> DecodeResult:
        """Model step: decode the update again without the previous-text prompt (after an echo or a drift)."""
        pending.upd.segment.use_prompt = False
        return self._decode_anew(pending)[1]

    def _decode_anew(self, pending: PendingDecode) -> tuple[DecodeJob, DecodeResult]:
        """Model step: the update decoded again from fresh start tokens, on a new decoder state."""
        seg = pending.upd.segment
        self._start_decoder(seg, pending.encoder_out, pending.valid)
        job = self.mode.job(seg, pending.upd, n_frames=pending.n_frames, refill=True, policy=self.policy)
        return job, self.mode.hypothesis(seg, decode_batch(self.backend, [job])[0])

    def _uncarried(self, pending: PendingDecode, why: str) -> tuple[PendingDecode, DecodeResult]:
        """Model step: the carried segment (SessionConfig.context_s) taken off the window's front, its text off the
        start tokens, and the update encoded and decoded again on this segment's own audio. After a carried segment
        Whisper may judge the window no speech: a real Spanish caption, "Un viejo barco chino a vela.", decoded "A
        green, red." at no-speech probability 0.83 after the one before it, and was discarded; alone it is kept.
        Or its last decode may translate the carried segment again and loop on it ("The library will be at the
        end of March." three times, shown "It can be returned to the books ... in the train station." before),
        and the re-read is dropped with nothing left; alone it is translated."""
        upd = pending.upd
        seg = upd.segment
        audio = upd.audio[uncarry(seg) :]
        alone = dataclasses.replace(upd, audio=audio, pad_samples=self.segmenter.pad_for(len(audio), upd.final))
        encoder_out = self.backend.encode(alone.encoder_audio)
        n_frames = min(encoder_out.shape[1], int(len(audio) / SAMPLE_RATE / self.backend.frame_s))
        pending = dataclasses.replace(pending, upd=alone, n_frames=n_frames, encoder_out=encoder_out, valid=None)
        job, res = self._decode_anew(pending)
        self.log.info("%s: decoded again alone", why)
        return dataclasses.replace(pending, job=job), res

    def _unsure_of_short_window(self, upd: Update, res: DecodeResult) -> bool:
        """A last decode on less than the model's trained window that Whisper is unsure of (see
        SessionConfig.window_retry_logprob)."""
        threshold, window = self.config.window_retry_logprob, self.backend.trained_window_s
        if (
            threshold is None
            or not window
            or self.pending_s > RETRY_MAX_PENDING_S
            or len(upd.audio) + upd.pad_samples >= window * SAMPLE_RATE
            or not res.tokens
        ):
            return False
        return res.sum_logprob / len(res.tokens) < threshold

    def _decode_whole_window(self, pending: PendingDecode, res: DecodeResult) -> tuple[PendingDecode, DecodeResult]:
        """Model step: the last update again on the whole trained window (its audio, then silence), on a copy of
        the decoder state. A retry that writes the speech out in its own language instead of translating it
        (Whisper does, on some whole windows: a Spanish dialogue came out in Spanish) is dropped: the short
        window's decode `res` stands, on the state as it was."""
        upd = pending.upd
        seg = upd.segment
        assert seg.state is not None
        short_state, seg.state = seg.state, seg.state.clone()
        whole = dataclasses.replace(upd, pad_samples=int(self.backend.trained_window_s * SAMPLE_RATE) - len(upd.audio))
        encoder_out = self.backend.encode(whole.encoder_audio, bf16=True)  # its cost is the retry's price
        self.backend.set_audio(seg.state, encoder_out, None)
        job = self.mode.job(seg, upd, n_frames=pending.n_frames, refill=True, policy=self.policy)
        retried = self.mode.hypothesis(seg, decode_batch(self.backend, [job])[0])
        if self.guards.drifted(retried.tokens, self.language):
            seg.state = short_state
            self.log.info("the whole-window retry drifted into %s: the short window's decode is kept", self.language)
            return pending, res
        self.log.debug("unsure last decode: decoded again on the whole window")
        return dataclasses.replace(pending, job=job, encoder_out=encoder_out, valid=None), retried

    def _continue_past_loop(self, pending: PendingDecode, res: DecodeResult) -> DecodeResult:
        """Model step: a segment's last decode that looped before its audio's end ("My grand-grand-grand-..." for
        "Ma grand-mère habite dans un petit village ...") decodes on from the text before the loop, the loop's
        restart banned. Cut alone, the loop loses the rest of the segment: nothing later hears that audio."""
        assert res.loop_next is not None
        heard = attended_frame(res.attention[-1]) if res.attention is not None and len(res.attention) else 0
        if pending.n_frames - heard < _LOOP_UNHEARD_FRAMES:  # the loop is at the end: nothing is lost
            return res
        more = self._decode_on(pending, res.tokens, banned_first=[res.loop_next])
        if more.loop_next is not None:  # it stalls again: the cut stands
            return res
        self.log.info("last decode looped before its audio's end: decoded on past the loop")
        joined = self._joined(pending, res.tokens, more)
        return dataclasses.replace(joined, sum_logprob=res.sum_logprob + more.sum_logprob, loop_cut=True)

    def _continue_cut_short(self, pending: PendingDecode, res: DecodeResult) -> DecodeResult:
        """Model step: a segment's last decode that ended long before its audio did is decoded again on from the
        text the update before it showed, if that reads further into the audio. In noise the beam ended a German
        segment of two sentences after the first ("What is the dream for sending us out of the country?") where the
        update before had shown the second ("... of the island? You have to fill out a key statement."); nothing
        later hears that audio, so the clause vanished. (Decoding on from the short text itself, end-of-text
        banned, only translated the segment again from its start.)"""
        if self.backend.alignment_heads < 2:  # no curated alignment heads (S2T2): where it read is not known
            return res
        base = list(pending.upd.segment.last_shown)
        if not base or not res.tokens or res.attention is None or len(res.attention) < len(res.tokens):
            return res
        heard = max(attended_frame(row) for row in res.attention[: len(res.tokens)])
        if pending.n_frames - heard < _CUT_SHORT_UNHEARD_FRAMES:
            return res
        more = self._decode_on(pending, base)
        tail = [] if more.loop_cut else more.tokens  # after the shown text the beam may translate it all again
        if self.guards.drifted(base + tail, self.language):
            return res
        joined = self._joined(pending, base, dataclasses.replace(more, tokens=tail, loop_cut=False))
        if joined.attention is None or len(joined.attention) == 0:
            return res
        if max(attended_frame(row) for row in joined.attention) - heard < _CUT_SHORT_FURTHER_FRAMES:
            return res  # it reads no further: nothing was lost (the shown words, not the beam's, would stand)
        self.log.info(
            "last decode ended %.1f s before its audio: continued from the text shown before",
            (pending.n_frames - heard) * self.backend.frame_s,
        )
        return joined

    def _decode_on(
        self, pending: PendingDecode, forced: list[int], banned_first: Sequence[int] = (), banned: Sequence[int] = ()
    ) -> DecodeResult:
        """Model step: the update's last decode again, from `forced` tokens taken as decoded (what follows them)."""
        seg = pending.upd.segment
        job = self.mode.job(
            seg,
            pending.upd,
            n_frames=pending.n_frames,
            refill=True,
            policy=self.policy,
            forced=forced,
            banned_first=banned_first,
            banned=banned,
        )
        return self.mode.hypothesis(seg, decode_batch(self.backend, [job])[0])

    def _joined(self, pending: PendingDecode, forced: list[int], more: DecodeResult) -> DecodeResult:
        """`forced` + the continuation `more` as one result, with where the whole text was read (the duplicate
        guard tells a sentence said again by it)."""
        tokens = forced + more.tokens
        plain = self.mode.job(
            pending.upd.segment, pending.upd, n_frames=pending.n_frames, refill=True, policy=self.policy
        )
        rows = alignment_rows(self.backend, plain, tokens)
        return dataclasses.replace(more, tokens=tokens, attention=np.stack(rows) if rows else None)

    def _salvage(self, pending: PendingDecode, heard: list[int], res: DecodeResult) -> tuple[list[int], DecodeResult]:
        """An update that failed the guards twice: what to commit instead (Guards.discard), except for a segment's
        last decode which drifted into the spoken language. The drift proves speech (it wrote the words out), so
        the segment is decoded again: on from the translation shown before it, if any (heard from less audio, it
        would lose the sentence's end committed as it was: "Thank you for your" for "... für Ihre Hilfe."; the beam
        continues it over the whole segment: "Thank you for your help."), and, if that drifts too, with the spoken
        language's function words banned (Whisper base wrote "Lisboa y Oporto son las ciudades donde más se ha
        encarecido comprar una casa." out in Spanish with and without the previous text, on its short window and on
        the whole 30 s one; banned: "Lisboio Porto is the city where he has also fallen to buy a house.")."""
        upd = pending.upd
        seg = upd.segment
        drifted = self.guards.drifted
        if not (upd.final and self.mode.continues and drifted(heard, self.language)):
            return self.guards.discard(seg, upd, heard, res, self.language)
        base = list(seg.last_shown)  # the tentative text, or the last one shown before the screen went blank
        if base:
            more = self._decode_on(pending, base)
            if not (more.tokens and drifted(more.tokens, self.language)):
                self.log.info("last update drifted: continued from the text shown before")
                joined = self._joined(pending, base, more)
                return joined.tokens, joined
        again = self._translated_again(pending, base)
        if again is not None:
            return again.tokens, again
        if base:
            self.log.info("last update drifted three times: the text shown before is committed")
            return base, dataclasses.replace(res, attention=None)
        return self.guards.discard(seg, upd, heard, res, self.language)

    def _translated_again(self, pending: PendingDecode, base: Sequence[int] = ()) -> DecodeResult | None:
        """Model step: a last decode that drifted into the spoken language, decoded again (on from `base`, tokens
        taken as decoded) with that language's function words banned; None if that drifts too (or nothing is
        banned). After committed words the beam may go on untranslated ("A piece shared in Granada" committed,
        then "Cuesta unos 350 euros al mes para habitación.")."""
        banned = self.guards.source_word_tokens(self.language)
        more = self._decode_on(pending, list(base), banned=banned) if banned else None
        if more is None or not more.tokens or self.guards.drifted(more.tokens, self.language):
            return None
        self.log.info("last update drifted: decoded again without the %s function words", self.language)
        return self._joined(pending, list(base), more)

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

    def _start_decoder(self, seg: Segment, encoder_out: Tensor, valid: Tensor | None) -> None:
        self.prompt.start(seg, seg.committed, self.language)
        seg.state = self.backend.new_state(encoder_out, valid)

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
