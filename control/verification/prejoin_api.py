"""HTTP API of the identity check before the call (the logic: ``control/prejoin.py``).

The party, with the signalling token that redeeming its link gave (before it joins):
``GET /api/party/prejoin`` where it stands, ``POST /api/party/prejoin/sample`` one JPEG still of
the face check, ``POST /api/party/prejoin/retry`` a new attempt, ``POST /api/party/prejoin/still``
a still for the officer's eyes only (the identity document). The officer:
``GET /api/cases/{case}/sessions/{session}/prejoin`` every party's check with its verdicts,
``.../prejoin/{party}/admit`` admit by hand, ``.../prejoin/{party}/attest`` record the identity
document checked, ``.../prejoin/{party}/still`` the party's latest still.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from verifier.prejoin import MAX_STILL_BYTES

from .. import access
from ..appkeys import DB, DESK, SIGNER
from ..http.jsonio import PayloadTooLarge, json_error, read_object
from ..http.openapi import (
    ANY_OBJECT,
    CASE,
    ID,
    OFFICER,
    PARTY,
    REASON,
    SESSION,
    Add,
    in_path,
    json_body,
    op,
    raw_body,
    responses,
)
from ..refusals import Refusal, done, refused
from ..sessions.store import open_room
from . import store
from .prejoin import DOCUMENT_TYPES, PartyInSession

_LAST_DIGITS = re.compile(r"^[0-9A-Za-z]{2,6}$")


async def _party(request: web.Request) -> PartyInSession:
    """The party of a call token, in the open session its token names."""
    caller = await access.party(request)
    if caller.via != "call":
        raise json_error(
            web.HTTPForbidden,
            "forbidden",
            "请先使用邀请链接 / use the invitation link first: the check needs "
            "the call token it gives",
        )
    room = request.app[SIGNER].verify(access.bearer(request)).room
    who = await request.app[DB].run(lambda c: store.party_in_session(c, room, caller.party_id))
    if who is None:
        raise json_error(
            web.HTTPConflict, "session_ended", "本次会话已结束 / the session has ended"
        )
    return who


async def _still_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_STILL_BYTES:
        raise json_error(
            PayloadTooLarge,
            "too_large",
            f"图像超过 {MAX_STILL_BYTES} 字节 / the still exceeds {MAX_STILL_BYTES} bytes",
        )
    data = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        data += chunk
        if len(data) > MAX_STILL_BYTES:
            raise json_error(
                PayloadTooLarge,
                "too_large",
                f"图像超过 {MAX_STILL_BYTES} 字节 / the still exceeds {MAX_STILL_BYTES} bytes",
            )
    return bytes(data)


async def party_status(request: web.Request) -> web.Response:
    return web.json_response(await request.app[DESK].status(await _party(request)))


async def party_sample(request: web.Request) -> web.Response:
    who = await _party(request)
    return web.json_response(await request.app[DESK].sample(who, await _still_body(request)))


async def party_still(request: web.Request) -> web.Response:
    who = await _party(request)
    return web.json_response(await request.app[DESK].show(who, await _still_body(request)))


async def party_retry(request: web.Request) -> web.Response:
    return web.json_response(await request.app[DESK].retry(await _party(request)))


async def _session(request: web.Request) -> tuple[Any, int, int, str]:
    """(officer, case, session, room) of an open session of a case the officer may touch."""
    officer = await access.officer(request)
    case_id = access.case_id(request)
    session_id = access.path_int(request, "session", "session")
    room = done(await request.app[DB].run(lambda c: open_room(c, officer, case_id, session_id)))
    return officer, case_id, session_id, room


async def _party_of(request: web.Request, case_id: int) -> int:
    party_id = access.path_int(request, "party", "party")
    if not await request.app[DB].run(lambda c: store.party_in_case(c, case_id, party_id)):
        raise refused(Refusal.NO_PARTY)
    return party_id


async def session_checks(request: web.Request) -> web.Response:
    _, case_id, session_id, room = await _session(request)
    parties = await request.app[DESK].session_view(case_id, session_id)
    return web.json_response(
        {"room": room, "rules": vars(request.app[DESK].rules), "parties": parties}
    )


async def admit(request: web.Request) -> web.Response:
    officer, case_id, session_id, room = await _session(request)
    party_id = await _party_of(request, case_id)
    reason = access.text(await read_object(request), "reason", max_len=500)
    return web.json_response(
        await request.app[DESK].admit(officer, case_id, session_id, room, party_id, reason)
    )


async def attest(request: web.Request) -> web.Response:
    officer, case_id, session_id, room = await _session(request)
    party_id = await _party_of(request, case_id)
    body = await read_object(request)
    document_type = body.get("document_type")
    if document_type not in DOCUMENT_TYPES:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            key="bad_request.one_of",
            field="document_type",
            allowed=", ".join(DOCUMENT_TYPES),
        )
    last_digits = body.get("document_last_digits")
    if not isinstance(last_digits, str) or not _LAST_DIGITS.match(last_digits):
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            key="bad_request.document_last_digits",
            field="document_last_digits",
        )
    note = access.text(body, "note", max_len=500, required=False)
    return web.json_response(
        await request.app[DESK].attest(
            officer, case_id, session_id, room, party_id, document_type, last_digits, note
        )
    )


async def still(request: web.Request) -> web.Response:
    officer, case_id, session_id, _ = await _session(request)
    if officer.role == "observer":  # a party's picture is evidence content
        raise json_error(
            web.HTTPForbidden,
            "forbidden",
            detail="observer",
        )
    party_id = await _party_of(request, case_id)
    found = request.app[DESK].still(session_id, f"party-{party_id}")
    if found is None:
        raise json_error(
            web.HTTPNotFound, "not_found", "该当事人尚未发送画面 / this party has sent no picture"
        )
    return web.Response(
        body=found.data,
        content_type="image/jpeg",
        headers={"Cache-Control": "no-store", "X-Still-SHA256": found.sha256},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/party/prejoin", party_status)
    app.router.add_post("/api/party/prejoin/sample", party_sample)
    app.router.add_post("/api/party/prejoin/still", party_still)
    app.router.add_post("/api/party/prejoin/retry", party_retry)
    base = "/api/cases/{case}/sessions/{session}/prejoin"
    app.router.add_get(base, session_checks)
    app.router.add_post(base + "/{party}/admit", admit)
    app.router.add_post(base + "/{party}/attest", attest)
    app.router.add_get(base + "/{party}/still", still)


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    party_p = in_path("party", ID)
    jpeg = raw_body(
        f"one JPEG still from the camera, at most {MAX_STILL_BYTES} bytes and 1920x1080 pixels",
        ["image/jpeg"],
    )
    base = "/api/cases/{case}/sessions/{session}/prejoin"
    add(
        "/api/party/prejoin",
        "get",
        op(
            "Where the party's identity check before the call stands",
            PARTY,
            responses("200", ANY_OBJECT, "401 403 409"),
            tag="parties",
        ),
    )
    add(
        "/api/party/prejoin/sample",
        "post",
        op(
            "One still of the face check before the call: its verdict and what to do",
            PARTY,
            responses("200", ANY_OBJECT, "401 403 409 413 422 429"),
            tag="parties",
            body=jpeg,
            description="Judged as a sample of the call is; the verdict goes to "
            "the custody log. 3 of the first 5 judgeable stills must "
            "match.",
        ),
    )
    add(
        "/api/party/prejoin/still",
        "post",
        op(
            "A still for the officer's eyes (an identity document); not face-processed",
            PARTY,
            responses("200", ANY_OBJECT, "401 403 409 413 422 429"),
            tag="parties",
            body=jpeg,
        ),
    )
    add(
        "/api/party/prejoin/retry",
        "post",
        op(
            "Start a new attempt after a failed one",
            PARTY,
            responses("200", ANY_OBJECT, "401 403 409"),
            tag="parties",
        ),
    )
    add(
        base,
        "get",
        op(
            "Every party's identity check before the call, with its verdicts",
            OFFICER,
            responses("200", ANY_OBJECT, "401 404"),
            tag="verification",
        ),
        [CASE, SESSION],
    )
    add(
        base + "/{party}/admit",
        "post",
        op(
            "Admit the party without a passed check (a reason is needed)",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag="verification",
            body=json_body({"reason": REASON}, ["reason"]),
        ),
        [CASE, SESSION, party_p],
    )
    add(
        base + "/{party}/attest",
        "post",
        op(
            "Record the identity document checked on camera; admits the party",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag="verification",
            body=json_body(
                {
                    "document_type": {"type": "string", "enum": list(DOCUMENT_TYPES)},
                    "document_last_digits": {"type": "string", "pattern": "^[0-9A-Za-z]{2,6}$"},
                    "note": {"type": "string", "maxLength": 500},
                },
                ["document_type", "document_last_digits"],
            ),
        ),
        [CASE, SESSION, party_p],
    )
    add(
        base + "/{party}/still",
        "get",
        op(
            "The party's latest still (held in memory until the check is decided)",
            OFFICER,
            responses("200", {"type": "string", "format": "binary"}, "401 403 404", "image/jpeg"),
            tag="verification",
        ),
        [CASE, SESSION, party_p],
    )
