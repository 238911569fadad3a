"""Compensation mediation (损害赔偿调解, 146号令 art.84-95) over HTTP: opened on the case's
mediation session within the rules' limits, its sides with their agents (a checked power of
attorney) and insurers, the agreement drafted in the call (each revision kept, every participant
shown it live), generated as a 调解书 that takes effect with its last signature, or ended with
a sealed 调解终结书. docs/mediation.md."""

from __future__ import annotations

import json
from datetime import date
from typing import Any, TypeVar

from aiohttp import web

from .. import access
from ..access import text
from ..appkeys import CUSTODY, DB, EVENTS, RULES, SFU
from ..auth import Officer, now_iso
from ..deadlines.rules import china_today, cn_date
from ..documents import api as documents
from ..documents import store as doc_store
from ..http.jsonio import json_error, read_object
from ..http.openapi import (
    ANY_OBJECT,
    CASE,
    ID,
    OFFICER,
    PARTY,
    Add,
    in_path,
    json_body,
    op,
    responses,
)
from ..refusals import done as case_done
from ..refusals import unwrap
from . import store
from .store import DraftError, LateApplication, NoticeShort, Refusal

T = TypeVar("T")
MEDIATION = in_path("mediation", ID)
PARTICIPANT = in_path("participant", ID)
LEGAL_BASIS = "《道路交通事故处理程序规定》第八十四条至第九十五条"

_STATUS: dict[Refusal, type[web.HTTPException]] = {
    Refusal.NO_MEDIATION: web.HTTPNotFound,
    Refusal.NO_PARTICIPANT: web.HTTPNotFound,
    Refusal.NO_SESSION: web.HTTPBadRequest,
    Refusal.BAD_SIDES: web.HTTPBadRequest,
    Refusal.BAD_SIDE: web.HTTPBadRequest,
    Refusal.ALREADY_OPEN: web.HTTPConflict,
    Refusal.NOT_OPEN: web.HTTPConflict,
    Refusal.SIDE_FULL: web.HTTPConflict,
    Refusal.BAD_ATTORNEY: web.HTTPBadRequest,
    Refusal.NOT_AGENT: web.HTTPBadRequest,
    Refusal.ALREADY_CHECKED: web.HTTPConflict,
    Refusal.NO_INSURER: web.HTTPBadRequest,
    Refusal.NO_DRAFT: web.HTTPConflict,
    Refusal.SIGNING_STARTED: web.HTTPConflict,
    Refusal.NO_AGREEMENT: web.HTTPConflict,
    Refusal.NOT_A_PARTY: web.HTTPBadRequest,
    Refusal.ALREADY_LEFT: web.HTTPConflict,
}


def done(result: T | Refusal) -> T:
    return unwrap(result, _STATUS)


def _conflict(body: dict[str, Any]) -> web.HTTPException:
    return web.HTTPConflict(
        text=json.dumps(body, ensure_ascii=False), content_type="application/json"
    )


def late_answer(late: LateApplication) -> web.HTTPException:
    skipped = f"，期间不计 {late.skipped}" if late.skipped else ""
    en_skipped = f" (rest days not counted: {late.skipped})" if late.skipped else ""
    return _conflict(
        {
            "error": "mediation_application_late",
            "message": (
                f"申请调解期限已过：事故认定书于 {cn_date(late.received_on)} 收到，申请期限十个"
                f"工作日{skipped}，已于 {cn_date(late.closed_on)} 届满（146号令第八十六条）/ the "
                f"time to apply for mediation has passed: the determination was received on "
                f"{late.received_on.isoformat()}, ten working days{en_skipped}, closed on "
                f"{late.closed_on.isoformat()}"
            ),
            "received_on": late.received_on.isoformat(),
            "closed_on": late.closed_on.isoformat(),
        }
    )


