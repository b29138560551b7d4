"""The streaming MT policy and stage: units cut from committed source text, append-only target commits, every
source sentence translated by finish(), nothing translated twice; the cascade's choice of pivot."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError
from engine.events import Commit, Partial
from engine.mt.cascade import parse_targets, plan_target, speech_task
from engine.mt.policy import MTPolicyConfig, SourceSegmenter
from engine.mt.stage import MTStage, TargetCommit, TargetPartial, TargetRoute
from engine.mt.translate import Translation

TEXT = (
    "Good morning everyone. Today we will talk about the weather in London, and the price of coffee! "
    "Is it expensive? The meeting starts at nine o'clock, please bring your notes and a laptop"
)


class FakeTranslator:
    """Upper-cases the source and tags it: a translation that shows exactly which source text it came from."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None]] = []

    def translate(self, text, source, target, num_beams=None, prefix=()):
        self.calls.append((text, num_beams))
        return Translation(f"<{target}:{text.upper()}>", (), True)


def _commits(text: str, cuts: list[int]) -> list[Commit]:
    """The text committed in pieces cut at the given word counts, one second of speech per word."""
    words = text.split(" ")
    bounds = sorted({0, len(words), *[c % len(words) for c in cuts]})
    out = []
    for a, b in zip(bounds, bounds[1:]):
        out.append(Commit(text=" " + " ".join(words[a:b]), start_s=float(a), end_s=float(b)))
    return out


def _run(stage: MTStage, commits: list[Commit]) -> list:
    events = []
    for c in commits:
        events += stage.feed(Partial(text=" more words"), c.start_s)
        events += stage.feed(c, c.end_s + 0.3)
    events += stage.feed(Partial(text=""), commits[-1].end_s + 0.4)
    return events + stage.finish(commits[-1].end_s + 0.5)


def test_sentences_become_units_with_their_times() -> None:
    """Each sentence end cuts a unit; its times span the commits it came from; the rest waits."""
    seg = SourceSegmenter()
    assert seg.commit(" Good morning", 0.0, 1.0, 1.2) == []
    units = seg.commit(" everyone. Today we", 1.0, 3.0, 3.2)
    assert [(u.text, u.start_s, u.end_s, u.reason) for u in units] == [("Good morning everyone.", 0.0, 3.0, "sentence")]
    assert seg.pending == "Today we"
    seg.partial(" will talk")
    assert seg.tail == "Today we will talk"
    assert seg.tick(10.0) == []  # the speaker is still talking (a partial is pending)
    seg.partial("")
    assert [u.reason for u in seg.tick(3.2 + 2.0)] == ["pause"]
    assert seg.pending == ""


def test_clause_unit_waits_for_enough_words() -> None:
    """Clause units end at a comma only once the clause is long enough."""
    seg = SourceSegmenter(MTPolicyConfig(unit="clause", min_clause_words=4))
    assert seg.commit(" Yes, we", 0, 1, 1) == []
    units = seg.commit(" will talk about it, and then", 1, 2, 2)
    assert [u.text for u in units] == ["Yes, we will talk about it,"]
    assert seg.finish(3)[0].text == "and then"


@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=200), max_size=12), unit=st.sampled_from(["sentence", "clause"])
)
def test_commits_are_append_only_complete_and_never_duplicated(cuts: list[int], unit: str) -> None:
    """However the source is committed, the target commits translate every source word exactly once, in order,
    and finish() leaves nothing untranslated."""
    fake = FakeTranslator()
    stage = MTStage([TargetRoute("de", fake, "en")], MTPolicyConfig(unit=unit, partials=True, partial_every_s=0))
    events = _run(stage, _commits(TEXT, cuts))
    commits = [e for e in events if isinstance(e, TargetCommit)]
    sources = [c.source_text for c in commits]
    assert " ".join(sources).split() == TEXT.split()  # every word once, in order
    assert "".join(c.text for c in commits) == " ".join(f"<de:{s.upper()}>" for s in sources)
    assert stage.text("de") == "".join(c.text for c in commits).strip()
    assert all(c.end_s >= c.start_s and c.latency_s >= 0 for c in commits)
    if unit == "sentence":
        assert sum(s.endswith((".", "!", "?")) for s in sources) == 3  # each sentence its own unit
    partials = [e for e in events if isinstance(e, TargetPartial)]
    assert partials and partials[-1].text == ""  # finish() clears the partial


def test_partials_are_greedy_and_commits_use_the_checkpoint_beam() -> None:
    """Partials re-translate the growing tail greedily; a commit translates its unit once with the default beam."""
    fake = FakeTranslator()
    stage = MTStage([TargetRoute("de", fake, "en")], MTPolicyConfig(partial_every_s=0))
    stage.feed(Commit(" Good morning", 0.0, 1.0), 1.0)
    stage.feed(Commit(" everyone.", 1.0, 2.0), 2.0)
    assert ("Good morning", 1) in fake.calls
    assert fake.calls.count(("Good morning everyone.", None)) == 1


