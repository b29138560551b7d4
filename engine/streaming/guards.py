"""Guards against Whisper's failures: repetition loops and re-read audio (cut while decoding), prompt echoes,
translations that drift into the spoken language, and text decoded from non-speech. (Repeats of committed text:
repeats.py.)

The functions work on token ids and frames alone; Guards applies them to one session's decoded updates.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..backend import Backend, tokens_text
from ..text import ends_sentence, norm_words, starts_word
from .drift import bannable_words, looks_like_source_language
from .segment import Segment, Update

if TYPE_CHECKING:  # (decoder.py imports this module's decode-time guards)
    from .config import SessionConfig
    from .decoder import DecodeResult


def repetition_cut(tokens: list[int], min_repeats: int = 3, max_ngram: int = 40) -> int | None:
    """Where to cut a hypothesis ending in a loop (an n-gram repeated `min_repeats` times or more in a row): keep
    one copy.
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
            # every copy in the run goes, not only the last few: a beam search checks only once it has
            # finished, with the loop run to its budget ("grand-grand-grand-grand-grand-grand-")
            while n_tok >= (reps + 1) * n and tokens[n_tok - (reps + 1) * n : n_tok - reps * n] == tail:
                reps += 1
            return n_tok - (reps - 1) * n
    return None


_LONG_NGRAM = 8


def is_stutter(tokens: list[int], cut: int, ends_sentence_at: Callable[[int], bool]) -> bool:
    """The loop repetition_cut found at `cut` repeats a short n-gram inside a sentence ("grand-grand-grand-"), where
    the model stalls in the speech; a unit that ends a sentence ("A modern pencil. A modern pencil.") or a whole
    clause said twice is the model starting over once it has read everything."""
    return any(
        tokens[cut - n : cut] == tokens[cut : cut + n] and not any(ends_sentence_at(t) for t in tokens[cut - n : cut])
        for n in range(1, min(_LONG_NGRAM, cut + 1))
    )


def stutter_spans(tokens: list[int], min_repeats: int = 3) -> list[tuple[int, int]]:
    """Copies [a, b) to drop inside a hypothesis where a short n-gram (under _LONG_NGRAM tokens) repeats
    `min_repeats` times or more in a row (a single token: once more), keeping its first copy: a beam search that
    stalls and then goes on ("My grand-grand-grand-grand in a small village") leaves such a run mid-text, where
    repetition_cut, which looks at the end, does not see it."""
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        for n in range(1, _LONG_NGRAM):
            unit, k = tokens[i : i + n], 1
            while tokens[i + k * n : i + (k + 1) * n] == unit and len(unit) == n:
                k += 1
            if k >= (min_repeats + 1 if n == 1 else min_repeats):
                spans.append((i + n, i + k * n))
                i += k * n - 1
                break
        i += 1
    return spans


# A repeated phrase counts as a re-reading when its copy looks (median frame of its words) no further than this
# many encoder frames past the first one (a speaker repeating himself is heard later: 0.3 s and more)
REREAD_FRAMES = 10