def notice_answer(short: NoticeShort) -> web.HTTPException:
    return _conflict(
        {
            "error": "mediation_notice_short",
            "message": (
                f"应于调解三个工作日前通知当事人（146号令第八十八条）：{cn_date(short.notified_on)}"
                f" 通知的，最早于 {cn_date(short.earliest)} 调解 / the parties are notified at "
                f"least three working days ahead: notified on {short.notified_on.isoformat()}, "
                f"the mediation is held on {short.earliest.isoformat()} at the earliest"
            ),
            "notified_on": short.notified_on.isoformat(),
            "earliest": short.earliest.isoformat(),
        }
    )


def draft_answer(exc: DraftError) -> web.HTTPException:
    return web.HTTPBadRequest(
        text=json.dumps(
            {"error": "bad_draft", "message": str(exc), "field": exc.field}, ensure_ascii=False
        ),
        content_type="application/json",
    )


def _date(body: dict[str, Any], key: str, required: bool) -> date | None:
    raw = body.get(key)
    if raw is None and not required:
        return None
    try:
        if not isinstance(raw, str):
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise json_error(
            web.HTTPBadRequest, "bad_request", f"{key}：日期 YYYY-MM-DD / {key}: a date, YYYY-MM-DD"
        ) from None


def broadcast(request: web.Request, room: str, message: dict[str, Any]) -> None:
    """To everyone in the mediation's call (party pages: ``remotecase:message``)."""
    live = request.app[SFU].rooms.get(room)
    if live is not None and not live.closed:
        live.broadcast(message)


async def log_step(
    request: web.Request, entry: str, actor: str, mediation: dict[str, Any], **fields: Any
) -> None:
    """One step: the custody log (the audit row is written with the change), the officers'
    event stream and the call."""
    await request.app[CUSTODY].append_async(
        entry,
        actor=actor,
        case=str(mediation["case_id"]),
        mediation=mediation["id"],
        session=mediation["session_id"],
        **fields,
    )
    request.app[EVENTS].publish(mediation["case_id"], entry, mediation=mediation["id"])
    broadcast(
        request,
        mediation["room"],
        {"type": "mediation", "event": entry, "mediation": mediation["id"]},
    )


async def _officer_case(request: web.Request) -> tuple[Officer, int]:
    who = await access.officer(request)
    case_id = access.case_id(request)
    case_done(await request.app[DB].run(lambda c: access.load_case(c, who, case_id)))
    return who, case_id


async def _changing(request: web.Request) -> tuple[Officer, int, int]:
    who, case_id = await _officer_case(request)
    case_done(await request.app[DB].run(lambda c: access.require_open_case(c, case_id)))
    return who, case_id, access.path_int(request, "mediation", "mediation")


async def _mediation(request: web.Request, case_id: int, mediation_id: int) -> dict[str, Any]:
    return done(await request.app[DB].run(lambda c: store.get(c, case_id, mediation_id)))


# -- handlers --------------------------------------------------------------------------------
async def post_mediation(request: web.Request) -> web.Response:
    who, case_id = await _officer_case(request)
    case_done(await request.app[DB].run(lambda c: access.require_open_case(c, case_id)))
    body = await read_object(request)
    session_id = access.id_value(body.get("session_id"))
    sides = body.get("sides")
    if session_id is None:
        raise Refusal.NO_SESSION.error(web.HTTPBadRequest)
    if not isinstance(sides, list) or any(access.id_value(s) is None for s in sides):
        raise Refusal.BAD_SIDES.error(web.HTTPBadRequest)
    today = china_today()
    received = _date(body, "determination_received_on", False)
    applied = _date(body, "applied_on", False) or today
    notified = _date(body, "notified_on", True)
    assert notified is not None
    for key, day in (
        ("determination_received_on", received),
        ("applied_on", applied),
        ("notified_on", notified),
    ):
        if day is not None and day > today:
            raise json_error(
                web.HTTPBadRequest,
                "bad_request",
                f"{key}：不能晚于今天 / {key}: not after today",
            )
    if received is not None and applied < received:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            "applied_on：不能早于收到事故认定书的日期 / applied_on: not before the "
            "determination was received",
        )
    rules = request.app[RULES]
    result = await request.app[DB].run(
        lambda c: store.open_mediation(
            c, who, case_id, session_id, sides, received, applied, notified, rules, today
        )
    )
    if isinstance(result, LateApplication):
        raise late_answer(result)
    if isinstance(result, NoticeShort):
        raise notice_answer(result)
    if isinstance(result, str):
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            "determination_received_on：本案没有事故认定书的送达记录，请填写当事人收到认定书的"
            "日期 / determination_received_on: no delivery of a determination in this case: "
            "give the date the parties received it",
        )
    row = done(result)
    await log_step(
        request,
        "mediation.opened",
        who.actor,
        row,
        sides=sides,
        received_on=row["received_on"],
        received_from=row["received_from"],
        applied_on=row["applied_on"],
        application_closes=row["application_closes"],
        notified_on=row["notified_on"],
        concludes_by=row["concludes_by"],
    )
    return web.json_response(row, status=201)


