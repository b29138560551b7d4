"""Access and limits at the server's edge: token, Origin, TLS, connection cap, idle and session timeouts, rates.

These need sessions to open but little or no model work (silence is skipped by the VAD), so they are quick.
"""
from __future__ import annotations

import asyncio
import datetime
import json
import logging
import ssl
import time
import urllib.request

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.server import DragomanServer, ServerConfig
from app.server.auth import AccessConfig, redact
from app.server.limits import ServerLimits
from app.runtime import Engine, EngineConfig
from tests.server_clients import pcm16

TOKEN = "s3cret-T0ken-4f9a2b"


async def ready(ws) -> dict:
    await ws.send('{"type": "start", "language": "de"}')
    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert msg["type"] == "ready", msg
    return msg


async def collect(ws, timeout_s: float = 30.0) -> tuple[list[dict], int | None]:
    """Every message until the server closes; and the close code."""
    out: list[dict] = []
    try:
        async with asyncio.timeout(timeout_s):
            async for raw in ws:
                out.append(json.loads(raw))
    except ConnectionClosed:
        pass
    return out, (ws.close_code if ws.close_code is not None else None)


def serving(backend, **config):
    class _Ctx:
        async def __aenter__(self):
            self.engine = Engine(backend, EngineConfig(max_sessions=3))
            await self.engine.start()
            self.server = DragomanServer(self.engine, ServerConfig(port=0, **config))
            await self.server.start()
            return self.server

        async def __aexit__(self, *exc):
            await self.server.stop()
            await self.engine.stop()

    return _Ctx()


async def test_token_is_required_and_never_logged(backend, caplog):
    """With a token, /ws needs it (header or query; else 401); the page stays public; the token never hits the logs."""
    caplog.set_level(logging.DEBUG)  # everything, websockets' request lines included
    async with serving(backend, access=AccessConfig(token=TOKEN)) as srv:
        for url, headers in [(srv.ws_url, None), (srv.ws_url + "?token=wrong", None),
                             (srv.ws_url, {"Authorization": "Bearer " + TOKEN[:-1]}),
                             (srv.ws_url + "?token=" + TOKEN[:-1] + "X", None)]:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 401
        async with connect(srv.ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            await ready(ws)
        async with connect(srv.ws_url + "?token=" + TOKEN) as ws:
            await ready(ws)
        page = await asyncio.to_thread(lambda: urllib.request.urlopen(srv.url + "?token=" + TOKEN, timeout=10).read())
        assert b"Dragoman" in page
    # the test's own client logs what it sends; everything the server side logged is checked
    server_log = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records
                           if not r.name.startswith("websockets.client"))
    # the requests were logged (DEBUG; ASGI lower-cases header names) ...
    assert "GET /ws" in server_log and "authorization" in server_log.lower()
    assert TOKEN not in server_log and TOKEN[:-1] not in server_log  # ... without the token or near-misses
    assert TOKEN not in repr(AccessConfig(token=TOKEN))
    assert TOKEN not in redact(f"GET /ws?a=1&token={TOKEN} HTTP/1.1\nAuthorization: Bearer {TOKEN}")


async def test_origin_must_be_same_or_allowed(backend):
    """Browsers from a foreign origin get 403; the server's own origin, listed origins and non-browsers get in."""
    async with serving(backend, access=AccessConfig(allowed_origins=("https://captions.example.org",))) as srv:
        own = f"http://127.0.0.1:{srv.port}"
        for origin, ok in [(own, True), (None, True), ("https://captions.example.org", True),
                           ("https://evil.example.com", False), (f"http://localhost:{srv.port}", False),
                           (f"https://127.0.0.1:{srv.port}", False), ("null", False)]:
            try:
                async with connect(srv.ws_url, origin=origin) as ws:
                    await ready(ws)
                assert ok, origin
            except InvalidStatus as e:
                assert not ok and e.response.status_code == 403, origin


def _self_signed(tmp_path):
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"  # tmp_path: never committed
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return certfile, keyfile


async def test_tls_serves_https_and_wss(backend, tmp_path):
    """With a certificate the page is served over https and sessions run over wss; plain ws is refused."""
    certfile, keyfile = _self_signed(tmp_path)
    async with serving(backend, certfile=certfile, keyfile=keyfile) as srv:
        assert srv.url.startswith("https://") and srv.ws_url.startswith("wss://")
        client = ssl.create_default_context(cafile=str(certfile))
        page = await asyncio.to_thread(lambda: urllib.request.urlopen(srv.url, context=client, timeout=10).read())
        assert b"Dragoman" in page
        async with connect(srv.ws_url, ssl=client, origin=f"https://127.0.0.1:{srv.port}") as ws:
            await ready(ws)
        with pytest.raises(Exception):
            async with connect(srv.ws_url.replace("wss://", "ws://"), open_timeout=5):
                pass


