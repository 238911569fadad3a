"""The parties of a case (``POST /api/cases/{case}/parties``): drivers, owners, witnesses...

A party has no account; an officer adds it to a case and invites it
(:mod:`control.sessions.invitations`). Its ID number and phone are kept masked.
"""

from __future__ import annotations

from aiohttp import web

from .. import access
from ..access import text
from ..appkeys import DB
from ..http.jsonio import json_error, read_object
from ..http.openapi import ANY_OBJECT, CASE, OFFICER, Add, json_body, op, responses
from . import store
from .api import done
from .store import ID_NUMBER, PARTY_ROLES


async def post_party(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    body = await read_object(request)
    role = body.get("role")
    if role not in PARTY_ROLES:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            key="bad_request.one_of",
            field="role",
            allowed=", ".join(PARTY_ROLES),
        )
    name = text(body, "name", max_len=100)
    id_number = text(body, "id_number", max_len=20, required=False)
    if id_number and not ID_NUMBER.match(id_number):
        raise json_error(
            web.HTTPBadRequest, "bad_request", key="bad_request.id_number", field="id_number"
        )
    phone = text(body, "phone", max_len=32, required=False)
    party = done(
        await request.app[DB].run(
            lambda c: store.add_party(c, officer, case_id, role, name, id_number, phone)
        )
    )
    return web.json_response(party, status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/cases/{case}/parties", post_party)


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    add(
        "/api/cases/{case}/parties",
        "post",
        op(
            "Add a party (ID number and phone are stored masked)",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 404"),
            tag="cases",
            body=json_body(
                {
                    "role": {"type": "string", "enum": list(PARTY_ROLES)},
                    "name": {"type": "string", "minLength": 1, "maxLength": 100},
                    "id_number": {"type": "string", "pattern": "^[0-9A-Za-z]{6,20}$"},
                    "phone": {"type": "string", "maxLength": 32},
                },
                ["role", "name"],
            ),
        ),
        [CASE],
    )
