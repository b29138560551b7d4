"""A segment's start tokens: task, language, and the previous-text prompt (vocabulary, then recent committed text).

The committed text of earlier segments (and of audio trimmed off a window's front) becomes context for the next
decode; SessionConfig.vocabulary leads it in every prompt.
"""

from __future__ import annotations

from ..backend import Backend, tokens_text
from ..text import capitalise_sentences, ends_sentence
from .config import SessionConfig
from .segment import Segment

VOCABULARY_TOKENS = 64  # SessionConfig.vocabulary's share of the prompt (Whisper keeps the last 112 prompt tokens)
# committed tokens kept beyond the prompt's own: a segment carried as context (SessionConfig.context_s) leaves the
# prompt, which then reaches back before it
_HISTORY_SPARE = 256


class Prompt:
    """One stream's prompt source: the vocabulary's tokens and the latest committed tokens."""

    def __init__(self, backend: Backend, config: SessionConfig) -> None:
        self.backend, self.config = backend, config
        self.history: list[int] = []  # committed tokens of earlier segments (prompt source)
        words = " ".join(config.vocabulary.split())  # names/terms before the history in every prompt
        self.vocabulary = backend.text_tokens(" " + words)[:VOCABULARY_TOKENS] if words else []
        stop = backend.text_tokens(".")
        self._stop = stop if len(stop) == 1 else []  # the full stop Prompt.close adds (a single token, or none)

    def remember(self, tokens: list[int]) -> list[int]:
        """Committed tokens whose audio was trimmed off a window's front join the history, as the captions show
        them: a sentence Whisper opened in lower case after a full stop gets its capital (text.capitalise_sentences)
        here too. Whisper copies the prompt's style: "... two weeks later. tickets for the lunar record reunion
        tour ..." in the prompt, and the next segments of fast English came out in lower case without a stop."""
        shown = self._as_shown(tokens)
        self.history = (self.history + shown)[-(self.config.prompt_tokens + _HISTORY_SPARE) :]
        return shown

    def _as_shown(self, tokens: list[int]) -> list[int]:
        before, text = self._text(self.history[-16:]), self._text(tokens)
        shown = capitalise_sentences(before, text)
        return tokens if shown == text else self.backend.text_tokens(shown)

    def _text(self, tokens: list[int]) -> str:
        return tokens_text(self.backend, tokens)

    def close(self, tokens: list[int]) -> list[int]:
        """A segment's committed tokens join the history; in transcription closed by a full stop if they end without
        a sentence mark. Whisper copies the previous text's style: a last decode that ended without one ("... it's
        on the third floor") made the next start in lower case, and fast English with short pauses lost its
        punctuation for the rest of the stream. The stop is the prompt's alone: captions keep the text as decoded.
        Own + dev English 11.7 -> 11.2 % WER, unseen English 10.2 -> 9.9 % (short pauses 14.0 -> 12.7 %). Not in
        translation, where a segment may close mid-sentence: measured there once (engine ebce553), French changed
        from one such segment on ("which will take a." and the next began "short time.") and no gain showed."""
        if (
            tokens
            and self.config.task == "transcribe"
            and self._stop
            and not ends_sentence(self.backend.token_bytes(tokens[-1]))
        ):
            tokens = tokens + self._stop
        return self.remember(tokens)

    def start(self, seg: Segment, committed: list[int], language: str | None) -> None:
        """sequence = start tokens (task, language, previous committed text as the prompt, the carried context) +
        `committed`. The carried context's text is the history's tail: the prompt ends before it."""
        history = self.history[: max(0, len(self.history) - len(seg.context))]
        prompt = history[-self.config.prompt_tokens :] if (self.config.prompt_tokens and seg.use_prompt) else []
        # the vocabulary leads the prompt; seg.prompt stays the history alone (echo checks compare against it)
        vocabulary = self.vocabulary if seg.use_prompt else []  # (the retry without a prompt drops it too)
        start = self.backend.start_tokens(self.config.task, language, vocabulary + prompt) + seg.context
        seg.prompt, seg.n_start = prompt, len(start)
        seg.sequence = start + committed
