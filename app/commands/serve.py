"""`dragoman serve`: the live-caption web page and its WebSocket API on one port."""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

from app.cli import add_model_options


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="serve the live-caption page and its WebSocket API (open the printed address)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default loopback; 0.0.0.0 exposes the server to the network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0 picks a free one)")
    add_model_options(p)  # --task/--language are chosen per session in the page; they are not used here
    p.add_argument("--max-sessions", type=int, default=4, help="simultaneous caption sessions (more get 'busy')")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL",
                   help="STUN/TURN server for WebRTC, e.g. stun:stun.example.org:3478 or "
                        "user:pass@turn:turn.example.org:3478 (repeatable; none needed on loopback or a LAN)")
    return p


def run(args: argparse.Namespace) -> int:
    from app.webrtc import parse_ice_server
    from engine.backend import make_backend
    from engine.errors import ConfigError
    from engine.models.loading import load_model

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be within 0..65535, got {args.port}")
    if args.max_sessions < 1:
        raise ConfigError("--max-sessions must be at least 1")
    try:
        ice_servers = tuple(parse_ice_server(s) for s in args.ice_server)
    except ValueError as e:
        raise ConfigError(str(e)) from None

    print(f"dragoman: loading model {args.model or 'whisper-base (embedded)'} ...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    backend = make_backend(load_model(args.model, args.device))
    print(f"dragoman: model {backend.name} ready in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    return asyncio.run(_serve(backend, args, ice_servers))


async def _serve(backend: object, args: argparse.Namespace, ice_servers: tuple) -> int:
    from app.server import DragomanServer, ServerConfig
    from app.webrtc import WebRTCConfig
    from engine.scheduler import Engine, EngineConfig

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    config = ServerConfig(host=args.host, port=args.port, webrtc=WebRTCConfig(ice_servers=ice_servers))
    async with Engine(backend, EngineConfig(max_sessions=args.max_sessions)) as engine:
        server = DragomanServer(engine, config)
        try:
            await server.start()
        except OSError as e:
            print(f"dragoman: error: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
            return 2
        print(f"Dragoman is live at {server.url}  (Ctrl-C to stop)", flush=True)
        await stop.wait()
        print("dragoman: stopping", file=sys.stderr, flush=True)
        await server.stop()
    return 0
