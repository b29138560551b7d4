"""Who may use the server: a token (optional) and an Origin allowlist (same origin by default). Sans-I/O.

Checked on every WebSocket handshake and every API request (app.py), before any session or upload exists:
a refused client gets 401 or 403 and never reaches the protocol. The token is accepted the way each family of
clients sends it: `Authorization: Bearer T` (OpenAI's clients, scripts), `Authorization: Token T` (Deepgram's
SDK) or `?token=T` (browsers, which cannot set headers on a WebSocket). The static page is not protected: it holds no data, and the
browser needs it to learn the token from its own URL (`/?token=...`, forwarded by web/app.js).

Secrets never reach logs: `AccessConfig.__repr__` hides the token, and `RedactingFilter` scrubs tokens and
Authorization headers from websockets' own (debug) request logging.
"""

from __future__ import annotations

import hmac
import logging
import re
import urllib.parse
from dataclasses import dataclass
from typing import Protocol

ANY_ORIGIN = "*"
TOKEN_SCHEMES = ("bearer", "token")  # Authorization schemes that carry the server token


class Headers(Protocol):
    """Case-insensitive header lookup (Starlette's and websockets' Headers both are)."""

    def get(self, key: str, default: None = None) -> str | None: ...


@dataclass(frozen=True)
class AccessConfig:
    """Access rules for /ws. The defaults (no token, same origin) suit loopback; set a token before exposing it."""

    token: str | None = None  # required on every WebSocket when set: `Authorization: Bearer T` or `?token=T`
    # Origins allowed besides the server's own ("https://captions.example.org", "null" for file://, "*" for any).
    # Browsers always send Origin; clients without one (scripts, not a browser page) are not subject to it.
    allowed_origins: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never print the token into logs or tracebacks
        return f"AccessConfig(token={'<set>' if self.token else None}, allowed_origins={self.allowed_origins!r})"


@dataclass(frozen=True)
class Denial:
    status: int  # 401 or 403
    reason: str  # for the HTTP status line and body; never contains what the client sent


def subprotocol_token(headers: Headers) -> tuple[str, str] | None:
    """`Sec-WebSocket-Protocol: token, T` (or `bearer, T`): how Deepgram's browser SDK authenticates, since a browser
    cannot set headers on a WebSocket. The scheme (to accept as the subprotocol) and the token."""
    offered = [v.strip() for v in (headers.get("Sec-WebSocket-Protocol") or "").split(",")]
    if len(offered) >= 2 and offered[0].lower() in TOKEN_SCHEMES and offered[1]:
        return offered[0], offered[1]
    return None


def request_token(headers: Headers, raw_path: str) -> str | None:
    """The token a request carries: the Authorization header (Bearer or Token) first, then the WebSocket subprotocol
    pair (`token, T`), else `?token=`."""
    auth = headers.get("Authorization")
    if auth is not None:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() in TOKEN_SCHEMES and value.strip():
            return value.strip()
    offered = subprotocol_token(headers)
    if offered is not None:
        return offered[1]
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(raw_path).query).get("token")
    return values[0] if values else None


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison (its time depends only on the lengths, not on where the strings differ)."""
    if given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", "surrogatepass"))


def _normalise_origin(origin: str) -> str | None:
    """'HTTPS://Host:443' -> 'https://host'; None for anything that is not scheme://host[:port]."""
    parts = urllib.parse.urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    default = 443 if parts.scheme == "https" else 80
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + ("" if port in (None, default) else f":{port}")


def origin_allowed(origin: str | None, host: str | None, secure: bool, allowed: tuple[str, ...]) -> bool:
    """Same origin (the page this server served: scheme and Host match), or listed in `allowed`."""
    if origin is None:
        return True  # not a browser page; the token (if any) still applies
    if ANY_ORIGIN in allowed or origin in allowed:
        return True  # exact entries also cover "null"
    mine = _normalise_origin(origin)
    if mine is None:
        return False
    if host and mine == _normalise_origin(f"{'https' if secure else 'http'}://{host}"):
        return True
    return any(mine == _normalise_origin(a) for a in allowed if a != "null")


def check_access(access: AccessConfig, headers: Headers, raw_path: str, secure: bool) -> Denial | None:
    """None if the handshake may proceed, else why not. Origin first: a foreign page learns nothing about tokens."""
    if not origin_allowed(headers.get("Origin"), headers.get("Host"), secure, access.allowed_origins):
        return Denial(403, "Forbidden: this page's origin may not use this server (see --allow-origin)")
    if access.token is not None and not token_matches(access.token, request_token(headers, raw_path)):
        return Denial(401, "Unauthorized: a valid token is required (Authorization: Bearer or Token, or ?token=)")
    return None


_SECRETS = [
    (re.compile(r"(?i)([?&]token=)[^&\s#'\"]*"), r"\1<redacted>"),
    (re.compile(r"(?i)(authorization:\s*)[^\r\n'\"]*"), r"\1<redacted>"),
]


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with token query values, Authorization header values and the given literal secrets replaced."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


class RedactingFilter(logging.Filter):
    """A logger filter that formats each record and scrubs secrets from it (websockets logs request lines at DEBUG)."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # exception text is rendered later by handlers: render it here, scrubbed, and drop the original
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        return True
