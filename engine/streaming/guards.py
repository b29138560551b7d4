"""Guards against Whisper's failures: repetition loops and re-read audio (cut while decoding), prompt echoes,
translations that drift into the spoken language, text decoded from non-speech, and repeats of committed text.

The functions work on token ids and frames alone; Guards applies them to one session's decoded updates.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..backend import Backend
from ..text import ends_sentence, starts_word
from .drift import bannable_words, looks_like_source_language
from .policy import ONSET_MARGIN_S, attended_frame
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
_REREAD_FRAMES = 10


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
        if float(np.median(second)) <= float(np.median(first)) + _REREAD_FRAMES:
            return n_tok - n
    return None


def reread_spans(
    tokens: list[int],
    frames: list[int],
    token_bytes: Callable[[int], bytes],
    is_content: Callable[[int], bool],
    prior: Sequence[tuple[int, int]] = (),
) -> list[tuple[int, int]]:
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
        while b < len(tokens) and not (
            ends_sentence(token_bytes(tokens[b - 1])) and starts_word(token_bytes(tokens[b]))
        ):
            b += 1  # a new word after a sentence end starts the next sentence ("5.2" stays one word)
        content = [(tokens[i], frames[i]) for i in range(a, b) if is_content(tokens[i])]
        same = sum(any(abs(f - g) <= _REREAD_FRAMES for g in seen.get(t, ())) for t, f in content)
        if len(content) >= 2 and same >= max(2, 0.6 * len(content)):
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


# Duplicate guard (see Guards.repeated_prefix): how many committed words are searched for a repeat, and how long a
# run opening a segment must be to count as a re-translation of the previous sentence
_REPEAT_TAIL_WORDS = 40
_REPEAT_WORDS = 4


def _mostly_repeats(sentence: Sequence[str], earlier: Sequence[str], n: int = _REPEAT_WORDS) -> bool:
    """At least 60 % of the sentence's word n-grams (and two or more) stand in `earlier`."""
    grams = [tuple(sentence[i : i + n]) for i in range(len(sentence) - n + 1)]
    if len(grams) < 2:
        return False
    seen = {tuple(earlier[i : i + n]) for i in range(len(earlier) - n + 1)}
    return sum(g in seen for g in grams) >= 0.6 * len(grams)


def _same_words(sentence: Sequence[str], previous: Sequence[str]) -> bool:
    """Every word of a sentence (four or more) but at most one is a word of the sentence before it: translated
    again in other words and order ("There they will work 40 people from January. There will be 40 people from
    January."), which shares few word n-grams with the first translation. A second translation that brings new
    words ("... how tourism has changed in the Canary Islands ...") says something the first did not: it stays."""
    if len(sentence) < _REPEAT_WORDS:
        return False
    words = set(previous)
    return sum(w not in words for w in sentence) <= 1


# A sentence's opening said again inside it, this many words or more with no sentence mark before them, restarts it
_RESTART_WORDS = 5


def _restart_run(words: Sequence[str], i: int, sentence: Sequence[str]) -> int:
    """How many words from words[i] say again, in order, the opening of the `sentence` they stand in (0: fewer
    than _RESTART_WORDS do). Without punctuation a restart has no sentence mark before it: "Drivers should use
    the bypassing instead Drivers should use the bypassing". Repeats of words from its middle are not restarts:
    a second translation reuses them ("... how the tourism has changed in the ... how tourism has changed in the
    Canary Islands")."""
    k = 0
    while i + k < len(words) and k < len(sentence) and words[i + k] == sentence[k]:
        k += 1
    return k if k >= _RESTART_WORDS else 0


# A phrase said again right after itself, this many words or more, inside one sentence
_ECHO_PHRASE_WORDS = 3


def _repeat_run(words: Sequence[str], i: int, sentence: Sequence[str]) -> int:
    """How many words from words[i] say again, in order, the words just before them (the end of the `sentence`
    they stand in; 0: fewer than _ECHO_PHRASE_WORDS do). A last decode that goes on from committed text may
    translate its clause again: "but the landscape was" committed, then "beautiful but the landscape was
    beautiful." A speaker's own repeats are shorter ("very, very") or heard anew."""
    for k in range(len(sentence), _ECHO_PHRASE_WORDS - 1, -1):
        if list(words[i : i + k]) == list(sentence[-k:]):
            return k
    return 0


def _last_sentence_words(text: str) -> list[str]:
    """The words of `text`'s unfinished last sentence (none when it ends a sentence)."""
    text = text.rstrip()
    if not text or ends_sentence(text[-1:].encode()):
        return []
    return _norm_words(re.split(r"(?<=[.?!])\s+", text)[-1])


# How many tokens before a sentence mark where the audio read so far ends (_heard_anew)
_BEFORE_TOKENS = 6


