"""Officer accounts for supervisors (``/api/officers``) and the first start's setup
(``GET /setup``, ``GET|POST /api/setup``).

Only a supervisor lists, adds and changes accounts; every change is audited (case ``None``).
Disabling an account or setting its password ends its logins at once (every API call checks
the login) and closes its event streams. The setup answers only a loopback client (behind the
front: the address the front vouches for) and only while no officer exists; its link is single
use and expires (``setup.py``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from aiohttp import web

from .. import access
from ..appkeys import DB, EVENTS
from ..auth import ACCOUNT_ROLES, MIN_PASSWORD, Officer, hash_async
from ..http.jsonio import json_error, read_object
from ..http.openapi import (
    ANY_OBJECT,
    ID,
    NOBODY,
    OFFICER,
    REASON,
    Add,
    in_path,
    json_body,
    op,
    responses,
)
from ..http.webguard import WEB_DIR
from ..refusals import unwrap
from . import store
from .store import Refusal

USERNAME = re.compile(r"^[\w.\-]{1,64}$")
_STATUS: dict[Refusal, type[web.HTTPException]] = {
    Refusal.NO_OFFICER: web.HTTPNotFound,
    Refusal.USERNAME_TAKEN: web.HTTPConflict,
    Refusal.LAST_SUPERVISOR: web.HTTPConflict,
    Refusal.SELF: web.HTTPConflict,
    Refusal.SETUP_DONE: web.HTTPConflict,
    Refusal.SETUP_LINK: web.HTTPForbidden,
}


async def supervisor(request: web.Request) -> Officer:
    officer = await access.officer(request)
    if officer.role != "supervisor":
        raise json_error(web.HTTPForbidden, "forbidden", detail="supervisor_accounts")
    return officer


def _username(body: dict[str, Any]) -> str:
    value = body.get("username")
    if not isinstance(value, str) or not USERNAME.match(value):
        raise json_error(web.HTTPBadRequest, "bad_request", key="bad_request.username")
    return value


def _password(body: dict[str, Any]) -> str:
    value = body.get("password")
    if not isinstance(value, str) or not MIN_PASSWORD <= len(value) <= 256:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            key="bad_request.new_password",
            field="password",
            min_len=MIN_PASSWORD,
        )
    return value


def _role(value: Any) -> str:
    if value not in ACCOUNT_ROLES:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            key="bad_request.one_of",
            field="role",
            allowed=", ".join(ACCOUNT_ROLES),
        )
    return str(value)


async def list_officers(request: web.Request) -> web.Response:
    await supervisor(request)
    officers = await request.app[DB].run(store.list_officers)
    return web.json_response({"officers": officers})


async def add_officer(request: web.Request) -> web.Response:
    who = await supervisor(request)
    body = await read_object(request)
    username, password = _username(body), _password(body)
    role = _role(body.get("role", "officer"))
    brigade = access.text(body, "brigade", max_len=64)
    reason = access.text(body, "reason", max_len=500, required=False)
    password_hash = await hash_async(password)
    added = await request.app[DB].run(
        lambda c: store.add_officer(c, who, username, password_hash, role, brigade, reason)
    )
    return web.json_response(unwrap(added, _STATUS), status=201)


async def change_officer(request: web.Request) -> web.Response:
    who = await supervisor(request)
    officer_id = access.path_int(request, "officer", "officer")
    body = await read_object(request)
    disabled = body.get("disabled")
    if disabled is not None and not isinstance(disabled, bool):
        raise json_error(
            web.HTTPBadRequest, "bad_request", key="bad_request.boolean", field="disabled"
        )
    role = _role(body["role"]) if body.get("role") is not None else None
    password = _password(body) if body.get("password") is not None else None
    if disabled is None and role is None and password is None:
        raise json_error(web.HTTPBadRequest, "bad_request", key="bad_request.officer_change")
    reason = access.text(body, "reason", max_len=500)
    password_hash = await hash_async(password) if password is not None else None
    changed = unwrap(
        await request.app[DB].run(
            lambda c: store.change_officer(
                c,
                who,
                officer_id,
                disabled=disabled,
                role=role,
                password_hash=password_hash,
                reason=reason,
            )
        ),
        _STATUS,
    )
    if disabled or password is not None or role is not None:
        # its event streams were opened under the old account: they end (a new login may
        # open new ones, with the new role)
        changed["streams_ended"] = await request.app[EVENTS].end_officer(officer_id)
    return web.json_response(changed)


# -- first start ---------------------------------------------------------------------------


def _loopback_only(request: web.Request) -> None:
    try:
        loopback = ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise json_error(web.HTTPForbidden, "forbidden", detail="setup_loopback_only")


async def setup_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "setup.html", headers={"Cache-Control": "no-store"})


async def accounts_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "accounts.html", headers={"Cache-Control": "no-store"})


async def setup_state(request: web.Request) -> web.Response:
    _loopback_only(request)
    count = await request.app[DB].run(store.officer_count)
    return web.json_response({"needed": count == 0})


async def setup(request: web.Request) -> web.Response:
    _loopback_only(request)
    body = await read_object(request)
    token = body.get("token")
    if not isinstance(token, str) or not 1 <= len(token) <= 200 or not token.isascii():
        raise json_error(
            web.HTTPBadRequest, "bad_request", key="bad_request.setup_token", field="token"
        )
    username, password = _username(body), _password(body)
    brigade = access.text(body, "brigade", max_len=64)
    # refused before the second of hashing when it would be refused after it (checked again,
    # and the link spent, in the transaction that creates the supervisor)
    unwrap(await request.app[DB].run(lambda c: store.setup_open(c, token)), _STATUS)
    password_hash = await hash_async(password)
    actor = f"setup@{request.remote}"
    added = await request.app[DB].run(
        lambda c: store.first_supervisor(c, token, username, password_hash, brigade, actor)
    )
    return web.json_response(unwrap(added, _STATUS), status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/setup", setup_page)
    app.router.add_get("/accounts", accounts_page)
    app.router.add_get("/api/setup", setup_state)
    app.router.add_post("/api/setup", setup)
    app.router.add_get("/api/officers", list_officers)
    app.router.add_post("/api/officers", add_officer)
    app.router.add_patch("/api/officers/{officer}", change_officer)


_ACCOUNT: dict[str, dict[str, Any]] = {
    "username": {"type": "string", "pattern": USERNAME.pattern},
    "password": {"type": "string", "minLength": MIN_PASSWORD, "maxLength": 256},
    "brigade": {"type": "string", "minLength": 1, "maxLength": 64},
}


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    page = responses("200", {"type": "string"}, "", "text/html")
    add("/setup", "get", op("The first start's setup page", NOBODY, page, tag="accounts"))
    add("/accounts", "get", op("The accounts page (supervisors)", NOBODY, page, tag="accounts"))
    add(
        "/api/setup",
        "get",
        op(
            "Whether the first supervisor is still to be created (loopback only)",
            NOBODY,
            responses("200", ANY_OBJECT, "403"),
            tag="accounts",
        ),
    )
    add(
        "/api/setup",
        "post",
        op(
            "Create the first supervisor with the one-time setup link (loopback only)",
            NOBODY,
            responses("201", ANY_OBJECT, "400 403 409"),
            tag="accounts",
            body=json_body(
                {"token": {"type": "string", "minLength": 1, "maxLength": 200}, **_ACCOUNT},
                ["token", "username", "password", "brigade"],
            ),
            description="The token is the part after #t= of the link the server printed at "
            "its first start; single use, valid for 30 minutes, dead once an officer exists.",
        ),
    )
    add(
        "/api/officers",
        "get",
        op(
            "Every officer account (supervisors)",
            OFFICER,
            responses("200", ANY_OBJECT, "401 403"),
            tag="accounts",
        ),
    )
    add(
        "/api/officers",
        "post",
        op(
            "Add an officer account (supervisors; audited)",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 409"),
            tag="accounts",
            body=json_body(
                {
                    **_ACCOUNT,
                    "role": {"type": "string", "enum": list(ACCOUNT_ROLES)},
                    "reason": REASON,
                },
                ["username", "password", "brigade"],
            ),
        ),
    )
    add(
        "/api/officers/{officer}",
        "patch",
        op(
            "Disable or enable an account, change its role, reset its password (supervisors; "
            "audited; disabling or a new password ends its logins)",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag="accounts",
            body=json_body(
                {
                    "disabled": {"type": "boolean"},
                    "role": {"type": "string", "enum": list(ACCOUNT_ROLES)},
                    "password": _ACCOUNT["password"],
                    "reason": REASON,
                },
                ["reason"],
            ),
        ),
        [in_path("officer", ID)],
    )
