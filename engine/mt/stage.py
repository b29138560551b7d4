"""The streaming MT stage: one source stream (a speech session's events) feeding any number of target languages.

Source events go in as the session emits them; target events come out: TargetCommit (append-only translated
units) and TargetPartial (the translation of what is not yet a whole unit; replaces the previous one). One
SourceSegmenter cuts the source into units for every target alike, so each target's captions cover the same
sentences; every target has its own Translator (several targets may share one loaded multilingual model).

Everything here runs synchronously on the caller's thread (the scheduler's worker for live sessions, the command
itself for `stream`): a translation is a short CPU job between two speech updates.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..events import Commit, Error, Event, Partial
from .policy import MTPolicyConfig, SourceSegmenter, SourceUnit
from .translate import Translator

log = logging.getLogger(__name__)

NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my"})  # written without spaces between sentences


@dataclass(frozen=True)
class TargetCommit:
    """Append-only translated text for one target: all of a target's commits concatenated form its captions."""

    target: str
    text: str  # with a leading space after the first commit (as speech commits), so concatenation reads well
    source_text: str  # the source unit it translates
    start_s: float  # stream time of the unit's first source word
    end_s: float  # stream time of its last source word
    committed_s: float  # stream time (audio received) when the translation was committed

    @property
    def latency_s(self) -> float:
        """From the end of the source speech to the target commit."""
        return max(0.0, self.committed_s - self.end_s)


@dataclass(frozen=True)
class TargetPartial:
    """The translation of the uncommitted source tail for one target ("" clears it)."""

    target: str
    text: str
    source_text: str


TargetEvent = TargetCommit | TargetPartial


@dataclass
class TargetRoute:
    """How one target is produced from the speech model's text."""

    target: str  # language code the captions are in
    translator: Translator | None  # None: the speech model's text already is in the target language
    source: str | None  # language the translator reads; None: the spoken language (set_spoken_language)
    committed: list[str] = field(default_factory=list)
    last_partial: str = ""
    # unit="agreement": target tokens already committed for the unit in progress, and the previous hypothesis
    agreed: tuple[int, ...] = ()
    previous: tuple[int, ...] | None = None


