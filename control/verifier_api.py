"""HTTP API of the face verifier: reference photos and live status.

Same interim access rule as the recordings API: an officer token for its own room, a
supervisor token for any room (control/recordings_api.py).
"""

from __future__ import annotations

from aiohttp import web

from verifier.enrollment import MAX_PHOTO_BYTES, EnrollmentRejected

from .http_json import json_error
from .recordings_api import _error, _grant, _may_touch
from .tokens import valid_id


def _verifier(request: web.Request):  # type: ignore[no-untyped-def]
    from .app import VERIFIER

    if VERIFIER not in request.app:
        raise _error(404, "not_found", "the verifier is disabled (verifier.enabled = false)")
    return request.app[VERIFIER]


async def enroll(request: web.Request) -> web.Response:
    """Body: the reference photo itself (JPEG or PNG), at most 10 MiB."""
    grant = _grant(request)
    room, participant = request.match_info["room"], request.match_info["participant"]
    if not valid_id(room) or not valid_id(participant):
        raise _error(404, "not_found", "no such room or participant ID")
    _may_touch(grant, room)
    verifier = _verifier(request)
    if request.content_length is not None and request.content_length > MAX_PHOTO_BYTES:
        raise _error(400, "too_large", f"the photo exceeds {MAX_PHOTO_BYTES} bytes")
    photo = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        photo += chunk
        if len(photo) > MAX_PHOTO_BYTES:
            raise _error(400, "too_large", f"the photo exceeds {MAX_PHOTO_BYTES} bytes")
    try:
        record = await verifier.enroll(room, participant, bytes(photo), actor=grant.participant)
    except EnrollmentRejected as exc:
        raise json_error(web.HTTPUnprocessableEntity, exc.code, exc.message) from None
    return web.json_response(record)


async def status(request: web.Request) -> web.Response:
    grant = _grant(request)
    room = request.match_info["room"]
    _may_touch(grant, room)
    return web.json_response({"participants": _verifier(request).status(room)})


def add_routes(app: web.Application) -> None:
    app.router.add_put("/api/rooms/{room}/participants/{participant}/reference", enroll)
    app.router.add_get("/api/rooms/{room}/verification", status)
