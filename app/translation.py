"""Captions in other languages, for every command: the --target / --mt-model flags, and the offline cascade that
`file` runs (speech -> source text -> sentences -> translations). The streaming side is engine.mt.stage."""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

from engine.errors import ConfigError

log = logging.getLogger(__name__)


def add_mt_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=None, metavar="LANG[,LANG...]",
                   help="caption in these languages (e.g. de or de,es) through an MT model after the speech "
                        "model; see docs/mt.md")
    p.add_argument("--mt-model", action="append", default=None, metavar="NAME|DIR|HUB_ID",
                   help="MT checkpoint (opus-mt / Marian, M2M100, NLLB-200): a directory or a hub id; repeat "
                        "for several (each target uses the first that can reach it)")
    p.add_argument("--mt-unit", default="sentence", choices=("sentence", "clause"),
                   help="what one translation covers in live captions (default %(default)s)")


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
    device = "cpu" if getattr(args, "device", "auto") == "auto" else args.device
    models = load_mt_models(args.mt_model, device)
    return targets, plan_all(targets, spoken, models, speech_tasks)


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
    then translate sentence by sentence; prints the target text, or JSON with source and target per segment."""
    import json

    from engine.transcribe import TranscribeOptions, transcribe

    if bundle.family != "whisper":
        raise ConfigError("--target needs a Whisper speech model (it transcribes any language)")
    if language is not None and language not in bundle.tokenizer.language_ids:
        raise ConfigError(f"unknown language {language!r}; use a code such as de, fr, es or 'auto'")
    targets, plans = mt_setup(args, language, ("transcribe", "translate"))
    transcripts = {}
    for task in dict.fromkeys(p.task for p in plans):
        transcripts[task] = transcribe(bundle, audio, TranscribeOptions(task=task, language=language,
                                                                         beam_size=args.beam),
                                       progress=lambda done, total: bar.update(done))
    bar.close()
    translators: dict = {}
    results = {}
    for plan in plans:
        tr = transcripts[plan.task]
        results[plan.target] = (tr, translate_segments(tr.segments, plan, tr.language, translators))
    first = targets[0]
    tr, segs = results[first]

    def block(segments) -> dict:
        return {"text": " ".join(s.text for s in segments if s.text).strip(),
                "segments": [{"start": round(s.start_s, 2), "end": round(s.end_s, 2), "source_text": s.source_text,
                              "text": s.text} for s in segments]}

    if args.json:
        out = {"language": tr.language, "task": plans[0].task, "target": first,
               "source_text": " ".join(s.text.strip() for s in tr.segments if s.text.strip()), **block(segs)}
        if len(targets) > 1:
            out["targets"] = {t: {"source_text": " ".join(s.text.strip() for s in r[0].segments if s.text.strip()),
                                  **block(r[1])} for t, r in results.items()}
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
