"""Officers' login and logout (``POST /api/login``, ``POST /api/logout``).

A failed login slows its user name and its client address (growing delays, never a lockout:
``auth.Throttle``); every login, failure and logout is in the audit trail.
"""

from __future__ import annotations

import sqlite3

from aiohttp import web

from . import access
from .access import audit, text
from .appkeys import DB, LOGIN_ADDRESS_LIMIT, LOGIN_LIMIT
from .auth import login_async, logout
from .http.jsonio import json_error, read_object
from .http.openapi import ANY_OBJECT, NOBODY, OFFICER, Add, json_body, op, responses


async def post_login(request: web.Request) -> web.Response:
    body = await read_object(request)
    username = text(body, "username", max_len=64)
    password = body.get("password")
    if not isinstance(password, str) or len(password) > 256:
        raise json_error(
            web.HTTPBadRequest, "bad_request", key="bad_request.password", field="password"
        )
    users, addresses = request.app[LOGIN_LIMIT], request.app[LOGIN_ADDRESS_LIMIT]
    user, address = f"user:{username}", f"ip:{request.remote}"
    wait = max(users.wait(user), addresses.wait(address))
    if wait > 0:
        raise access.too_many(wait, "登录失败次数过多", "too many failed logins")
    # charged before the check, so that attempts sent at once count at once
    users.fail(user)
    addresses.fail(address)
    result = await login_async(request.app[DB], username, password)
    if result is None:
        users.restart(user)  # the delay runs from the answer, not from the question
        addresses.restart(address)
        await request.app[DB].run(
            lambda c: audit(
                c, f"anonymous@{request.remote}", "login.failed", f"user:{username}", None
            )
        )
        raise json_error(web.HTTPUnauthorized, "bad_credentials")
    token, officer = result
    users.forgive(user)  # the owner is in
    addresses.refund(address)  # this attempt was no failure; earlier ones from here still are
    await request.app[DB].run(lambda c: audit(c, officer.actor, "login", officer.actor, None))
    return web.json_response(
        {
            "token": token,
            "officer": {
                "username": officer.username,
                "role": officer.role,
                "brigade": officer.brigade,
            },
        }
    )


async def post_logout(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    token = access.bearer(request)

    def run(conn: sqlite3.Connection) -> None:
        logout(conn, token)
        audit(conn, officer.actor, "logout", officer.actor, None)

    await request.app[DB].run(run)
    return web.json_response({"logged_out": True})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/login", post_login)
    app.router.add_post("/api/logout", post_logout)


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    add(
        "/api/login",
        "post",
        op(
            "Log in: a login token for 8 hours",
            NOBODY,
            responses("200", ANY_OBJECT, "400 401 429"),
            tag="officers",
            body=json_body(
                {
                    "username": {"type": "string", "maxLength": 64},
                    "password": {"type": "string", "maxLength": 256},
                },
                ["username", "password"],
            ),
        ),
    )
    add(
        "/api/logout",
        "post",
        op("Revoke this login", OFFICER, responses("200", ANY_OBJECT, "401"), tag="officers"),
    )
