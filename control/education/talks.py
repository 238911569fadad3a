"""约谈 (one-to-one talks): an officer talks with one driver or safety manager of an education
case about a warning case, and the talk's record (``talk_record``, 约谈记录) is signed by the
person talked to and the officer.

A talk (``edu_talks``) names the case, the one party talked to, the session it was held in (a
session of the case, or none: a talk held on its own), the subject and place; the officer
drafts the questions and answers (``turns``, as in an inquiry record, each stamped with the
time it was first written) and the content and requirements while it is a draft. ``POST
.../record`` turns the draft into the numbered document ``talk_record`` through the documents
area's generation (:func:`control.documents.api.generate`: numbered, PDF/A, kept encrypted at
rest, ``document.generated`` in the custody log), with that one party as its signer: the party
signs it on its own device with the face check (``/api/party/documents/{id}/sign/prepare`` and
``finish``), the officer with ``/api/cases/{case}/documents/{id}/sign``; the signed PDF
validates offline like every document. After that the draft no longer changes (409
``talk_recorded``). Each step is an audit row and a custody entry (``education.talk_opened``,
``education.talk_recorded``).
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import time
from typing import Any

from aiohttp import web

from .. import access
from ..access import audit, text
from ..appkeys import CUSTODY, DB
from ..auth import Officer, now_iso
from ..documents import api as documents_api
from ..http.jsonio import json_error, read_object
from ..http.openapi import ANY_OBJECT, CASE, ID, OFFICER, Add, in_path, json_body, op, responses
from ..refusals import CodedRefusal, done
from .records import BEIJING, beijing

MAX_TURNS = 200
MAX_TEXT = 4000
PARTY_ROLES = {"driver": "驾驶员", "safety_manager": "安全管理人员"}


class TalkRefusal(CodedRefusal):
    NO_CASE = ("not_found", "没有该案件 / no such case")
    NO_TALK = ("not_found", "没有该约谈 / no such talk")
    NOT_EDUCATION = (
        "bad_request",
        "约谈须在教育案件中进行 / a talk is held in an education case",
    )
    CLOSED = ("case_closed", "案件已结案 / the case is closed")
    NO_PARTY = (
        "bad_request",
        "party_id：本案的驾驶员或安全管理人员 / a driver or safety manager of the case",
    )
    NO_SESSION = ("bad_request", "session_id：本案的会话 / a session of the case")
    RECORDED = (
        "talk_recorded",
        "约谈记录已生成，不能再修改 / the talk's record is made: it no longer changes",
    )


STATUS: dict[TalkRefusal, type[web.HTTPException]] = {
    TalkRefusal.NO_CASE: web.HTTPNotFound,
    TalkRefusal.NO_TALK: web.HTTPNotFound,
    TalkRefusal.NOT_EDUCATION: web.HTTPBadRequest,
    TalkRefusal.CLOSED: web.HTTPConflict,
    TalkRefusal.NO_PARTY: web.HTTPBadRequest,
    TalkRefusal.NO_SESSION: web.HTTPBadRequest,
    TalkRefusal.RECORDED: web.HTTPConflict,
}


def _refused(r: TalkRefusal) -> web.HTTPException:
    return r.error(STATUS[r])


def _row_json(row: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["turns"] = json.loads(out["turns"])
    return out


# -- SQL ----------------------------------------------------------------------------------------
def open_talk(
    conn: sqlite3.Connection,
    who: Officer,
    case_id: int,
    party_id: int,
    session_id: int | None,
    subject: str,
    place: str,
) -> dict[str, Any] | TalkRefusal:
    case = access.find_case(conn, who, case_id)
    if case is None:
        return TalkRefusal.NO_CASE
    if case["kind"] != "education":
        return TalkRefusal.NOT_EDUCATION
    if case["status"] == "closed":
        return TalkRefusal.CLOSED
    party = conn.execute(
        "SELECT role FROM parties WHERE id = ? AND case_id = ?", (party_id, case_id)
    ).fetchone()
    if party is None or party["role"] not in PARTY_ROLES:
        return TalkRefusal.NO_PARTY
    if session_id is not None and (
        conn.execute(
            "SELECT 1 FROM sessions WHERE id = ? AND case_id = ?", (session_id, case_id)
        ).fetchone()
        is None
    ):
        return TalkRefusal.NO_SESSION
    place = place or str(case["brigade"])
    now = now_iso()
    cursor = conn.execute(
        "INSERT INTO edu_talks (case_id, party_id, session_id, subject, place, started_at, "
        "created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (case_id, party_id, session_id, subject, place, now, who.actor, now, now),
    )
    assert cursor.lastrowid is not None
    audit(
        conn,
        who.actor,
        "education.talk_opened",
        f"edu_talk:{cursor.lastrowid}",
        case_id,
        party=party_id,
        session=session_id,
        subject=subject,
    )
    return get_talk(conn, who, cursor.lastrowid)


def get_talk(conn: sqlite3.Connection, who: Officer, talk_id: int) -> dict[str, Any] | TalkRefusal:
    row = conn.execute("SELECT * FROM edu_talks WHERE id = ?", (talk_id,)).fetchone()
    if row is None or access.find_case(conn, who, row["case_id"]) is None:
        return TalkRefusal.NO_TALK
    return _row_json(row)


def draft(
    conn: sqlite3.Connection, who: Officer, talk_id: int, changes: dict[str, Any]
) -> dict[str, Any] | TalkRefusal:
    talk = get_talk(conn, who, talk_id)
    if isinstance(talk, TalkRefusal):
        return talk
    if talk["document_id"] is not None:
        return TalkRefusal.RECORDED
    if "turns" in changes:
        before = talk["turns"]
        stamped = []
        for i, (q, a) in enumerate(changes["turns"]):
            # a turn keeps the time it was first written; a new one is stamped now
            old = before[i] if i < len(before) else None
            at = old["at"] if old is not None and old["q"] == q else time.time()
            stamped.append({"q": q, "a": a, "at": at})
        changes = {**changes, "turns": json.dumps(stamped, ensure_ascii=False)}
    sets = ", ".join(f"{k} = ?" for k in changes)
    conn.execute(
        f"UPDATE edu_talks SET {sets}, updated_at = ? WHERE id = ?",  # keys: a fixed set
        (*changes.values(), now_iso(), talk_id),
    )
    return get_talk(conn, who, talk_id)


def record_data(
    conn: sqlite3.Connection, who: Officer, talk: dict[str, Any], department: str | None
) -> dict[str, Any]:
    """The talk_record's data: the case, the one party talked to, the officer, the turns."""
    case = conn.execute("SELECT * FROM cases WHERE id = ?", (talk["case_id"],)).fetchone()
    party = conn.execute("SELECT * FROM parties WHERE id = ?", (talk["party_id"],)).fetchone()
    company = conn.execute(
        "SELECT c.name FROM edu_viewers v JOIN edu_people p ON p.id = v.person_id "
        "JOIN edu_companies c ON c.id = p.company_id WHERE v.party_id = ?",
        (talk["party_id"],),
    ).fetchone()
    role = PARTY_ROLES.get(party["role"], party["role"])
    opened = None
    if talk["session_id"] is not None:
        session = conn.execute(
            "SELECT opened_at FROM sessions WHERE id = ?", (talk["session_id"],)
        ).fetchone()
        opened = datetime.datetime.fromisoformat(session["opened_at"]).timestamp()
    started = talk["started_at"]
    stamp = "%Y-%m-%d %H:%M:%S"
    return {
        "department": {
            "name": department or case["brigade"],
            "brigade": case["brigade"],
            "abbr": "",
            "seal_name": "交通事故处理专用章",
        },
        "case": {
            "id": str(case["id"]),
            "title": case["title"],
            "kind": case["kind"],
            "start_time": datetime_beijing(started, stamp),
            "end_time": datetime_beijing(now_iso(), stamp),
            "place": talk["place"],
        },
        "talk": {
            "subject": talk["subject"] + (f"（{company['name']}）" if company is not None else ""),
            "content": talk["content"] or "见以下问答 / see the questions and answers below",
            **({"requirements": talk["requirements"]} if talk["requirements"] else {}),
        },
        "parties": [
            {
                "id": f"p{party['id']}",
                "party": party["id"],
                "name": party["name"],
                "role": role,
                "phone": party["phone"],
            }
        ],
        "officers": [{"id": f"o{who.id}", "account": who.id, "name": who.username}],
        "turns": [
            {"q": t["q"], "a": t["a"], "time": beijing(t["at"]), "offset": _offset(opened, t["at"])}
            for t in talk["turns"]
        ],
    }


