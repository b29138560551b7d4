"""The cascade: speech -> source text -> target text, and how each target is reached.

For each target language the plan is the first of
  1. no MT: the target is the spoken language (Whisper transcribes), or English (Whisper translates, unless an MT
     checkpoint translates the spoken language into English directly);
  2. direct: Whisper transcribes, and an MT checkpoint translates spoken -> target;
  3. pivot: Whisper translates into English, and an MT checkpoint translates English -> target
     (also the choice when the spoken language is not known in advance and only an en -> target model exists:
     Whisper's "translate" of English speech is its English transcript).
The choice is logged at INFO. A target that no plan reaches is a ConfigError naming what the checkpoints can do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError
from .loading import MTBundle, load_mt
from .stage import TargetRoute
from .translate import Translator

log = logging.getLogger(__name__)

Task = Literal["transcribe", "translate"]


@dataclass(frozen=True)
class Plan:
    target: str
    task: Task  # what the speech model does
    mt: MTBundle | None  # None: the speech model's text is already in the target language
    mt_source: str | None  # language the MT reads; None: the spoken language (known only at run time)
    kind: Literal["none", "direct", "pivot"]

    def describe(self) -> str:
        if self.mt is None:
            return f"{self.target}: Whisper {self.task}s, no MT"
        src = self.mt_source or "spoken language"
        how = "pivot through English" if self.kind == "pivot" else "direct"
        return f"{self.target}: Whisper {self.task}s ({src}), then {self.mt.name} {src} -> {self.target} ({how})"


def plan_target(
    target: str,
    spoken: str | None,
    mt_models: list[MTBundle],
    speech_tasks: tuple[str, ...] = ("transcribe", "translate"),
) -> Plan:
    """How `target` is reached when the speaker speaks `spoken` (None: detected at run time)."""
    if "transcribe" not in speech_tasks:
        raise ConfigError("--target needs a speech model that transcribes (Whisper); this one only translates")
    if spoken is not None and target == spoken:
        return Plan(target, "transcribe", None, None, "none")
    if spoken is not None:
        for m in mt_models:
            if _known(m.source_languages, spoken) and m.can_translate(spoken, target):
                return Plan(target, "transcribe", m, spoken, "direct")
    if target == "en" and "translate" in speech_tasks:
        return Plan(target, "translate", None, None, "none")
    if spoken is None:  # a multilingual model reads whatever is spoken, once the speech model has decided
        for m in mt_models:
            if m.source_languages is not None and len(m.source_languages) > 1 and _known(m.target_languages, target):
                return Plan(target, "transcribe", m, None, "direct")
    if "translate" in speech_tasks:
        for m in mt_models:
            if m.can_translate("en", target):
                return Plan(target, "translate", m, "en", "pivot")
    can = "; ".join(f"{m.name}: {_codes(m.source_languages)} -> {_codes(m.target_languages)}" for m in mt_models)
    raise ConfigError(
        f"no way to caption in {target!r} from {spoken or 'the spoken language'}: "
        f"{'the MT models read/write ' + can if can else 'no --mt-model was given'}. "
        "Give an MT checkpoint for that pair (e.g. --mt-model Helsinki-NLP/opus-mt-en-"
        f"{target}) or a multilingual one (NLLB-200, M2M100)"
    )


def _known(codes: tuple[str, ...] | None, code: str | None) -> bool:
    return codes is not None and code in codes


def _codes(codes: tuple[str, ...] | None) -> str:
    if codes is None:
        return "?"
    return ",".join(codes) if len(codes) <= 5 else f"{len(codes)} languages"


def parse_targets(value: str | list[str] | None) -> list[str]:
    """'de,es' or ['de', 'es'] -> ['de', 'es'] (order kept, duplicates dropped)."""
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else [t for v in value for t in v.split(",")]
    out = [t.strip() for t in items if t.strip()]
    for t in out:
        if not t.replace("_", "").isalnum() or len(t) > 12:
            raise ConfigError(f"--target {t!r} is not a language code (de, fr, es, ...)")
    return list(dict.fromkeys(out))


def load_mt_models(names: list[str] | None, device: str = "cpu", quantize: str = "auto") -> list[MTBundle]:
    return [load_mt(n, device, quantize) for n in names or []]  # type: ignore[arg-type]


def plan_all(
    targets: list[str],
    spoken: str | None,
    mt_models: list[MTBundle],
    speech_tasks: tuple[str, ...] = ("transcribe", "translate"),
) -> list[Plan]:
    plans = [plan_target(t, spoken, mt_models, speech_tasks) for t in targets]
    for p in plans:
        log.info("captions in %s", p.describe())
    return plans


def routes_for(plans: list[Plan], translators: dict[str, Translator] | None = None) -> list[TargetRoute]:
    """Stage routes for plans that share one speech task; one Translator per loaded model."""
    translators = translators if translators is not None else {}
    routes = []
    for p in plans:
        tr = None
        if p.mt is not None:
            tr = translators.get(p.mt.name)
            if tr is None:
                tr = translators[p.mt.name] = Translator(p.mt)
        routes.append(TargetRoute(p.target, tr, p.mt_source))
    return routes


def speech_task(plans: list[Plan]) -> Task:
    """The one speech task a stream runs for all its targets; ConfigError when they disagree."""
    tasks = {p.task for p in plans}
    if len(tasks) > 1:
        raise ConfigError(
            "these targets need the speech model both to transcribe and to translate: "
            + "; ".join(p.describe() for p in plans)
            + ". Give the spoken language (--language) or an MT model for English -> each target"
        )
    return tasks.pop()
