"""One live stream, sans I/O: audio in (feed_audio), events out (drain_events), model work in process().

The flow per stream:
  feed_audio -> inbox (validated, resampled to 16 kHz; no model work, safe from any thread)
  process    -> Silero VAD cuts the audio into speech segments (silence is never decoded)
             -> per segment, every `chunk_s` of new speech: encode the segment's audio, continue the decoder
                from the committed tokens, let the policy pick what is stable, emit Commit / Partial
             -> a pause (or the window limit) closes a segment: its last update commits everything
             -> without a pause, a window past `trim_s` loses the audio of its committed text from the front;
                that text becomes the previous-text prompt (see _trim), so the window stays short
A session that falls behind simply finds more audio at its next update: it never queues updates.

What is cached and what is committed (see Segment): committed tokens stay in the decoder's self-attention
cache across updates; a new encoder output only replaces the cross-attention keys/values. Because the
encoder is bidirectional, the committed prefix's cache was computed against older audio: mode="exact"
re-fills it in one forward pass per update instead.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections import deque

import numpy as np
from torch import Tensor

from ..audio import SAMPLE_RATE, StreamResampler, check_sample_rate, to_mono_float32
from ..backend import Backend
from ..errors import ConfigError, StreamStateError
from ..events import Commit, Event, Partial
from .language_id import LanguageId
from .segment import PendingDecode, Segment, Stats, Update
from .config import Mode, SessionConfig  # noqa: F401 (re-exported: callers import them from here)
from .policy import Hypothesis, Policy, attended_frame, make_policy
from .decoder import (DecodeJob, DecodeResult, decode_batch, ends_sentence, is_prompt_echo,
                              looks_like_source_language)
from ..tokenizer import split_complete_utf8
from .vad import StreamVad

log = logging.getLogger(__name__)

# Trimming (SessionConfig.trim_s): a cut starts this long before the earliest frame the kept words attend to
# (alignment heads point inside a word, not at its onset), and cuts shorter than _MIN_TRIM_S are not worth the
# prefix re-fill.
_TRIM_MARGIN_S = 0.3
_MIN_TRIM_S = 1.0
VOCABULARY_TOKENS = 64  # SessionConfig.vocabulary's share of the prompt (Whisper keeps the last 112 prompt tokens)
# Duplicate guard (see _repeated_prefix): how many committed words are searched for a repeat, and how long a run
# opening a segment must be to count as a re-translation of the previous sentence
_REPEAT_TAIL_WORDS = 40
_REPEAT_WORDS = 4


def _norm_words(text: str) -> list[str]:
    """Words reduced to lower-case letters and digits (punctuation and spacing ignored); empty ones dropped."""
    out = ("".join(c for c in w.lower() if c.isalnum()) for w in text.split())
    return [w for w in out if w]

class _Prefixed(logging.LoggerAdapter):
    """Every log line of a session starts with its id."""

    def process(self, msg, kwargs):
        return f"[{self.extra['session']}] {msg}", kwargs


class StreamingSession:
    """One stream. feed_audio/drain_events/finish are safe from the I/O thread; process() runs model work."""

    def __init__(self, backend: Backend, config: SessionConfig = SessionConfig(), session_id: str | None = None):
        if config.task not in backend.tasks:
            raise ConfigError(f"model {backend.name} cannot {config.task}; it supports {', '.join(backend.tasks)}")
        self.backend = backend
        self.config = config
        self.id = session_id or uuid.uuid4().hex[:8]
        self.log = _Prefixed(log, {"session": self.id})
        self.policy: Policy = make_policy(config.policy, **self._policy_kwargs())
        self.language = config.language
        # None: the language is given (or the family has nothing to detect); else detection's state
        self.language_id: LanguageId | None = LanguageId() if config.language is None else None
        self.stats = Stats()
        self._lock = threading.Lock()  # guards inbox, events and the finish flag (I/O thread vs worker)
        self._inbox: list[np.ndarray] = []
        self._resampler: StreamResampler | None = None
        self._events: list[tuple[float, Event]] = []  # (audio seconds processed when emitted, event)
        self._finishing = False
        self.done = False  # finish() was processed: every commit is out
        self.n_received = 0  # samples at 16 kHz accepted so far
        self.n_consumed = 0  # samples that went through the VAD
        self._vad = StreamVad(config.vad) if config.use_vad else None
        self._preroll: deque[np.ndarray] = deque()
        self._segments: deque[Segment] = deque()  # front: being decoded; back: may still be growing
        self._history: list[int] = []  # committed tokens of earlier segments (prompt source)
        words = " ".join(config.vocabulary.split())  # names/terms before the history in every prompt
        self._vocabulary = backend.text_tokens(" " + words)[:VOCABULARY_TOKENS] if words else []
        self._partial = ""
        self._text_out = ""  # everything committed (for spacing across segments)
        self._committed_until_s = 0.0
        self._pad = int(config.pad_s * SAMPLE_RATE)

    def _policy_kwargs(self) -> dict:
        if self.config.policy == "local-agreement":
            return {"n": self.config.agreement_n}
        return {"frame_threshold": self.config.frame_threshold, "confirm_first": self.config.confirm_first,
                "agree": self.config.agree, "min_prob": self.config.min_prob, "agree_unsure": self.config.agree_unsure}

    # -- I/O side ----------------------------------------------------------------------------------------
    def feed_audio(self, samples: np.ndarray, sample_rate: int) -> None:
        """Accept a chunk of PCM (any rate, mono or (n, channels)); raises AudioError on unusable input."""
        sr = check_sample_rate(sample_rate)
        x = to_mono_float32(samples)
        with self._lock:
            if self._finishing:
                raise StreamStateError("feed_audio() after finish(): open a new session for more audio")
            if self._resampler is None or self._resampler.from_rate != sr:
                if self._resampler is not None and self._resampler.from_rate != SAMPLE_RATE:
                    self._push(self._resampler.process(np.zeros(0, np.float32), last=True))
                self._resampler = StreamResampler(sr, SAMPLE_RATE)
            self._push(self._resampler.process(x))

    def _push(self, x: np.ndarray) -> None:
        if x.size:
            self._inbox.append(np.ascontiguousarray(x, dtype=np.float32))
            self.n_received += len(x)

    def finish(self) -> None:
        """No more audio: the next process() decodes what is left and commits all of it."""
        with self._lock:
            if self._finishing:
                return
            if self._resampler is not None:
                self._push(self._resampler.process(np.zeros(0, np.float32), last=True))
            self._finishing = True

    def drain_events(self) -> list[Event]:
        return [e for _, e in self.drain_timed_events()]

    def drain_timed_events(self) -> list[tuple[float, Event]]:
        """Events with the stream time (seconds of audio processed) at which each was decided."""
        with self._lock:
            out, self._events = self._events, []
        return out

    @property
    def audio_s(self) -> float:
        return self.n_received / SAMPLE_RATE

    @property
    def transcript(self) -> str:
        """Everything committed so far (== the concatenation of all Commit texts)."""
        return self._text_out

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
        return (self.n_received - self.n_consumed) / SAMPLE_RATE + sum(
            (s.n_samples - s.n_decoded) / SAMPLE_RATE for s in self._segments)

    # -- model side ----------------------------------------------------------------------------------------
    def process(self) -> int:
        """Do every update that is due (single-session path: tests, CLI); returns how many ran."""
        n = 0
        while (upd := self.next_update()) is not None:
            t0 = time.perf_counter()
            enc = self.backend.encode(upd.encoder_audio)
            self.apply(upd, enc, None)
            self.stats.compute_s += time.perf_counter() - t0
            n += 1
        return n

    def has_work(self) -> bool:
        with self._lock:
            inbox = bool(self._inbox)
            finishing = self._finishing
        return not self.done and (inbox or finishing or self._due() is not None)

    def next_update(self) -> Update | None:
        """Run the VAD over new audio and return the next decoder update that is due, if any."""
        if self.done:
            return None
        with self._lock:
            new, self._inbox = self._inbox, []
            finishing = self._finishing
        for x in new:
            self._segment(x)
        if finishing and not self._inbox:
            self._close_all()
        upd = self._due()
        if upd is None and finishing and not self._segments:
            self._finish_stream()
        return upd

    def _segment(self, x: np.ndarray) -> None:
        """Cut incoming audio into speech segments (or one long segment without a VAD)."""
        self.n_consumed += len(x)
        if self._vad is None:
            t = self._consumed_s() - len(x) / SAMPLE_RATE
            limit = int(self.config.max_segment_s * SAMPLE_RATE)
            while x.size:
                seg = self._open_segment(t)
                piece, x = x[: limit - seg.n_samples], x[limit - seg.n_samples :]
                seg.append(piece)
                seg.speech_s += len(piece) / SAMPLE_RATE
                t += len(piece) / SAMPLE_RATE
                if seg.n_samples >= limit:
                    self._close(seg)
            return
        pad = int(self.config.vad.pad_s * SAMPLE_RATE)
        t = self._vad_time
        for w in self._vad.process(x):
            t += len(w.samples) / SAMPLE_RATE
            cur = self._segments[-1] if self._segments and not self._segments[-1].closed else None
            if w.opened:
                pre = np.concatenate(list(self._preroll)) if self._preroll else np.zeros(0, np.float32)
                pre = pre[-pad:] if pad else pre[:0]
                cur = self._open_segment(t - (len(w.samples) + len(pre)) / SAMPLE_RATE)
                cur.append(pre)
                self._preroll.clear()
            if cur is not None:
                cur.append(w.samples)
                if w.prob >= self.config.vad.neg_threshold:
                    cur.speech_s += len(w.samples) / SAMPLE_RATE
                if w.closed:
                    self._close(cur)
                else:
                    self._split_if_long(cur)
            else:
                self._preroll.append(w.samples)
                while len(self._preroll) > 1 + pad // 512:
                    self._preroll.popleft()
                if not self._segments:
                    self._committed_until_s = t  # nothing pending: silence counts as done
        self._vad_time = t

    _vad_time = 0.0  # stream time up to which the VAD has classified windows

    def _consumed_s(self) -> float:
        return self.n_consumed / SAMPLE_RATE

    def _open_segment(self, start_s: float) -> Segment:
        if self._segments and not self._segments[-1].closed:
            return self._segments[-1]
        seg = Segment(start_s=max(0.0, start_s))
        self._segments.append(seg)
        return seg

    def _split_if_long(self, seg: Segment) -> None:
        # Before the window fills up, close the segment (its last update commits everything) and continue
        # in a fresh one: the encoder never sees more than max_segment_s.
        if seg.n_samples >= self.config.max_segment_s * SAMPLE_RATE:
            self.log.debug("segment reached %.1f s without a pause: forced commit", seg.n_samples / SAMPLE_RATE)
            self._close(seg)
            if self._vad is not None and self._vad.state.in_speech:
                self._open_segment(seg.end_s)

    def _close(self, seg: Segment) -> None:
        seg.closed = True
        if seg.speech_s < self.config.vad.min_speech_s:
            self._segments.remove(seg)  # a click or a cough: nothing to decode
            if not self._segments:
                self._committed_until_s = seg.end_s

    def _close_all(self) -> None:
        if self._vad is not None:
            rest = self._vad.flush()
            if self._segments and not self._segments[-1].closed and rest.size:
                self._segments[-1].append(rest)
        for seg in list(self._segments):
            if not seg.closed:
                self._close(seg)

    def _due(self) -> Update | None:
        if not self._segments:
            return None
        seg = self._segments[0]
        if seg.closed:
            return Update(seg, seg.audio(), final=True, pad_samples=self._pad)
        new = seg.n_samples - seg.n_decoded
        need = self.config.chunk_s if seg.n_decoded else max(self.config.chunk_s, self.config.min_first_s)
        if new >= need * SAMPLE_RATE:
            return Update(seg, seg.audio(), final=False, pad_samples=self._pad)
        return None

    def apply(self, upd: Update, encoder_out: Tensor, valid: Tensor | None) -> None:
        """Decode one update against its encoder output (1, S, d), commit what the policy allows, emit events."""
        pending = self.begin_decode(upd, encoder_out, valid)
        self.end_decode(pending, decode_batch(self.backend, [pending.job])[0])

    def begin_decode(self, upd: Update, encoder_out: Tensor, valid: Tensor | None) -> "PendingDecode":
        """First half of apply(): install the audio and set up the decoder job (the scheduler batches the jobs of
        several sessions, then hands each result to end_decode)."""
        seg = upd.segment
        self.stats.n_updates += 1
        seg.n_decoded = len(upd.audio)
        n_all = encoder_out.shape[1] if valid is None else int(valid[0].sum())
        # the policy judges attention against the end of the real audio, not of the padding
        n_frames = min(n_all, int(len(upd.audio) / SAMPLE_RATE / self.backend.frame_s))
        changed = self._identify_language(upd, encoder_out)
        # A segment's last update always re-fills the prefix (one forward pass per segment, cheap): the tail
        # is decoded against exact keys/values even in incremental mode.
        refill = self.config.mode == "exact" or upd.final or seg.refill
        seg.refill = False
        if seg.state is None or changed:
            self._start_decoder(seg, encoder_out, valid)
            refill = True
        else:
            self.backend.set_audio(seg.state, encoder_out, valid)
        return PendingDecode(upd, self._job(seg, upd, n_frames, refill), n_frames, encoder_out, valid)

    def _identify_language(self, upd: Update, encoder_out: Tensor) -> bool:
        """Update the language guess from this update's audio (see LanguageId); True: the decoder's language token
        changes."""
        lid = self.language_id
        if lid is None or (lid.decided and not upd.final):
            return False
        probs = self.backend.language_probs(encoder_out)
        if probs is None:  # one language per checkpoint
            self.language_id = None
            return False
        def confirm() -> dict[str, float]:  # the segment in a full-length window, as the model was trained
            n = int(self.backend.max_window_s * SAMPLE_RATE)
            audio = upd.audio[-n:]
            return self.backend.language_probs(self.backend.encode(np.pad(audio, (0, n - len(audio)))))

        language, decided_now = lid.observe(probs, len(upd.audio) / SAMPLE_RATE, upd.final, confirm)
        if decided_now:
            self.log.info("language %s (after %.1f s of a segment)", language, len(upd.audio) / SAMPLE_RATE)
        changed, self.language = language != self.language, language
        return changed

    def end_decode(self, pending: "PendingDecode", res: DecodeResult) -> None:
        """Second half of apply(): guards, policy, commits and partials for one decoded update."""
        upd, n_frames = pending.upd, pending.n_frames
        seg = upd.segment
        if self.config.mode == "redecode":
            res = self._drop_committed(seg, res)
        tokens = res.tokens
        if tokens and not seg.committed and self._looks_hallucinated(seg, tokens, res):
            if seg.use_prompt and seg.prompt:  # retry once without the previous text (echo / drift)
                seg.use_prompt = False
                self._start_decoder(seg, pending.encoder_out, pending.valid)
                res = decode_batch(self.backend, [self._job(seg, upd, n_frames, refill=True)])[0]
                if self.config.mode == "redecode":
                    res = self._drop_committed(seg, res)
                tokens = res.tokens
            if tokens and self._looks_hallucinated(seg, tokens, res):
                heard, tokens = tokens, []
                if upd.final and seg.tentative:
                    # The whole segment's last decode failed a guard (it drifted into the source language, or the
                    # beam is unsure), yet earlier updates heard speech and showed it: commit what the screen
                    # showed rather than let the sentence vanish.
                    self.log.info("last update discarded: its tentative text is committed instead")
                    tokens, res = list(seg.tentative), dataclasses.replace(res, attention=None)
                elif upd.final and self._drifted(heard) and not self._unsure(seg, heard, res):
                    # Nothing was shown (earlier updates were unsure) and the last decode, twice, wrote the speech
                    # in its own language instead of translating it, and surely (speech, not noise). Committed as
                    # heard, untranslated, rather than let the sentence vanish (seen in `mic` on a German sentence).
                    self.log.warning("the segment's last decode stayed in %s: committed untranslated", self.language)
                    tokens = heard
        lps = res.logprobs[: len(tokens)] if len(res.logprobs) >= len(tokens) else ()
        hyp = Hypothesis(tuple(tokens), res.attention, n_frames, upd.final, lps)
        k = min(self.policy.stable_count(hyp), len(tokens))
        if not upd.final and self.language_id is not None and not self.language_id.decided:
            k = 0  # the language is still a guess: show it, commit nothing (see LanguageId)
        if not upd.final and (seg.n_trimmed + len(upd.audio)) < self.config.first_commit_s * SAMPLE_RATE:
            k = 0  # guessed from too little of the segment: show it, commit nothing (see first_commit_s)
        if not upd.final:
            k = self._word_boundary(tokens, k, res.next_token)
            if self.config.commit_unit != "word":
                k = self._unit_boundary(tokens, k)
            if self.config.policy == "alignatt":
                k = self._hold_back_words(tokens, k, self.config.held_words)
        if k:
            hidden = (0, self._repeated_prefix(seg, tokens[:k], res.attention))
            if upd.final and hidden[1] < k:
                hidden = self._repeated_sentence(tokens[:k], hidden)
            self._commit(seg, tokens[:k], res.attention, upd, hidden=hidden)
            self.policy.committed(k)
        # cache invariant for the next update: sequence[:-1] (the committed prefix, minus its last token)
        if seg.state is not None and self.config.mode != "redecode":
            seg.state.truncate(min(seg.state.offset, len(seg.sequence) - 1))
        seg.tentative = list(tokens[k:])
        self._set_partial(tokens[k:], seg, upd)
        if upd.final:
            self._end_segment(seg, upd)
        elif self.config.trim_s:
            self._trim(seg)  # after every event of this update: they are timed against the untrimmed window

    def _looks_hallucinated(self, seg: Segment, tokens: list[int], res) -> bool:
        if seg.prompt and is_prompt_echo(tokens, seg.prompt):
            self.log.debug("prompt echo discarded")
            return True
        return self._drifted(tokens) or self._unsure(seg, tokens, res)

    def _unsure(self, seg: Segment, tokens: list[int], res) -> bool:
        """Whisper's own rules for text decoded from something that is not speech."""
        cfg = self.config
        nsp = self.backend.no_speech_prob(seg.state) if seg.state is not None else None
        avg_lp = res.sum_logprob / max(1, len(tokens))
        if nsp is not None and nsp > cfg.no_speech_threshold and avg_lp < cfg.logprob_threshold:
            self.log.debug("no speech (p=%.2f, avg logprob %.2f): discarded", nsp, avg_lp)
            return True
        if avg_lp < 2 * cfg.logprob_threshold:  # the model is guessing: noise, tones, music
            self.log.debug("very low confidence (avg logprob %.2f): discarded", avg_lp)
            return True
        return False

    def _drifted(self, tokens: list[int]) -> bool:
        """A translation written in the spoken language instead (Whisper sometimes ignores its task)."""
        if self.config.task != "translate" or self.language in (None, "en"):
            return False
        text = b"".join(self.backend.token_bytes(t) for t in tokens).decode("utf-8", "replace")
        if looks_like_source_language(text, self.language):
            self.log.debug("translation drifted into %s: %r", self.language, text)
            return True
        return False

    def _start_decoder(self, seg: Segment, encoder_out: Tensor, valid: Tensor | None) -> None:
        self._set_start(seg, seg.committed)
        seg.state = self.backend.new_state(encoder_out, valid)

    def _set_start(self, seg: Segment, committed: list[int]) -> None:
        """sequence = start tokens (task, language, previous committed text as the prompt) + `committed`."""
        prompt = self._history[-self.config.prompt_tokens :] if (self.config.prompt_tokens and seg.use_prompt) else []
        # the vocabulary leads the prompt; seg.prompt stays the history alone (echo checks compare against it)
        vocabulary = self._vocabulary if seg.use_prompt else []  # (the retry without a prompt drops it too)
        start = self.backend.start_tokens(self.config.task, self.language, vocabulary + prompt)
        seg.prompt, seg.n_start = prompt, len(start)
        seg.sequence = start + committed

    def _trim(self, seg: Segment) -> None:
        """Drop committed audio from the window's front; its text moves into the prompt (see SessionConfig.trim_s)."""
        cfg = self.config
        window_s = seg.n_samples / SAMPLE_RATE
        if window_s <= cfg.trim_s or seg.state is None:
            return
        j = self._trim_point(seg, sentence_only=window_s <= 2 * cfg.trim_s)
        if j is None:
            return
        times = [t for t in seg.token_s[j:] if t is not None]
        # where the kept words' audio starts: the earliest frame they attend to, less a margin for the onset
        cut_s = min(times) - _TRIM_MARGIN_S - seg.start_s
        n_cut = min(int(cut_s * SAMPLE_RATE), seg.n_decoded)
        if n_cut < _MIN_TRIM_S * SAMPLE_RATE:
            return
        committed = seg.committed
        moved, kept = committed[:j], committed[j:]
        audio = seg.audio()[n_cut:]
        seg.chunks, seg.n_samples = [audio], len(audio)
        seg.n_decoded -= n_cut
        seg.n_trimmed += n_cut
        seg.start_s += n_cut / SAMPLE_RATE
        seg.token_s = seg.token_s[j:]
        self._history = (self._history + moved)[-max(self.config.prompt_tokens, 1) :]
        self._set_start(seg, kept)
        seg.refill = True  # the cache holds the old start tokens
        self.log.debug("trimmed %.2f s (%d tokens to the prompt); window now %.2f s", n_cut / SAMPLE_RATE,
                       len(moved), seg.n_samples / SAMPLE_RATE)

    def _trim_point(self, seg: Segment, sentence_only: bool) -> int | None:
        """Index into `committed` of the latest word start (a sentence start if `sentence_only`) that leaves at
        least trim_keep_words committed words after it and has known alignment times; None: nowhere to cut."""
        committed = seg.committed
        starts = [i for i, t in enumerate(committed) if i > 0 and self.backend.token_bytes(t)[:1] == b" "]
        if len(starts) < self.config.trim_keep_words:
            return None
        for i in reversed(starts[: len(starts) - self.config.trim_keep_words + 1]):
            if any(t is None for t in seg.token_s[i:]):
                return None
            if not sentence_only or ends_sentence(self.backend.token_bytes(committed[i - 1])):
                return i
        return None

    def _job(self, seg: Segment, upd: Update, n_frames: int, refill: bool) -> DecodeJob:
        audio_s = len(upd.audio) / SAMPLE_RATE
        if self.config.mode == "redecode":
            # Decode the whole segment from the task prompt; what is already committed is dropped afterwards.
            budget = int(self.config.max_tokens_per_s * audio_s) + 8
            start = seg.sequence[: seg.n_start]
            return DecodeJob(self.backend, seg.state, sequence=start, n_committed=0, n_frames=n_frames,
                             policy=self.policy, final=upd.final, max_new_tokens=budget, refill=True)
        budget = int(self.config.max_tokens_per_s * audio_s) + 8 - len(seg.committed)
        # where in this window each committed token was read (the last update drops text read twice: reread_spans)
        prior = [(t, int((s - seg.start_s) / self.backend.frame_s))
                 for t, s in zip(seg.committed, seg.token_s) if s is not None and s >= seg.start_s]
        return DecodeJob(self.backend, seg.state, sequence=seg.sequence, n_committed=len(seg.committed),
                         n_frames=n_frames, policy=self.policy, final=upd.final, max_new_tokens=max(budget, 4),
                         refill=refill, beam_size=self.config.final_beam if upd.final else 1, prior=prior)

    def _drop_committed(self, seg: Segment, res: DecodeResult) -> DecodeResult:
        # redecode: the hypothesis covers the whole segment; drop what is already committed, by position
        c = len(seg.committed)
        att = res.attention[c:] if res.attention is not None else None
        seg.state.reset()  # the invariant truncates to sequence[:-1]; nothing is reused anyway
        return DecodeResult(res.tokens[c:], att, res.next_token, res.sum_logprob, 0, res.loop_cut, res.logprobs[c:])

    def _hold_back_words(self, tokens: list[int], k: int, n_words: int) -> int:
        # The words AlignAtt stopped next to are the least certain: their source word may not be complete
        # ("Kranken|haus" -> "cramp") even though the model has moved on. Keep the last `n_words` as partial.
        for _ in range(n_words):
            if k == 0:
                break
            k -= 1
            while k > 0 and self.backend.token_bytes(tokens[k])[:1] != b" ":
                k -= 1
        return k

    def _unit_boundary(self, tokens: list[int], k: int) -> int:
        """The longest prefix of tokens[:k] that ends a clause (after , ; : or a sentence end) or, for
        commit_unit="sentence", a sentence: translation reorders words within a clause."""
        ends = (b".", b"?", b"!") if self.config.commit_unit == "sentence" else (b".", b"?", b"!", b",", b";", b":")
        for i in range(k, 0, -1):
            if self.backend.token_bytes(tokens[i - 1]).rstrip()[-1:] in ends:
                return i
        return 0

    def _word_boundary(self, tokens: list[int], k: int, next_token: int | None) -> int:
        # Commit whole words only: tokens[k] (or the token decoding stopped at) must start a new word,
        # otherwise "Ham" could be committed while "burg" is still uncertain.
        while k > 0:
            nxt = tokens[k] if k < len(tokens) else next_token
            if nxt is None:
                k -= 1
                continue
            if nxt == self.backend.eot or self.backend.token_bytes(nxt)[:1] in (b" ", b""):
                return k
            k -= 1
        return 0

    def _repeated_prefix(self, seg: Segment, new: list[int], attention: np.ndarray | None) -> int:
        """How many leading tokens of `new` say again what is already committed: the decoder restarted the
        sentence ("the temperature rise" -> ", the temperature rise, on the weekend") or repeated the last
        sentence. They stay in the decoder's sequence (it continues from them) but are not shown again.

        A run of at least two words counts as repeated when it matches committed text word for word (letters and
        digits only, so "5. 2%" equals "5.2%") and either repeats the very end of the committed text, is read
        from audio that is already committed (its alignment heads point before the committed end), or opens a
        segment with at least `_REPEAT_WORDS` words of it. Sentences that merely start alike ("The temperature
        rises. The temperature falls") and a speaker who really says something twice within a segment (new
        audio) match none of these."""
        tail = "".join(_norm_words(self._text_out)[-_REPEAT_TAIL_WORDS:])
        if not tail:
            return 0
        words = self._words(new)  # (first token, normalised word)
        for j in range(len(words), 1, -1):
            head = "".join(w for _, w in words[:j])
            if len(head) < 6 or head not in tail:
                continue
            cut = words[j][0] if j < len(words) else len(new)
            old_audio = False
            if attention is not None and len(attention) >= cut and seg.committed:
                frame = float(np.median([attended_frame(attention[i], attention.shape[-1]) for i in range(cut)]))
                old_audio = seg.start_s + frame * self.backend.frame_s < seg.committed_end_s - _TRIM_MARGIN_S
            # a segment that opens by repeating a whole phrase of what was just committed re-translates the
            # previous sentence (its audio is not in this segment; the prompt carried it over)
            seg_start = (not seg.committed or attention is None) and j >= _REPEAT_WORDS
            if tail.endswith(head) or old_audio or seg_start:
                self.log.debug("repeated words not shown again: %r", head)
                return cut
        return 0

    def _repeated_sentence(self, new: list[int], hidden: tuple[int, int]) -> tuple[int, int]:
        """In a segment's last update (beam search, no attention to check), a sentence inside `new` that opens
        with `_REPEAT_WORDS` words said just before it ("... up to 5.2 percent. The price for electricity is
        always up to 5.2 percent.") translates that sentence again: it is hidden to its end, as _repeated_prefix
        hides a repeat at the start."""
        if hidden[1]:
            return hidden
        words = self._words(new)
        tail = "".join(_norm_words(self._text_out)[-_REPEAT_TAIL_WORDS:])
        for i in range(1, len(words) - _REPEAT_WORDS + 1):
            before = self.backend.token_bytes(new[words[i][0] - 1]).rstrip()[-1:]
            if not ends_sentence(before):
                continue
            context = tail + "".join(w for _, w in words[:i])
            if "".join(w for _, w in words[i : i + _REPEAT_WORDS]) in context:
                # the whole restarted sentence goes: its opening repeats, the rest is a second translation
                end = len(new)
                for t in range(words[i + _REPEAT_WORDS - 1][0], len(new)):
                    if ends_sentence(self.backend.token_bytes(new[t])):
                        end = t + 1
                        break
                self.log.debug("repeated sentence not shown again")
                return words[i][0], end
        return hidden

    def _words(self, tokens: list[int]) -> list[tuple[int, str]]:
        """The words of `tokens`: (index of the token the word starts at, letters and digits in lower case).
        Punctuation-only pieces belong to the word before them."""
        out: list[tuple[int, str]] = []
        for i, t in enumerate(tokens):
            piece = self.backend.token_bytes(t).decode("utf-8", "ignore")
            norm = "".join(c for c in piece.lower() if c.isalnum())
            if out and (not norm or not piece[:1].isspace()):
                out[-1] = (out[-1][0], out[-1][1] + norm)
            elif norm or not out:
                out.append((i, norm))
        return [w for w in out if w[1]]

    def _commit(self, seg: Segment, new: list[int], attention: np.ndarray | None, upd: Update,
                hidden: tuple[int, int] = (0, 0)) -> None:
        """Commit `new` (all of it enters the decoder's sequence); the tokens in new[hidden[0]:hidden[1]] are not
        shown (a repeat, see _repeated_prefix)."""
        shown = new[: hidden[0]] + new[hidden[1] :]
        data = seg.pending_bytes + b"".join(self.backend.token_bytes(t) for t in shown)
        if upd.final:
            done, seg.pending_bytes = data, b""
        else:
            done, seg.pending_bytes = split_complete_utf8(data)
        text = done.decode("utf-8", errors="replace")
        start = max(seg.committed_end_s, seg.start_s)
        if upd.final:
            end = seg.end_s
        elif attention is not None and len(attention) >= len(new):
            frame = attended_frame(attention[len(new) - 1], attention.shape[-1])
            end = seg.start_s + (frame + 1) * self.backend.frame_s
        else:
            end = seg.start_s + len(upd.audio) / SAMPLE_RATE
        end = min(max(end, start), seg.start_s + len(upd.audio) / SAMPLE_RATE)
        seg.token_s.extend(self._token_times(seg, len(new), attention, upd))
        seg.sequence.extend(new)
        seg.committed_end_s = end
        self._committed_until_s = max(self._committed_until_s, end)
        if not text:
            return
        if not self._text_out:
            text = text.lstrip()
        if self._text_out and len(seg.committed) == len(new) and not text[:1].isspace() \
                and not self._text_out[-1:].isspace():
            text = " " + text  # a new segment's first words
        if text:
            self._text_out += text
            self._emit(upd, Commit(text=text, start_s=round(start, 3), end_s=round(end, 3)))

    def _token_times(self, seg: Segment, n: int, attention: np.ndarray | None, upd: Update) -> list[float | None]:
        if upd.final or attention is None or len(attention) < n:
            return [None] * n
        n_frames = attention.shape[-1]
        return [seg.start_s + attended_frame(attention[i], n_frames) * self.backend.frame_s for i in range(n)]

    def _set_partial(self, tokens: list[int], seg: Segment, upd: Update) -> None:
        text = (seg.pending_bytes + b"".join(self.backend.token_bytes(t) for t in tokens)).decode("utf-8", "ignore")
        if upd.final:
            text = ""
        if not self._text_out:
            text = text.lstrip()
        if text != self._partial:
            self._partial = text
            start = seg.committed_end_s or seg.start_s
            self._emit(upd, Partial(text=text, start_s=round(start, 3) if text else None,
                                    end_s=round(seg.start_s + len(upd.audio) / SAMPLE_RATE, 3) if text else None))

    def _end_segment(self, seg: Segment, upd: Update) -> None:
        self._history.extend(seg.committed)
        self._history = self._history[-max(self.config.prompt_tokens, 1) :]
        self._segments.popleft()
        self._committed_until_s = max(self._committed_until_s, seg.end_s)
        self.policy.reset()
        seg.state = None  # free the cache

    def _finish_stream(self) -> None:
        self.done = True
        self._committed_until_s = self.audio_s
        self.log.debug("finished: %.1f s audio, %d updates, %.2f s compute", self.audio_s, self.stats.n_updates,
                       self.stats.compute_s)

    def _emit(self, upd: Update, event: Event) -> None:
        t_audio = upd.segment.start_s + len(upd.audio) / SAMPLE_RATE
        with self._lock:
            self._events.append((t_audio, event))