async def list_mediations(request: web.Request) -> web.Response:
    _, case_id = await _officer_case(request)
    today = china_today()
    rows = await request.app[DB].run(lambda c: store.listing(c, case_id, today))
    return web.json_response({"mediations": rows})


async def get_mediation(request: web.Request) -> web.Response:
    _, case_id = await _officer_case(request)
    mediation_id = access.path_int(request, "mediation", "mediation")
    return web.json_response(await _mediation(request, case_id, mediation_id))


async def post_participant(request: web.Request) -> web.Response:
    who, case_id, mediation_id = await _changing(request)
    body = await read_object(request)
    side = access.id_value(body.get("side"))
    kind = body.get("kind")
    if side is None:
        raise Refusal.BAD_SIDE.error(web.HTTPBadRequest)
    if kind not in ("agent", "insurer"):
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            "kind：agent（委托代理人）或 insurer（保险公司）/ kind: agent or insurer",
        )
    insurer_party = access.id_value(body.get("party_id")) if kind == "insurer" else None
    name = text(body, "name", max_len=100, required=kind == "agent" or insurer_party is None)
    phone = text(body, "phone", max_len=30, required=False)
    material = None
    detail: dict[str, str] = {}
    if kind == "agent":
        raw = body.get("attorney_material")
        if not isinstance(raw, str) or not 0 < len(raw) <= 100:
            raise Refusal.BAD_ATTORNEY.error(web.HTTPBadRequest)
        material = raw
        detail["phone"] = phone
    else:
        detail["company"] = text(body, "company", max_len=100, required=False)
        detail["policy"] = text(body, "policy", max_len=100, required=False)
    row = done(
        await request.app[DB].run(
            lambda c: store.add_participant(
                c,
                who,
                case_id,
                mediation_id,
                side,
                str(kind),
                name,
                phone,
                material,
                insurer_party,
                detail,
            )
        )
    )
    mediation = await _mediation(request, case_id, mediation_id)
    await log_step(
        request,
        "mediation.participant_added",
        who.actor,
        mediation,
        participant=row["id"],
        side=side,
        kind=kind,
        party=row["party_id"],
        attorney_material=material,
    )
    return web.json_response(row, status=201)


async def post_attorney(request: web.Request) -> web.Response:
    who, case_id, mediation_id = await _changing(request)
    participant_id = access.path_int(request, "participant", "mediation_participant")
    body = await read_object(request)
    decision = body.get("decision")
    if decision not in ("accepted", "rejected"):
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            "decision：accepted（通过）或 rejected（不通过）/ decision: accepted or rejected",
        )
    reason = text(body, "reason", max_len=500, required=decision == "rejected")
    row = done(
        await request.app[DB].run(
            lambda c: store.check_attorney(
                c, who, case_id, mediation_id, participant_id, decision == "accepted", reason
            )
        )
    )
    mediation = await _mediation(request, case_id, mediation_id)
    await log_step(
        request,
        "mediation.attorney_checked",
        who.actor,
        mediation,
        participant=participant_id,
        decision=decision,
        reason=reason,
        material=row["attorney_material"],
    )
    return web.json_response(row)


