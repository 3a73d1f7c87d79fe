"""Pure ASGI middleware that refuses requests a browser or a proxy could be tricked into.

- `RequestGuard`, before the app runs:
  - a Host header the service does not serve (DNS rebinding: a page on evil.example that
    resolves to 127.0.0.1 would otherwise reach the service as same-origin) -> 400;
  - a state-changing request from another site (CSRF: a form on any page can post to a
    local service; browsers send `Origin` and `Sec-Fetch-Site` with it) -> 403;
  - both `Transfer-Encoding` and `Content-Length` (the shape of request smuggling) -> 400;
  - a multipart body declared in a charset other than UTF-8 -> 415.
- `SecurityHeaders`, on every answer: `X-Content-Type-Options: nosniff`, a frame policy
  (`X-Frame-Options: DENY`, CSP `frame-ancestors 'none'`), no referrer, and on everything
  but FastAPI's own docs pages a Content-Security-Policy that lets a report's inline style
  and SVG render and nothing else load or run; the studio's pages (routes/studio.py) get
  one that runs the package's own script and style sheet, still nothing inline, and
  `Referrer-Policy: same-origin`: under `no-referrer` a browser sends `Origin: null` with
  a form's POST, which the CSRF guard above must refuse, so the studio's forms could not
  post at all; `same-origin` still sends no referrer to any other site.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mondrian.service.errors import error_body

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Reports are self-contained HTML: inline CSS, inline SVG charts, no script.
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The interactive docs (Swagger UI, served locally by service/docs.py): the frame policy.
DOCS_CSP = "frame-ancestors 'none'"
DOCS_PATHS = ("/docs", "/redoc")
# The studio: its own script and style sheet, fetch and EventSource to this origin, the
# photo preview as a blob: URL; no inline script or style, no other origin.
STUDIO_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
STUDIO_PREFIXES = ("/studio/", "/static/studio/")


def content_policy(path: str) -> str:
    if path.startswith(DOCS_PATHS):
        return DOCS_CSP
    if path == "/" or path.startswith(STUDIO_PREFIXES):
        return STUDIO_CSP
    return REPORT_CSP


def host_name(value: str) -> str:
    """The name part of a Host header or URL authority: 'a:80' -> 'a', '[::1]:5' -> '::1'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


class RequestGuard:
    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        hosts = {host_name(h) for h in allowed_hosts}
        self.any_host = "*" in hosts
        self.allowed = frozenset(hosts - {"*"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, code, message = refusal
        response = JSONResponse(
            error_body(code, message), status_code=status, headers={"Connection": "close"}
        )
        await response(scope, receive, send)

    def serves(self, host: str) -> bool:
        return self.any_host or host_name(host) in self.allowed

    def refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        headers: dict[bytes, list[bytes]] = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(name, []).append(value)
        host = b"".join(headers.get(b"host", [b""])[:1]).decode("latin-1")
        if not self.serves(host):
            return 400, "invalid_host", f"this service does not serve the host {host[:80]!r}"
        if b"transfer-encoding" in headers and b"content-length" in headers:
            return 400, "bad_request", "both Transfer-Encoding and Content-Length were sent"
        if scope.get("method") not in SAFE_METHODS:
            cross = self.cross_site(headers, host)
            if cross is not None:
                return 403, "cross_site", cross
        content_type = b"".join(headers.get(b"content-type", [b""])[:1]).decode("latin-1")
        if not utf8_multipart(content_type):
            return 415, "unsupported_media_type", "multipart bodies must be UTF-8"
        return None

    def cross_site(self, headers: dict[bytes, list[bytes]], host: str) -> str | None:
        """Why a state-changing request looks cross-site, or None. Clients that send no
        Origin (curl, scripts, the CLI) are not browsers and are let through."""
        site = b"".join(headers.get(b"sec-fetch-site", [b""])[:1]).decode("latin-1").lower()
        if site == "cross-site":
            return "cross-site requests may not change state here"
        origins = headers.get(b"origin")
        if not origins:
            return None
        origin = origins[0].decode("latin-1")
        netloc = urlsplit(origin).netloc
        # The whole authority, port included: another local app (localhost:3000) is
        # another origin too.
        if origin == "null" or not netloc or netloc.lower() != host.strip().lower():
            return f"the origin {origin[:80]!r} may not change state here"
        return None


def utf8_multipart(content_type: str) -> bool:
    """False for a multipart type that names a charset other than UTF-8."""
    kind, _, params = content_type.partition(";")
    if not kind.strip().lower().startswith("multipart/"):
        return True
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower() in ("utf-8", "utf8")
    return True


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        policy = content_policy(path)
        referrer = "same-origin" if policy == STUDIO_CSP else "no-referrer"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = referrer
                headers["Content-Security-Policy"] = policy
            await send(message)

        await self.app(scope, receive, with_headers)
