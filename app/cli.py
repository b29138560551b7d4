"""`dragoman` command line: one subcommand per module in app/commands/ (each has add_parser() and run())."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from engine.errors import ConfigError, EngineError
from engine.languages import parse_language

# Each module defines `add_parser(subparsers) -> argparse.ArgumentParser` and `run(args) -> int`.
COMMANDS = ("file", "stream", "serve", "mic")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dragoman", description="Streaming speech translation and captioning.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"app.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"app.commands.{name}":
                continue  # command not built (yet)
            raise
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options every model-using command shares."""
    p.add_argument(
        "--model", default=None, help="embedded 'whisper-base' (default), a checkpoint directory or a hub id"
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs")
    p.add_argument(
        "--task",
        default="translate",
        choices=("translate", "transcribe"),
        help="translate to the model's target language, or transcribe in the spoken language",
    )
    p.add_argument("--language", default="auto", help="source language code (de, fr, ...) or 'auto' to detect")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the model (default: all cores)")


def language_arg(value: str | None) -> str | None:
    """--language as a code, None for 'auto'; ConfigError (before any model loads) when it is not a code. Whether
    the model knows it is checked once it has loaded (engine/languages.py)."""
    return parse_language(value)


# Streaming flags -> SessionConfig fields. Every flag defaults to None ("not given"), so the defaults live in one
# place, SessionConfig (engine/streaming/config.py), for every entry point: stream, mic, serve and the protocol.
SESSION_FLAGS = {
    "policy": "policy",
    "mode": "mode",
    "chunk": "chunk_s",
    "commit": "commit_unit",
    "last_window": "last_window_s",
    "window_retry": "window_retry_logprob",
    "context": "context_s",
}


def add_session_options(p: argparse.ArgumentParser) -> None:
    """--policy/--mode/--chunk/--commit/--last-window/--window-retry/--context, shared by the streaming commands
    (stream, mic, serve)."""
    p.add_argument(
        "--policy",
        default=None,
        choices=("alignatt", "local-agreement"),
        help="what to commit: AlignAtt (attention reaches the audio's end) or agreement of consecutive "
        "hypotheses (default: the engine's, see SessionConfig)",
    )
    p.add_argument(
        "--mode",
        default=None,
        choices=("incremental", "exact"),
        help="reuse the committed prefix's decoder cache (incremental) or re-fill it (exact) (default: the engine's)",
    )
    p.add_argument(
        "--chunk",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds of new speech between decoder updates (default: 0.5 when transcribing, 1.0 when translating)",
    )
    p.add_argument(
        "--commit",
        default=None,
        choices=("word", "clause", "sentence"),
        help="what a commit may end at before a pause: any word (lowest latency), a clause or a whole "
        "sentence (best translation, a few seconds later) (default: the engine's)",
    )
    p.add_argument(
        "--last-window",
        type=float,
        default=None,
        metavar="SECONDS",
        help="fill the encoder window of a segment's last update with silence up to this many seconds (30: "
        "Whisper's whole window; better translations for about 1.6x the compute) (default: 0, off)",
    )
    p.add_argument(
        "--window-retry",
        type=_retry_logprob,
        default=None,
        metavar="LOGPROB",
        help="decode a segment's last update again on Whisper's whole 30 s window when its average "
        "log-probability per token is below this (-0.75: the best translations measured, for about 1.3-1.5x the "
        "compute and later final captions); 'off': never (default: off)",
    )
    p.add_argument(
        "--context",
        type=float,
        default=None,
        metavar="SECONDS",
        help="decode each segment after the previous one (its audio in front, its text given) when that one "
        "lasted at most this many seconds: better translations of short utterances, for more compute; 0: off "
        "(default: 4.5 when translating, 0 when transcribing)",
    )


def _retry_logprob(value: str) -> float | None:
    """--window-retry: an average log-probability, or 'off' (None: SessionConfig's off, the default)."""
    if value.strip().lower() == "off":
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a log-probability such as -0.75, or off; got {value!r}") from None


def session_config(args: argparse.Namespace):  # -> engine.streaming.config.SessionConfig (torch loads lazily)
    """The SessionConfig the flags describe: SessionConfig's defaults, overridden only by the flags given."""
    from engine.streaming.config import SessionConfig

    fields = {"task": args.task, "language": language_arg(args.language)}
    for flag, name in SESSION_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            fields[name] = value
    if fields.get("chunk_s", 1.0) <= 0:
        raise ConfigError("--chunk must be a positive number of seconds")
    return SessionConfig(**fields)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "threads", None) and not getattr(args, "replicas", None):  # (--replicas: the replicas' threads)
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args._run(args) or 0)
    except EngineError as e:
        print(f"dragoman: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dragoman: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