async def post_draft(request: web.Request) -> web.Response:
    who, case_id, mediation_id = await _changing(request)
    body = await read_object(request)
    today = china_today()
    result = await request.app[DB].run(
        lambda c: store.revise(c, who, case_id, mediation_id, body.get("draft"), today)
    )
    if isinstance(result, DraftError):
        raise draft_answer(result)
    revision = done(result)
    mediation = await _mediation(request, case_id, mediation_id)
    await log_step(
        request,
        "mediation.draft_revised",
        who.actor,
        mediation,
        revision=revision["revision"],
        sha256=revision["sha256"],
    )
    return web.json_response(revision, status=201)


async def list_drafts(request: web.Request) -> web.Response:
    _, case_id = await _officer_case(request)
    mediation_id = access.path_int(request, "mediation", "mediation")
    await _mediation(request, case_id, mediation_id)

    revisions = await request.app[DB].run(lambda c: store.drafts(c, mediation_id))
    return web.json_response({"revisions": revisions})


def _mediator(c: Any, mediation: dict[str, Any]) -> Officer:
    row = c.execute(
        "SELECT id, username, role, brigade FROM officers WHERE id = ?", (mediation["mediator"],)
    ).fetchone()
    return Officer(row["id"], row["username"], row["role"], row["brigade"])


async def post_agreement(request: web.Request) -> web.Response:
    """The current draft as a 调解书: one box per side's party and accepted agent, and the
    mediating officer's."""
    who, case_id, mediation_id = await _changing(request)
    body = await read_object(request)
    facts = text(body, "facts", max_len=5000)
    legal_basis = text(body, "legal_basis", max_len=500, required=False) or LEGAL_BASIS
    given = body.get("responsibility", {})
    if not isinstance(given, dict) or not all(
        isinstance(v, str) and 0 < len(v) <= 200 for v in given.values()
    ):
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            "responsibility：{当事人ID: 事故认定的责任} / responsibility: {party ID: the "
            "responsibility the determination found}",
        )
    department = body.get("department", {})
    mediation = await _mediation(request, case_id, mediation_id)
    if mediation["status"] != "open":
        raise Refusal.NOT_OPEN.error(web.HTTPConflict)
    draft = mediation["draft"]
    if draft is None:
        raise Refusal.NO_DRAFT.error(web.HTTPConflict)
    if await request.app[DB].run(lambda c: store.agreement_signed(c, mediation_id)):
        raise Refusal.SIGNING_STARTED.error(web.HTTPConflict)
    people = mediation["participants"]
    texts = store.draft_texts(draft["draft"], people)
    shares = {s["side"]: s["percent"] for s in draft["draft"]["shares"]}
    today = china_today()

    def build(c: Any) -> dict[str, Any] | doc_store.Refusal:
        mediator = _mediator(c, mediation)
        data = doc_store.base_data(
            c,
            mediator,
            case_id,
            {
                "department": department if isinstance(department, dict) else {},
                "officers": [{"account": mediator.id}],
            },
        )
        if isinstance(data, doc_store.Refusal):
            return data
        by_party = {p["party"]: p for p in data["parties"]}
        signers: list[dict[str, Any]] = []
        for side in (p for p in people if p["kind"] == "party"):
            entry = dict(by_party[side["party_id"]])
            entry["responsibility"] = given.get(
                str(side["party_id"]), f"承担{shares.get(side['side'], '0')}%赔偿责任"
            )
            signers.append(entry)
            for agent in people:
                if (
                    agent["kind"] == "agent"
                    and agent["side"] == side["side"]
                    and agent["attorney_status"] == "accepted"
                    and agent["left_at"] is None
                ):
                    signers.append(
                        {
                            "id": f"p{agent['party_id']}",
                            "name": agent["name"],
                            "role": "agent",
                            "party": agent["party_id"],
                            "responsibility": f"{side['name']}的委托代理人",
                        }
                    )
        insurers = [p for p in people if p["kind"] == "insurer" and p["left_at"] is None]
        data["parties"] = signers
        data["findings"] = {"facts": facts}
        data["mediation"] = texts | {
            "legal_basis": legal_basis,
            "date": cn_date(today),
            "start_date": cn_date(date.fromisoformat(mediation["started_on"])),
            "insurers": "、".join(i["name"] for i in insurers),
        }
        if insurers:
            side_names = {p["side"]: p["name"] for p in people if p["kind"] == "party"}
            named = "、".join(f"{i['name']}（{side_names[i['side']]}一方）" for i in insurers)
            data["mediation"]["losses"] += f"（参加调解的保险公司：{named}）"
        return data

    data = documents.done(await request.app[DB].run(build))
    doc = await documents.generate(request, who, case_id, "mediation_agreement", {}, data=data)
    await request.app[DB].run(
        lambda c: store.set_agreement(c, mediation_id, doc["id"], draft["revision"])
    )
    await log_step(
        request,
        "mediation.agreement_generated",
        who.actor,
        mediation,
        document=doc["id"],
        number=doc["number"],
        sha256=doc["sha256"],
        draft_revision=draft["revision"],
        draft_sha256=draft["sha256"],
    )
    return web.json_response(doc, status=201)


