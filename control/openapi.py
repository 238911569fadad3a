"""The OpenAPI 3 description of the whole HTTP API, served at ``/api/openapi.json``.

Written here rather than generated: each operation says who may call it and what it answers.
``tests/test_openapi.py`` checks that every route the app registers is described (and nothing
else), and fuzzes the description with schemathesis against a live server: no 5xx.
"""

from __future__ import annotations

from typing import Any

from .appointments_api import HORIZON_DAYS
from .cases_api import CONSENTS, KINDS, PARTY_ROLES, PURPOSES

Schema = dict[str, Any]

ERROR: Schema = {
    "type": "object", "required": ["error", "message"],
    "properties": {"error": {"type": "string", "description": "a stable code"},
                   "message": {"type": "string", "description": "what went wrong, for people"}},
}
ANY_OBJECT: Schema = {"type": "object", "additionalProperties": True}
REASON: Schema = {"type": "string", "minLength": 1, "maxLength": 500}
ID: Schema = {"type": "integer", "minimum": 1}
MATERIAL_ID: Schema = {"type": "string", "pattern": "^MAT_[0-9a-f]{16}$"}
TIME: Schema = {"type": "string", "format": "date-time",
                "description": "ISO 8601 with its UTC offset"}

OFFICER: list[dict[str, list[str]]] = [{"officerLogin": []}]
PARTY: list[dict[str, list[str]]] = [{"partyLink": []}]
NOBODY: list[dict[str, list[str]]] = []

_ERRORS = {
    "400": "malformed JSON, a missing or wrong field, or a missing reason",
    "401": "no credentials, or unknown, expired or revoked ones",
    "403": "the caller's role may not do this",
    "404": "no such object, or one the caller may not see",
    "409": "the object's state does not allow it",
    "410": "the invitation is used, revoked or expired",
    "413": "the upload is larger than its type, the pixel or page budget or the quota allows",
    "415": "the upload's content is not an accepted type",
    "422": "the content cannot be used (damaged file, no single face, missing page)",
    "429": "too many failed attempts, or uploads at once; wait (Retry-After)",
}


def _responses(ok: str, ok_schema: Schema | None, errors: str,
               content_type: str = "application/json") -> dict[str, Any]:
    out: dict[str, Any] = {}
    code = ok.split(" ")[0]
    description = ok[len(code):].strip() or "done"
    if ok_schema is None:
        out[code] = {"description": description}
    else:
        out[code] = {"description": description,
                     "content": {content_type: {"schema": ok_schema}}}
    for status in errors.split():
        out[status] = {"description": _ERRORS[status],
                       "content": {"application/json": {"schema": {"$ref":
                                                                   "#/components/schemas/Error"}}}}
    return out


def _upgrade() -> dict[str, Any]:
    out = _responses("101 switching to WebSocket", None, "400")
    out["400"]["description"] = "not a WebSocket upgrade request"
    return out


def _json_body(properties: dict[str, Schema], required: list[str]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "properties": properties, "required": required}}}}


def _raw_body(description: str, types: list[str]) -> dict[str, Any]:
    return {"required": True, "description": description,
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in types}}


def _path(name: str, schema: Schema) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: Schema, *, required: bool = False,
           description: str = "") -> dict[str, Any]:
    param = {"name": name, "in": "query", "required": required, "schema": schema}
    if description:
        param["description"] = description
    return param


def _reason_query() -> dict[str, Any]:
    return _query("reason", REASON, required=True,
                  description="why the evidence is accessed; logged in the custody log")


def _op(summary: str, security: list[dict[str, list[str]]], responses: dict[str, Any], *,
        tag: str, body: dict[str, Any] | None = None,
        params: list[dict[str, Any]] | None = None, description: str = "") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "security": security,
                          "responses": responses}
    if description:
        op["description"] = description
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    return op


CASE = _path("case", ID)
SESSION = _path("session", ID)
PARTY_P = _path("party", ID)
RECORDING = _path("recording", {"type": "string", "pattern": "^REC_[0-9T]+_[0-9a-f]+$"})
MEDIA_TYPES = ["image/jpeg", "image/png", "application/pdf", "video/mp4", "video/quicktime",
               "video/webm", "video/x-matroska", "application/octet-stream"]


