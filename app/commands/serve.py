"""`dragoman serve`: the live-caption web page and its WebSocket API on one port."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from app.cli import add_model_options, add_session_options, language_arg, session_config
from app.server.limits import FileLimits, ServerLimits
from app.server.protocol import ProtocolLimits
from app.translation import add_mt_options

if TYPE_CHECKING:
    from app.server.config import ServerConfig

TOKEN_ENV = "DRAGOMAN_TOKEN"
_LIMITS = ServerLimits()
_FILES = FileLimits()


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="serve the live-caption page and its WebSocket API (open the printed address)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default loopback; 0.0.0.0 exposes the server to the network)",
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port (0 picks a free one)")
    # --task/--language are the defaults for sessions whose `start` omits them (the page always sends both)
    add_model_options(p)
    add_session_options(p)  # the session template; task/language still come from each client's `start`
    add_mt_options(p)  # the caption languages offered to `start.target` and the page (docs/mt.md)
    p.add_argument("--max-sessions", type=int, default=4, help="simultaneous caption sessions (more get 'busy')")
    access = p.add_argument_group("access (see docs/protocol.md)")
    access.add_argument(
        "--token",
        default=None,
        help=f"require this bearer token on every WebSocket (Authorization header or ?token=); "
        f"prefer the {TOKEN_ENV} environment variable, which other users cannot see in `ps`",
    )
    access.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a page origin allowed besides the server's own, e.g. https://captions.example.org "
        "('*' allows any; repeatable). Default: same origin only",
    )
    access.add_argument("--certfile", type=Path, default=None, help="TLS certificate chain (PEM): serve https/wss")
    access.add_argument("--keyfile", type=Path, default=None, help="TLS private key (PEM) for --certfile")
    limits = p.add_argument_group("limits (per connection unless stated; see docs/protocol.md)")
    limits.add_argument(
        "--max-connections",
        type=int,
        default=_LIMITS.max_connections,
        help="open WebSockets in all, with or without a session (default %(default)s)",
    )
    limits.add_argument(
        "--max-viewers",
        type=int,
        default=200,
        help="viewers per shared session (room), on top of --max-connections (default %(default)s)",
    )
    limits.add_argument(
        "--max-frame-kb",
        type=int,
        default=ProtocolLimits().max_audio_frame_bytes // 1024,
        help="largest binary audio frame in KiB (default %(default)s)",
    )
    limits.add_argument(
        "--max-realtime",
        type=float,
        default=_LIMITS.max_realtime,
        help="audio seconds accepted per wall second per session; faster clients are read more "
        "slowly (default %(default)s)",
    )
    limits.add_argument(
        "--max-backlog",
        type=float,
        default=_LIMITS.max_backlog_s,
        metavar="SECONDS",
        help="uncommitted audio per session before its socket is read more slowly (default %(default)s)",
    )
    limits.add_argument(
        "--idle-timeout",
        type=float,
        default=_LIMITS.idle_timeout_s,
        metavar="SECONDS",
        help="end a connection that sends nothing for this long (default %(default)s)",
    )
    limits.add_argument(
        "--max-session-time",
        type=float,
        default=_LIMITS.max_session_s,
        metavar="SECONDS",
        help="end (flush) a session after this long; the page reconnects (default %(default)s)",
    )
    limits.add_argument(
        "--max-upload-mb",
        type=float,
        default=_FILES.max_upload_bytes / 2**20,
        metavar="MB",
        help="largest upload to /v1/audio/transcriptions|translations (default %(default)g)",
    )
    limits.add_argument(
        "--max-file-jobs",
        type=int,
        default=_FILES.max_jobs,
        help="file transcriptions decoding or waiting; more get HTTP 429 (default %(default)s)",
    )
    limits.add_argument(
        "--shutdown-timeout",
        type=float,
        default=_LIMITS.shutdown_timeout_s,
        metavar="SECONDS",
        help="on SIGTERM/Ctrl-C, how long open sessions get to flush (default %(default)s)",
    )
    scale = p.add_argument_group("scale-out on Ray Serve (pip install 'dragoman[ray]'; see docs/deploy.md)")
    scale.add_argument(
        "--replicas",
        type=int,
        default=None,
        metavar="N",
        help="serve from N replicas (model + engine + sessions each) behind one address; "
        "--max-sessions is per replica; --port must be fixed",
    )
    scale.add_argument(
        "--max-replicas",
        type=int,
        default=None,
        metavar="M",
        help="autoscale between --replicas and M replicas on open sessions (default: fixed)",
    )
    scale.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="join this Ray cluster ('auto', host:6379, ray://host:10001) instead of starting a local one",
    )
    scale.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs each replica reserves (default 1)")
    scale.add_argument("--replica-gpus", type=float, default=0.0, help="GPUs each replica reserves (default 0)")
    scale.add_argument(
        "--ray-cpus", type=int, default=None, help="CPUs a local Ray cluster offers (default: all of this machine's)"
    )
    scale.add_argument(
        "--max-waiting",
        type=int,
        default=64,
        help="connections held waiting while every replica is full; more are refused (default %(default)s)",
    )
    p.add_argument(
        "--ice-server",
        action="append",
        default=[],
        metavar="URL",
        help="STUN/TURN server for WebRTC, e.g. stun:stun.example.org:3478 or "
        "user:pass@turn:turn.example.org:3478 (repeatable; none needed on loopback or a LAN)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from app.server.webrtc import parse_ice_server
    from engine.backend import make_backend
    from engine.errors import ConfigError
    from engine.languages import known_languages, parse_language
    from engine.models.loading import load_model

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be within 0..65535, got {args.port}")
    if args.max_sessions < 1:
        raise ConfigError("--max-sessions must be at least 1")
    try:
        ice_servers = tuple(parse_ice_server(s) for s in args.ice_server)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    config = server_config(args, ice_servers)
    if args.replicas is not None:  # Ray is imported only on this path
        return _serve_replicated(args, config)

    print(f"dragoman: loading model {args.model or 'whisper-base (embedded)'} ...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    backend = make_backend(load_model(args.model, args.device))
    print(f"dragoman: model {backend.name} ready in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    parse_language(config.defaults.language, known_languages(backend))  # a code the model does not know
    if getattr(args, "target", None) or getattr(args, "mt_model", None):
        import dataclasses

        from app.translation import server_translation

        translation = server_translation(args)
        config = dataclasses.replace(config, translation=translation)
        if translation is not None:  # (None: --target named no language, e.g. --target ,)
            print(f"dragoman: captions also in {', '.join(translation.targets)}", file=sys.stderr, flush=True)
    return asyncio.run(_serve(backend, args, config))


def server_config(args: argparse.Namespace, ice_servers: tuple = ()) -> ServerConfig:
    """The ServerConfig the serve flags describe; ConfigError (before the model loads) when they do not fit."""
    import dataclasses

    from app.server.auth import AccessConfig
    from app.server.config import ServerConfig
    from app.server.protocol import ProtocolError, Start, parse_start
    from app.server.rooms import RoomLimits
    from app.server.webrtc import WebRTCConfig
    from engine.errors import ConfigError

    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    if token is not None and (len(token) < 8 or any(c.isspace() for c in token)):
        raise ConfigError(f"the token (--token or {TOKEN_ENV}) must be at least 8 characters without spaces")
    if (args.certfile is None) != (args.keyfile is None):
        raise ConfigError("--certfile and --keyfile go together")
    for path in (args.certfile, args.keyfile):
        if path is not None and not path.is_file():
            raise ConfigError(f"TLS file not found: {path}")
    if args.max_frame_kb < 1:
        raise ConfigError("--max-frame-kb must be at least 1")
    if not args.max_upload_mb > 0 or args.max_file_jobs < 1:
        raise ConfigError("--max-upload-mb must be positive and --max-file-jobs at least 1")
    language = language_arg(args.language)  # not a code: fails here, before the model loads
    try:
        # the same rules as a client's `start`, so a bad default fails here rather than in every session
        defaults = parse_start({"type": "start", "task": args.task, "language": language}, ProtocolLimits(), Start())
        limits = ServerLimits(
            max_realtime=args.max_realtime,
            max_backlog_s=args.max_backlog,
            idle_timeout_s=args.idle_timeout,
            max_session_s=args.max_session_time,
            max_connections=args.max_connections,
            shutdown_timeout_s=args.shutdown_timeout,
        )
    except ProtocolError as e:
        raise ConfigError(e.message) from None
    return ServerConfig(
        host=args.host,
        port=args.port,
        webrtc=WebRTCConfig(ice_servers=ice_servers),
        limits=dataclasses.replace(ProtocolLimits(), max_audio_frame_bytes=args.max_frame_kb * 1024),
        defaults=dataclasses.replace(defaults, sample_rate=16000, encoding="pcm_s16le"),
        server_limits=limits,
        access=AccessConfig(token=token, allowed_origins=tuple(args.allow_origin)),
        certfile=args.certfile,
        keyfile=args.keyfile,
        session=session_config(args),
        files=FileLimits(max_upload_bytes=int(args.max_upload_mb * 2**20), max_jobs=args.max_file_jobs),
        rooms=RoomLimits(max_viewers=args.max_viewers),
    )


def _serve_replicated(args: argparse.Namespace, config: ServerConfig) -> int:
    """`--replicas N`: the same server as N Ray Serve replicas behind Ray's proxy (app/scale/ray_serve.py)."""
    import threading

    from app.scale.ray_serve import ServeCluster, cluster_config, replica_spec

    cluster = cluster_config(args)
    spec = replica_spec(args, config)
    stop = threading.Event()
    where = f"the Ray cluster at {args.ray_address}" if args.ray_address else "a local Ray cluster"
    print(f"dragoman: starting {cluster.replicas} replica(s) on {where} ...", file=sys.stderr, flush=True)
    served = ServeCluster(spec, cluster)
    try:
        served.start()
    except OSError as e:
        print(f"dragoman: error: cannot start Ray Serve: {e}", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs a SIGTERM handler that exits
        signal.signal(sig, lambda *_: stop.set())
    try:
        print(
            f"dragoman: {cluster.replicas} replica(s) ready in {served.started_in_s:.1f} s", file=sys.stderr, flush=True
        )
        _announce(served.url, served.ws_url, f"{cluster.replicas} replicas; Ctrl-C to stop", config)
        while not stop.wait(0.5):
            pass
        print(f"dragoman: stopping: draining {cluster.replicas} replica(s)", file=sys.stderr, flush=True)
        done, late = served.drain()
        print(
            f"dragoman: sessions ended on {len(done)} replica(s)"
            + (f"; not in time: {', '.join(late)}" if late else ""),
            file=sys.stderr,
            flush=True,
        )
    finally:
        served.close()
    return 0


def _announce(url: str, ws_url: str, note: str, config: ServerConfig) -> None:
    """The address on stdout; the API endpoints and whether a token is needed on stderr."""
    print(f"Dragoman is live at {url}  ({note})", flush=True)
    api, ws = url.rstrip("/"), ws_url.rsplit("/", 1)[0]
    print(
        f"dragoman: OpenAI-compatible API at {api}/v1 (realtime: {ws}/v1/realtime), Deepgram-compatible at "
        f"{ws}/v1/listen; see docs/api.md",
        file=sys.stderr,
        flush=True,
    )
    if config.access.token:
        # the token itself is never printed or logged: whoever started the server knows it
        print(
            "dragoman: a token is required: open the address with ?token=<your token> appended",
            file=sys.stderr,
            flush=True,
        )


async def _serve(backend: object, args: argparse.Namespace, config: ServerConfig) -> int:
    from app.runtime import Engine, EngineConfig
    from app.server.app import DragomanServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Engine(backend, EngineConfig(max_sessions=args.max_sessions)) as engine:
        server = DragomanServer(engine, config)
        try:
            await server.start()
        except OSError as e:
            print(f"dragoman: error: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
            return 2
        _announce(server.url, server.ws_url, "Ctrl-C to stop", config)
        await stop.wait()
        print(f"dragoman: stopping: flushing {server.n_connections} connection(s)", file=sys.stderr, flush=True)
        await server.shutdown()
    return 0