async def terminate(
    request: web.Request,
    mediation: dict[str, Any],
    reason: str,
    who: Officer | None,
    actor: str,
    trigger: dict[str, Any],
) -> dict[str, Any]:
    """End the mediation with a 调解终结书: generated from the case, sealed at once, and
    signed by the mediating officer when that officer is the one ending it (else the box waits
    for them). ``who`` is None when a party's own refusal ends it."""
    case_id, mediation_id = mediation["case_id"], mediation["id"]
    row = done(
        await request.app[DB].run(lambda c: store.begin_termination(c, case_id, mediation_id))
    )
    try:
        full = await _mediation(request, case_id, mediation_id)
        sides = {p["party_id"] for p in full["participants"] if p["kind"] == "party"}
        today = china_today()
        department: dict[str, Any] = {}
        if full["agreement_id"] is not None:
            agreement_id = full["agreement_id"]
            department = await request.app[DB].run(
                lambda c: store.agreement_department(c, agreement_id)
            )

        def build(c: Any) -> tuple[Officer, dict[str, Any] | doc_store.Refusal]:
            mediator = _mediator(c, row)
            data = doc_store.base_data(
                c,
                mediator,
                case_id,
                {"department": department, "officers": [{"account": mediator.id}]},
            )
            if not isinstance(data, doc_store.Refusal):
                data["parties"] = [p for p in data["parties"] if p["party"] in sides]
                data["mediation"] = {
                    "start_date": cn_date(date.fromisoformat(row["started_on"])),
                    "end_reason": reason,
                    "date": cn_date(today),
                }
            return mediator, data

        mediator, built = await request.app[DB].run(build)
        data = documents.done(built)
        by = who if who is not None else mediator
        made = await documents.generate(
            request, by, case_id, "mediation_termination", {}, data=data
        )
        doc = documents.done(
            await request.app[DB].run(lambda c: doc_store.get(c, by, case_id, made["id"]))
        )
        for slot in doc["required"]:
            if slot["role"] == "seal" or (
                slot["role"] == "officer" and who is not None and slot["signer_id"] == f"o{who.id}"
            ):
                doc = await documents.sign_box(request, by, doc, slot["field"], actor=actor)
    except BaseException:
        await request.app[DB].run(lambda c: store.undo_termination(c, mediation_id))
        raise
    await request.app[DB].run(
        lambda c: store.finish_termination(c, actor, mediation_id, reason, doc["id"], doc["sha256"])
    )
    await log_step(
        request,
        "mediation.terminated",
        actor,
        row,
        reason=reason,
        document=doc["id"],
        number=doc["number"],
        sha256=doc["sha256"],
        **trigger,
    )
    return await _mediation(request, case_id, mediation_id)