def _heard_anew(
    attention: np.ndarray | None,
    start: int,
    end: int,
    n_frames: int,
    most: float | None = None,
    tokens_per_frame: float = 0.0,
) -> bool:
    """Tokens [start, end) of a hypothesis were read from speech after that of the tokens before them: their
    median attended frame lies past every frame the last _BEFORE_TOKENS tokens before them attend to (by more than
    _REREAD_FRAMES) and inside the real audio (`n_frames`). A sentence translated twice re-reads the audio of the
    first copy (all six hidden on the benchmark's own and dev sets did: median before the copy's last frame) or
    parks on the padding; a sentence said twice is heard later. No attention: no evidence of new speech.
    `most`: also at least this share of the tokens lies past them. A run said again inside a sentence asks for
    2/3: a copy read from the first one's audio scatters ("but the landscape was beautiful" said again attended
    frames 211, 134, 122, 202, 165, 224 after "beautiful" at 165: median 184, past the 175 asked for).
    `tokens_per_frame`: the fastest speech (SessionConfig.max_tokens_per_s per encoder frame); tokens too many to
    be said in the audio left after the words before them were not heard there: a beam that wrote a German
    sentence's translation twice parked the copy's 17 tokens on its last 0.5 s (frames 274-297 of 299, median 274
    past 256)."""
    if attention is None or len(attention) < end or start < 1 or not n_frames:
        return False
    n_all = attention.shape[-1]
    before = max(attended_frame(attention[t], n_all) for t in range(max(0, start - _BEFORE_TOKENS), start))
    if tokens_per_frame and end - start > (n_frames - before) * tokens_per_frame:
        return False
    frames = [attended_frame(attention[t], n_all) for t in range(start, end)]
    if not before + _REREAD_FRAMES < float(np.median(frames)) < n_frames:
        return False
    return most is None or sum(f > before + _REREAD_FRAMES for f in frames) >= most * len(frames)


def _norm_words(text: str) -> list[str]:
    """Words reduced to lower-case letters and digits (punctuation and spacing ignored); empty ones dropped."""
    out = ("".join(c for c in w.lower() if c.isalnum()) for w in text.split())
    return [w for w in out if w]