def build() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}

    def add(path: str, method: str, op: dict[str, Any],
            params: list[dict[str, Any]] | None = None) -> None:
        entry = paths.setdefault(path, {})
        if params:
            entry["parameters"] = params
        entry[method] = op

    # -- service ---------------------------------------------------------------------------
    add("/healthz", "get", _op("Liveness and room counts", NOBODY,
                               _responses("200", ANY_OBJECT, ""), tag="service"))
    add("/metrics", "get", _op("Prometheus metrics", NOBODY,
                               _responses("200", {"type": "string"}, "", "text/plain"),
                               tag="service"))
    add("/dev/token", "post", _op(
        "Development only: a party token for the web page", NOBODY,
        _responses("200", ANY_OBJECT, "400 404"), tag="service",
        body=_json_body({"room": {"type": "string"}, "name": {"type": "string"}}, []),
        description="Exists only with auth.dev_join on a loopback bind; 404 otherwise."))
    add("/api/openapi.json", "get", _op("This description", NOBODY,
                                        _responses("200", ANY_OBJECT, ""), tag="service"))
    add("/api/docs", "get", _op("The API reference page", NOBODY,
                                _responses("200", {"type": "string"}, "", "text/html"),
                                tag="service"))
    add("/console", "get", _op("The officers' console page", NOBODY,
                               _responses("200", {"type": "string"}, "", "text/html"),
                               tag="service"))
    add("/ws", "get", _op(
        "Signalling WebSocket (join with a room token)", NOBODY,
        _upgrade(), tag="service",
        description="See docs/signalling.md. A plain GET without an upgrade answers 400."))
    add("/api/events", "get", _op(
        "Officers' event stream (WebSocket)", NOBODY,
        _upgrade(), tag="officers",
        description='First message {"type": "auth", "token": <login token>}; then '
                    "participant_joined/left, room_closed, verification, prejoin, recording, "
                    "session and display events of the cases the officer may touch. "
                    '{"type": "subscribe", "case": N or null} narrows it.'))

    # -- officers --------------------------------------------------------------------------
    add("/api/login", "post", _op(
        "Log in: a login token for 8 hours", NOBODY,
        _responses("200", ANY_OBJECT, "400 401 429"), tag="officers",
        body=_json_body({"username": {"type": "string", "maxLength": 64},
                         "password": {"type": "string", "maxLength": 256}},
                        ["username", "password"])))
    add("/api/logout", "post", _op("Revoke this login", OFFICER,
                                   _responses("200", ANY_OBJECT, "401"), tag="officers"))
    add("/api/statistics", "get", _op(
        "Counts per brigade and kind over a date range", OFFICER,
        _responses("200", ANY_OBJECT, "400 401 403"), tag="officers",
        params=[_query("from", {"type": "string", "format": "date"}),
                _query("to", {"type": "string", "format": "date"}),
                _query("brigade", {"type": "string"},
                       description="supervisors only: one brigade")]))

    # -- cases -----------------------------------------------------------------------------
    add("/api/cases", "post", _op(
        "Open a case in the officer's brigade", OFFICER,
        _responses("201", ANY_OBJECT, "400 401"), tag="cases",
        body=_json_body({"kind": {"type": "string", "enum": list(KINDS)},
                         "title": {"type": "string", "minLength": 1, "maxLength": 200}},
                        ["kind", "title"])))
    add("/api/cases", "get", _op("Cases the officer may touch", OFFICER,
                                 _responses("200", ANY_OBJECT, "401"), tag="cases"))
    add("/api/cases/{case}", "get", _op(
        "A case with its parties, sessions, invitations, appointments and materials", OFFICER,
        _responses("200", ANY_OBJECT, "401 404"), tag="cases"), [CASE])
    add("/api/cases/{case}/close", "post", _op(
        "Close a case: no more sessions or links; its face references are deleted", OFFICER,
        _responses("200", ANY_OBJECT, "400 401 404 409"), tag="cases",
        body=_json_body({"reason": REASON}, ["reason"])), [CASE])
    add("/api/cases/{case}/audit", "get", _op(
        "The case's audit trail", OFFICER, _responses("200", ANY_OBJECT, "401 404"),
        tag="cases"), [CASE])
    add("/api/cases/{case}/parties", "post", _op(
        "Add a party (ID number and phone are stored masked)", OFFICER,
        _responses("201", ANY_OBJECT, "400 401 404"), tag="cases",
        body=_json_body({"role": {"type": "string", "enum": list(PARTY_ROLES)},
                         "name": {"type": "string", "minLength": 1, "maxLength": 100},
                         "id_number": {"type": "string", "pattern": "^[0-9A-Za-z]{6,20}$"},
                         "phone": {"type": "string", "maxLength": 32}},
                        ["role", "name"])), [CASE])
    add("/api/cases/{case}/parties/{party}/reference", "put", _op(
        "Enroll the party's reference photo (ID photo) for face checks", OFFICER,
        _responses("200", ANY_OBJECT, "401 404 413 422"), tag="verification",
        body=_raw_body("the photo itself, at most 10 MiB", ["image/jpeg", "image/png",
                                                           "application/octet-stream"])),
        [CASE, PARTY_P])
    paths["/api/cases/{case}/parties/{party}/reference"]["delete"] = _op(
        "Delete the party's reference", OFFICER, _responses("200", ANY_OBJECT, "400 401 404"),
        tag="verification", params=[_reason_query()])

    # -- sessions --------------------------------------------------------------------------
    add("/api/cases/{case}/sessions", "post", _op(
        "Open a session: its room, and the officer's signalling token", OFFICER,
        _responses("201", ANY_OBJECT, "400 401 404 409"), tag="sessions",
        body={"required": False, "content": {"application/json": {"schema": {
            "type": "object", "properties": {"purpose": {"type": "string",
                                                         "enum": list(PURPOSES)}}}}}}),
        [CASE])
    add("/api/cases/{case}/sessions/{session}/end", "post", _op(
        "End the session: seal its recording, close its room", OFFICER,
        _responses("200", ANY_OBJECT, "400 401 404 409"), tag="sessions",
        body=_json_body({"reason": REASON}, ["reason"])), [CASE, SESSION])
    add("/api/cases/{case}/sessions/{session}/token", "post", _op(
        "A fresh signalling token for the officer to (re)join the call", OFFICER,
        _responses("200", ANY_OBJECT, "401 403 404"), tag="sessions"), [CASE, SESSION])
    add("/api/cases/{case}/sessions/{session}/{action}", "post", _op(
        "Act on the call: remove, mute or unmute a participant; lock or unlock the room",
        OFFICER, _responses("200", ANY_OBJECT, "400 401 404 409"), tag="sessions",
        body=_json_body({"reason": REASON, "participant": {"type": "string", "maxLength": 64},
                         "kinds": {"type": "array", "items": {"type": "string",
                                                              "enum": ["audio", "video"]}}},
                        ["reason"])),
        [CASE, SESSION, _path("action", {"type": "string", "enum": [
            "remove", "mute", "unmute", "lock", "unlock"]})])
    add("/api/cases/{case}/sessions/{session}/recording", "post", _op(
        "Stop or restart the session's recording (it starts with the room)", OFFICER,
        _responses("200", ANY_OBJECT, "400 401 404 409"), tag="recordings",
        body=_json_body({"action": {"type": "string", "enum": ["start", "stop"]},
                         "reason": REASON}, ["action", "reason"])), [CASE, SESSION])
    add("/api/cases/{case}/sessions/{session}/verification", "get", _op(
        "Face verification state of each party in the call", OFFICER,
        _responses("200", ANY_OBJECT, "401 404 409"), tag="verification"), [CASE, SESSION])
    add("/api/cases/{case}/sessions/{session}/display", "post", _op(
        "Show an evidence item to everyone in the call", OFFICER,
        _responses("201", ANY_OBJECT, "400 401 404 409 422"), tag="evidence",
        body=_json_body({"material_id": MATERIAL_ID, "page": ID, "reason": REASON},
                        ["material_id", "reason"]),
        description="A video plays from its own packets when its codec fits the room, else "
                    "transcoded once; a photo or PDF page is a still. Start, end and viewers "
                    "go to the custody log."), [CASE, SESSION])
    add("/api/cases/{case}/sessions/{session}/display/stop", "post", _op(
        "Take the shown item off", OFFICER, _responses("200", ANY_OBJECT, "400 401 404 409"),
        tag="evidence", body=_json_body({"reason": REASON}, ["reason"])), [CASE, SESSION])

    # -- invitations -----------------------------------------------------------------------
    add("/api/cases/{case}/invitations", "post", _op(
        "Invite a party: a single-use link with a validity window", OFFICER,
        _responses("201", ANY_OBJECT, "400 401 404 409"), tag="invitations",
        body=_json_body({"party_id": ID,
                         "valid_hours": {"type": "number", "minimum": 0,
                                         "exclusiveMinimum": True, "maximum": 720},
                         "valid_from_seconds": {"type": "number", "minimum": 0,
                                                "maximum": 2592000}}, ["party_id"])),
        [CASE])
    add("/api/invitations/{invitation}/revoke", "post", _op(
        "Revoke an invitation", OFFICER, _responses("200", ANY_OBJECT, "400 401 404"),
        tag="invitations", body=_json_body({"reason": REASON}, ["reason"])),
        [_path("invitation", ID)])
    add("/api/invitations/redeem", "post", _op(
        "A party uses its link: consents, then a signalling token for the session's room",
        NOBODY, _responses("200", ANY_OBJECT, "400 404 409 410 429"), tag="invitations",
        body=_json_body({"token": {"type": "string", "minLength": 10, "maxLength": 100},
                         "consent": {"type": "object", "properties": {
                             k: {"type": "boolean"} for k in CONSENTS}}},
                        ["token", "consent"])))

    # -- appointments ----------------------------------------------------------------------
    add("/api/slots", "post", _op(
        "Publish a slot of the officer's brigade", OFFICER,
        _responses("201", ANY_OBJECT, "400 401"), tag="appointments",
        body=_json_body({"starts_at": TIME, "ends_at": TIME}, ["starts_at", "ends_at"]),
        description=f"In the future, within {HORIZON_DAYS} days, at most 8 hours long."))
    add("/api/slots", "get", _op(
        "The brigade's slots and their bookings", OFFICER,
        _responses("200", ANY_OBJECT, "401"), tag="appointments",
        params=[_query("free", {"type": "string", "enum": ["1", "true", "0", "false"]})]))
    add("/api/slots/{slot}/withdraw", "post", _op(
        "Withdraw an unbooked slot", OFFICER, _responses("200", ANY_OBJECT, "400 401 404 409"),
        tag="appointments", body=_json_body({"reason": REASON}, ["reason"])),
        [_path("slot", ID)])
    add("/api/cases/{case}/appointments", "post", _op(
        "Book a slot for a party of the case", OFFICER,
        _responses("201", ANY_OBJECT, "400 401 404 409"), tag="appointments",
        body=_json_body({"party_id": ID, "slot_id": ID, "reason": REASON},
                        ["party_id", "slot_id"])), [CASE])
    add("/api/cases/{case}/appointments/{appointment}/{action}", "post", _op(
        "Reschedule (to slot_id) or cancel an appointment", OFFICER,
        _responses("200", ANY_OBJECT, "400 401 404 409"), tag="appointments",
        body=_json_body({"slot_id": ID, "reason": REASON}, ["reason"])),
        [CASE, _path("appointment", ID),
         _path("action", {"type": "string", "enum": ["reschedule", "cancel"]})])

    # -- parties ---------------------------------------------------------------------------
    add("/api/party", "get", _op(
        "The party's case, name and appointment", PARTY,
        _responses("200", ANY_OBJECT, "401 403"), tag="parties"))
    add("/api/party/slots", "get", _op(
        "Free slots of the case's brigade", PARTY, _responses("200", ANY_OBJECT, "401 403"),
        tag="parties"))
    add("/api/party/appointment", "post", _op(
        "Book a slot, or move the party's appointment to it", PARTY,
        _responses("200", ANY_OBJECT, "400 401 403 404 409"), tag="parties",
        body=_json_body({"slot_id": ID, "reason": REASON}, ["slot_id"])))
    add("/api/party/appointment/cancel", "post", _op(
        "Cancel the party's appointment", PARTY,
        _responses("200", ANY_OBJECT, "400 401 403 404"), tag="parties",
        body=_json_body({"reason": REASON}, ["reason"])))

    # -- materials -------------------------------------------------------------------------
    upload_params = [_query("name", {"type": "string", "minLength": 1, "maxLength": 200},
                            required=True, description="the file's name"),
                     _query("description", {"type": "string", "maxLength": 500})]
    upload_body = _raw_body("the file itself; its type is taken from the content (JPEG, PNG, "
                            "PDF, MP4/MOV, WebM/Matroska)", MEDIA_TYPES)
    add("/api/party/materials", "post", _op(
        "Upload a material (photo, PDF, video)", PARTY,
        _responses("201", ANY_OBJECT, "400 401 403 413 415 422 429"), tag="materials",
        body=upload_body, params=upload_params))
    add("/api/party/materials", "get", _op(
        "The party's own uploads", PARTY, _responses("200", ANY_OBJECT, "401 403"),
        tag="materials"))
    add("/api/party/materials/{material}/content", "get", _op(
        "Download one of the party's own uploads (logged)", PARTY,
        _responses("200", {"type": "string", "format": "binary"}, "401 403 404 409",
                   "application/octet-stream"), tag="materials"),
        [_path("material", MATERIAL_ID)])
    add("/api/cases/{case}/materials", "post", _op(
        "Attach an evidence item to the case", OFFICER,
        _responses("201", ANY_OBJECT, "400 401 404 409 413 415 422 429"), tag="materials",
        body=upload_body, params=upload_params), [CASE])
    add("/api/cases/{case}/materials", "get", _op(
        "Every material of the case", OFFICER, _responses("200", ANY_OBJECT, "401 404"),
        tag="materials"), [CASE])
    add("/api/cases/{case}/materials/{material}/content", "get", _op(
        "Download a material: the hash is checked again, the access logged", OFFICER,
        _responses("200", {"type": "string", "format": "binary"}, "400 401 404 409",
                   "application/octet-stream"), tag="materials",
        params=[_reason_query()]), [CASE, _path("material", MATERIAL_ID)])

    # -- recordings ------------------------------------------------------------------------
    add("/api/recordings", "get", _op(
        "Recordings of the officer's brigade (a supervisor: all)", OFFICER,
        _responses("200", ANY_OBJECT, "401"), tag="recordings"))
    for suffix, summary in (("manifest", "The sealed manifest"),
                            ("verify", "Run the offline checks"),
                            ("access-log", "The recording's custody entries")):
        add(f"/api/recordings/{{recording}}/{suffix}", "get", _op(
            f"{summary} (logged)", OFFICER, _responses("200", ANY_OBJECT, "400 401 404 409"),
            tag="recordings", params=[_reason_query()]), [RECORDING])
    add("/api/recordings/{recording}/export", "post", _op(
        "Write an export package for court (logged)", OFFICER,
        _responses("200", ANY_OBJECT, "400 401 404 409"), tag="recordings",
        body=_json_body({"reason": REASON}, ["reason"])), [RECORDING])
    add("/api/recordings/{recording}/exports/{export}/{path}", "get", _op(
        "Download one file of an export package (logged)", OFFICER,
        _responses("200", {"type": "string", "format": "binary"}, "400 401 404",
                   "application/octet-stream"), tag="recordings", params=[_reason_query()]),
        [RECORDING, _path("export", {"type": "string", "pattern": "^EXP_[0-9T]+$"}),
         _path("path", {"type": "string"})])
    add("/api/recordings/{recording}/tracks/{track}/media", "get", _op(
        "Play one recorded track, decrypted and re-hashed as it is sent (logged)", OFFICER,
        _responses("200", {"type": "string", "format": "binary"}, "400 401 404 409",
                   "video/webm"), tag="recordings", params=[_reason_query()]),
        [RECORDING, _path("track", {"type": "string"})])
    add("/api/recordings/{recording}/retention", "post", _op(
        "Change how long the recording is kept (supervisors)", OFFICER,
        _responses("200", ANY_OBJECT, "400 401 403 404 409"), tag="recordings",
        body=_json_body({"retain_until": {"type": "string", "format": "date"},
                         "reason": REASON}, ["retain_until", "reason"])), [RECORDING])
    paths["/api/recordings/{recording}"] = {"parameters": [RECORDING], "delete": _op(
        "Delete the media once retention has passed (supervisors)", OFFICER,
        _responses("200", ANY_OBJECT, "400 401 403 404 409"), tag="recordings",
        params=[_reason_query()])}

    from .prejoin_api import describe  # the pre-join check describes its own routes

    paths.update(describe())
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "remotecase",
            "version": "0.1.0",
            "description": (
                "Remote handling of traffic cases by video. Errors are always "
                '`{"error": code, "message": text}` with a 4xx status. Officers send '
                "`Authorization: Bearer <login token>` (from /api/login); parties send their "
                "invitation link's token, or the signalling token that redeeming it gave. "
                "Every access to evidence needs a reason and is written to the custody log."),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {
                "officerLogin": {"type": "http", "scheme": "bearer",
                                 "description": "a login token from POST /api/login"},
                "partyLink": {"type": "http", "scheme": "bearer",
                              "description": "an invitation token, or a party's signalling "
                                             "token"},
            },
        },
    }


SPEC = build()
