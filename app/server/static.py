"""The page's static files over plain HTTP: only files under web/, only known types, nothing hidden."""

from __future__ import annotations

import posixpath
import urllib.parse
from pathlib import Path

from starlette.responses import Response

WEB_DIR = Path(__file__).resolve().parents[2] / "web"  # app/server/static.py -> the repository root

# Only these file types are served; anything else in web/ is a 404 rather than a guess.
MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",  # also required for ES modules and AudioWorklet modules
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}


def resolve_static(web_dir: Path, raw_path: str) -> Path | None:
    """The file under `web_dir` a request path names, or None (missing, hidden, outside web_dir, unknown type)."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(raw_path).path)
    if "\x00" in path or "\\" in path or not path.startswith("/"):
        return None
    if path.endswith("/"):
        path += "index.html"
    # normpath collapses '..' lexically; any segment that still climbs or hides (".git", "..") is refused
    parts = [s for s in path.split("/") if s]
    if any(s.startswith(".") for s in parts) or posixpath.normpath(path) != "/" + "/".join(parts):
        return None
    root = web_dir.resolve()
    candidate = root.joinpath(*parts).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file() or candidate.suffix not in MIME_TYPES:
        return None
    return candidate


# every plain response carries these: the page is tiny, so always revalidate (upgrades show at once); no sniffing;
# and a page opened as /?token=... must not leak the token to other sites through the Referer header
COMMON_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def http_response(status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        body,
        status_code=status,
        media_type=None,
        headers={"Content-Type": content_type, **COMMON_HEADERS, **(headers or {})},
    )


def static_response(web_dir: Path, raw_path: str) -> Response:
    """An HTTP response for a GET of `raw_path` from `web_dir`: the file with its MIME type, or a 404."""
    file = resolve_static(web_dir, raw_path)
    if file is None:
        return http_response(404, b"404 not found\n", "text/plain; charset=utf-8")
    return http_response(200, file.read_bytes(), MIME_TYPES[file.suffix])
