"""The inquiry record (询问笔录) written during the call, over HTTP.

The officer opens a record for a party in a session; the header comes from the case and the
party and stays editable; question/answer turns are added and edited while the call runs, each
with its clock time and its offset in the session's recording (from the recording's start, or
the session's opening when nothing records). The party reads it live (``GET /api/party/record``
with its link or call token). Review freezes the text: a change is then a correction the party
confirms or rejects. Finalising renders the numbered PDF (``documents``), which the party and
the officers then sign through the documents API. Every saved version (its number and the
SHA-256 of the canonical JSON of header and record) is appended to the custody log as
``record.saved`` with the case, session and record.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web

from documents import DocumentError
from documents.record import InquiryRecord, RecordVersion

from .. import access
from ..access import text
from ..appkeys import CUSTODY, DB, DOCS, EVENTS, RECORDER
from ..http.jsonio import json_error, read_object
from ..http.openapi import (
    ANY_OBJECT,
    CASE,
    ID,
    OFFICER,
    PARTY,
    SESSION,
    TIME,
    Add,
    in_path,
    json_body,
    op,
    responses,
)
from ..refusals import unwrap
from . import store

T = TypeVar("T")
RECORD = in_path("record", ID)
MAX_TEXT = 5000

_STATUS: dict[store.Refusal, type[web.HTTPException]] = {
    store.Refusal.NO_CASE: web.HTTPNotFound,
    store.Refusal.CASE_CLOSED: web.HTTPConflict,
    store.Refusal.NO_SESSION: web.HTTPNotFound,
    store.Refusal.NO_PARTY: web.HTTPBadRequest,
    store.Refusal.NO_RECORD: web.HTTPNotFound,
    store.Refusal.NO_OFFICER: web.HTTPBadRequest,
    store.Refusal.FINAL: web.HTTPConflict,
}


def done(result: T | store.Refusal) -> T:
    """A store function's result, or its refusal raised as the error answer."""
    return unwrap(result, _STATUS)


async def _run(request: web.Request, fn: Any) -> Any:
    try:
        return done(await request.app[DB].run(fn))
    except store.Changed as exc:
        raise json_error(web.HTTPConflict, "record_state", str(exc)) from None


async def saved(
    request: web.Request, actor: str, result: tuple[dict[str, Any], RecordVersion]
) -> dict[str, Any]:
    row, version = result
    await request.app[CUSTODY].append_async(
        "record.saved",
        actor=actor,
        case=str(row["case_id"]),
        session=row["session_id"],
        record=row["id"],
        version=version.version,
        sha256=version.sha256,
        phase=row["phase"],
    )
    # the officers' event stream (/api/events) of the case, for other consoles following it
    request.app[EVENTS].publish(
        row["case_id"],
        "record.saved",
        record=row["id"],
        version=version.version,
        phase=row["phase"],
    )
    return row


def _at(body: dict[str, Any]) -> datetime:
    raw = body.get("at")
    if raw is None:
        return datetime.now(UTC)
    try:
        if not isinstance(raw, str):
            raise ValueError
        at = datetime.fromisoformat(raw)
        if at.tzinfo is None:
            raise ValueError
    except ValueError:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            "at：带时区的 ISO 8601 时间 / an ISO 8601 time with its offset",
        ) from None
    return at


def _long(body: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    if key not in body and not required:
        return None
    value = body.get(key)
    if not isinstance(value, str) or len(value) > MAX_TEXT or (required and not value.strip()):
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            f"{key}：1 至 {MAX_TEXT} 字的文本 / a text of 1-{MAX_TEXT} characters",
        )
    return value


async def _recording(
    request: web.Request, case_id: int, session_id: int
) -> tuple[str | None, datetime | None]:
    """The session's recording running now (its ID and start), if any."""
    room = await request.app[DB].run(lambda c: store.session_room(c, case_id, session_id))
    recorder = request.app.get(RECORDER)
    active = None if room is None or recorder is None else recorder.active.get(room)
    if active is None:
        return None, None
    return active.recording_id, datetime.fromisoformat(active.started_at.replace("Z", "+00:00"))


# -- officers --------------------------------------------------------------------------------
async def post_record(request: web.Request) -> web.Response:
    who = await access.officer(request)
    case_id = access.case_id(request)
    session_id = access.path_int(request, "session", "session")
    body = await read_object(request)
    recording = await _recording(request, case_id, session_id)
    result = await _run(
        request,
        lambda c: store.create(c, who, case_id, session_id, body.get("party_id"), recording),
    )
    return web.json_response(await saved(request, who.actor, result), status=201)


async def list_records(request: web.Request) -> web.Response:
    who = await access.officer(request)
    case_id = access.case_id(request)
    return web.json_response(
        {"records": await _run(request, lambda c: store.list_for_case(c, who, case_id))}
    )


