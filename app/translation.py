"""Captions in other languages, for every command: the --target / --mt-model flags, and the offline cascade that
`file` runs (speech -> source text -> sentences -> translations). The streaming side is engine.mt.stage."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import ConfigError

if TYPE_CHECKING:
    from app.server.mt import ServerTranslation

log = logging.getLogger(__name__)


def add_mt_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        default=None,
        metavar="LANG[,LANG...]",
        help="caption in these languages (e.g. de or de,es) through an MT model after the speech model; see docs/mt.md",
    )
    p.add_argument(
        "--mt-model",
        action="append",
        default=None,
        metavar="NAME|DIR|HUB_ID",
        help="MT checkpoint (opus-mt / Marian, M2M100, NLLB-200): a directory or a hub id; repeat "
        "for several (each target uses the first that can reach it)",
    )
    p.add_argument(
        "--mt-unit",
        default="sentence",
        choices=("sentence", "clause", "agreement"),
        help="what one translation covers in live captions: whole sentences, clauses, or sentences "
        "whose agreed first words are committed early (default %(default)s; docs/mt.md)",
    )
    p.add_argument(
        "--mt-quantize",
        default="auto",
        choices=("auto", "none"),
        help="auto: int8 MT decoder on a CPU (about 5x faster steps); none: fp32, exactly as "
        "transformers (default %(default)s)",
    )


@dataclass(frozen=True)
class TranslatedSegment:
    start_s: float
    end_s: float
    source_text: str
    text: str


def mt_setup(args: argparse.Namespace, spoken: str | None, speech_tasks: tuple[str, ...]):
    """(targets, plans) for the flags; ([], []) without --target. Loads the MT models."""
    from engine.mt.cascade import load_mt_models, parse_targets, plan_all

    targets = parse_targets(getattr(args, "target", None))
    if not targets:
        if getattr(args, "mt_model", None):
            raise ConfigError("--mt-model needs --target LANG (the language to caption in)")
        return [], []
    # the speech model's --device (mic: --model-device): a GPU runs both models; "auto" picks it when present
    device = getattr(args, "device", "auto") or "auto"
    models = load_mt_models(args.mt_model, device, getattr(args, "mt_quantize", "auto"))
    plans = plan_all(targets, spoken, models, speech_tasks)
    for plan in plans:  # the chosen route (direct or pivot), as the log says it
        print(f"dragoman: captions in {plan.describe()}", file=sys.stderr, flush=True)
    return targets, plans


def server_translation(args: argparse.Namespace) -> ServerTranslation | None:
    """What `serve` offers for `start.target`: None without --target; ConfigError when a target cannot be reached
    from English or with --language. Loads the models."""
    from app.cli import language_arg
    from app.server.mt import ServerTranslation

    spoken = language_arg(getattr(args, "language", None))
    targets, plans = mt_setup(args, spoken, ("transcribe", "translate"))  # loads the models; checks each target
    if not targets:
        return None
    # the models some offered target uses; a session's plan (its spoken language) chooses among them
    models = list({id(pl.mt): pl.mt for pl in plans if pl.mt is not None}.values())
    return ServerTranslation(tuple(targets), models, getattr(args, "mt_unit", "sentence"))


def translate_segments(segments, plan, spoken: str | None, translators: dict) -> list[TranslatedSegment]:
    """Speech segments (start_s, end_s, text) -> sentences with their translations for one plan (offline).

    The sentences are cut by the streaming policy's segmenter, so `file` and live captions translate the same
    units."""
    from engine.mt.cascade import routes_for
    from engine.mt.policy import MTPolicyConfig, SourceSegmenter

    seg = SourceSegmenter(MTPolicyConfig(unit="sentence", pause_s=1e9))
    units = []
    for s in segments:
        units += seg.commit(" " + s.text.strip(), s.start_s, s.end_s, s.end_s)
    units += seg.finish(segments[-1].end_s if segments else 0.0)
    route = routes_for([plan], translators)[0]
    source = route.source or spoken
    out = []
    for u in units:
        text = u.text if route.translator is None else route.translator.translate(u.text, source, plan.target).text
        out.append(TranslatedSegment(u.start_s, u.end_s, u.text, text.strip()))
    return out


def run_file_targets(args: argparse.Namespace, bundle, audio, language: str | None, bar) -> int:
    """`dragoman file --target ...`: transcribe (or translate, for a pivot) once per speech task the plans need,
    then translate sentence by sentence; prints the target text, or JSON with source and target per segment.
    `language` was checked against the model by the caller (`dragoman file`)."""
    import json

    from engine.backend import OfflineOptions, make_backend, transcribe

    tasks = make_backend(bundle).tasks
    if "transcribe" not in tasks:
        raise ConfigError("--target needs a speech model that transcribes any language (Whisper)")
    targets, plans = mt_setup(args, language, tasks)
    transcripts = {}
    for task in dict.fromkeys(p.task for p in plans):
        transcripts[task] = transcribe(
            bundle,
            audio,
            OfflineOptions(task=task, language=language, beam_size=args.beam),
            progress=lambda done, total: bar.update(done - bar.n),
        )
    bar.close()
    translators: dict = {}
    results = {}
    for plan in plans:
        tr = transcripts[plan.task]
        results[plan.target] = (tr, translate_segments(tr.segments, plan, tr.language, translators))
    first = targets[0]
    tr, segs = results[first]

    def block(segments) -> dict:
        return {
            "text": " ".join(s.text for s in segments if s.text).strip(),
            "segments": [
                {"start": round(s.start_s, 2), "end": round(s.end_s, 2), "source_text": s.source_text, "text": s.text}
                for s in segments
            ],
        }

    if args.json:
        out = {
            "language": tr.language,
            "task": plans[0].task,
            "target": first,
            "source_text": " ".join(s.text.strip() for s in tr.segments if s.text.strip()),
            **block(segs),
        }
        if len(targets) > 1:
            out["targets"] = {
                t: {"source_text": " ".join(s.text.strip() for s in r[0].segments if s.text.strip()), **block(r[1])}
                for t, r in results.items()
            }
        print(json.dumps(out, ensure_ascii=False, indent=2))
    elif len(targets) == 1:
        print(block(segs)["text"])
    else:
        for t, r in results.items():
            print(f"[{t}] {block(r[1])['text']}")
    if args.vtt or args.srt:
        from app.captions import write_captions
        from engine.events import Commit

        commits = [Commit(text=" " + s.text, start_s=s.start_s, end_s=s.end_s) for s in segs if s.text]
        for path in (args.vtt, args.srt):
            if path:
                write_captions(commits, path)
    return 0


class LiveTranslation:
    """The MT stage behind a live command (stream, mic): source events in, target events out, with the
    speech session's language for models that read whatever is spoken, and the latency of every target commit."""

    def __init__(self, stage, language_of: Callable[[], str | None] = lambda: None) -> None:
        self.stage = stage
        self.language_of = language_of
        self.latencies: dict[str, list[float]] = {t: [] for t in stage.targets}

    @property
    def primary(self) -> str:
        return self.stage.targets[0]

    def feed(self, event, t_audio: float) -> list:
        self.stage.set_spoken_language(self.language_of())
        return self._seen(self.stage.feed(event, t_audio))

    def finish(self, t_audio: float) -> list:
        self.stage.set_spoken_language(self.language_of())
        return self._seen(self.stage.finish(t_audio))

    def _seen(self, events: list) -> list:
        from engine.mt.stage import TargetCommit

        for e in events:
            if isinstance(e, TargetCommit):
                self.latencies[e.target].append(e.latency_s)
        return events

    def summary(self) -> str:
        """One line per target: units committed and latency from the end of source speech to the target commit."""
        import numpy as np

        lines = []
        for target, lat in self.latencies.items():
            if lat:
                p50, p90 = np.percentile(lat, [50, 90])
                lines.append(
                    f"{target}: {len(lat)} units, latency from source speech to target commit "
                    f"p50 {p50:.1f} s, p90 {p90:.1f} s"
                )
            else:
                lines.append(f"{target}: nothing committed")
        return "\n".join(lines)


