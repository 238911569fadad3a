"""Cases: open one, list and read them, close one (``/api/cases``).

An officer touches the cases of their brigade, a supervisor every case (``control/access.py``).
The SQL is in :mod:`control.cases.store`; these handlers read the request, call it in one
transaction and answer. Parties are in :mod:`.parties`, the audit trail in :mod:`.audit`.

Errors are ``{"error": code, "message": text}`` with a 4xx status.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import access
from ..access import text
from ..appkeys import DB
from ..http.jsonio import json_error, read_object
from ..http.openapi import ANY_OBJECT, CASE, OFFICER, REASON, Add, json_body, op, responses
from ..refusals import done
from ..verification.wiring import forget_reference
from . import store
from .store import KINDS


async def post_case(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    body = await read_object(request)
    kind = body.get("kind")
    if kind not in KINDS:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            key="bad_request.one_of",
            field="kind",
            allowed=", ".join(KINDS),
        )
    title = text(body, "title")
    case = await request.app[DB].run(lambda c: store.create_case(c, officer, kind, title))
    return web.json_response(case, status=201)


async def list_cases(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    return web.json_response(
        {"cases": await request.app[DB].run(lambda c: store.list_cases(c, officer))}
    )


async def get_case(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    case: dict[str, Any] = done(
        await request.app[DB].run(lambda c: store.case_detail(c, officer, case_id))
    )
    return web.json_response(case)


async def close_case(request: web.Request) -> web.Response:
    """Close a case: no more sessions or invitations, and its parties' face data goes."""
    officer = await access.officer(request)
    case_id = access.case_id(request)
    reason = text(await read_object(request), "reason", max_len=500)
    parties = done(
        await request.app[DB].run(lambda c: store.close_case(c, officer, case_id, reason))
    )
    for party_id in parties:
        await forget_reference(
            request.app, case_id, party_id, actor=officer.actor, reason=f"case closed: {reason}"
        )
    return web.json_response({"closed": case_id})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/cases", post_case)
    app.router.add_get("/api/cases", list_cases)
    app.router.add_get("/api/cases/{case}", get_case)
    app.router.add_post("/api/cases/{case}/close", close_case)


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    add(
        "/api/cases",
        "post",
        op(
            "Open a case in the officer's brigade",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401"),
            tag="cases",
            body=json_body(
                {
                    "kind": {"type": "string", "enum": list(KINDS)},
                    "title": {"type": "string", "minLength": 1, "maxLength": 200},
                },
                ["kind", "title"],
            ),
        ),
    )
    add(
        "/api/cases",
        "get",
        op(
            "Cases the officer may touch", OFFICER, responses("200", ANY_OBJECT, "401"), tag="cases"
        ),
    )
    add(
        "/api/cases/{case}",
        "get",
        op(
            "A case with its parties, sessions, invitations, appointments and materials",
            OFFICER,
            responses("200", ANY_OBJECT, "401 404"),
            tag="cases",
        ),
        [CASE],
    )
    add(
        "/api/cases/{case}/close",
        "post",
        op(
            "Close a case: no more sessions or links; its face references are deleted",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 404 409"),
            tag="cases",
            body=json_body({"reason": REASON}, ["reason"]),
        ),
        [CASE],
    )
