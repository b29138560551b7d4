"""Every streaming entry point (stream, mic, serve, the protocol's `start`) takes its defaults from SessionConfig."""

from __future__ import annotations

import dataclasses

import pytest

from app.cli import build_parser, session_config
from app.server.connection import start_session_config
from app.server.protocol import ProtocolLimits, parse_start
from engine.streaming.config import SessionConfig

# each command with no flags beyond what it needs to parse at all
BARE = {"stream": ["stream", "talk.wav"], "mic": ["mic"], "serve": ["serve"]}


def _built(command: str, extra: list[str] = ()) -> SessionConfig:
    args = build_parser().parse_args(BARE[command] + list(extra))
    if command == "serve":
        from app.commands.serve import server_config

        return server_config(args).session
    return session_config(args)


def _apart_from_task_language(config: SessionConfig) -> SessionConfig:
    return dataclasses.replace(config, task=SessionConfig.task, language=SessionConfig.language)


@pytest.mark.parametrize("command", sorted(BARE))
def test_command_without_flags_builds_the_default_session(command):
    """A command given no streaming flags builds exactly SessionConfig() (apart from task and language)."""
    assert _apart_from_task_language(_built(command)) == SessionConfig()


def test_protocol_start_without_template_builds_the_default_session():
    """A client's bare `start` on a server without a template gets SessionConfig()'s defaults."""
    start = parse_start({"type": "start", "task": "transcribe", "language": "de"}, ProtocolLimits())
    config = start_session_config(None, start)
    assert (config.task, config.language) == ("transcribe", "de")
    assert _apart_from_task_language(config) == SessionConfig()


@pytest.mark.parametrize("command", sorted(BARE))
def test_flags_override_only_their_fields(command):
    """--policy/--mode/--chunk/--commit/--last-window/--window-retry/--context change their own fields and leave
    every other default alone."""
    other = "local-agreement" if SessionConfig().policy == "alignatt" else "alignatt"
    mode = "exact" if SessionConfig().mode == "incremental" else "incremental"
    unit = "sentence" if SessionConfig().commit_unit != "sentence" else "word"
    flags = ["--policy", other, "--mode", mode, "--chunk", "2.5", "--commit", unit, "--last-window", "30"]
    flags += ["--window-retry", "-0.9", "--context", "2.5"]
    config = _built(command, flags)
    assert (config.policy, config.mode, config.chunk_s, config.commit_unit) == (other, mode, 2.5, unit)
    assert (config.last_window_s, config.window_retry_logprob, config.context_s) == (30.0, -0.9, 2.5)
    expected = dataclasses.replace(
        SessionConfig(),
        policy=other,
        mode=mode,
        chunk_s=2.5,
        commit_unit=unit,
        last_window_s=30.0,
        window_retry_logprob=-0.9,
        context_s=2.5,
    )
    assert _apart_from_task_language(config) == expected


def test_serve_template_reaches_each_start():
    """`serve --policy X` makes X the policy of every client session, with the client's task and language."""
    from app.commands.serve import server_config

    args = build_parser().parse_args(["serve", "--policy", "local-agreement"])
    template = server_config(args).session
    config = start_session_config(template, parse_start({"type": "start", "language": "fr"}, ProtocolLimits()))
    assert (config.policy, config.language) == ("local-agreement", "fr")


def test_task_and_language_flags_reach_the_session():
    """--task/--language still set the session's task and language."""
    config = _built("stream", ["--task", "transcribe", "--language", "de"])
    assert (config.task, config.language) == ("transcribe", "de")


def test_update_interval_and_held_words_follow_the_task():
    """Transcription updates every 0.5 s and holds back about a second's worth of edge words (2); translation
    updates every 1.0 s and holds back none (benchmarks/README.md); explicit values win, nonsense is refused."""
    from engine.errors import ConfigError
    from engine.streaming.session import SessionConfig

    assert (SessionConfig(task="transcribe").update_s, SessionConfig(task="transcribe").held_words) == (0.5, 2)
    assert (SessionConfig(task="translate").update_s, SessionConfig(task="translate").held_words) == (1.0, 0)
    assert SessionConfig(task="transcribe", chunk_s=1.0).held_words == 1  # the 1.0 s measurement
    assert SessionConfig(task="transcribe", hold_words=0).held_words == 0
    assert SessionConfig(task="translate", chunk_s=0.25).update_s == 0.25
    with pytest.raises(ConfigError, match="hold_words"):
        SessionConfig(hold_words=-1)
    with pytest.raises(ConfigError, match="chunk_s"):
        SessionConfig(chunk_s=0.0)


@pytest.mark.parametrize("command", sorted(BARE))
def test_window_retry_off_turns_the_retry_off_and_garbage_is_refused(command, capsys):
    """--window-retry off: no whole-window retry; a value that is neither a number nor off is an argparse error
    naming the flag, not a traceback."""
    config = _built(command, ["--window-retry", "off"])
    assert config.task == "translate" and config.window_retry_logprob is None
    with pytest.raises(SystemExit):
        _built(command, ["--window-retry", "sometimes"])
    assert "--window-retry" in capsys.readouterr().err
