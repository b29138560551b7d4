"""Operations endpoints and the ASGI app itself: /healthz for load balancers, /metrics for Prometheus (behind the
token), access rules on the API routes, and `create_app()` running under another host (its own lifespan)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from app.runtime import Engine, EngineConfig
from app.server import DragomanServer, ServerConfig, create_app
from app.server.auth import AccessConfig
from tests.server_clients import pcm16, serving

TOKEN = "ops-test-token-0e4d"


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


@pytest.fixture
async def server(backend):
    async with serving(backend, max_sessions=1, access=AccessConfig(token=TOKEN)) as srv:
        yield srv


def metrics(srv: DragomanServer) -> dict[str, float]:
    status, body, headers = get(srv.url + "metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and headers["content-type"].startswith("text/plain")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            key = sample.name + "".join(f"|{k}={v}" for k, v in sorted(sample.labels.items()))
            out[key] = sample.value
    return out


async def test_healthz_reports_readiness_without_the_token(server):
    """/healthz needs no token: 200 with capacity left, 503 while every session slot is taken; /healthz/live 200."""
    status, body, _ = await asyncio.to_thread(get, server.url + "healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["capacity_left"] == 1 and health["model_loaded"]
    async with connect(server.ws_url + "?token=" + TOKEN) as ws:
        await ws.send('{"type": "start", "language": "de"}')
        assert json.loads(await ws.recv())["type"] == "ready"
        status, body, _ = await asyncio.to_thread(get, server.url + "healthz")
        assert status == 503 and json.loads(body)["status"] == "busy"
        assert (await asyncio.to_thread(get, server.url + "healthz/live"))[0] == 200


async def test_metrics_count_sessions_audio_and_errors_behind_the_token(server):
    """/metrics is Prometheus text behind the token; sessions, audio seconds and error codes are counted."""
    assert (await asyncio.to_thread(get, server.url + "metrics"))[0] == 401
    async with connect(server.ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        await ws.send("{nope")
        assert json.loads(await ws.recv())["code"] == "bad_json"
        await ws.send('{"type": "start", "language": "de"}')
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(pcm16(np.zeros(8000, np.float32)))
        seen = await asyncio.to_thread(metrics, server)
        assert seen["dragoman_sessions_open"] == 1 and seen["dragoman_connections_open"] == 1
        await ws.send('{"type": "stop"}')
        async with asyncio.timeout(30):
            while json.loads(await ws.recv())["type"] != "end":
                pass
    seen = await asyncio.to_thread(metrics, server)
    assert seen["dragoman_sessions_total"] == 1 and seen["dragoman_audio_seconds_total"] == pytest.approx(0.5)
    assert seen["dragoman_errors_total|code=bad_json"] == 1
    assert "dragoman_commit_lag_seconds_count" in seen and "dragoman_backlog_seconds" in seen
    assert seen["dragoman_capacity_left"] == 1


async def test_api_routes_check_token_and_origin_and_refuse_plain_gets(server):
    """/v1 routes take Bearer, Token or ?token=; a foreign browser Origin is 403; GET of a socket path is 426."""
    base = server.url.rstrip("/")
    for headers, url, expected in [
        ({}, base + "/v1/models", 401),
        ({"Authorization": f"Bearer {TOKEN}"}, base + "/v1/models", 200),
        ({"Authorization": f"Token {TOKEN}"}, base + "/v1/models", 200),
        ({}, base + f"/v1/models?token={TOKEN}", 200),
        ({"Authorization": f"Bearer {TOKEN}", "Origin": "https://evil.example"}, base + "/v1/models", 403),
        ({}, base + "/v1/listen", 426),
        ({}, base + "/v1/realtime", 426),
        ({}, base + "/ws", 426),
    ]:
        status, body, _ = await asyncio.to_thread(get, url, headers)
        assert status == expected, (url, headers, status, body[:200])


def test_create_app_runs_under_another_asgi_host(backend):
    """create_app() is a plain ASGI app: a host that runs its lifespan (here Starlette's TestClient) gets the
    engine started and stopped by it, and the page, /healthz and /v1/models work."""
    from starlette.testclient import TestClient

    engine = Engine(backend, EngineConfig(max_sessions=2))
    app = create_app(engine, ServerConfig())
    with TestClient(app) as http:
        assert http.get("/healthz").json()["capacity_left"] == 2
        assert http.get("/v1/models").json()["data"][0]["id"]
        assert b"Dragoman" in http.get("/").content
        with http.websocket_connect("/ws") as ws:
            ws.send_text('{"type": "start", "language": "de"}')
            assert ws.receive_json()["type"] == "ready"
    assert engine._thread is None  # stopped with the app


@pytest.mark.slow
def test_create_app_factory_loads_its_own_engine(monkeypatch):
    """`uvicorn --factory app.server:create_app`: no arguments; the model, session count and token come from the
    environment, the model loads in the lifespan."""
    from starlette.testclient import TestClient

    monkeypatch.setenv("DRAGOMAN_MAX_SESSIONS", "3")
    monkeypatch.setenv("DRAGOMAN_TOKEN", TOKEN)
    with TestClient(create_app()) as http:
        assert http.get("/healthz").json()["max_sessions"] == 3
        assert http.get("/v1/models").status_code == 401
        assert http.get("/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_the_documented_entry_points_are_the_server_packages():
    """`from app.server import ServerConfig, create_app` and `uvicorn --factory app.server:create_app` (docs/api.md)
    reach the application module; importing the wire format alone does not import the web framework."""
    import subprocess
    import sys

    import app.server
    import app.server.app
    import app.server.config

    assert app.server.create_app is app.server.app.create_app is create_app
    assert app.server.DragomanServer is app.server.app.DragomanServer is DragomanServer
    assert app.server.ServerConfig is app.server.config.ServerConfig is ServerConfig
    code = "import sys, app.server.protocol; print('starlette' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