class Guards:
    """One session's checks on a decoded update: is it a hallucination (echo, drift, non-speech), and which of its
    words only repeat committed text. Stateless apart from what is passed in; `no_speech_prob` is a model step
    (Backend.no_speech_prob reads the decoder state of the update)."""

    def __init__(self, backend: Backend, config: SessionConfig, log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.backend, self.config, self.log = backend, config, log
        self._tokens_per_frame = config.max_tokens_per_s * backend.frame_s  # the fastest speech (_heard_anew)
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
        new = _norm_words(self._text(tokens))
        words = _norm_words(self._text(seg.committed[-24:])) + new
        if (not seg.committed and is_prompt_echo(tokens, seg.prompt)) or echo_run(
            words, len(new), _norm_words(self._text(seg.prompt))
        ):
            self.log.debug("prompt echo: %r", self._text(tokens))
            return True
        return False

    def _text(self, tokens: list[int]) -> str:
        return b"".join(self.backend.token_bytes(t) for t in tokens).decode("utf-8", "replace")

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
        untranslated (StreamingSession._translated_again)."""
        if language not in self._source_tokens:
            spelled = (self.backend.text_tokens(" " + v) for w in bannable_words(language) for v in {w, w.capitalize()})
            self._source_tokens[language] = sorted({t[0] for t in spelled if len(t) == 1})
        return self._source_tokens[language]

    def repeated_prefix(self, seg: Segment, new: list[int], attention: np.ndarray | None, text_out: str) -> int:
        """How many leading tokens of `new` say again what is already committed (`text_out`): the decoder restarted
        the sentence ("the temperature rise" -> ", the temperature rise, on the weekend") or repeated the last
        sentence. They stay in the decoder's sequence (it continues from them) but are not shown again.

        A run of at least two words counts as repeated when it matches committed text word for word (letters and
        digits only, so "5. 2%" equals "5.2%") and either repeats the very end of the committed text, is read
        from audio that is already committed (its alignment heads point before the committed end), or opens a
        segment with at least `_REPEAT_WORDS` words of it. Sentences that merely start alike ("The temperature
        rises. The temperature falls") and a speaker who really says something twice within a segment (new
        audio) match none of these."""
        tail = "".join(_norm_words(text_out)[-_REPEAT_TAIL_WORDS:])
        if not tail:
            return 0
        words = self.words(new)  # (first token, normalised word)
        for j in range(len(words), 1, -1):
            head = "".join(w for _, w in words[:j])
            if len(head) < 6 or head not in tail:
                continue
            cut = words[j][0] if j < len(words) else len(new)
            old_audio = False
            if attention is not None and len(attention) >= cut and seg.committed:
                frame = float(np.median([attended_frame(attention[i], attention.shape[-1]) for i in range(cut)]))
                old_audio = seg.start_s + frame * self.backend.frame_s < seg.committed_end_s - ONSET_MARGIN_S
            # a segment that opens by repeating a whole phrase of what was just committed re-translates the
            # previous sentence (its audio is not in this segment; the prompt carried it over)
            seg_start = (not seg.committed or attention is None) and j >= _REPEAT_WORDS
            if tail.endswith(head) or old_audio or seg_start:
                self.log.debug("repeated words not shown again: %r", head)
                return cut
        return 0

    def repeated_sentence(
        self,
        new: list[int],
        hidden: tuple[int, int],
        text_out: str,
        attention: np.ndarray | None = None,
        n_frames: int = 0,
        window: Sequence[int] = (),
    ) -> tuple[int, int]:
        """In a segment's last update (beam search), a sentence inside `new` that translates the sentence before it
        again ("... up to 5.2 percent. The price for electricity is always up to 5.2 percent."): it opens with
        `_REPEAT_WORDS` words just said, or most of its word n-grams or words were. One of the two copies is
        hidden: the first when all of it is in `new` and it is the shorter, since the model may start over to say it
        in full ("During that time, he began to paint the car with a mirror. At that time, he began to paint the
        car with a mirror placed on the bed."); else the second (a shortened restart, or the first is on screen).
        Unless its alignment (`attention` of `new`, `n_frames` of real audio) shows new speech: a speaker who says
        "Thank you for your help." again, a sentence later, is heard anew (_heard_anew).
        `window`: the committed tokens whose audio is in the decoded window. Unpunctuated speech ("... the train
        station my sister is getting married ...") has no sentence start to restart from, but a decode that starts
        over reads the window from its start: "the insurance company only pays if you are about to the damage"
        committed, then "within 7 days the insurance company only pays ... within 7 days". A restart that re-reads
        the window to the text's end is hidden to the end."""
        if hidden[1]:
            return hidden
        words = self.words(new)
        texts = [w for _, w in words]
        tail_words = _norm_words(text_out)[-_REPEAT_TAIL_WORDS:]
        tail = "".join(tail_words)
        previous = _last_sentence_words(text_out)  # the words of the sentence before the one at i
        # ... and of its part in the window (a restart's model: the window's start, if the sentence began before it)
        opening = _last_sentence_words(self._text(list(window))) if window else list(previous)
        first_start = 0 if not previous else None  # where that sentence starts in `new` (None: committed before)
        for i in range(1, len(words) - _REPEAT_WORDS + 1):
            previous.append(texts[i - 1])
            opening.append(texts[i - 1])
            before = self.backend.token_bytes(new[words[i][0] - 1]).rstrip()[-1:]
            if not ends_sentence(before):
                restart = _restart_run(texts, i, previous) or _restart_run(texts, i, opening)
                run = restart or _repeat_run(texts, i, previous)
                start, stop = words[i][0], words[i + run][0] if i + run < len(words) else len(new)
                if run and not _heard_anew(attention, start, stop, n_frames, 2 / 3, self._tokens_per_frame):
                    if restart and attention is not None and not _heard_anew(attention, start, len(new), n_frames):
                        stop = len(new)  # what follows the restart re-reads old audio too: it goes on to the end
                    if stop == len(new):  # the copy ends the text: its closing mark replaces the first copy's
                        start, stop = self._letters_end(new[:start]), self._letters_end(new)
                    self.log.debug("restarted words not shown again: %r", self._text(new[start:stop]))
                    return start, stop
                continue
            end = len(new)  # the sentence's end: the first sentence-ending token after its opening
            for t in range(words[i + _REPEAT_WORDS - 1][0], len(new)):
                if ends_sentence(self.backend.token_bytes(new[t])):
                    end = t + 1
                    break
            context = tail + "".join(texts[:i])
            sentence = [w for start, w in words[i:] if start < end]
            earlier = tail_words + texts[:i]
            # its opening repeats what was just said, or most of it does, worded a little differently ("At that
            # time, he began to paint ..." after "During that time, he began to paint ...")
            if (
                "".join(sentence[:_REPEAT_WORDS]) in context
                or _mostly_repeats(sentence, earlier)
                or _same_words(sentence, previous)
            ):
                if not _heard_anew(attention, words[i][0], end, n_frames, tokens_per_frame=self._tokens_per_frame):
                    start = words[i][0]
                    if first_start is not None and len(sentence) > sum(first_start <= a < start for a, _ in words):
                        self.log.debug("sentence said in full again: %r hidden", self._text(new[first_start:start]))
                        return first_start, start
                    self.log.debug("repeated sentence not shown again: %r", self._text(new[words[i][0] : end]))
                    return words[i][0], end
                self.log.debug("a sentence said again: %r", self._text(new[words[i][0] : end]))
            previous, opening, first_start = [], [], words[i][0]  # the sentence at i is the next one's previous
        return hidden

    def _letters_end(self, tokens: list[int]) -> int:
        """Where `tokens` end without their closing punctuation: a copy hidden at the end keeps the full stop."""
        end = len(tokens)
        while end and not any(c.isalnum() for c in self.backend.token_bytes(tokens[end - 1]).decode("utf-8", "ignore")):
            end -= 1
        return end

    def words(self, tokens: list[int]) -> list[tuple[int, str]]:
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
