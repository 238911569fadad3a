"""The service's own routes: the pages, the API description, the officers' event stream,
``/healthz``, ``/metrics`` and the development token."""

from __future__ import annotations

import secrets

from aiohttp import web

from .appkeys import CONFIG, ERRORS, EVENTS, OPENAPI, SFU, SIGNER, SOCKETS, WATCH
from .http.jsonio import json_error, read_object
from .http.openapi import ANY_OBJECT, NOBODY, Add, json_body, op, responses, upgrade
from .http.webguard import WEB_DIR
from .metrics import render_metrics
from .sessions.tokens import valid_id


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


async def api_docs(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "api.html")


async def console(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "console.html", headers={"Cache-Control": "no-store"})


async def events(request: web.Request) -> web.WebSocketResponse:
    return await request.app[EVENTS].stream(request, request.app[SOCKETS].add)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-store"})


async def favicon(request: web.Request) -> web.FileResponse:
    """The icon every page's browser asks for (an SVG drawn by hand, control/web/favicon.svg)."""
    return web.FileResponse(
        WEB_DIR / "favicon.svg",
        headers={"Content-Type": "image/svg+xml", "Cache-Control": "max-age=86400"},
    )


STATIC = "/static/"


async def revalidate_static(request: web.Request, response: web.StreamResponse) -> None:
    """The pages' scripts, styles and catalogs are asked for again at every load (``no-cache``:
    stored, but used only once the server says it is still the same; aiohttp's ETag and
    Last-Modified make that a 304 without a body). Without it a browser kept a script it had
    cached for a tenth of the file's age and ran an old one against a new server (a console
    that still sent ``link_base`` after the server had stopped taking it from the page)."""
    if request.path.startswith(STATIC) and "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-cache"


async def healthz(request: web.Request) -> web.Response:
    sfu = request.app[SFU]
    dump = sfu.dump()
    # dev_join tells the page whether it may mint its own tokens (or must say it cannot)
    return web.json_response(
        {
            "status": "ok",
            "rooms": dump["rooms"],
            "participants": dump["participants"],
            "dev_join": request.app[CONFIG].auth.dev_join,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    body = render_metrics(request.app[SFU], request.app[ERRORS], request.app.get(WATCH))
    return web.Response(
        text=body,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def dev_token(request: web.Request) -> web.Response:
    """Development only: mint a token for the page, so two tabs can meet without set-up."""
    config = request.app[CONFIG]
    if not config.auth.dev_join:
        raise json_error(web.HTTPNotFound, "dev_join_off")
    body = await read_object(request)
    room = body.get("room", "demo")
    name = body.get("name") or ""
    if not isinstance(room, str) or not valid_id(room) or not isinstance(name, str):
        raise json_error(web.HTTPBadRequest, "bad_request", key="bad_request.room", field="room")
    participant = f"P_{secrets.token_hex(4)}"
    token = request.app[SIGNER].mint(
        room, participant, name=name[:64] or participant, ttl=config.auth.token_ttl
    )
    return web.json_response({"token": token, "room": room, "participant": participant})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_get("/api/docs", api_docs)
    app.router.add_get("/console", console)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/dev/token", dev_token)
    app.router.add_static(STATIC, WEB_DIR, show_index=False)
    app.on_response_prepare.append(revalidate_static)


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    add(
        "/healthz",
        "get",
        op("Liveness and room counts", NOBODY, responses("200", ANY_OBJECT, ""), tag="service"),
    )
    add(
        "/favicon.ico",
        "get",
        op(
            "The pages' icon (SVG)",
            NOBODY,
            responses("200", {"type": "string"}, "", "image/svg+xml"),
            tag="service",
        ),
    )
    add(
        "/metrics",
        "get",
        op(
            "Prometheus metrics",
            NOBODY,
            responses("200", {"type": "string"}, "", "text/plain"),
            tag="service",
        ),
    )
    add(
        "/dev/token",
        "post",
        op(
            "Development only: a party token for the web page",
            NOBODY,
            responses("200", ANY_OBJECT, "400 404"),
            tag="service",
            body=json_body({"room": {"type": "string"}, "name": {"type": "string"}}, []),
            description="Exists only with auth.dev_join on a loopback bind; 404 otherwise.",
        ),
    )
    add(
        "/api/openapi.json",
        "get",
        op("This description", NOBODY, responses("200", ANY_OBJECT, ""), tag="service"),
    )
    add(
        "/api/docs",
        "get",
        op(
            "The API reference page",
            NOBODY,
            responses("200", {"type": "string"}, "", "text/html"),
            tag="service",
        ),
    )
    add(
        "/console",
        "get",
        op(
            "The officers' console page",
            NOBODY,
            responses("200", {"type": "string"}, "", "text/html"),
            tag="service",
        ),
    )
    add(
        "/api/events",
        "get",
        op(
            "Officers' event stream (WebSocket)",
            NOBODY,
            upgrade(),
            tag="officers",
            description='First message {"type": "auth", "token": <login token>}; then '
            "participant_joined/left, room_closed, verification, prejoin, recording, "
            "session and display events of the cases the officer may touch. "
            '{"type": "subscribe", "case": N or null} narrows it.',
        ),
    )
