"""Sessions of a case: open one (the officer gets a signalling token for its room), a fresh
token to rejoin, end one (its recording seals, its room closes).

The SQL is in :mod:`control.sessions.store`; call control (remove, mute, lock) is in
:mod:`.calls`, invitations in :mod:`.invitations`, the signalling WebSocket in
:mod:`.signalling`.
"""

from __future__ import annotations

from aiohttp import web

from mediaserver.protocols import CloseReason
from mediaserver.room import SfuRoom

from .. import access
from ..access import text
from ..appkeys import CONFIG, DB, EVENTS, RECORDER, SFU, SIGNER
from ..auth import Officer
from ..cases.api import done
from ..http.jsonio import json_error, read_object
from ..http.openapi import (
    ANY_OBJECT,
    CASE,
    NOBODY,
    OFFICER,
    REASON,
    SESSION,
    Add,
    json_body,
    op,
    responses,
    upgrade,
)
from . import store
from .store import PURPOSES


async def post_session(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    body = await read_object(request, empty_ok=True)
    purpose = body.get("purpose")
    if purpose is not None and purpose not in PURPOSES:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            key="bad_request.one_of",
            field="purpose",
            allowed=", ".join(PURPOSES),
        )
    ttl = request.app[CONFIG].auth.token_ttl
    participant = f"officer-{officer.username}"
    login_token = access.bearer(request)
    opened = done(
        await request.app[DB].run(
            lambda c: store.open_session(
                c, officer, case_id, purpose, participant, ttl, login_token
            )
        )
    )
    events = request.app[EVENTS]
    events.know_case(case_id, opened.brigade)
    session = {"id": opened.id, "room": opened.room}
    events.publish(
        case_id, "session", opened.room, state="opened", session=opened.id, by=officer.actor
    )
    session["token"] = request.app[SIGNER].mint(
        opened.room,
        participant,
        name=officer.username,
        role="officer",
        ttl=ttl,
        grant_id=opened.grant,
    )
    return web.json_response(session, status=201)


async def session_token(request: web.Request) -> web.Response:
    """A fresh signalling token for the officer to (re)join an open session's call."""
    officer = await access.officer(request)
    case_id = access.case_id(request)
    session_id = access.path_int(request, "session", "session")
    ttl = request.app[CONFIG].auth.token_ttl
    participant = f"{officer.role}-{officer.username}"
    login_token = access.bearer(request)
    room, grant = done(
        await request.app[DB].run(
            lambda c: store.officer_grant(
                c, officer, case_id, session_id, participant, ttl, login_token
            )
        )
    )
    token = request.app[SIGNER].mint(
        room, participant, name=officer.username, role=officer.role, ttl=ttl, grant_id=grant
    )
    return web.json_response({"room": room, "token": token})


async def end_session(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    body = await read_object(request)
    reason = text(body, "reason", max_len=500)
    session_id = access.path_int(request, "session", "session")
    room_id = done(
        await request.app[DB].run(
            lambda c: store.end_session(c, officer, case_id, session_id, reason)
        )
    )
    recorder = request.app[RECORDER]
    sealed = None
    if room_id in recorder.active:
        manifest = await recorder.stop(room_id, actor=officer.actor, reason=reason)
        sealed = manifest["recording_id"]
    room = request.app[SFU].rooms.get(room_id)
    if room is not None:
        await room.close(CloseReason.REMOVED)
    request.app[EVENTS].publish(
        case_id,
        "session",
        room_id,
        state="ended",
        by=officer.actor,
        reason=reason,
        recording=sealed,
    )
    return web.json_response({"ended": room_id, "recording_sealed": sealed})


async def open_session_room(request: web.Request, officer: Officer) -> tuple[int, int, SfuRoom]:
    """(case, session, live room) of an open session of a case the officer may touch."""
    case_id = access.case_id(request)
    session_id = access.path_int(request, "session", "session")
    room_id = done(
        await request.app[DB].run(lambda c: store.open_room(c, officer, case_id, session_id))
    )
    room = request.app[SFU].rooms.get(room_id)
    if room is None or room.closed:
        raise json_error(web.HTTPConflict, "empty", detail="no_one_in_room")
    return case_id, session_id, room


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/cases/{case}/sessions", post_session)
    app.router.add_post("/api/cases/{case}/sessions/{session}/end", end_session)
    app.router.add_post("/api/cases/{case}/sessions/{session}/token", session_token)


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    add(
        "/ws",
        "get",
        op(
            "Signalling WebSocket (join with a room token)",
            NOBODY,
            upgrade(),
            tag="service",
            description="See docs/signalling.md. A plain GET without an upgrade answers 400.",
        ),
    )
    add(
        "/api/cases/{case}/sessions",
        "post",
        op(
            "Open a session: its room, and the officer's signalling token",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 404 409"),
            tag="sessions",
            body={
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"purpose": {"type": "string", "enum": list(PURPOSES)}},
                        }
                    }
                },
            },
        ),
        [CASE],
    )
    add(
        "/api/cases/{case}/sessions/{session}/end",
        "post",
        op(
            "End the session: seal its recording, close its room",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 404 409"),
            tag="sessions",
            body=json_body({"reason": REASON}, ["reason"]),
        ),
        [CASE, SESSION],
    )
    add(
        "/api/cases/{case}/sessions/{session}/token",
        "post",
        op(
            "A fresh signalling token for the officer to (re)join the call",
            OFFICER,
            responses("200", ANY_OBJECT, "401 403 404"),
            tag="sessions",
        ),
        [CASE, SESSION],
    )
