"""What every HTTP answer carries, and how long a request body may take to arrive.

Security headers (:func:`add_security_headers`, on ``on_response_prepare``: pages, API answers,
static files, errors and WebSocket handshakes alike):

* ``Content-Security-Policy``: scripts and styles only from this server, plus the inline
  ``<script>``/``<style>`` blocks of the pages in ``control/web`` by their SHA-256 (hashed at
  start, so an edited page keeps working and nothing else inline runs); no plugins, no
  ``<base>``, forms only to this server, and ``frame-ancestors 'none'``: no other site frames
  a page (with ``X-Frame-Options: DENY`` for old browsers);
* ``X-Content-Type-Options: nosniff``; ``Referrer-Policy: no-referrer`` (a party's link
  carries its invitation token in the address: it must not leave in a ``Referer``);
* ``Strict-Transport-Security`` when the connection is TLS (the front adds it when it holds
  TLS for its workers);
* ``Server: remotecase``, without versions.

Body deadline (:func:`body_deadline`): a request's body must arrive within
``server.body_timeout`` seconds plus one second per :data:`MIN_BODY_RATE` bytes received, so a
client that sends a byte now and then (slowloris) is answered 408 and disconnected, while a
large upload on a slow but moving link goes on.

Client addresses behind the front (:func:`client_address`): see below.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web, web_response
from aiohttp.typedefs import Middleware

WEB_DIR = Path(__file__).parent.parent / "web"
SERVER_NAME = "remotecase"
MIN_BODY_RATE = 8 * 1024  # bytes per second a slow body must still keep up, past the timeout
HSTS = "max-age=31536000"
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PLAIN_HTTP_WARNING = (
    "server.host %s 不是回环地址且未配置 TLS：登录口令、令牌和证据将以明文传输；请设置 "
    "server.tls_cert 与 server.tls_key，或置于 TLS 反向代理之后仅绑定 127.0.0.1 / "
    "server.host %s is not loopback and TLS is off: passwords, tokens and evidence cross the "
    "network in clear; set server.tls_cert and server.tls_key, or bind 127.0.0.1 behind a TLS "
    "proxy"
)


def inline_hashes(web_dir: Path = WEB_DIR) -> dict[str, list[str]]:
    """CSP source expressions for the pages' inline blocks: {"script": [...], "style": [...]}."""
    found: dict[str, list[str]] = {"script": [], "style": []}
    for page in sorted(web_dir.glob("*.html")):
        for kind, body in _INLINE.findall(page.read_text(encoding="utf-8")):
            digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
            source = f"'sha256-{digest}'"
            if source not in found[kind]:
                found[kind].append(source)
    return found


def content_security_policy(web_dir: Path = WEB_DIR) -> str:
    hashes = inline_hashes(web_dir)
    return "; ".join(
        [
            "default-src 'self'",
            " ".join(["script-src 'self'", *hashes["script"]]),
            " ".join(["style-src 'self'", *hashes["style"]]),
            "img-src 'self' data: blob:",
            "media-src 'self' blob:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def security_headers(csp: str) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An ``on_response_prepare`` handler setting the headers above."""

    async def add(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers["Content-Security-Policy"] = csp
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "no-referrer"
        headers["Server"] = SERVER_NAME
        if request.secure:
            headers["Strict-Transport-Security"] = HSTS

    return add


def add_security_headers(app: web.Application) -> None:
    """Security headers on every answer of ``app`` (HSTS when it holds the TLS itself)."""
    app.on_response_prepare.append(security_headers(content_security_policy()))
    # aiohttp's answers to requests it cannot parse (400 before any application sees them)
    # take the Server header from this module constant, which names Python's and aiohttp's
    # versions: the one process-wide setting here, the same for every application
    web_response.SERVER_SOFTWARE = SERVER_NAME


def body_deadline(limit: float) -> Middleware:
    """A middleware answering 408 (and closing) when a body arrives slower than allowed.

    The handler is cancelled at the deadline, only ever while its body is still arriving;
    then aiohttp reads and drops what still comes for a moment (its lingering close) so that
    the client receives the answer before the connection closes.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        content = request.content
        if not request.body_exists or content.is_eof():
            return await handler(request)
        loop = asyncio.get_running_loop()
        start = loop.time()
        timer: asyncio.TimerHandle | None = None
        try:
            async with asyncio.timeout(None) as scope:

                def check() -> None:
                    nonlocal timer
                    if content.is_eof():
                        return  # all of it came: no deadline on the handler's own work
                    deadline = start + limit + content.total_bytes / MIN_BODY_RATE
                    if loop.time() < deadline:
                        timer = loop.call_at(deadline, check)
                    else:
                        scope.reschedule(loop.time())  # cancels the handler now

                timer = loop.call_at(start + limit, check)
                return await handler(request)
        except TimeoutError:
            if not scope.expired():
                raise  # the handler's own
        finally:
            if timer is not None:
                timer.cancel()
        answer = web.json_response(
            {
                "error": "body_timeout",
                "message": f"请求体传输过慢（{limit:.0f} 秒内未完成）/ the request body did "
                f"not arrive in time ({limit:.0f} s)",
            },
            status=408,
        )
        answer.force_close()
        return answer

    return middleware


# The client's address as the front saw it, for its workers (``server.workers`` > 1): they
# are reached from 127.0.0.1 only, so without it every login would come from the same place.
CLIENT_HEADER = "X-Remotecase-Client"
CLIENT_AUTH_HEADER = "X-Remotecase-Client-Auth"
FORWARDING_HEADERS = frozenset(
    {"x-forwarded-for", "x-real-ip", "forwarded", CLIENT_HEADER.lower(), CLIENT_AUTH_HEADER.lower()}
)


def client_auth(secret: str, address: str) -> str:
    """What vouches for ``address``: an HMAC under the secret the supervisor gave its workers."""
    return hmac.new(
        secret.encode(), b"remotecase client address\n" + address.encode(), hashlib.sha256
    ).hexdigest()


def forwarding_headers(secret: str, address: str | None) -> dict[str, str]:
    return {CLIENT_HEADER: address or "", CLIENT_AUTH_HEADER: client_auth(secret, address or "")}


def client_address(secret: str) -> Middleware:
    """A worker's middleware: ``request.remote`` becomes the address the front vouches for.

    Believed only with a valid HMAC and from a loopback peer (the front); otherwise the
    headers are ignored and the connection's own address stays. Without a secret (one
    process, no front) nothing is believed.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        claimed = request.headers.get(CLIENT_HEADER)
        if claimed is not None and secret and _loopback(request.remote):
            given = request.headers.get(CLIENT_AUTH_HEADER, "")
            if hmac.compare_digest(given, client_auth(secret, claimed)) and claimed:
                request = request.clone(remote=claimed)
        return await handler(request)

    return middleware


def _loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