class MTStage:
    def __init__(
        self, routes: list[TargetRoute], config: MTPolicyConfig = MTPolicyConfig(), session_id: str | None = None
    ) -> None:
        if not routes:
            raise ValueError("MTStage needs at least one target")
        self.routes = {r.target: r for r in routes}
        self.config = config
        self.segmenter = SourceSegmenter(config)
        self.spoken_language: str | None = None
        self.n_units = 0  # units translated (a count, not a list: a live stream may run for hours)
        self._partial_source: str | None = ""  # the source tail last translated; None: the next partial is due
        self._partial_at_s = -1e9
        self._failed: set[str] = set()  # targets whose translation failed (logged once)
        self.log = logging.LoggerAdapter(log, {}) if session_id is None else _prefixed(session_id)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.routes)

    def set_spoken_language(self, language: str | None) -> None:
        """The language the speech model decided on (auto-detection); used by routes reading the spoken text."""
        self.spoken_language = language

    # -- feeding -------------------------------------------------------------------------------------------
    def feed(self, event: Event, now_s: float) -> list[TargetEvent]:
        """One source event at stream time `now_s` -> the target events it causes."""
        out: list[TargetEvent] = []
        if isinstance(event, Commit):
            for unit in self.segmenter.commit(event.text, event.start_s, event.end_s, now_s):
                out += self._translate_unit(unit)
            if self.config.unit == "agreement" and self.segmenter.pending:
                out += self._agree(now_s)
        elif isinstance(event, Partial):
            self.segmenter.partial(event.text)
        elif isinstance(event, Error):
            return out
        out += self.tick(now_s, _partials=False)
        out += self._partials(now_s)
        return out

    def tick(self, now_s: float, _partials: bool = True) -> list[TargetEvent]:
        """The clock moved (audio arrived without events): a pause may complete a unit."""
        out: list[TargetEvent] = []
        for unit in self.segmenter.tick(now_s):
            out += self._translate_unit(unit)
        if _partials and out:
            out += self._partials(now_s, force=True)
        return out

    def finish(self, now_s: float) -> list[TargetEvent]:
        """The source stream ended (after the speech session's last events): translate what is left."""
        out: list[TargetEvent] = []
        for unit in self.segmenter.finish(now_s):
            out += self._translate_unit(unit)
        for route in self.routes.values():
            if route.last_partial:
                route.last_partial = ""
                out.append(TargetPartial(route.target, "", ""))
        return out

    def text(self, target: str) -> str:
        """Everything committed for `target` so far."""
        return "".join(self.routes[target].committed).strip()

    # -- translating ---------------------------------------------------------------------------------------
    def _source_for(self, route: TargetRoute) -> str | None:
        return route.source or self.spoken_language

    def _translate(self, route: TargetRoute, text: str, final: bool) -> str:
        if route.translator is None:
            return text
        source = self._source_for(route)
        if source is None and not final and route.translator.bundle.family != "marian":
            return ""  # a multilingual model waits for the speech model's language decision (partials only)
        beams = None if final else 1  # partials: greedy, they are replaced a moment later anyway
        try:
            return route.translator.translate(text, source, route.target, num_beams=beams).text
        except ConfigError as e:  # e.g. Whisper detected a language the MT model does not read
            if route.target not in self._failed:
                self._failed.add(route.target)
                self.log.error("captions in %s: %s", route.target, e)
            return ""

    def _translate_unit(self, unit: SourceUnit) -> list[TargetEvent]:
        self.n_units += 1
        out: list[TargetEvent] = []
        for route in self.routes.values():
            if route.agreed:  # unit="agreement": the final translation continues what is already committed
                text = self._continue(route, unit.text, final=True)
            else:
                text = self._translate(route, unit.text, final=True)
            route.agreed, route.previous = (), None
            event = self._commit(route, text, unit.text, unit.start_s, unit.end_s, unit.ready_s)
            if event is not None:
                self.log.debug(
                    "%s commit after %.2f s (%s): %r", route.target, event.latency_s, unit.reason, event.text
                )
                out.append(event)
        self._partial_source = None  # the tail changed: the next partial is due
        return out

    def _commit(
        self, route: TargetRoute, text: str, source: str, start_s: float, end_s: float, now_s: float
    ) -> TargetCommit | None:
        text = text.strip()
        if not text:
            return None
        if route.committed and route.target not in NO_SPACE_LANGUAGES:
            text = " " + text
        route.committed.append(text)
        return TargetCommit(route.target, text, source, start_s, end_s, now_s)

    # -- unit="agreement" ----------------------------------------------------------------------------------
    def _agree(self, now_s: float) -> list[TargetEvent]:
        """Translate the unfinished unit greedily, continuing its committed words; commit the further words on
        which this translation and the previous one (of a shorter source) agree, up to a word boundary."""
        pending, spans = self.segmenter.pending, self.segmenter.spans
        out: list[TargetEvent] = []
        for route in self.routes.values():
            tr = route.translator
            if tr is None or (self._source_for(route) is None and tr.bundle.family != "marian"):
                continue
            try:
                hyp = tr.translate(
                    pending, self._source_for(route), route.target, num_beams=1, prefix=route.agreed
                ).tokens
            except ConfigError:
                continue
            previous, route.previous = route.previous, hyp
            if previous is None:
                continue
            n = len(route.agreed)
            while n < min(len(hyp), len(previous)) and hyp[n] == previous[n]:
                n += 1
            # the agreed words must be complete: end where the hypothesis starts a new word
            while n > len(route.agreed) and not (n < len(hyp) and tr.bundle.tokenizer.is_word_start(hyp[n])):
                n -= 1
            if n == len(route.agreed):
                continue
            before = tr.bundle.tokenizer.decode(list(route.agreed))
            after = tr.bundle.tokenizer.decode(list(hyp[:n]))
            route.agreed = tuple(hyp[:n])
            text = (
                after[len(before) :] if after.startswith(before) else tr.bundle.tokenizer.decode(list(hyp[n - 1 : n]))
            )
            event = self._commit(route, text, "", spans[0], spans[1], now_s)
            if event is not None:
                out.append(event)
        return out

    def _continue(self, route: TargetRoute, text: str, final: bool) -> str:
        """The unit's translation forced to begin with the route's agreed tokens: only the rest is returned."""
        tr = route.translator
        assert tr is not None
        try:
            result = tr.translate(
                text, self._source_for(route), route.target, num_beams=None if final else 1, prefix=route.agreed
            )
        except ConfigError:
            return ""
        tok = tr.bundle.tokenizer
        before, after = tok.decode(list(route.agreed)), tok.decode(list(result.tokens))
        return (
            after[len(before) :] if after.startswith(before) else tok.decode(list(result.tokens[len(route.agreed) :]))
        )

    def _partials(self, now_s: float, force: bool = False) -> list[TargetEvent]:
        if not self.config.partials:
            return []
        tail = self.segmenter.tail
        if tail == self._partial_source:
            return []
        if tail and not force and now_s - self._partial_at_s < self.config.partial_every_s:
            return []
        self._partial_source, self._partial_at_s = tail, now_s
        out: list[TargetEvent] = []
        for route in self.routes.values():
            if not tail:
                text = ""
            elif route.agreed:  # unit="agreement": the words after those already committed
                text = self._continue(route, tail, final=False).strip()
            else:
                text = self._translate(route, tail, final=False).strip()
            if text != route.last_partial:
                route.last_partial = text
                out.append(TargetPartial(route.target, text, tail))
        return out


def _prefixed(session_id: str) -> logging.LoggerAdapter[logging.Logger]:
    class Prefixed(logging.LoggerAdapter[logging.Logger]):
        def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
            return f"[{session_id}] {msg}", kwargs

    return Prefixed(log, {})