def _offset(opened: float | None, at: float) -> float | str:
    """Where in the session's recording a turn was written (seconds), or 无 without one."""
    return at - opened if opened is not None and at >= opened else "无"


def datetime_beijing(iso: str, stamp: str) -> str:
    return datetime.datetime.fromisoformat(iso).astimezone(BEIJING).strftime(stamp)


def mark_recorded(
    conn: sqlite3.Connection, who: Officer, talk_id: int, document_id: int
) -> dict[str, Any] | TalkRefusal:
    """Tie the document to the talk (refused when another record of it came first)."""
    cursor = conn.execute(
        "UPDATE edu_talks SET document_id = ?, ended_at = ?, updated_at = ? "
        "WHERE id = ? AND document_id IS NULL",
        (document_id, now_iso(), now_iso(), talk_id),
    )
    if cursor.rowcount != 1:
        return TalkRefusal.RECORDED
    talk = get_talk(conn, who, talk_id)
    if isinstance(talk, dict):
        audit(
            conn,
            who.actor,
            "education.talk_recorded",
            f"edu_talk:{talk_id}",
            talk["case_id"],
            document=document_id,
        )
    return talk


# -- HTTP ---------------------------------------------------------------------------------------
def _turns(body: dict[str, Any]) -> list[tuple[str, str]]:
    raw = body.get("turns")
    bad = json_error(
        web.HTTPBadRequest,
        "bad_request",
        f"turns：问答列表，每项 {{q, a}} 为文字（至多 {MAX_TURNS} 项、每项 {MAX_TEXT} 字）/ "
        f"a list of {{q, a}} texts (at most {MAX_TURNS}, {MAX_TEXT} characters each)",
    )
    if not isinstance(raw, list) or len(raw) > MAX_TURNS:
        raise bad
    out = []
    for t in raw:
        if not isinstance(t, dict):
            raise bad
        q, a = t.get("q"), t.get("a", "")
        if not isinstance(q, str) or not q.strip() or not isinstance(a, str):
            raise bad
        if len(q) > MAX_TEXT or len(a) > MAX_TEXT:
            raise bad
        out.append((q.strip(), a.strip()))
    return out