def live_translation(args: argparse.Namespace, config, backend):
    """(SessionConfig with the speech task the targets need, LiveTranslation or None) for a live command."""
    from dataclasses import replace

    from engine.mt.cascade import routes_for, speech_task
    from engine.mt.policy import MTPolicyConfig
    from engine.mt.stage import MTStage

    tasks = tuple(backend.tasks)
    targets, plans = mt_setup(args, config.language, tasks)
    if not targets:
        return config, None
    if "transcribe" not in tasks:
        raise ConfigError("--target needs a speech model that transcribes any language (Whisper)")
    config = replace(config, task=speech_task(plans))
    stage = MTStage(routes_for(plans), MTPolicyConfig(unit=getattr(args, "mt_unit", "sentence")))
    return config, LiveTranslation(stage)


def target_record(event, t_audio: float) -> dict:
    """A target event as one JSON object of an event log."""
    from engine.mt.stage import TargetCommit

    record = {
        "type": "target_commit" if isinstance(event, TargetCommit) else "target_partial",
        "target": event.target,
        "text": event.text,
        "source_text": event.source_text,
    }
    if isinstance(event, TargetCommit):
        record.update(start_s=event.start_s, end_s=event.end_s, latency_s=round(event.latency_s, 3))
    record["t_audio"] = round(t_audio, 3)
    return record


def as_caption_event(event):
    """A target event as the Commit/Partial that caption writers and the terminal display take."""
    from engine.events import Commit, Partial
    from engine.mt.stage import TargetCommit

    if isinstance(event, TargetCommit):
        return Commit(text=event.text, start_s=event.start_s, end_s=event.end_s)
    return Partial(text=event.text)
