"""SessionConfig: how one stream is segmented, decoded and committed. Every default is chosen from measurements
(benchmarks/README.md); the comment beside each field says which."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError
from .policy import PolicyName
from .vad import VadConfig

# "redecode" is the whisper_streaming-style baseline for benchmarks: every update re-runs the decoder on the
# whole segment from the task prompt (no committed prefix, no cache reuse) and LocalAgreement compares
# the full hypotheses.
Mode = Literal["incremental", "exact", "redecode"]


@dataclass(frozen=True)
class SessionConfig:
    task: Literal["translate", "transcribe"] = "translate"
    language: str | None = None  # spoken language code; None: detected once from the first speech
    # What to commit: AlignAtt (stop where the alignment heads reach the end of the audio) or agreement of
    # consecutive hypotheses. Default AlignAtt: on de/fr/es/en TTS streams (6 sets, 2 shared cores) with the
    # padded encoder it scored BLEU 36.7 / chrF 60.5 at StreamLAAL 1.33 s, against LocalAgreement-2's
    # 35.1 / 59.9 at 2.75 s and the re-decode baseline's 35.5 / 61.4 at 3.03 s: same quality, less than half the
    # latency, one decode per update instead of two hypotheses to agree, and far less erasure (0.1 vs 2.7).
    policy: PolicyName = "alignatt"
    # incremental: committed tokens stay cached across updates (the design's approximation, cheaper);
    # exact: the committed prefix is re-run against the current audio each update (one forward pass).
    # Default incremental: on the full benchmark (>= 1 min streams, de/fr/es/en, 1.0 s chunks, one run side by side)
    # AlignAtt incremental scored mean BLEU 41.9 at StreamLAAL 1.42 s vs exact's 39.3 at 1.60 s (de 36.1 vs 37.5,
    # fr 14.2 vs 10.3, es 40.8 vs 32.5, en 76.6 vs 77.0) at a lower RTF; on the earlier 6 tuning sets the two were
    # equal within noise. AlignAtt commits only tokens whose attention lies in audio already heard, so their
    # cached keys/values were computed against nearly the same evidence (LocalAgreement, which commits later,
    # loses more from stale keys/values: use exact with it).
    mode: Mode = "incremental"
    # Seconds of new speech between decoder updates (smaller: lower latency, more compute: each update
    # re-encodes the segment); None: by task (`update_s`), 0.5 for transcription and 1.0 for translation.
    # Own + dev, 80 sentences per language, one run side by side (benchmarks/README.md): in transcription 0.5 s
    # with two held words scored English WER 10.7 % at StreamLAAL 1.86 s against 1.0 s's 11.5 % at 1.98 s (own
    # set alone: 9.2 % at 1.88 vs 2.10 s), for about 1.5x the compute. In translation 0.5 s gave no clear win:
    # German 20.3 -> 19.8 BLEU at 4.30 -> 3.90 s, French 22.0 -> 22.3 at 2.97 -> 2.81 s, Spanish 22.2 -> 21.4 at
    # 3.44 -> 3.08 s (own set: 25.6 -> 22.3), so it stays 1.0 s there.
    chunk_s: float | None = None
    agreement_n: int = 2  # LocalAgreement-n
    # Feed the last update's tentative tokens with the prefix and keep each one the model's argmax agrees with
    # (speculative decoding, the previous hypothesis as the draft): the tokens of stepping one at a time (exactly
    # with an fp32 decoder; the int8 one rounds a multi-token pass a little differently), for 4-7 % less compute
    # (benchmarks/README.md). False: step every token (only to measure the saving).
    draft: bool = True
    # Beam width of a segment's last update (everything left is committed then, so nothing is held back and
    # the wider search costs one decode per segment); 1: greedy like every other update. 5 (faster-whisper's
    # width): German own-set stream 1, BLEU 21.9 vs 20.6 greedy at the same latency; the full benchmark run
    # in benchmarks/README.md has both rows.
    final_beam: int = 5
    # What a commit before a segment's end may stop at: any word, a clause end (, ; : . ? !) or a sentence end.
    # "word" (default) keeps StreamLAAL near 2.3 s; "sentence" translates whole sentences (German puts the verb
    # last) for about +6 BLEU at about +4 s (German dev set: 19.2 vs 12.0 BLEU at 5.6 vs 2.6 s; own stream 1:
    # 27.7 vs 21.9 at 6.6 vs 2.4 s); "clause" lost on both counts (dev 15.8 BLEU at 5.0 s). See
    # benchmarks/README.md for the full run.
    commit_unit: Literal["word", "clause", "sentence"] = "word"
    # AlignAtt: frames (20 ms each for Whisper) at the audio's end a token may not attend to. 20 (0.4 s): 10 lost
    # ~4 BLEU (words committed before their audio was complete), 30 cost ~0.2 s of latency for no gain.
    frame_threshold: int = 20
    # AlignAtt: a segment's first words must also agree across two updates (see AlignAtt). Off: same BLEU (36.8 vs
    # 36.7) but StreamLAAL 2.84 s instead of 1.33 s, since most VAD segments last only two or three updates.
    confirm_first: bool = False
    # AlignAtt: every commit must also agree with the previous update's hypothesis (LocalAgreement-2 on top).
    # Off: on the German own-set stream 1 it lost on both counts (BLEU 19.6 vs 21.9, StreamLAAL 4.2 vs 2.4 s). Measured
    # again at engine 5f1ba06 (AMD EPYC; own + dev and 56 unseen sentences per language, benchmarks/README.md): BLEU
    # within noise either way (German own + dev +0.6, unseen -2.7 / +0.5), English WER better (own + dev 11.2 -> 10.6 %,
    # unseen 9.9 -> 8.3 %, 14.1 -> 13.9 %), every language's StreamLAAL CU +0.3 to +0.9 s: off.
    agree: bool = False
    # AlignAtt: a word is committed only if each of its tokens had at least this probability when decoded; the
    # first unsure token and everything after it stay partial until a later update (or the segment's last,
    # beam-searched one) is sure of them. AlignAtt alone commits whatever the model guesses from the audio heard
    # so far ("Seady officials" for "City officials" from one second), and a committed guess steers everything
    # after it. 0.3: chosen on the own sets (40 sentences each, de and en) among 0.1-0.7, and checked on own + dev
    # (80 sentences per language, benchmarks/README.md): German BLEU 13.2 -> 20.7 at StreamLAAL 2.1 -> 4.3 s,
    # French 18.0 -> 20.8 at 1.9 -> 2.9 s, Spanish 17.0 -> 22.3 at 2.1 -> 3.4 s; 0.2 is ~1 s faster for ~2 BLEU.
    min_prob: float = 0.3
    # an unsure token counts as sure when the previous update decoded it too. Off: it lowered BLEU more than
    # latency (German own set: 18.3 at 3.3 s vs 23.0 at 4.3 s with min_prob 0.3 alone)
    agree_unsure: bool = False
    # AlignAtt: words before the stop kept partial until the next update; None: by task, in transcription about a
    # second's worth of updates (1 word at 1.0 s updates, 2 at 0.5 s), 0 in translation. In transcription the
    # word next to the stop is the one at the audio's edge, often heard only in part ("to Conway" for "took
    # only"): at 1.0 s updates holding it back one update took English WER from 13.2 to 11.5 % at StreamLAAL
    # 1.62 -> 1.98 s (own + dev, 80 sentences; a stricter min_prob 0.4 bought less: 12.7 % at 1.97 s); at 0.5 s
    # updates one word was 12.1 % at 1.66 s and two 10.7 % at 1.86 s (frame_threshold 25 instead: 11.8 % at
    # 1.69 s). In translation it lost on both counts (own + dev: German 20.3 -> 19.8 BLEU at 4.30 -> 5.02 s,
    # French 22.0 -> 21.4 at 2.97 -> 3.30 s; Spanish 22.2 -> 23.1 at 3.44 -> 3.99 s), the confidence rule
    # already holding back the unsure words there.
    hold_words: int | None = None
    # Buffer trimming: once a segment's window is longer than `trim_s`, the audio of text already committed is
    # dropped from its front and that text becomes the decoder's previous-text prompt (whisper_streaming trims its
    # buffer the same way), so pause-free speech is committed steadily and the encoder, re-run over the window
    # every update, stops growing with the segment. The cut goes before the latest committed sentence start
    # (translation reorders words within a sentence, rarely across); without one, once the window passes
    # 2 * trim_s, before the latest committed word. 0 disables (the window grows to a pause or max_segment_s).
    trim_s: float = 8.0
    # committed words kept after the cut, with their audio: forced answer tokens that anchor the window's start
    # (a cut a little off the word boundary then neither drops nor repeats a word)
    trim_keep_words: int = 1
    # a segment is closed (everything committed) before its audio reaches the model's 30 s window
    max_segment_s: float = 24.0
    # Digital silence appended to every encoder window (the real audio's end stays the policy's reference).
    # Whisper was trained on speech followed by padding; on an unpadded window it does not see where the audio
    # stops and, once it has translated everything, starts over from the beginning (AlignAtt then committed
    # "Good morning. Today is ... Good morning. Today is ..."; BLEU 13). SimulStreaming pads to 30 s, which
    # costs a full 30 s encoder pass per update; 1 s is enough: BLEU 36.7 vs 34.5 (0.5 s) and 35.0 (2 s).
    pad_s: float = 1.0
    # A segment's last update (beam search, everything committed) fills its encoder window with digital silence up
    # to this many seconds instead of pad_s (30: Whisper's whole window, as offline decoding and SimulStreaming do);
    # 0: pad_s only. Models that take any length (wav2vec2: Backend.trained_window_s 0) are never padded.
    # Whisper was trained on 30 s windows; on a short one its encoder states differ. 30 s, own + dev (80 sentences
    # per language, one run beside 0, benchmarks/README.md): German 20.4 -> 21.9 BLEU, French 21.9 -> 22.2, Spanish
    # 22.6 -> 24.2, the real volunteer captions French 13.1 -> 17.3 and Spanish 10.9 -> 11.7 (15 s: German 20.5,
    # 10 s: 20.0; English transcription 10.6 -> 11.1 % WER). But one 30 s encoder pass per segment costs 0.4 s on
    # two cores: in the cost run translation RTF rose from 0.18-0.19 to 0.29-0.35 (over the 0.3 one live stream
    # may use) and StreamLAAL CA by 0.1-0.9 s; four live German streams still kept up, but at a median lag of
    # 4.7-6.1 s instead of 4.1 s. Measured again at engine 5f1ba06 on another CPU (AMD EPYC, one run beside 0): own +
    # dev French 22.1 -> 20.8, Spanish 23.6 -> 25.1; 56 unseen sentences per language (two sets) German 27.4 -> 27.2
    # and 17.7 -> 15.5, French 27.6 -> 29.2 and 22.9 -> 22.7, Spanish 30.8 -> 29.3 and 21.6 -> 18.9: no consistent
    # gain. Off by default; on (`--last-window 30`) to try where compute and the final captions' latency are free.
    last_window_s: float = 0.0
    # A segment's last decode (on its short window) whose average log-probability per token is below this is
    # decoded again on the model's whole trained window (as last_window_s 30, for that segment alone): the whole
    # window's better translations, paid where Whisper is unsure. None (`--window-retry off`): never. -0.75 (the
    # last decodes of 43-85 % of segments by language), measured beside the default in one run each
    # (benchmarks/README.md; the whole window encoded in bf16 where native, Whisper.encode): own + dev (80
    # sentences per language) BLEU German 20.4 -> 22.5, French 21.8 -> 21.8, Spanish 22.6 -> 23.4; the real
    # volunteer captions French 12.8 -> 14.9, Spanish 11.4 -> 11.7; 20 unseen sentences per language German 27.9
    # -> 29.3, French 27.7 -> 30.6, Spanish 32.0 -> 34.3 (last_window_s 30 gained less: unseen German -2.9). One
    # stream's RTF 0.19-0.21 -> 0.23-0.30 in the quiet cost run and final captions later (StreamLAAL CA +0.3 to
    # +1.1 s). At engine d6bcca0 (without the beams' shared-keys fold those runs had) own + dev German scored 20.2
    # -> 21.3 (chrF 42.5 -> 41.2), French 21.8 -> 21.8. Off by default: on 24 more unseen sentences per language
    # (engine f6f4900, an AMD EPYC, one run beside the default) it lost German 27.4 -> 25.4 and French 27.6 ->
    # 25.8 BLEU, won Spanish 30.8 -> 31.6 and English 10.2 -> 9.2 % WER; on 32 more (engine 47fc1bf) French 22.9 ->
    # 24.1, Spanish 21.6 -> 18.6: no consistent gain. A retry that drifts
    # into the spoken language is dropped (the short window's decode stands), and a session more than
    # RETRY_MAX_PENDING_S (redecode.py) behind real time skips the retry.
    window_retry_logprob: float | None = None
    # A segment's decodes see the previous segment in front of its own audio, that segment's committed text forced
    # as the start of the answer, when the previous segment lasted at most this many seconds and ended less than
    # CONTEXT_GAP_S (carry.py) before this one began; None: by task (`carried_s`), 4.5 in translation, 0 (never)
    # in transcription. Whisper translates an utterance of a few seconds alone worse than as the continuation of
    # the one before (whisper_streaming decodes a buffer of several). 4.5, one run beside 0 each (engine ddd5c27,
    # AMD EPYC, benchmarks/README.md), BLEU: own + dev (80 sentences per language) German 19.9 -> 19.4, French 22.1
    # -> 23.4, Spanish 23.6 -> 23.5; unseen set 2 (24) German 27.4 -> 29.7, French 27.6 -> 30.1, Spanish 30.8 ->
    # 33.2; unseen set 3 (32) German 17.7 -> 17.9, French 22.9 -> 24.4, Spanish 21.6 -> 21.0; the real volunteer
    # recordings (40) French 11.8 -> 12.8, Spanish 10.2 -> 13.1; StreamLAAL CU -0.2 s on most (real Spanish +0.5 s).
    # 3 s gained less (own + dev French +1.2, the real recordings as 4.5, the unseen sets unchanged); 6 s lost on
    # unseen set 3 (French 22.9 -> 21.3, Spanish 21.6 -> 20.9). English transcription: WER the same within 0.1
    # point on all three sets, for more compute: off there.
    context_s: float | None = None
    # speech detection / segmentation at pauses; a segment closes after 0.5 s of silence (see VadConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    use_vad: bool = True  # False: every sample is decoded (only for clean, pre-segmented audio)
    prompt_tokens: int = 32  # previous committed tokens given as <|startofprev|> context; 0 disables
    # names and terms the speaker will use ("Dragoman, Kubernetes, Nguyen"): their tokens (at most
    # VOCABULARY_TOKENS) go first in the <|startofprev|> prompt, before the previous text; "" = none (unchanged)
    vocabulary: str = ""
    min_first_s: float = 1.0  # a segment's first update waits for this much audio (language detection, stability)
    # Updates of a segment shorter than this show their words as partial but commit none. From a segment's first
    # second the model guesses ("The kids later" for "Decades later"), and a committed guess steers the rest.
    # 2.0, on own + dev (80 sentences per language, one run, benchmarks/README.md): English WER 15.1 -> 13.2 % at
    # StreamLAAL 1.61 -> 1.62 s (1.5 s: 13.8 %), French BLEU 20.8 -> 22.0, German 20.7 -> 20.3, Spanish 22.5 -> 22.2
    # at +0.03..0.06 s. Requiring the first words to agree across two updates instead (confirm_first) reached
    # 12.3 % but at 2.40 s.
    first_commit_s: float = 2.0
    no_speech_threshold: float = 0.6  # with logprob_threshold: Whisper's rule for discarding a non-speech window
    logprob_threshold: float = -1.0
    max_tokens_per_s: float = 6.0  # bound on tokens per second of audio (speech is ~3/s): stops runaway decoding

    def __post_init__(self) -> None:
        if self.task not in ("translate", "transcribe"):
            raise ConfigError(f"task must be 'translate' or 'transcribe', got {self.task!r}")
        if self.policy not in ("local-agreement", "alignatt"):
            raise ConfigError(f"policy must be 'local-agreement' or 'alignatt', got {self.policy!r}")
        if self.mode not in ("incremental", "exact", "redecode"):
            raise ConfigError(f"mode must be 'incremental', 'exact' or 'redecode', got {self.mode!r}")
        if self.chunk_s is not None and not 0.1 <= self.chunk_s <= 10.0:
            raise ConfigError(f"chunk_s must be None (by task) or between 0.1 and 10 seconds, got {self.chunk_s}")
        if self.commit_unit not in ("word", "clause", "sentence"):
            raise ConfigError(f"commit_unit must be 'word', 'clause' or 'sentence', got {self.commit_unit!r}")
        if not 1 <= self.final_beam <= 16:
            raise ConfigError(f"final_beam must be between 1 and 16, got {self.final_beam}")
        if self.hold_words is not None and not 0 <= self.hold_words <= 8:
            raise ConfigError(f"hold_words must be None (by task) or 0..8, got {self.hold_words}")
        if not 0.0 <= self.first_commit_s <= self.max_segment_s:
            raise ConfigError("first_commit_s must be between 0 and max_segment_s")
        if not 2.0 <= self.max_segment_s <= 29.0:
            raise ConfigError("max_segment_s must leave room in Whisper's 30 s window (2..29 s)")
        if self.trim_s and not 2.0 <= self.trim_s <= self.max_segment_s:
            raise ConfigError("trim_s must be 0 (off) or between 2 s and max_segment_s")
        if self.trim_keep_words < 1:
            raise ConfigError("trim_keep_words must be at least 1")
        if not 0.0 <= self.last_window_s <= 30.0:
            raise ConfigError("last_window_s must be 0 (pad_s only) to 30 s")
        if self.window_retry_logprob is not None and not -20.0 <= self.window_retry_logprob <= 0.0:
            raise ConfigError("window_retry_logprob must be None (off) or an average log-probability, -20..0")
        if self.context_s is not None and not 0.0 <= self.context_s <= 10.0:
            raise ConfigError("context_s must be None (by task) or 0 (off) to 10 s")
        if not 0.0 <= self.pad_s <= 4.0 or self.max_segment_s + self.pad_s > 29.5:
            raise ConfigError("pad_s must be 0..4 s and leave max_segment_s + pad_s inside the 30 s window")

    @property
    def update_s(self) -> float:
        """chunk_s with None resolved by task: seconds of new speech between a segment's updates."""
        if self.chunk_s is not None:
            return self.chunk_s
        return 0.5 if self.task == "transcribe" else 1.0

    @property
    def carried_s(self) -> float:
        """context_s with None resolved by task: how long a segment may be to be carried in front of the next."""
        if self.context_s is not None:
            return self.context_s
        return 4.5 if self.task == "translate" else 0.0

    @property
    def held_words(self) -> int:
        """hold_words with None resolved by task (and, in transcription, by the update interval)."""
        if self.hold_words is not None:
            return self.hold_words
        if self.task == "translate":
            return 0
        return min(4, max(1, round(1.0 / self.update_s)))