async def post_talk(request: web.Request) -> web.Response:
    who = await access.officer(request)
    case_id = access.case_id(request)
    body = await read_object(request)
    party_id = body.get("party_id")
    session_id = body.get("session_id")
    if not isinstance(party_id, int) or isinstance(party_id, bool):
        raise _refused(TalkRefusal.NO_PARTY)
    if session_id is not None and (not isinstance(session_id, int) or isinstance(session_id, bool)):
        raise _refused(TalkRefusal.NO_SESSION)
    subject = text(body, "subject", max_len=500)
    # the officer's place (the record adds "（远程视频）"); by default the case's brigade
    place = text(body, "place", max_len=200, required=False)
    talk = await request.app[DB].run(
        lambda c: open_talk(c, who, case_id, party_id, session_id, subject, place)
    )
    if isinstance(talk, TalkRefusal):
        raise _refused(talk)
    await request.app[CUSTODY].append_async(
        "education.talk_opened",
        actor=who.actor,
        case=str(case_id),
        talk=talk["id"],
        party=party_id,
        session=session_id,
        subject=subject,
    )
    return web.json_response(talk, status=201)


async def get_one(request: web.Request) -> web.Response:
    who = await access.officer(request)
    talk_id = access.path_int(request, "talk", "talk")
    talk = await request.app[DB].run(lambda c: get_talk(c, who, talk_id))
    if isinstance(talk, TalkRefusal):
        raise _refused(talk)
    return web.json_response(talk)