async def test_connection_cap_answers_503(backend):
    """Past max_connections a handshake gets 503; once one closes, a new client gets in."""
    async with serving(backend, server_limits=ServerLimits(max_connections=2)) as srv:
        a = await connect(srv.ws_url)
        b = await connect(srv.ws_url)
        with pytest.raises(InvalidStatus) as refused:
            await connect(srv.ws_url)
        assert refused.value.response.status_code == 503
        await a.close()
        async with asyncio.timeout(5):
            while srv.n_connections > 1:
                await asyncio.sleep(0.02)
        async with connect(srv.ws_url) as c:
            await ready(c)
        await b.close()


async def test_idle_connection_is_flushed_and_closed(backend):
    """A session that receives nothing for idle_timeout_s gets `timeout`, then `end`, then a 1008 close."""
    async with serving(backend, server_limits=ServerLimits(idle_timeout_s=1.0)) as srv:
        async with connect(srv.ws_url) as ws:
            await ready(ws)
            await ws.send(pcm16(np.zeros(8000, np.float32)))
            t0 = time.monotonic()
            out, code = await collect(ws)
        assert 0.8 < time.monotonic() - t0 < 10
        assert [m["code"] for m in out if m["type"] == "error"] == ["timeout"]
        assert out[-1]["type"] == "end" and code == 1008
        async with connect(srv.ws_url) as idle:  # no session at all: closed the same way
            out, code = await collect(idle)
        assert [m.get("code") for m in out] == ["timeout"] and code == 1008
        assert srv.engine.n_sessions == 0


async def test_session_time_limit_flushes_and_closes(backend):
    """A session past max_session_s gets `timeout`, its final flush and `end`, although the client keeps sending."""
    async with serving(backend, server_limits=ServerLimits(max_session_s=1.5)) as srv:
        async with connect(srv.ws_url) as ws:
            await ready(ws)

            async def keep_sending() -> None:
                try:
                    for _ in range(200):
                        await ws.send(pcm16(np.zeros(320, np.float32)))
                        await asyncio.sleep(0.02)
                except ConnectionClosed:
                    pass

            sender = asyncio.ensure_future(keep_sending())
            out, code = await collect(ws)
            sender.cancel()
        codes = [m.get("code") for m in out if m["type"] == "error"]
        assert codes == ["timeout"] and out[-1]["type"] == "end" and code == 1008


async def test_audio_faster_than_the_limit_is_read_more_slowly(backend):
    """A client pushing 30 s of audio at once is admitted at max_realtime after its burst and told rate_limited."""
    limits = ServerLimits(max_realtime=2.0, burst_audio_s=1.0)
    async with serving(backend, server_limits=limits) as srv:
        async with connect(srv.ws_url, close_timeout=1) as ws:  # the server is not reading: no polite close
            await ready(ws)
            frames = [pcm16(np.zeros(1600, np.float32))] * 300  # 30 s in 0.1 s frames
            sender = asyncio.ensure_future(asyncio.gather(*(ws.send(f) for f in frames)))
            t0 = time.monotonic()
            async with asyncio.timeout(10):
                while (msg := json.loads(await ws.recv()))["type"] != "error":
                    pass
            assert msg["code"] == "rate_limited"
            await asyncio.sleep(2.0)
            live = next(iter(srv._connections)).live
            elapsed = time.monotonic() - t0
            assert live.audio_s <= 1.0 + 2.0 * elapsed + 0.2, (live.audio_s, elapsed)
            assert live.audio_s >= 1.0 + 2.0 * (elapsed - 0.6)  # throttled, not stalled
            sender.cancel()
            ws.transport.abort()  # a polite close would wait behind 25 s of unread audio


def test_serve_flags_make_the_config(monkeypatch, tmp_path):
    """serve's flags become limits, access and session defaults; the token may come from DRAGOMAN_TOKEN."""
    from app.cli import build_parser
    from app.commands.serve import server_config
    from app.server.protocol import ConnectionProtocol
    from engine.errors import ConfigError

    monkeypatch.setenv("DRAGOMAN_TOKEN", TOKEN)
    args = build_parser().parse_args(["serve", "--task", "transcribe", "--language", "fr", "--max-realtime", "2",
                                      "--idle-timeout", "5", "--max-session-time", "60", "--max-connections", "3",
                                      "--max-frame-kb", "64", "--allow-origin", "https://a.example"])
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
    for bad in (["serve", "--token", "short"], ["serve", "--language", "german"],
                ["serve", "--certfile", str(tmp_path / "missing.pem"), "--keyfile", str(tmp_path / "k.pem")],
                ["serve", "--certfile", str(tmp_path)], ["serve", "--idle-timeout", "0"]):
        with pytest.raises(ConfigError):
            server_config(build_parser().parse_args(bad))
