"""The page over plain HTTP from the same port as the WebSocket: MIME types, 404s, no way out of web/."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.server import DragomanServer, ServerConfig
from app.server.static import WEB_DIR, resolve_static


async def http_get(port: int, raw_path: str) -> tuple[int, dict[str, str], bytes]:
    """A raw HTTP/1.1 GET, so the path reaches the server exactly as written (no client-side normalisation)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {raw_path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


@pytest.fixture
async def static_server():
    # No engine: serving files never touches it
    async with DragomanServer(engine=None, config=ServerConfig(port=0)) as server:
        yield server


@pytest.mark.parametrize(
    "path, mime, marker",
    [
        ("/", "text/html; charset=utf-8", b"<title>Dragoman"),
        ("/index.html", "text/html; charset=utf-8", b"<title>Dragoman"),
        ("/app.js", "text/javascript; charset=utf-8", b"PROTOCOL_VERSION"),
        ("/capture-worklet.js", "text/javascript; charset=utf-8", b"registerProcessor"),
        ("/captions.js", "text/javascript; charset=utf-8", b"toWebVTT"),
        ("/style.css", "text/css; charset=utf-8", b".partial"),
        ("/?reload=1", "text/html; charset=utf-8", b"<title>Dragoman"),
    ],
)
async def test_serves_page_files_with_mime_types(static_server, path, mime, marker):
    """Every file the page needs is served with the MIME type browsers require (modules, worklets)."""
    status, headers, body = await http_get(static_server.port, path)
    assert status == 200
    assert headers["content-type"] == mime
    assert headers["x-content-type-options"] == "nosniff"
    assert int(headers["content-length"]) == len(body)
    assert marker in body


@pytest.mark.parametrize(
    "path",
    [
        "/nope.html",
        "/../pyproject.toml",
        "/%2e%2e/pyproject.toml",
        "/..%2fpyproject.toml",
        "/web/../../pyproject.toml",
        "/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/.hidden",
        "/..\\pyproject.toml",
        "/%00index.html",
        "//etc/passwd",
    ],
)
async def test_missing_and_escaping_paths_are_404(static_server, path):
    """Missing files, hidden files and any attempt to climb out of web/ get a plain 404."""
    status, _, body = await http_get(static_server.port, path)
    assert status == 404
    assert b"root:" not in body and b"[project]" not in body


def test_resolve_static_refuses_symlink_escape(tmp_path: Path):
    """A symlink inside web/ that points outside it is not followed."""
    web = tmp_path / "web"
    web.mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    (web / "link.txt").symlink_to(tmp_path / "secret.txt")
    (web / "ok.txt").write_text("ok")
    assert resolve_static(web, "/ok.txt") == (web / "ok.txt").resolve()
    assert resolve_static(web, "/link.txt") is None
    assert resolve_static(WEB_DIR, "/") == (WEB_DIR / "index.html").resolve()


async def test_websocket_path_is_not_a_file(static_server):
    """A plain GET of /ws is the WebSocket endpoint, answered with 426 Upgrade Required, not a file."""
    status, _, _ = await http_get(static_server.port, "/ws")
    assert status == 426
