"""What makes the dashboard safe to expose: login, sessions, CSRF, a Host/Origin allow-list, headers.

Every request passes one middleware, in this order (`/healthz` and `/readyz`, and `/metrics` with
the scraper's bearer token, are answered before it: see PROBE_PATHS and WebSecurity):
- its Host header must name an allowed host (loopback names, the bind address, this machine's
  names, and any `--web-allowed-host`): a DNS-rebinding page reaches us under a foreign name;
- a state-changing request (anything but GET/HEAD/OPTIONS) must come from an allowed Origin (when the
  browser says one, and not from another site by Sec-Fetch-Site) and carry its session's CSRF token
  in the `X-CSRF-Token` header (the login and logout forms carry it as a field);
- with credentials configured, every path but the login page needs a logged-in session;
- every answer carries the security headers (a CSP that allows only our own scripts).
Sessions live in memory (a restart logs everyone out), at most MAX_SESSIONS, the oldest dropped.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from ctxscope.collector.web.auth import Credentials

COOKIE = "ctxscope_session"
CSRF_HEADER = "x-csrf-token"
SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 10_000
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
PUBLIC_PATHS = frozenset({"/login", "/static/style.css"})
# Liveness and readiness answer any GET, whatever its Host, without a login: an orchestrator's probe
# comes by address and carries no session, and they tell nothing but up or not (readiness names its
# failing checks, their errors only to a logged-in session).
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
METRICS_PATH = "/metrics"
# A metrics token shorter than this is refused: a scraper's token is a machine secret, not a password.
MIN_METRICS_TOKEN_CHARS = 32
# plotly.js sets inline styles on the elements it draws; scripts come only from this origin.
HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",  # no-referrer would make form posts say `Origin: null`
    "cross-origin-opener-policy": "same-origin",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts_for(bind_host: str, extra: tuple[str, ...] = ()) -> frozenset[str]:
    """Host names the dashboard answers to: loopback, the bind address (unless a wildcard), this
    machine's names when it listens beyond loopback, and `extra` (names a proxy or DNS gives it)."""
    hosts = set(LOOPBACK_NAMES) | {h.lower().strip("[]") for h in extra}
    bind = bind_host.lower().strip("[]")
    if bind not in ("0.0.0.0", "::", ""):
        hosts.add(bind)
    if not is_loopback(bind):
        hosts |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(hosts)


def check_bind(host: str, credentials: Credentials | None, insecure: bool) -> None:
    """Refuse to serve beyond loopback without a login, unless told so explicitly."""
    if credentials is None and not insecure and not is_loopback(host):
        raise ValueError(
            f"the dashboard would listen on {host} without a login: give --web-credentials FILE "
            "(see `ctxscope collector passwd`), bind to 127.0.0.1, or pass --web-insecure"
        )


@dataclass(frozen=True)
class WebSecurity:
    """The dashboard's access settings; the default is open, for loopback only."""

    credentials: Credentials | None = None
    allowed_hosts: frozenset[str] = LOOPBACK_NAMES
    secure_cookie: bool = False
    # SHA-256 of the bearer token that opens /metrics to a scraper without a session (any Host: a
    # browser never sends it by itself, so no rebinding page can)
    metrics_token_sha256: bytes | None = None


class MetricsTokenError(ValueError):
    """A metrics token file the collector cannot use."""


def load_metrics_token(path: Path) -> bytes:
    """The SHA-256 of the token in `path` (its first line, surrounding whitespace dropped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MetricsTokenError(f"cannot read the metrics token file {path}: {exc}") from exc
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_METRICS_TOKEN_CHARS:
        raise MetricsTokenError(
            f"the metrics token in {path} has {len(token)} characters; it needs at least"
            f" {MIN_METRICS_TOKEN_CHARS}, e.g. from"
            " `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return hashlib.sha256(token.encode("utf-8")).digest()


def bearer_matches(request: Request, expected_sha256: bytes | None) -> bool:
    """Whether the request carries `Authorization: Bearer <the metrics token>`, compared in constant time."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if expected_sha256 is None or scheme.lower() != "bearer" or not token.strip():
        return False
    given = hashlib.sha256(token.strip().encode("utf-8", "surrogatepass")).digest()
    return secrets.compare_digest(given, expected_sha256)