async def put_talk(request: web.Request) -> web.Response:
    """The officer's draft: the turns (the whole list), the content, the requirements."""
    who = await access.officer(request)
    talk_id = access.path_int(request, "talk", "talk")
    body = await read_object(request)
    changes: dict[str, Any] = {}
    if "turns" in body:
        changes["turns"] = _turns(body)
    for key in ("content", "requirements"):
        if key in body:
            changes[key] = text(body, key, max_len=MAX_TEXT, required=False)
    if not changes:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            "turns、content、requirements 至少一项 / at least one of turns, content, requirements",
        )
    talk = await request.app[DB].run(lambda c: draft(c, who, talk_id, changes))
    if isinstance(talk, TalkRefusal):
        raise _refused(talk)
    return web.json_response(talk)


async def post_record(request: web.Request) -> web.Response:
    """The talk's record, numbered and kept as a document to be signed by both."""
    who = await access.officer(request)
    talk_id = access.path_int(request, "talk", "talk")
    body = await read_object(request, empty_ok=True)
    department = text(body, "department_name", max_len=64, required=False)
    talk = await request.app[DB].run(lambda c: get_talk(c, who, talk_id))
    if isinstance(talk, TalkRefusal):
        raise _refused(talk)
    if talk["document_id"] is not None:
        raise _refused(TalkRefusal.RECORDED)
    if not talk["turns"] and not talk["content"]:
        raise json_error(
            web.HTTPConflict,
            "talk_empty",
            "约谈记录须有问答或内容 / the talk's record needs questions and answers or content",
        )
    case_id = int(talk["case_id"])
    draft_now: dict[str, Any] = talk
    done(await request.app[DB].run(lambda c: access.load_case(c, who, case_id)))
    data = await request.app[DB].run(lambda c: record_data(c, who, draft_now, department))
    doc = await documents_api.generate(request, who, case_id, "talk_record", {}, data)
    talk = await request.app[DB].run(lambda c: mark_recorded(c, who, talk_id, int(doc["id"])))
    if isinstance(talk, TalkRefusal):
        # another record of this talk came first (two requests at once): this document stays
        # in the case's documents, unsigned, and the answer says the talk is recorded
        raise _refused(talk)
    await request.app[CUSTODY].append_async(
        "education.talk_recorded",
        actor=who.actor,
        case=str(case_id),
        talk=talk_id,
        document=doc["id"],
        number=doc["number"],
        sha256=doc["sha256"],
    )
    return web.json_response({"talk": talk, "document": doc}, status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/cases/{case}/education/talks", post_talk)
    app.router.add_get("/api/education/talks/{talk}", get_one)
    app.router.add_put("/api/education/talks/{talk}", put_talk)
    app.router.add_post("/api/education/talks/{talk}/record", post_record)


TALK = in_path("talk", ID)
TEXT = {"type": "string", "maxLength": MAX_TEXT}


def describe(add: Add) -> None:
    tag = "education"
    add(
        "/api/cases/{case}/education/talks",
        "post",
        op(
            "Open a 约谈 (one-to-one talk) with a driver or safety manager of the case",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "party_id": ID,
                    "session_id": ID,
                    "subject": {"type": "string", "minLength": 1, "maxLength": 500},
                    "place": {"type": "string", "maxLength": 200},
                },
                ["party_id", "subject"],
            ),
        ),
        [CASE],
    )
    add(
        "/api/education/talks/{talk}",
        "get",
        op("A talk and its draft", OFFICER, responses("200", ANY_OBJECT, "401 404"), tag=tag),
        [TALK],
    )
    add(
        "/api/education/talks/{talk}",
        "put",
        op(
            "Draft the talk: questions and answers, content, requirements",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "turns": {
                        "type": "array",
                        "maxItems": MAX_TURNS,
                        "items": {
                            "type": "object",
                            "properties": {"q": TEXT, "a": TEXT},
                            "required": ["q"],
                        },
                    },
                    "content": TEXT,
                    "requirements": TEXT,
                },
                [],
            ),
        ),
        [TALK],
    )
    add(
        "/api/education/talks/{talk}/record",
        "post",
        op(
            "Make the talk's record (talk_record), to be signed by the party and the officer",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 404 409 422"),
            tag=tag,
            body=json_body(
                {"department_name": {"type": "string", "minLength": 1, "maxLength": 64}}, []
            ),
        ),
        [TALK],
    )
