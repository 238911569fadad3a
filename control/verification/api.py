"""HTTP API of the face verifier: a party's reference photo, and live status of a session.

Officers (logins, ``control/access.py``) enroll the reference photo (the ID photo) of a party of
a case they may touch; the reference is kept per case (``case-<id>``), encrypted, and deleted
when the party declines face checks or the case is closed. A party is compared with it only
after consenting to face checks when redeeming the invitation.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from verifier.enrollment import MAX_PHOTO_BYTES, EnrollmentRejected
from verifier.service import Verifier

from .. import access
from ..access import audit
from ..appkeys import DB, VERIFIER
from ..http.jsonio import PayloadTooLarge, json_error
from ..http.openapi import (
    ANY_OBJECT,
    CASE,
    OFFICER,
    PARTY_P,
    SESSION,
    Add,
    op,
    raw_body,
    reason_query,
    responses,
)
from ..refusals import refused
from ..sessions.api import open_session_room
from . import store


def scope_of_case(case_id: int) -> str:
    return f"case-{case_id}"


def verifier_of(request: web.Request) -> Verifier:
    if VERIFIER not in request.app:
        raise json_error(web.HTTPNotFound, "not_found", detail="verifier_disabled")
    return request.app[VERIFIER]


async def _party_of_case(request: web.Request) -> tuple[Any, int, int]:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    party_id = access.path_int(request, "party", "party")
    refusal = await request.app[DB].run(
        lambda c: store.party_of_case(c, officer, case_id, party_id)
    )
    if refusal is not None:
        raise refused(refusal)
    return officer, case_id, party_id


async def enroll(request: web.Request) -> web.Response:
    """Body: the reference photo itself (JPEG or PNG), at most 10 MiB."""
    officer, case_id, party_id = await _party_of_case(request)
    verifier = verifier_of(request)
    if request.content_length is not None and request.content_length > MAX_PHOTO_BYTES:
        raise json_error(PayloadTooLarge, "too_large", detail="photo", max_bytes=MAX_PHOTO_BYTES)
    photo = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        photo += chunk
        if len(photo) > MAX_PHOTO_BYTES:
            raise json_error(
                PayloadTooLarge, "too_large", detail="photo", max_bytes=MAX_PHOTO_BYTES
            )
    try:
        record = await verifier.enroll(
            scope_of_case(case_id),
            f"party-{party_id}",
            bytes(photo),
            actor=officer.actor,
            case=str(case_id),
        )
    except EnrollmentRejected as exc:
        raise json_error(
            web.HTTPUnprocessableEntity, exc.code, key=f"enrollment.{exc.code}", cause=exc.message
        ) from None
    await request.app[DB].run(
        lambda c: audit(
            c,
            officer.actor,
            "reference.enrolled",
            f"party:{party_id}",
            case_id,
            photo_sha256=record["photo_sha256"],
        )
    )
    return web.json_response(record)


async def forget(request: web.Request) -> web.Response:
    officer, case_id, party_id = await _party_of_case(request)
    reason = request.query.get("reason", "").strip()[:500]
    if not reason:
        raise json_error(web.HTTPBadRequest, "reason_required", detail="query")
    removed = await verifier_of(request).forget(
        scope_of_case(case_id),
        f"party-{party_id}",
        actor=officer.actor,
        reason=reason,
        case=str(case_id),
    )
    if not removed:
        raise json_error(web.HTTPNotFound, "not_found", detail="no_reference")
    await request.app[DB].run(
        lambda c: audit(c, officer.actor, "reference.deleted", f"party:{party_id}", case_id, reason)
    )
    return web.json_response({"deleted": True})


async def status(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    _, _, room = await open_session_room(request, officer)
    return web.json_response({"participants": verifier_of(request).status(room.room_id)})


def add_routes(app: web.Application) -> None:
    app.router.add_put("/api/cases/{case}/parties/{party}/reference", enroll)
    app.router.add_delete("/api/cases/{case}/parties/{party}/reference", forget)
    app.router.add_get("/api/cases/{case}/sessions/{session}/verification", status)


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    add(
        "/api/cases/{case}/parties/{party}/reference",
        "put",
        op(
            "Enroll the party's reference photo (ID photo) for face checks",
            OFFICER,
            responses("200", ANY_OBJECT, "401 404 413 422"),
            tag="verification",
            body=raw_body(
                "the photo itself, at most 10 MiB",
                ["image/jpeg", "image/png", "application/octet-stream"],
            ),
        ),
        [CASE, PARTY_P],
    )
    add(
        "/api/cases/{case}/parties/{party}/reference",
        "delete",
        op(
            "Delete the party's reference",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 404"),
            tag="verification",
            params=[reason_query()],
        ),
    )

    add(
        "/api/cases/{case}/sessions/{session}/verification",
        "get",
        op(
            "Face verification state of each party in the call",
            OFFICER,
            responses("200", ANY_OBJECT, "401 404 409"),
            tag="verification",
        ),
        [CASE, SESSION],
    )
