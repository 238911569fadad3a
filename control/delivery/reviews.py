"""Review (复核) of an accident determination: the party asks for it from its page within 3
working days of the determination's delivery (146号令 art.71, once), with its reasons and
materials it uploaded; after the window it is refused with the day the window closed and the
rest days the count skipped. An officer or a supervisor records the outcome."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

from aiohttp import web

from .. import access
from ..access import PartyCaller, audit
from ..appkeys import CUSTODY, DB, EVENTS, RULES
from ..auth import Officer, now_iso
from ..deadlines.rules import Rules, china_date, china_today, cn_date
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
from ..refusals import CodedRefusal, unwrap
from ..refusals import done as case_done
from .store import REVIEWABLE

T = TypeVar("T")
REVIEW = in_path("review", ID)
OUTCOMES = {
    "upheld": "维持原道路交通事故认定",
    "reinvestigate": "责令原办案单位重新调查、认定",
    "not_accepted": "不予受理",
}


class Refusal(CodedRefusal):
    NO_DELIVERY = ("not_found", "没有该送达记录 / no such delivery")
    NO_REVIEW = ("not_found", "没有该复核申请 / no such review")
    NOT_REVIEWABLE = (
        "not_reviewable",
        "只有送达成功的事故认定书或事故证明可以申请复核 / a review is asked of a delivered "
        "accident determination or certificate",
    )
    TWICE = ("already_requested", "复核以一次为限（146号令第七十一条）/ a review is asked once")
    BAD_MATERIAL = (
        "bad_request",
        "materials：本人在本案上传的材料 ID / materials: IDs of your own materials in this case",
    )
    DECIDED = ("already_decided", "复核结论已记录 / the outcome is recorded already")


_STATUS: dict[Refusal, type[web.HTTPException]] = {
    Refusal.NO_DELIVERY: web.HTTPNotFound,
    Refusal.NO_REVIEW: web.HTTPNotFound,
    Refusal.NOT_REVIEWABLE: web.HTTPConflict,
    Refusal.TWICE: web.HTTPConflict,
    Refusal.BAD_MATERIAL: web.HTTPBadRequest,
    Refusal.DECIDED: web.HTTPConflict,
}


def done(result: T | Refusal) -> T:
    return unwrap(result, _STATUS)


@dataclass(frozen=True)
class WindowClosed:
    delivered_on: date
    closed_on: date
    skipped: str

    def answer(self) -> web.HTTPException:
        skipped = f"，期间不计 {self.skipped}" if self.skipped else ""
        message = (
            f"复核申请期限已过：事故认定书于 {cn_date(self.delivered_on)} 送达，申请期限三个工作日"
            f"{skipped}，已于 {cn_date(self.closed_on)} 届满 / the time to ask for a review has "
            f"passed: delivered on {self.delivered_on.isoformat()}, three working days"
            f"{' (rest days not counted: ' + self.skipped + ')' if self.skipped else ''}, "
            f"closed on {self.closed_on.isoformat()}"
        )
        body = {
            "error": "review_window_closed",
            "message": message,
            "delivered_on": self.delivered_on.isoformat(),
            "closed_on": self.closed_on.isoformat(),
        }
        return web.HTTPConflict(
            text=json.dumps(body, ensure_ascii=False), content_type="application/json"
        )


def _row(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["materials"] = json.loads(out["materials"])
    out["outcome_text"] = OUTCOMES.get(out["outcome"] or "", None)
    return out


def request_review(
    conn: sqlite3.Connection,
    caller: PartyCaller,
    delivery_id: int,
    reasons: str,
    materials: list[str],
    rules: Rules,
    today: date,
) -> dict[str, Any] | Refusal | WindowClosed:
    delivery = conn.execute(
        "SELECT * FROM deliveries WHERE id = ? AND case_id = ? AND party_id = ?",
        (delivery_id, caller.case_id, caller.party_id),
    ).fetchone()
    if delivery is None:
        return Refusal.NO_DELIVERY
    if delivery["status"] != "sent" or delivery["kind"] not in REVIEWABLE:
        return Refusal.NOT_REVIEWABLE
    delivered_on = china_date(delivery["sent_at"])
    closes = rules.due("review_request", delivered_on)
    if today > closes:
        return WindowClosed(delivered_on, closes, rules.skipped(delivered_on, closes))
    for material in materials:
        found = conn.execute(
            "SELECT 1 FROM materials WHERE id = ? AND case_id = ? AND party_id = ?",
            (material, caller.case_id, caller.party_id),
        ).fetchone()
        if found is None:
            return Refusal.BAD_MATERIAL
    try:
        cursor = conn.execute(
            "INSERT INTO reviews (case_id, party_id, delivery_id, document_id, reasons, "
            "materials, requested_at, window_closes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                caller.case_id,
                caller.party_id,
                delivery_id,
                delivery["document_id"],
                reasons,
                json.dumps(materials),
                now_iso(),
                closes.isoformat(),
            ),
        )
    except sqlite3.IntegrityError:
        return Refusal.TWICE
    audit(
        conn,
        caller.actor,
        "review.requested",
        f"review:{cursor.lastrowid}",
        caller.case_id,
        reasons,
        document=delivery["document_id"],
        materials=materials,
    )
    row = conn.execute("SELECT * FROM reviews WHERE id = ?", (cursor.lastrowid,)).fetchone()
    return _row(row) | {"document_sha256": delivery["document_sha256"]}


def decide(
    conn: sqlite3.Connection, who: Officer, case_id: int, review_id: int, outcome: str, note: str
) -> dict[str, Any] | Refusal:
    row = conn.execute(
        "SELECT * FROM reviews WHERE id = ? AND case_id = ?", (review_id, case_id)
    ).fetchone()
    if row is None:
        return Refusal.NO_REVIEW
    if row["outcome"] is not None:
        return Refusal.DECIDED
    conn.execute(
        "UPDATE reviews SET outcome = ?, outcome_note = ?, decided_by = ?, decided_at = ? "
        "WHERE id = ?",
        (outcome, note, who.actor, now_iso(), review_id),
    )
    audit(conn, who.actor, "review.decided", f"review:{review_id}", case_id, note, outcome=outcome)
    return _row(conn.execute("SELECT * FROM reviews WHERE id = ?", (review_id,)).fetchone())


def listing(conn: sqlite3.Connection, case_id: int) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM reviews WHERE case_id = ? ORDER BY id", (case_id,))
    return [_row(r) for r in rows.fetchall()]


async def _log(
    request: web.Request, entry: str, actor: str, row: dict[str, Any], **more: Any
) -> None:
    await request.app[CUSTODY].append_async(
        entry,
        actor=actor,
        case=str(row["case_id"]),
        review=row["id"],
        document=row["document_id"],
        party=row["party_id"],
        **more,
    )
    request.app[EVENTS].publish(row["case_id"], entry, review=row["id"])


# -- handlers --------------------------------------------------------------------------------
async def party_request(request: web.Request) -> web.Response:
    caller = await access.party(request)
    case_done(await request.app[DB].run(lambda c: access.require_open_case(c, caller.case_id)))
    body = await read_object(request)
    delivery_id = access.id_value(body.get("delivery_id"))
    if delivery_id is None:
        raise json_error(web.HTTPBadRequest, "bad_request", "delivery_id：送达记录 ID / an ID")
    reasons = access.text(body, "reasons", max_len=5000)
    materials = body.get("materials", [])
    if (
        not isinstance(materials, list)
        or len(materials) > 50
        or not all(isinstance(m, str) and 0 < len(m) <= 100 for m in materials)
    ):
        raise json_error(
            web.HTTPBadRequest, Refusal.BAD_MATERIAL.code, Refusal.BAD_MATERIAL.message
        )
    rules = request.app[RULES]
    today = china_today()
    result = await request.app[DB].run(
        lambda c: request_review(c, caller, delivery_id, reasons, materials, rules, today)
    )
    if isinstance(result, WindowClosed):
        raise result.answer()
    row = done(result)
    await _log(
        request,
        "review.requested",
        caller.actor,
        row,
        sha256=row["document_sha256"],
        materials=materials,
        window_closes=row["window_closes"],
    )
    return web.json_response(row, status=201)


async def party_list(request: web.Request) -> web.Response:
    caller = await access.party(request)
    rows = await request.app[DB].run(lambda c: listing(c, caller.case_id))
    return web.json_response({"reviews": [r for r in rows if r["party_id"] == caller.party_id]})


async def list_reviews(request: web.Request) -> web.Response:
    who = await access.officer(request)
    case_id = access.case_id(request)
    case_done(await request.app[DB].run(lambda c: access.load_case(c, who, case_id)))
    rows = await request.app[DB].run(lambda c: listing(c, case_id))
    return web.json_response({"reviews": rows})


async def post_outcome(request: web.Request) -> web.Response:
    who = await access.officer(request)
    case_id = access.case_id(request)
    case_done(await request.app[DB].run(lambda c: access.load_case(c, who, case_id)))
    review_id = access.path_int(request, "review", "review")
    body = await read_object(request)
    outcome = body.get("outcome")
    if not isinstance(outcome, str) or outcome not in OUTCOMES:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            f"outcome：{'、'.join(OUTCOMES)}（{'、'.join(OUTCOMES.values())}）/ outcome: one of "
            f"{', '.join(OUTCOMES)}",
        )
    note = access.text(body, "note", max_len=5000)
    row = done(
        await request.app[DB].run(lambda c: decide(c, who, case_id, review_id, outcome, note))
    )
    await _log(request, "review.decided", who.actor, row, outcome=outcome)
    return web.json_response(row)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/party/reviews", party_request)
    app.router.add_get("/api/party/reviews", party_list)
    app.router.add_get("/api/cases/{case}/reviews", list_reviews)
    app.router.add_post("/api/cases/{case}/reviews/{review}/outcome", post_outcome)


def describe(add: Add) -> None:
    tag = "review"
    add(
        "/api/party/reviews",
        "post",
        op(
            "The party asks for a review (复核) of a delivered determination",
            PARTY,
            responses("201", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "delivery_id": ID,
                    "reasons": {"type": "string", "minLength": 1, "maxLength": 5000},
                    "materials": {"type": "array", "items": {"type": "string"}, "maxItems": 50},
                },
                ["delivery_id", "reasons"],
            ),
            description="409 review_window_closed after 3 working days from the delivery "
            "(`closed_on`, and the rest days the count skipped in `message`); 409 "
            "already_requested the second time.",
        ),
    )
    add(
        "/api/party/reviews",
        "get",
        op("The party's reviews", PARTY, responses("200", ANY_OBJECT, "401 403"), tag=tag),
    )
    add(
        "/api/cases/{case}/reviews",
        "get",
        op(
            "The case's reviews and outcomes",
            OFFICER,
            responses("200", ANY_OBJECT, "401 404"),
            tag=tag,
        ),
        [CASE],
    )
    add(
        "/api/cases/{case}/reviews/{review}/outcome",
        "post",
        op(
            "Record a review's outcome",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "outcome": {"type": "string", "enum": list(OUTCOMES)},
                    "note": {"type": "string", "minLength": 1, "maxLength": 5000},
                },
                ["outcome", "note"],
            ),
        ),
        [CASE, REVIEW],
    )