async def post_walkout(request: web.Request) -> web.Response:
    """A participant left the mediation (left the call; the officer records it). A side's party
    walking out ends the mediation (146号令 art.94)."""
    who, case_id, mediation_id = await _changing(request)
    participant_id = access.path_int(request, "participant", "mediation_participant")
    body = await read_object(request)
    note = text(body, "note", max_len=500)
    mediation = await _mediation(request, case_id, mediation_id)
    person = next((p for p in mediation["participants"] if p["id"] == participant_id), None)
    if person is not None and person["party_id"] is not None:
        live = request.app[SFU].rooms.get(mediation["room"])
        if live is not None and f"party-{person['party_id']}" in live.participants:
            raise json_error(
                web.HTTPConflict,
                "still_in_call",
                "该参加人仍在视频中，退出后再记录 / the participant is still in the call: "
                "record the walk-out once they have left",
            )
    left = done(
        await request.app[DB].run(
            lambda c: store.walk_out(c, who, case_id, mediation_id, participant_id, note)
        )
    )
    await log_step(
        request,
        "mediation.participant_left",
        who.actor,
        mediation,
        participant=participant_id,
        kind=left["kind"],
        note=note,
    )
    await request.app[DB].run(
        lambda c: access.audit(
            c,
            who.actor,
            "mediation.participant_left",
            f"mediation:{mediation_id}",
            case_id,
            note,
            participant=participant_id,
        )
    )
    if left["kind"] != "party":
        return web.json_response(await _mediation(request, case_id, mediation_id))
    reason = f"当事人{left['name']}中途退出调解"
    ended = await terminate(
        request, mediation, reason, who, who.actor, trigger={"walked_out": participant_id}
    )
    return web.json_response(ended)


async def post_terminate(request: web.Request) -> web.Response:
    """The officer ends the mediation: a party refused the agreement (``refused_by``: its
    participant ID) or another reason (a party sued, no agreement in the time)."""
    who, case_id, mediation_id = await _changing(request)
    body = await read_object(request)
    reason = text(body, "reason", max_len=500)
    mediation = await _mediation(request, case_id, mediation_id)
    trigger: dict[str, Any] = {}
    refused_by = body.get("refused_by")
    if refused_by is not None:
        person = next(
            (
                p
                for p in mediation["participants"]
                if p["id"] == refused_by and p["kind"] in ("party", "agent")
            ),
            None,
        )
        if person is None:
            raise Refusal.NO_PARTICIPANT.error(web.HTTPNotFound)
        reason = f"{person['name']}拒绝签订调解协议（{reason}）"
        trigger["refused_by"] = refused_by
    ended = await terminate(request, mediation, reason, who, who.actor, trigger)
    return web.json_response(ended)


async def party_mediation(request: web.Request) -> web.Response:
    """What a participant's page shows: the mediation, its people and the current draft."""
    caller = await access.party(request)
    today = china_today()
    row = await request.app[DB].run(
        lambda c: store.for_party(c, caller.case_id, caller.party_id, today)
    )
    if row is None:
        raise Refusal.NO_MEDIATION.error(web.HTTPNotFound)
    if row["draft"] is not None:
        row["draft_text"] = store.draft_texts(row["draft"]["draft"], row["participants"])
    row["at"] = now_iso()
    return web.json_response(row)


def add_routes(app: web.Application) -> None:
    base = "/api/cases/{case}/mediations"
    app.router.add_post(base, post_mediation)
    app.router.add_get(base, list_mediations)
    app.router.add_get(base + "/{mediation}", get_mediation)
    app.router.add_post(base + "/{mediation}/participants", post_participant)
    app.router.add_post(base + "/{mediation}/participants/{participant}/attorney", post_attorney)
    app.router.add_post(base + "/{mediation}/participants/{participant}/walkout", post_walkout)
    app.router.add_post(base + "/{mediation}/drafts", post_draft)
    app.router.add_get(base + "/{mediation}/drafts", list_drafts)
    app.router.add_post(base + "/{mediation}/agreement", post_agreement)
    app.router.add_post(base + "/{mediation}/terminate", post_terminate)
    app.router.add_get("/api/party/mediation", party_mediation)