def _ids(request: web.Request) -> tuple[int, int]:
    return access.case_id(request), access.path_int(request, "record", "record")


async def get_record(request: web.Request) -> web.Response:
    who = await access.officer(request)
    case_id, record_id = _ids(request)
    return web.json_response(await _run(request, lambda c: store.get(c, who, case_id, record_id)))


async def _change(request: web.Request, apply: Any) -> web.Response:
    who = await access.officer(request)
    case_id, record_id = _ids(request)

    def run(c: Any) -> Any:
        if access.find_case(c, who, case_id) is None:
            return store.Refusal.NO_CASE
        return store.change(c, who.actor, ("id = ? AND case_id = ?", (record_id, case_id)), apply)

    return web.json_response(await saved(request, who.actor, await _run(request, run)))


async def put_header(request: web.Request) -> web.Response:
    who = await access.officer(request)
    case_id, record_id = _ids(request)
    body = await read_object(request)
    unknown = set(body) - set(store.HEADER_SECTIONS)
    if (
        unknown
        or not all(isinstance(body[k], dict) for k in body if k != "officers")
        or not isinstance(body.get("officers", []), list)
    ):
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            "表头只含 department、case、person（对象）和 officers（列表）/ the header "
            "has department, case, person (objects) and officers (a list)",
        )
    result = await _run(request, lambda c: store.edit_header(c, who, case_id, record_id, body))
    return web.json_response(await saved(request, who.actor, result))


async def post_turn(request: web.Request) -> web.Response:
    body = await read_object(request)
    q, a, at = _long(body, "q"), _long(body, "a", required=False) or "", _at(body)
    return await _change(request, lambda r, h: r.add_turn(q or "", a, at))


async def put_turn(request: web.Request) -> web.Response:
    n = access.path_int(request, "turn", "turn")
    body = await read_object(request)
    q, a = _long(body, "q", required=False), _long(body, "a", required=False)
    return await _change(request, lambda r, h: r.edit_turn(n, q, a))


async def post_review(request: web.Request) -> web.Response:
    return await _change(request, lambda r, h: r.start_review())


async def post_correction(request: web.Request) -> web.Response:
    body = await read_object(request)
    turn = access.id_value(body.get("turn"))
    field = body.get("field")
    if turn is None or field not in ("q", "a"):
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            "turn：问答序号；field：q 或 a / turn: the turn's number; field: q or a",
        )
    new = _long(body, "text") or ""
    asked_by = text(body, "asked_by", required=False) or "被询问人"
    return await _change(
        request, lambda r, h: r.correct(turn, str(field), new, asked_by, datetime.now(UTC))
    )


async def post_finalise(request: web.Request) -> web.Response:
    """Final text, then the numbered PDF. The header and turns are checked against the
    template first: a missing field is refused (422 missing_fields) and the record stays in
    review."""
    from ..documents import api as documents

    who = await access.officer(request)
    case_id, record_id = _ids(request)
    row = await _run(request, lambda c: store.get(c, who, case_id, record_id))
    if row["document_id"] is not None:
        raise json_error(
            web.HTTPConflict,
            "record_final",
            "笔录已定稿并生成文书 / the record is final and its document made",
        )
    trial = InquiryRecord.from_json(
        {k: row[k] for k in ("recording_start", "turns", "corrections", "phase")}
        | {"version": row["version"]}
    )
    try:
        trial.finalise()
        data = trial.document_data(store.document_base(row))
        request.app[DOCS].templates["inquiry_record"].check(data)
    except DocumentError as exc:
        raise documents.refused(exc, web.HTTPConflict, "record_state") from None
    version = row["version"]

    def finalise(r: InquiryRecord, h: dict[str, Any]) -> RecordVersion:
        if r.version != version:
            raise store.RecordError("笔录在定稿时被修改，请重试 / the record changed: try again")
        return r.finalise()

    await _change_as(request, who, case_id, record_id, finalise)
    document = await documents.generate(
        request, who, case_id, "inquiry_record", {}, data=copy.deepcopy(data)
    )
    await request.app[DB].run(lambda c: store.link_document(c, record_id, document["id"]))
    return web.json_response({"record": record_id, "document": document}, status=201)


async def _change_as(
    request: web.Request, who: Any, case_id: int, record_id: int, apply: Any
) -> dict[str, Any]:
    result = await _run(
        request,
        lambda c: store.change(
            c, who.actor, ("id = ? AND case_id = ?", (record_id, case_id)), apply
        ),
    )
    return await saved(request, who.actor, result)


# -- the party -------------------------------------------------------------------------------
async def party_record(request: web.Request) -> web.Response:
    caller = await access.party(request)
    return web.json_response(await _run(request, lambda c: store.for_party(c, caller)))


