"""Access at the server's edge (app/server/auth.py, TLS): the token, the Origin allowlist, https and wss.

These need sessions to open but no model work, so they are quick.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from app.server.auth import AccessConfig, redact
from tests.server_clients import TOKEN, ready, serving


async def test_token_is_required_and_never_logged(backend, caplog):
    """With a token, /ws needs it (header or query; else 401); the page stays public; the token never hits the logs."""
    caplog.set_level(logging.DEBUG)  # everything, websockets' request lines included
    async with serving(backend, access=AccessConfig(token=TOKEN)) as srv:
        for url, headers in [
            (srv.ws_url, None),
            (srv.ws_url + "?token=wrong", None),
            (srv.ws_url, {"Authorization": "Bearer " + TOKEN[:-1]}),
            (srv.ws_url + "?token=" + TOKEN[:-1] + "X", None),
        ]:
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
    server_log = "\n".join(
        r.getMessage() + (r.exc_text or "") for r in caplog.records if not r.name.startswith("websockets.client")
    )
    # the requests were logged (DEBUG; ASGI lower-cases header names) ...
    assert "GET /ws" in server_log and "authorization" in server_log.lower()
    assert TOKEN not in server_log and TOKEN[:-1] not in server_log  # ... without the token or near-misses
    assert TOKEN not in repr(AccessConfig(token=TOKEN))
    assert TOKEN not in redact(f"GET /ws?a=1&token={TOKEN} HTTP/1.1\nAuthorization: Bearer {TOKEN}")


async def test_origin_must_be_same_or_allowed(backend):
    """Browsers from a foreign origin get 403; the server's own origin, listed origins and non-browsers get in."""
    async with serving(backend, access=AccessConfig(allowed_origins=("https://captions.example.org",))) as srv:
        own = f"http://127.0.0.1:{srv.port}"
        for origin, ok in [
            (own, True),
            (None, True),
            ("https://captions.example.org", True),
            ("https://evil.example.com", False),
            (f"http://localhost:{srv.port}", False),
            (f"https://127.0.0.1:{srv.port}", False),
            ("null", False),
        ]:
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
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"  # tmp_path: never committed
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
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
        with pytest.raises(Exception):  # noqa: B017 (a reset, an EOF or a bad reply, as the TLS server drops it)
            async with connect(srv.ws_url.replace("wss://", "ws://"), open_timeout=5):
                pass