def describe(add: Add) -> None:
    tag = "mediation"
    base = "/api/cases/{case}/mediations"
    date_s = {"type": "string", "format": "date"}
    add(
        base,
        "post",
        op(
            "Open a compensation mediation (损害赔偿调解) on the case's mediation session",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "session_id": ID,
                    "sides": {"type": "array", "items": ID, "minItems": 2},
                    "notified_on": date_s,
                    "applied_on": date_s,
                    "determination_received_on": date_s,
                },
                ["session_id", "sides", "notified_on"],
            ),
            description="409 mediation_application_late after 10 working days from receiving "
            "the determination (`closed_on`; rest days skipped named in `message`); 409 "
            "mediation_notice_short when notified fewer than 3 working days ahead "
            "(`earliest`); 409 mediation_open when one is open.",
        ),
        [CASE],
    )
    add(
        base,
        "get",
        op("The case's mediations", OFFICER, responses("200", ANY_OBJECT, "401 404"), tag=tag),
        [CASE],
    )
    add(
        base + "/{mediation}",
        "get",
        op(
            "A mediation: participants, limits, current draft, outcome",
            OFFICER,
            responses("200", ANY_OBJECT, "401 404"),
            tag=tag,
        ),
        [CASE, MEDIATION],
    )
    add(
        base + "/{mediation}/participants",
        "post",
        op(
            "Add an agent (with a power of attorney material) or an insurer to a side",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "side": ID,
                    "kind": {"type": "string", "enum": ["agent", "insurer"]},
                    "name": {"type": "string", "maxLength": 100},
                    "phone": {"type": "string", "maxLength": 30},
                    "attorney_material": {"type": "string", "maxLength": 100},
                    "party_id": ID,
                    "company": {"type": "string", "maxLength": 100},
                    "policy": {"type": "string", "maxLength": 100},
                },
                ["side", "kind"],
            ),
            description="409 side_full: at most three people per side (146号令 art.89).",
        ),
        [CASE, MEDIATION],
    )
    add(
        base + "/{mediation}/participants/{participant}/attorney",
        "post",
        op(
            "Check an agent's power of attorney",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "decision": {"type": "string", "enum": ["accepted", "rejected"]},
                    "reason": {"type": "string", "maxLength": 500},
                },
                ["decision"],
            ),
        ),
        [CASE, MEDIATION, PARTICIPANT],
    )
    add(
        base + "/{mediation}/participants/{participant}/walkout",
        "post",
        op(
            "Record that a participant left; a side's party leaving ends the mediation",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body({"note": {"type": "string", "maxLength": 500}}, ["note"]),
        ),
        [CASE, MEDIATION, PARTICIPANT],
    )
    add(
        base + "/{mediation}/drafts",
        "post",
        op(
            "Revise the draft agreement (a new revision; shown live in the call)",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body({"draft": ANY_OBJECT}, ["draft"]),
            description="400 bad_draft names the `field` (negative amounts, shares not adding "
            "up to 100 %, due dates not after today).",
        ),
        [CASE, MEDIATION],
    )
    add(
        base + "/{mediation}/drafts",
        "get",
        op(
            "Every revision of the draft",
            OFFICER,
            responses("200", ANY_OBJECT, "401 404"),
            tag=tag,
        ),
        [CASE, MEDIATION],
    )
    add(
        base + "/{mediation}/agreement",
        "post",
        op(
            "Generate the 调解书 from the current draft",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 404 409 422"),
            tag=tag,
            body=json_body(
                {
                    "facts": {"type": "string", "maxLength": 5000},
                    "legal_basis": {"type": "string", "maxLength": 500},
                    "responsibility": ANY_OBJECT,
                    "department": ANY_OBJECT,
                },
                ["facts"],
            ),
        ),
        [CASE, MEDIATION],
    )
    add(
        base + "/{mediation}/terminate",
        "post",
        op(
            "End the mediation with a sealed 调解终结书",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {"reason": {"type": "string", "maxLength": 500}, "refused_by": ID}, ["reason"]
            ),
        ),
        [CASE, MEDIATION],
    )
    add(
        "/api/party/mediation",
        "get",
        op(
            "The mediation the party, agent or insurer takes part in, with the live draft",
            PARTY,
            responses("200", ANY_OBJECT, "401 403 404"),
            tag=tag,
        ),
    )
