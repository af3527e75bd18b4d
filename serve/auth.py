"""Who may talk to the server: a token on non-loopback hosts, loopback Host names otherwise.

Whatever the host, a request that changes state (any method but GET, HEAD, OPTIONS) from a web
page of another origin is refused: browsers say where a request comes from (`Sec-Fetch-Site`,
`Origin`), and another site, or another port of 127.0.0.1, is not this server's page. Clients
that are not browsers send neither header and pass.

With a token (required when the server listens beyond loopback, as Jupyter does) every request
carries it: `Authorization: Bearer T`, an `X-FocSAM-Token: T` header, `?token=T` (which also sets
a cookie, so the page's own requests carry it) or that cookie. Without one, only requests whose
Host header names a loopback address pass, so a web page cannot reach the server through a DNS
name rebound to 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import secrets
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse

COOKIE = "focsam_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _hostname(host_header: str) -> str:
    if host_header.startswith("["):  # [::1]:8000
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def foreign_origin(headers: Headers) -> str | None:
    """Where a cross-origin browser request comes from, or None for this server's own page and
    for clients that are not browsers."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"a {site} page ({headers.get('origin', 'origin not sent')})"
    origin = headers.get("origin")
    if origin is not None and (origin == "null" or urlsplit(origin).netloc != headers.get("host")):
        return f"the page at {origin}"
    return None


class AccessGuard:
    """ASGI middleware: refuses a request with 401/403 and a message, or passes it on."""

    def __init__(self, app, token: str | None):
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        if scope["method"] not in SAFE_METHODS and (origin := foreign_origin(headers)):
            response = JSONResponse({"detail": f"refused: a request from {origin} may not change "
                                     "this server's state; use the page it serves"},
                                    status_code=403)
            return await response(scope, receive, send)
        if self.token is None:
            if not is_loopback(_hostname(headers.get("host", ""))):
                response = JSONResponse({"detail": "this server answers only requests to a "
                                         "loopback address (127.0.0.1 or localhost); start it "
                                         "with --host to serve other names, with a token"},
                                        status_code=403)
                return await response(scope, receive, send)
            return await self.app(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        offered = [query, headers.get("x-focsam-token"), self._cookie(headers)]
        authorization = headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            offered.append(authorization[7:].strip())
        if not any(t and secrets.compare_digest(t.encode(), self.token.encode()) for t in offered):
            detail = ("a token is required: open the URL the server printed (…?token=…) or send "
                      "'Authorization: Bearer TOKEN'")
            if any(offered):
                detail = "wrong token: " + detail
            return await JSONResponse({"detail": detail}, status_code=401)(scope, receive, send)
        if query is None:
            return await self.app(scope, receive, send)

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append(
                    "set-cookie", f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict")
            await send(message)

        return await self.app(scope, receive, send_with_cookie)

    @staticmethod
    def _cookie(headers: Headers) -> str | None:
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return value
        return None