async def party_answer(request: web.Request) -> web.Response:
    """The party confirms a correction as shown, or rejects it (the text goes back)."""
    caller = await access.party(request)
    correction = access.path_int(request, "correction", "correction")
    body = await read_object(request)
    confirmed = body.get("confirmed")
    if not isinstance(confirmed, bool):
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            "confirmed：true 确认，false 拒绝 / true confirms, false rejects",
        )
    where = (
        "id = (SELECT id FROM inquiry_records WHERE party_id = ? AND case_id = ? "
        "ORDER BY id DESC LIMIT 1)",
        (caller.party_id, caller.case_id),
    )
    result = await _run(
        request,
        lambda c: store.change(
            c,
            caller.actor,
            where,
            lambda r, h: r.answer_correction(correction, confirmed, datetime.now(UTC)),
        ),
    )
    row = await saved(request, caller.actor, result)
    row.pop("created_by", None)
    return web.json_response(row)


def add_routes(app: web.Application) -> None:
    base = "/api/cases/{case}/records"
    app.router.add_post("/api/cases/{case}/sessions/{session}/records", post_record)
    app.router.add_get(base, list_records)
    app.router.add_get(base + "/{record}", get_record)
    app.router.add_put(base + "/{record}/header", put_header)
    app.router.add_post(base + "/{record}/turns", post_turn)
    app.router.add_put(base + "/{record}/turns/{turn}", put_turn)
    app.router.add_post(base + "/{record}/review", post_review)
    app.router.add_post(base + "/{record}/corrections", post_correction)
    app.router.add_post(base + "/{record}/finalise", post_finalise)
    app.router.add_get("/api/party/record", party_record)
    app.router.add_post("/api/party/record/corrections/{correction}", party_answer)


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    base = "/api/cases/{case}/records"
    tag = "records"
    text_schema = {"type": "string", "maxLength": MAX_TEXT}
    add(
        "/api/cases/{case}/sessions/{session}/records",
        "post",
        op(
            "Open the inquiry record of a party in a session (header from the case)",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body({"party_id": ID}, ["party_id"]),
        ),
        [CASE, SESSION],
    )
    add(
        base,
        "get",
        op("The case's inquiry records", OFFICER, responses("200", ANY_OBJECT, "401 404"), tag=tag),
        [CASE],
    )
    add(
        base + "/{record}",
        "get",
        op("An inquiry record", OFFICER, responses("200", ANY_OBJECT, "401 404"), tag=tag),
        [CASE, RECORD],
    )
    add(
        base + "/{record}/header",
        "put",
        op(
            "Edit the header (sections department, case, person; officers by account)",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "department": ANY_OBJECT,
                    "case": ANY_OBJECT,
                    "person": ANY_OBJECT,
                    "officers": {"type": "array", "items": ANY_OBJECT},
                },
                [],
            ),
        ),
        [CASE, RECORD],
    )
    add(
        base + "/{record}/turns",
        "post",
        op(
            "Add a question and its answer (time and recording offset kept)",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body({"q": text_schema, "a": text_schema, "at": TIME}, ["q"]),
        ),
        [CASE, RECORD],
    )
    add(
        base + "/{record}/turns/{turn}",
        "put",
        op(
            "Edit a turn while writing",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body({"q": text_schema, "a": text_schema}, []),
        ),
        [CASE, RECORD, in_path("turn", ID)],
    )
    add(
        base + "/{record}/review",
        "post",
        op(
            "Start the party's review (the text is frozen)",
            OFFICER,
            responses("200", ANY_OBJECT, "401 403 404 409"),
            tag=tag,
        ),
        [CASE, RECORD],
    )
    add(
        base + "/{record}/corrections",
        "post",
        op(
            "A correction during review, for the party to confirm",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "turn": ID,
                    "field": {"type": "string", "enum": ["q", "a"]},
                    "text": text_schema,
                    "asked_by": {"type": "string", "maxLength": 200},
                },
                ["turn", "field", "text"],
            ),
        ),
        [CASE, RECORD],
    )
    add(
        base + "/{record}/finalise",
        "post",
        op(
            "Finalise and render the numbered PDF to sign",
            OFFICER,
            responses("201", ANY_OBJECT, "401 403 404 409 422"),
            tag=tag,
        ),
        [CASE, RECORD],
    )
    add(
        "/api/party/record",
        "get",
        op(
            "The party's inquiry record, live",
            PARTY,
            responses("200", ANY_OBJECT, "401 403 404"),
            tag=tag,
        ),
    )
    add(
        "/api/party/record/corrections/{correction}",
        "post",
        op(
            "Confirm or reject a correction",
            PARTY,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body({"confirmed": {"type": "boolean"}}, ["confirmed"]),
        ),
        [in_path("correction", ID)],
    )
