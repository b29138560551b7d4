"""`dragoman serve`'s flags (app/commands/serve.py): limits, access and session defaults of the server config."""

from __future__ import annotations

import pytest

from tests.server_clients import TOKEN


def test_serve_flags_make_the_config(monkeypatch, tmp_path):
    """serve's flags become limits, access and session defaults; the token may come from DRAGOMAN_TOKEN."""
    from app.cli import build_parser
    from app.commands.serve import server_config
    from app.server.protocol import ConnectionProtocol
    from engine.errors import ConfigError

    monkeypatch.setenv("DRAGOMAN_TOKEN", TOKEN)
    args = build_parser().parse_args(
        [
            "serve",
            "--task",
            "transcribe",
            "--language",
            "fr",
            "--max-realtime",
            "2",
            "--idle-timeout",
            "5",
            "--max-session-time",
            "60",
            "--max-connections",
            "3",
            "--max-frame-kb",
            "64",
            "--allow-origin",
            "https://a.example",
        ]
    )
    config = server_config(args)
    assert config.access.token == TOKEN and config.access.allowed_origins == ("https://a.example",)
    assert (config.server_limits.max_realtime, config.server_limits.idle_timeout_s) == (2.0, 5.0)
    assert (config.server_limits.max_session_s, config.server_limits.max_connections) == (60.0, 3)
    assert config.limits.max_audio_frame_bytes == 64 * 1024 and config.host == "127.0.0.1"
    proto = ConnectionProtocol(config.limits, config.defaults)
    omitted = proto.receive_text('{"type": "start"}')
    assert (omitted.task, omitted.language) == ("transcribe", "fr")  # omitted fields take serve's defaults
    proto.session_ended()
    explicit = proto.receive_text('{"type": "start", "task": "translate", "language": null}')
    assert (explicit.task, explicit.language) == ("translate", None)  # an explicit null still means "detect"
    for bad in (
        ["serve", "--token", "short"],
        ["serve", "--language", "german"],
        ["serve", "--certfile", str(tmp_path / "missing.pem"), "--keyfile", str(tmp_path / "k.pem")],
        ["serve", "--certfile", str(tmp_path)],
        ["serve", "--idle-timeout", "0"],
    ):
        with pytest.raises(ConfigError):
            server_config(build_parser().parse_args(bad))
