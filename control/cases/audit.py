"""A case's audit trail (``GET /api/cases/{case}/audit``): every state change with actor, time
and reason, written by :func:`control.access.audit` in the same transaction as the change."""

from __future__ import annotations

from aiohttp import web

from .. import access
from ..appkeys import DB
from ..http.openapi import ANY_OBJECT, CASE, OFFICER, Add, op, responses
from . import store
from .api import done


async def get_audit(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    trail = done(await request.app[DB].run(lambda c: store.case_audit(c, officer, case_id)))
    return web.json_response({"audit": trail})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/cases/{case}/audit", get_audit)


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    add(
        "/api/cases/{case}/audit",
        "get",
        op("The case's audit trail", OFFICER, responses("200", ANY_OBJECT, "401 404"), tag="cases"),
        [CASE],
    )
