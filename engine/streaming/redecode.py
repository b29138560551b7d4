"""Decoding an update again: the retries and repairs a StreamingSession runs when an update's decode cannot stand.

A segment's last decode commits everything, and nothing later hears its audio, so a decode that stops before the
audio's end (a loop, an early end-of-text), judges the speech no speech, or writes it out untranslated would lose
what was said. Each repair here decodes the update again (on a fresh state, on another window, or on from text
taken as decoded) and returns the result the session's guards, policy and committer then judge as any other.
The session decides when a guard fired (StreamingSession.end_decode); this module only decodes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
from torch import Tensor

from ..audio import SAMPLE_RATE
from ..backend import Backend
from .batch import decode_batch
from .carry import uncarry
from .config import SessionConfig
from .decoder import DecodeJob, DecodeResult, alignment_rows
from .guards import Guards
from .modes import DecodeMode
from .policy import Policy, attended_frame
from .prompt import Prompt
from .segment import PendingDecode, Segment, Update
from .segmenter import Segmenter

# A last decode that loops with more than this many encoder frames (1 s for Whisper) of its audio after the last
# token kept is continued past the loop (Redecoder._continue_past_loop)
_LOOP_UNHEARD_FRAMES = 50
# A last decode that ends (end-of-text) with more than this many encoder frames (1.5 s for Whisper: more than the
# VAD's closing pause and its padding) of its audio after the furthest frame it read is decoded on from the text
# shown before it (Redecoder._continue_cut_short)
_CUT_SHORT_UNHEARD_FRAMES = 75
# ...if the shown text and what follows it read at least this many frames (1 s) further: under 20 dB of noise,
# German, the one other candidate read 0.5 s further ("put it in the blinker." for "put it in front of you.")
_CUT_SHORT_FURTHER_FRAMES = 50
# A session with more audio than this waiting (seconds) skips the whole-window retry of an unsure last decode
# (SessionConfig.window_retry_logprob): it is behind real time, and the retry would put it further behind. A
# session that keeps up has at most an update's worth (1 s) plus the VAD's pause waiting.
RETRY_MAX_PENDING_S = 2.0


class Redecoder:
    """One session's second decodes. Holds no state of its own: what it changes is the segment's (its decoder
    state, `use_prompt`), as the session's first decode would. A segment's first decoder starts here too
    (`start`): a retry on a fresh state must start from the same tokens as the first decode did."""

    def __init__(
        self,
        backend: Backend,
        config: SessionConfig,
        mode: DecodeMode,
        policy: Policy,
        guards: Guards,
        prompt: Prompt,
        segmenter: Segmenter,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.backend = backend
        self.config = config
        self.mode = mode
        self.policy = policy
        self.guards = guards
        self.prompt = prompt
        self.segmenter = segmenter
        self.log = log

    def start(self, seg: Segment, encoder_out: Tensor, valid: Tensor | None, language: str | None) -> None:
        """A new decoder state for the segment, from its start tokens (the prompt, then its committed tokens)."""
        self.prompt.start(seg, seg.committed, language)
        seg.state = self.backend.new_state(encoder_out, valid)

    def repair_last(
        self, pending: PendingDecode, res: DecodeResult, language: str | None, pending_s: float
    ) -> tuple[PendingDecode, DecodeResult]:
        """A segment's last decode, decoded again where it cannot stand as it is: unsure on a short window (the
        whole window), stopped by a loop or an early end before its audio's end (decoded on), or cut away whole
        after a carried segment (decoded alone). `pending_s`: the session's audio waiting, which the whole-window
        retry (the one that costs an encoder pass) must not push behind real time."""
        upd = pending.upd
        seg = upd.segment
        if self._unsure_of_short_window(upd, res, pending_s):
            pending, res = self._decode_whole_window(pending, res, language)
        if res.loop_next is not None and self.mode.continues:
            res = self._continue_past_loop(pending, res)
        elif self.mode.continues:
            res = self._continue_cut_short(pending, res, language)
        if seg.context and not seg.committed and not res.tokens and res.loop_cut:
            # the guards cut all of the last decode away (the carried segment translated again, dropped as a
            # re-read; or a loop) and nothing of this segment is committed: its speech would vanish. With committed
            # words an empty last decode may simply be done.
            pending, res = self.uncarried(
                pending, "the last decode was cut away whole after the carried segment", language
            )
        return pending, res

    def without_prompt(self, pending: PendingDecode, language: str | None) -> DecodeResult:
        """Model step: decode the update again without the previous-text prompt (after an echo or a drift)."""
        pending.upd.segment.use_prompt = False
        return self._decode_anew(pending, language)[1]

    def _decode_anew(self, pending: PendingDecode, language: str | None) -> tuple[DecodeJob, DecodeResult]:
        """Model step: the update decoded again from fresh start tokens, on a new decoder state."""
        seg = pending.upd.segment
        self.start(seg, pending.encoder_out, pending.valid, language)
        job = self.mode.job(seg, pending.upd, n_frames=pending.n_frames, refill=True, policy=self.policy)
        return job, self.mode.hypothesis(seg, decode_batch(self.backend, [job])[0])

    def uncarried(self, pending: PendingDecode, why: str, language: str | None) -> tuple[PendingDecode, DecodeResult]:
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
        job, res = self._decode_anew(pending, language)
        self.log.info("%s: decoded again alone", why)
        return dataclasses.replace(pending, job=job), res

    def _unsure_of_short_window(self, upd: Update, res: DecodeResult, pending_s: float) -> bool:
        """A last decode on less than the model's trained window that Whisper is unsure of (see
        SessionConfig.window_retry_logprob)."""
        threshold, window = self.config.window_retry_logprob, self.backend.trained_window_s
        if (
            threshold is None
            or not window
            or pending_s > RETRY_MAX_PENDING_S
            or len(upd.audio) + upd.pad_samples >= window * SAMPLE_RATE
            or not res.tokens
        ):
            return False
        return res.sum_logprob / len(res.tokens) < threshold

    def _decode_whole_window(
        self, pending: PendingDecode, res: DecodeResult, language: str | None
    ) -> tuple[PendingDecode, DecodeResult]:
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
        if self.guards.drifted(retried.tokens, language):
            seg.state = short_state
            self.log.info("the whole-window retry drifted into %s: the short window's decode is kept", language)
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

    def _continue_cut_short(self, pending: PendingDecode, res: DecodeResult, language: str | None) -> DecodeResult:
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
        if self.guards.drifted(base + tail, language):
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

    def salvage(
        self, pending: PendingDecode, heard: list[int], res: DecodeResult, language: str | None
    ) -> tuple[list[int], DecodeResult]:
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
        if not (upd.final and self.mode.continues and drifted(heard, language)):
            return self.guards.discard(seg, upd, heard, res, language)
        base = list(seg.last_shown)  # the tentative text, or the last one shown before the screen went blank
        if base:
            more = self._decode_on(pending, base)
            if not (more.tokens and drifted(more.tokens, language)):
                self.log.info("last update drifted: continued from the text shown before")
                joined = self._joined(pending, base, more)
                return joined.tokens, joined
        again = self.translated_again(pending, language, base)
        if again is not None:
            return again.tokens, again
        if base:
            self.log.info("last update drifted three times: the text shown before is committed")
            return base, dataclasses.replace(res, attention=None)
        return self.guards.discard(seg, upd, heard, res, language)

    def translated_again(
        self, pending: PendingDecode, language: str | None, base: Sequence[int] = ()
    ) -> DecodeResult | None:
        """Model step: a last decode that drifted into the spoken language, decoded again (on from `base`, tokens
        taken as decoded) with that language's function words banned; None if that drifts too (or nothing is
        banned). After committed words the beam may go on untranslated ("A piece shared in Granada" committed,
        then "Cuesta unos 350 euros al mes para habitación.")."""
        banned = self.guards.source_word_tokens(language)
        more = self._decode_on(pending, list(base), banned=banned) if banned else None
        if more is None or not more.tokens or self.guards.drifted(more.tokens, language):
            return None
        self.log.info("last update drifted: decoded again without the %s function words", language)
        return self._joined(pending, list(base), more)