def reread_cut(
    tokens: list[int], frames: list[int], is_content: Callable[[int], bool], max_ngram: int = 20
) -> int | None:
    """Where to cut a hypothesis that ends by reading the same audio twice ("Good evening. Good evening." from
    one second of speech): the last n tokens equal the n before them and their attention did not move on."""
    n_tok = len(tokens)
    for n in range(2, min(max_ngram, n_tok // 2) + 1):
        if tokens[n_tok - n :] != tokens[n_tok - 2 * n : n_tok - n]:
            continue
        first = [
            f for t, f in zip(tokens[n_tok - 2 * n : n_tok - n], frames[n_tok - 2 * n : n_tok - n]) if is_content(t)
        ]
        second = [f for t, f in zip(tokens[n_tok - n :], frames[n_tok - n :]) if is_content(t)]
        if not second:
            continue
        # medians: a head parked on the padding or a sink frame does not make a copy look new
        if float(np.median(second)) <= float(np.median(first)) + REREAD_FRAMES:
            return n_tok - n
    return None


def reread_spans(
    tokens: list[int],
    frames: list[int],
    token_bytes: Callable[[int], bytes],
    is_content: Callable[[int], bool],
    prior: Sequence[tuple[int, int]] = (),
    before: int = 0,
) -> list[tuple[int, int]]:
    """Sentences [a, b) of a segment's last hypothesis that read again audio already turned into text: most of
    their words are the same tokens at the same frames (within REREAD_FRAMES) as earlier ones, in the hypothesis
    or in `prior` ((token, frame) of the committed text). "Good morning and welcome ... Chicago." committed, then
    "Good evening and welcome ... Chicago." from the same audio. A speaker who really says it again is heard at
    other frames; heads parked on padding or sinks only miss a word or two. A sentence read (median frame) before
    frame `before` re-reads the carried context (SessionConfig.context_s), whose text is given."""
    seen: dict[int, list[int]] = {}
    for t, f in prior:
        seen.setdefault(t, []).append(f)
    spans: list[tuple[int, int]] = []
    a = 0
    while a < len(tokens):
        b = a + 1
        while b < len(tokens) and not (
            ends_sentence(token_bytes(tokens[b - 1])) and starts_word(token_bytes(tokens[b]))
        ):
            b += 1  # a new word after a sentence end starts the next sentence ("5.2" stays one word)
        content = [(tokens[i], frames[i]) for i in range(a, b) if is_content(tokens[i])]
        same = sum(any(abs(f - g) <= REREAD_FRAMES for g in seen.get(t, ())) for t, f in content)
        early = bool(content) and before > 0 and float(np.median([f for _, f in content])) < before
        if early or (len(content) >= 2 and same >= max(2, 0.6 * len(content))):
            spans.append((a, b))
        for t, f in content:
            seen.setdefault(t, []).append(f)
        a = b
    return spans


def is_prompt_echo(tokens: list[int], prompt: list[int], min_len: int = 4) -> bool:
    """The hypothesis starts by repeating a run of the previous-text prompt (Whisper's echo failure)."""
    n = min(len(tokens), 8)
    if n < min_len or len(prompt) < n:
        return False
    head = tokens[:n]
    return any(prompt[i : i + n] == head for i in range(len(prompt) - n + 1))


# A run of this many words copied from the previous-text prompt counts as an echo (Guards.echoes_prompt)
_ECHO_WORDS = 4


def echo_run(words: Sequence[str], n_new: int, prompt_words: Sequence[str], min_words: int = _ECHO_WORDS) -> bool:
    """`words` (normalised; the last `n_new` just decoded) hold a run of at least `min_words` consecutive words,
    one of them new, that also stands word for word in `prompt_words`."""
    if len(words) < min_words or len(prompt_words) < min_words or n_new <= 0:
        return False
    grams = {tuple(prompt_words[i : i + min_words]) for i in range(len(prompt_words) - min_words + 1)}
    first = max(0, len(words) - n_new - min_words + 1)  # runs that reach into the new words
    return any(tuple(words[i : i + min_words]) in grams for i in range(first, len(words) - min_words + 1))


class Guards:
    """One session's checks on a decoded update: is it a hallucination (echo, drift, non-speech). Stateless apart
    from what is passed in; `no_speech_prob` is a model step (Backend.no_speech_prob reads the update's decoder
    state)."""

    def __init__(self, backend: Backend, config: SessionConfig, log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.backend, self.config, self.log = backend, config, log
        self._source_tokens: dict[str | None, list[int]] = {}  # per spoken language (source_word_tokens)

    def looks_hallucinated(
        self, seg: Segment, tokens: list[int], res: DecodeResult, language: str | None, *, final: bool = False
    ) -> bool:
        """A segment's first words: an echo of the prompt, a drift into the spoken language, or not speech."""
        return (
            self.echoes_prompt(seg, tokens)
            or self.drifted(tokens, language)
            or self.unsure(seg, tokens, res, final=final)
        )

    def echoes_prompt(self, seg: Segment, tokens: list[int]) -> bool:
        """The segment's text so far (committed and just decoded) copies its previous-text prompt: a segment that
        opens with a run of the prompt's tokens, or a run of words anywhere. Whisper writes out the context
        instead of the new speech ("I have to bring some documents." again over a sentence about Lisbon) and
        every later update follows the copy; words catch a copy that drifts ("document" -> "documents")."""
        if not seg.prompt or not tokens:
            return False
        new = norm_words(self._text(tokens))
        words = norm_words(self._text(seg.committed[-24:])) + new
        if (not seg.committed and is_prompt_echo(tokens, seg.prompt)) or echo_run(
            words, len(new), norm_words(self._text(seg.prompt))
        ):
            self.log.debug("prompt echo: %r", self._text(tokens))
            return True
        return False

    def _text(self, tokens: list[int]) -> str:
        return tokens_text(self.backend, tokens)

    def discard(
        self, seg: Segment, upd: Update, heard: list[int], res: DecodeResult, language: str | None
    ) -> tuple[list[int], DecodeResult]:
        """An update that failed a guard (twice when a retry without the prompt was possible) shows and commits
        nothing; in a segment's last update, what to commit instead so that a sentence does not vanish."""
        if upd.final and seg.tentative:
            # The whole segment's last decode failed a guard (it drifted into the source language, or the beam is
            # unsure), yet earlier updates heard speech and showed it: commit what the screen showed.
            self.log.info("last update discarded: its tentative text is committed instead")
            return list(seg.tentative), dataclasses.replace(res, attention=None)
        if upd.final and self.drifted(heard, language) and not self.unsure(seg, heard, res, final=True):
            # Nothing was shown (earlier updates were unsure) and the last decode, twice, wrote the speech in its
            # own language instead of translating it, and surely (speech, not noise). Committed as heard,
            # untranslated (seen in `mic` on a German sentence).
            self.log.warning("the segment's last decode stayed in %s: committed untranslated", language)
            return heard, res
        return [], res

    def unsure(self, seg: Segment, tokens: list[int], res: DecodeResult, *, final: bool = False) -> bool:
        """Whisper's own rule for text decoded from something that is not speech; before a segment's last update
        also text the model only guesses (a very low average log-probability), which later updates hear more of.
        In the last update a guess is kept: the VAD heard speech and Whisper's no-speech probability is low, so
        dropping it would lose what was said. On the real French recordings it dropped 3 of 40 utterances ("A
        caravan.", no-speech probability 0.04) and replaced a fourth with an earlier, worse guess."""
        cfg = self.config
        nsp = self.backend.no_speech_prob(seg.state) if seg.state is not None else None
        avg_lp = res.sum_logprob / max(1, len(tokens))
        if nsp is not None and nsp > cfg.no_speech_threshold and avg_lp < cfg.logprob_threshold:
            self.log.debug("no speech (p=%.2f, avg logprob %.2f): discarded", nsp, avg_lp)
            return True
        if avg_lp < 2 * cfg.logprob_threshold and not final:  # the model is guessing: too little audio, or noise
            self.log.debug("very low confidence (avg logprob %.2f): discarded", avg_lp)
            return True
        return False

    def drifted(self, tokens: list[int], language: str | None) -> bool:
        """A translation written in the spoken language instead (Whisper sometimes ignores its task)."""
        if self.config.task != "translate" or language in (None, "en"):
            return False
        text = self._text(tokens)
        if looks_like_source_language(text, language):
            self.log.debug("translation drifted into %s: %r", language, text)
            return True
        return False

    def source_word_tokens(self, language: str | None) -> list[int]:
        """The tokens that spell one of the spoken language's bannable function words (drift.bannable_words, as a
        word of its own, lower-case or capitalised): banned in a decode that must not write the speech out
        untranslated (Redecoder.translated_again)."""
        if language not in self._source_tokens:
            spelled = (self.backend.text_tokens(" " + v) for w in bannable_words(language) for v in {w, w.capitalize()})
            self._source_tokens[language] = sorted({t[0] for t in spelled if len(t) == 1})
        return self._source_tokens[language]
