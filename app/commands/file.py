"""`dragoman file AUDIO`: translate or transcribe a whole recording and print the text (or JSON segments)."""

from __future__ import annotations

import argparse
import json
import sys

from app.cli import add_model_options, language_arg
from app.translation import add_mt_options
from engine.errors import ConfigError
from engine.languages import known_languages, parse_language


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("file", help="translate or transcribe a recording (WAV/FLAC/MP3/OGG, any rate)")
    p.add_argument("audio", help="path of the recording")
    add_model_options(p)
    # beam 5 as faster-whisper: on the German dev set greedy lost several BLEU (benchmarks/README.md)
    p.add_argument("--beam", type=int, default=5, help="beam size (default %(default)s; 1 = greedy, fastest)")
    p.add_argument("--json", action="store_true", help="print segments with start/end times as JSON")
    p.add_argument("--vtt", default=None, help="also write WebVTT captions to this file")
    p.add_argument("--srt", default=None, help="also write SRT captions to this file")
    add_mt_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.audio import load_audio
    from engine.models.loading import load_model

    if args.beam < 1:
        raise ConfigError("--beam must be at least 1")
    language = language_arg(args.language)  # not a code at all: fails before the audio and the model
    audio = load_audio(args.audio)  # before the model: a bad file fails fast
    bundle = load_model(args.model, args.device)
    parse_language(language, known_languages(bundle))  # a code the model does not know
    duration = len(audio) / 16000
    # a bar on stderr for long files on a terminal; the loops report the seconds done, tqdm counts increments
    bar = tqdm(
        total=round(duration, 1),
        desc="decoding",
        unit="s",
        leave=False,
        disable=not (sys.stderr.isatty() and duration > 30),
        bar_format="{l_bar}{bar:30}| {n:.0f}/{total:.0f} s",
    )
    if args.target or args.mt_model:  # captions in other languages: speech, then MT (app/translation.py)
        from app.translation import run_file_targets

        return run_file_targets(args, bundle, audio, language, bar)
    from engine.backend import OfflineOptions, transcribe

    result = transcribe(
        bundle,
        audio,
        OfflineOptions(task=args.task, language=language, beam_size=args.beam),
        progress=lambda done, total: bar.update(done - bar.n),
    )
    language, segments = result.language, result.segments
    bar.close()
    if args.json:
        out = {
            "language": language,
            "task": args.task,
            "text": "".join(s.text for s in segments).strip(),
            "segments": [
                {"start": round(s.start_s, 2), "end": round(s.end_s, 2), "text": s.text.strip()} for s in segments
            ],
        }
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        print(" ".join(s.text.strip() for s in segments if s.text.strip()))
    if args.vtt or args.srt:
        from app.captions import write_captions
        from engine.events import Commit

        commits = [Commit(text=s.text, start_s=s.start_s, end_s=s.end_s) for s in segments]
        for path in (args.vtt, args.srt):
            if path:
                write_captions(commits, path)
    return 0