def web_security(
    bind_host: str,
    credentials_file: Path | None,
    allowed_hosts: tuple[str, ...] = (),
    insecure: bool = False,
    secure_cookie: bool = False,
    metrics_token_file: Path | None = None,
) -> WebSecurity:
    """The settings of `collector run`: credentials and metrics token loaded, the bind checked, hosts
    listed."""
    credentials = Credentials.load(credentials_file) if credentials_file else None
    check_bind(bind_host, credentials, insecure)
    token = load_metrics_token(metrics_token_file) if metrics_token_file else None
    return WebSecurity(credentials, allowed_hosts_for(bind_host, allowed_hosts), secure_cookie, token)


@dataclass
class Session:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    user: str | None = None
    expires: float = field(default_factory=lambda: time.monotonic() + SESSION_TTL_S)


class Sessions:
    """Session id -> Session. Anonymous sessions (any page view makes one) are bounded, the least
    recently used dropped first; they never push out logged-in sessions, which only a login makes."""

    def __init__(self) -> None:
        self._anonymous: OrderedDict[str, Session] = OrderedDict()
        self._users: dict[str, Session] = {}

    def get(self, session_id: str | None) -> Session | None:
        key = session_id or ""
        session = self._users.get(key) or self._anonymous.get(key)
        if session is None:
            return None
        if session.expires < time.monotonic():
            self.drop(key)
            return None
        if key in self._anonymous:
            self._anonymous.move_to_end(key)
        return session

    def add(self, session: Session) -> str:
        session_id = secrets.token_urlsafe(32)
        if session.user is None:
            self._anonymous[session_id] = session
            while len(self._anonymous) > MAX_SESSIONS:
                self._anonymous.popitem(last=False)
        else:
            now = time.monotonic()
            self._users = {k: v for k, v in self._users.items() if v.expires >= now}
            self._users[session_id] = session
        return session_id

    def drop(self, session_id: str | None) -> None:
        self._anonymous.pop(session_id or "", None)
        self._users.pop(session_id or "", None)


def host_of(value: str) -> str:
    """The host name of a Host header or an Origin, lower case, without port or brackets."""
    netloc = value if "://" in value else f"//{value}"
    try:
        return (urlsplit(netloc).hostname or "").lower()
    except ValueError:  # a malformed bracketed IPv6 address or port
        return ""


def same_token(given: str, expected: str) -> bool:
    """Whether a CSRF token a client sent is the session's, in constant time. Compared as UTF-8 bytes:
    `compare_digest` raises on a str with a non-ASCII character, which a client may send at will."""
    return secrets.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


def refusal(request: Request, security: WebSecurity, session: Session | None) -> Response | None:
    """Why `request` may not go on (as the answer to send), or None."""
    if request.method in SAFE_METHODS and (
        request.url.path in PROBE_PATHS
        or (request.url.path == METRICS_PATH and bearer_matches(request, security.metrics_token_sha256))
    ):
        return None
    if host_of(request.headers.get("host", "")) not in security.allowed_hosts:
        return JSONResponse({"detail": "unknown Host"}, 400)
    if request.method not in SAFE_METHODS:
        origin = request.headers.get("origin")
        if origin is not None and (
            urlsplit(origin).scheme not in ("http", "https") or host_of(origin) not in security.allowed_hosts
        ):
            return JSONResponse({"detail": "request from a foreign origin"}, 403)
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return JSONResponse({"detail": "cross-site request"}, 403)
        if request.url.path not in ("/login", "/logout"):
            token = request.headers.get(CSRF_HEADER, "")
            if session is None or not same_token(token, session.csrf):
                return JSONResponse({"detail": "missing or wrong CSRF token"}, 403)
    logged_in = session is not None and session.user is not None
    if security.credentials is not None and request.url.path not in PUBLIC_PATHS and not logged_in:
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(f"/login?next={request.url.path}", 303)
        return JSONResponse({"detail": "log in first"}, 401)
    return None


def set_cookie(response: Response, request: Request, security: WebSecurity, session_id: str) -> None:
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=SESSION_TTL_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=security.secure_cookie or request.url.scheme == "https",
    )


Handler = Callable[[Request], Awaitable[Response]]


def middleware(security: WebSecurity, sessions: Sessions) -> Callable[[Request, Handler], Awaitable[Any]]:
    """The HTTP middleware enforcing `security`; pages find their session in `request.state.session`
    (a new one gets its cookie when the answer is an HTML page)."""

    async def guard(request: Request, call_next: Handler) -> Response:
        session_id = request.cookies.get(COOKIE)
        session = sessions.get(session_id)
        response = refusal(request, security, session)
        if response is None:
            request.state.session = session or Session()
            response = await call_next(request)
            if session is None and response.headers.get("content-type", "").startswith("text/html"):
                set_cookie(response, request, security, sessions.add(request.state.session))
        response.headers.update(HEADERS)
        return response

    return guard