def test_several_targets_share_one_source_stream() -> None:
    """One stage captions the same units in several languages; a target equal to the speech language passes through."""
    fake = FakeTranslator()
    stage = MTStage(
        [TargetRoute("de", fake, "en"), TargetRoute("es", fake, "en"), TargetRoute("en", None, None)],
        MTPolicyConfig(partials=False),
    )
    events = _run(stage, _commits(TEXT, [3, 9]))
    by_target = {t: [e for e in events if isinstance(e, TargetCommit) and e.target == t] for t in ("de", "es", "en")}
    assert [e.source_text for e in by_target["de"]] == [e.source_text for e in by_target["es"]]
    assert stage.text("en") == " ".join(e.source_text for e in by_target["de"])
    assert stage.text("es").startswith("<es:GOOD MORNING EVERYONE.>")


class Bundle:
    def __init__(self, name: str, src, tgt) -> None:
        self.name, self.source_languages, self.target_languages = name, src, tgt

    def can_translate(self, source, target) -> bool:
        return (self.source_languages is None or source in self.source_languages) and (
            self.target_languages is None or target in self.target_languages
        )


def test_cascade_prefers_direct_pairs_and_pivots_through_english() -> None:
    """Direct MT when a checkpoint reads the spoken language, else Whisper translates to English first."""
    en_de, de_en, many = (
        Bundle("en-de", ("en",), ("de",)),
        Bundle("de-en", ("de",), ("en",)),
        Bundle("nllb", ("en", "de", "es", "fr"), ("en", "de", "es", "fr")),
    )
    assert plan_target("de", "en", [en_de]).kind == "direct"
    assert plan_target("de", "en", [en_de]).task == "transcribe"
    pivot = plan_target("de", "fr", [en_de])
    assert (pivot.kind, pivot.task, pivot.mt_source) == ("pivot", "translate", "en")
    assert plan_target("de", None, [en_de]).kind == "pivot"  # unknown speaker: English pivot is always right
    assert plan_target("es", None, [many]).kind == "direct"  # a multilingual model reads the detected language
    assert plan_target("en", "de", [de_en]).mt is de_en  # a direct MT pair beats Whisper's own translation
    assert plan_target("en", "de", []).kind == "none" and plan_target("en", "de", []).task == "translate"
    assert plan_target("fr", "fr", []).task == "transcribe"
    with pytest.raises(ConfigError, match="no way to caption in 'ja'"):
        plan_target("ja", "en", [en_de])
    with pytest.raises(ConfigError, match="both to transcribe and to translate"):
        speech_task([plan_target("de", "en", [en_de]), plan_target("en", "fr", [])])
    assert parse_targets("de, es,de") == ["de", "es"]
    with pytest.raises(ConfigError):
        parse_targets("de;rm -rf")


def test_a_language_the_model_cannot_read_skips_that_target_without_failing() -> None:
    """When the MT model refuses the spoken language, the stream goes on: that target gets no text, others do."""

    class Refusing(FakeTranslator):
        def translate(self, text, source, target, num_beams=None, prefix=()):
            raise ConfigError(f"this M2M100 model does not know the source language {source!r}")

    stage = MTStage(
        [TargetRoute("de", Refusing(), "xx"), TargetRoute("es", FakeTranslator(), "en")], MTPolicyConfig(partials=False)
    )
    events = _run(stage, _commits("Hello there. Good bye.", []))
    assert {e.target for e in events if isinstance(e, TargetCommit)} == {"es"}
    assert stage.text("de") == ""


class WordTokenizer:
    """Words as tokens (ids into a growing table); every token starts a word."""

    def __init__(self) -> None:
        self.words: list[str] = []

    def ids(self, words: list[str]) -> tuple[int, ...]:
        out = []
        for w in words:
            if w not in self.words:
                self.words.append(w)
            out.append(self.words.index(w))
        return tuple(out)

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.words[i] for i in ids)

    def is_word_start(self, token: int) -> bool:
        return True


class WordTranslator:
    """A translation that is the upper-cased source, word for word, honouring a forced prefix of tokens: what a
    monotonic model would do, so local agreement has something to agree on."""

    def __init__(self) -> None:
        self.bundle = type("B", (), {"family": "marian", "tokenizer": WordTokenizer()})()
        self.prefixes: list[tuple[int, ...]] = []

    def translate(self, text, source, target, num_beams=None, prefix=()):
        tok = self.bundle.tokenizer
        ids = tok.ids(text.upper().split())
        self.prefixes.append(tuple(prefix))
        ids = tuple(prefix) + ids[len(prefix) :]
        return Translation(tok.decode(list(ids)), ids, True)


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=200), max_size=12))
def test_agreement_commits_early_words_once_and_finishes_every_sentence(cuts: list[int]) -> None:
    """unit="agreement": words two consecutive translations agree on are committed before the sentence ends, the
    sentence's final translation continues them (forced prefix), and the target is every word exactly once."""
    tr = WordTranslator()
    stage = MTStage([TargetRoute("de", tr, "en")], MTPolicyConfig(unit="agreement", partial_every_s=0))
    commits = _commits(TEXT, cuts)
    events = _run(stage, commits)
    got = [e for e in events if isinstance(e, TargetCommit)]
    assert "".join(e.text for e in got).split() == TEXT.upper().split()
    assert " ".join(e.source_text for e in got if e.source_text).split() == TEXT.split()
    if len(commits) >= 6:  # enough pieces inside the long sentences for two translations to agree early
        assert any(not e.source_text for e in got)
        assert any(p for p in tr.prefixes)
