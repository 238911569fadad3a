"""Call control: an officer removes or mutes a participant, locks or unlocks the room
(``POST /api/cases/{case}/sessions/{session}/{action}``).

Each action is session state in the database first (:func:`control.sessions.store.call_action`),
then applied to the live room: it holds when the participant reconnects and when the room
empties and is made again.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mediaserver.protocols import CloseReason

from .. import access
from ..access import text
from ..appkeys import DB, SFU
from ..cases.api import done
from ..http.jsonio import json_error, read_object
from ..http.openapi import (
    ANY_OBJECT,
    CASE,
    OFFICER,
    REASON,
    SESSION,
    Add,
    in_path,
    json_body,
    op,
    responses,
)
from . import store


async def session_action(request: web.Request) -> web.Response:
    """An officer acts on the call: remove or mute a participant, lock or unlock the room."""
    officer = await access.officer(request)
    action = request.match_info["action"]
    body = await read_object(request)
    reason = text(body, "reason", max_len=500)
    case_id = access.case_id(request)
    session_id = access.path_int(request, "session", "session")
    room_id = done(
        await request.app[DB].run(lambda c: store.open_room(c, officer, case_id, session_id))
    )
    room = request.app[SFU].rooms.get(room_id)
    live = room if room is not None and not room.closed else None
    detail: dict[str, Any] = {}
    participant_id = ""
    kinds: list[str] = []
    if action in ("remove", "mute", "unmute"):
        participant_id = text(body, "participant", max_len=64)
        if live is None or participant_id not in live.participants:
            raise json_error(web.HTTPNotFound, "not_found", detail="no_participant")
        detail["participant"] = participant_id
        if action != "remove":
            kinds = body.get("kinds", ["audio", "video"])
            if (
                not isinstance(kinds, list)
                or not all(isinstance(k, str) for k in kinds)
                or not set(kinds) <= {"audio", "video"}
            ):
                raise json_error(
                    web.HTTPBadRequest, "bad_request", key="bad_request.kinds", field="kinds"
                )
            detail["kinds"] = kinds
    elif action not in store.ACTIONS:
        raise json_error(web.HTTPNotFound, "not_found", detail="no_action")

    done(
        await request.app[DB].run(
            lambda c: store.call_action(
                c,
                officer,
                case_id,
                session_id,
                room_id,
                action,
                participant_id,
                kinds,
                reason,
                detail,
            )
        )
    )
    if live is not None:
        participant = live.participants.get(participant_id)
        if action in ("lock", "unlock"):
            live.locked = action == "lock"
        elif participant is not None and action == "remove":
            await participant.close(CloseReason.REMOVED)
        elif participant is not None:
            participant.set_officer_muted(kinds, action == "mute")
    return web.json_response({"done": action, "room": room_id, **detail})


def add_routes(app: web.Application) -> None:
    app.router.add_post(
        "/api/cases/{case}/sessions/{session}/{action:remove|mute|unmute|lock|unlock}",
        session_action,
    )


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    add(
        "/api/cases/{case}/sessions/{session}/{action}",
        "post",
        op(
            "Act on the call: remove, mute or unmute a participant; lock or unlock the room",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 404 409"),
            tag="sessions",
            body=json_body(
                {
                    "reason": REASON,
                    "participant": {"type": "string", "maxLength": 64},
                    "kinds": {
                        "type": "array",
                        "items": {"type": "string", "enum": ["audio", "video"]},
                    },
                },
                ["reason"],
            ),
        ),
        [
            CASE,
            SESSION,
            in_path(
                "action", {"type": "string", "enum": ["remove", "mute", "unmute", "lock", "unlock"]}
            ),
        ],
    )
