"""The penalty procedure (行政处罚法 art.44-45, 62-64): the notice of the intended penalty
(告知, a ``penalty_notice`` document), the party's statement and defence, the hearing right when
the fine is 2,000 yuan or more, the decision (a ``penalty_decision`` document), the payment by
reference (paid in the national traffic app).

:func:`decision_refusal` is the rule the documents area applies before it numbers a decision
(``control/documents/api.py``): no decision without a prior notice, none before the statement
period ends unless the party waived it, and, when a hearing is offered, none before the hearing
window closes (unless waived) or while a requested hearing has not been held.

The statement and hearing periods run from when the party was **notified** (:func:`notified_at`):
the earliest of the party's signature on the notice (告知笔录 signed in the call) and the sent
time of a delivery of it to the party (the date the system shows as sent, 157号 art.56; for
a failed or refused one, its post or the end of its public notice, art.55), never from the
notice's creation. A notice neither signed by the party nor delivered to it has told
nobody anything: no period runs and no decision is allowed (``penalty_notice_unserved``).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime
from typing import Any

from aiohttp import web

from .. import access
from ..access import audit
from ..appkeys import CUSTODY, DB, EVENTS, RULES
from ..auth import Officer, now_iso
from ..deadlines.rules import Rules, china_date, china_today, cn_date
from ..http.jsonio import json_error, read_object
from ..http.openapi import ANY_OBJECT, CASE, OFFICER, Add, json_body, op, responses
from ..refusals import done as case_done
from . import store as delivery_store

HEARING_FROM_YUAN = 2000  # 行政处罚法 art.63 as 公安机关 apply it to a person
STEPS = ("statement", "waiver", "hearing_requested", "hearing_held", "payment")
RIGHTS = ("statement", "hearing")


def _amount(data: dict[str, Any]) -> float | None:
    value = (data.get("penalty") or {}).get("amount")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def notified_from(signatures: list[dict[str, Any]], sent_at: list[str]) -> str | None:
    """The earliest of a party's signature time and a sent delivery's time (UTC ISO), or None."""
    times = [s["at"] for s in signatures if s.get("role") == "party" and s.get("at")]
    times += [t for t in sent_at if t]
    return min(times, key=lambda t: datetime.fromisoformat(t.replace("Z", "+00:00")), default=None)


def notified_at(conn: sqlite3.Connection, notice_id: int, today: date | None = None) -> str | None:
    """When the party was notified of the notice ``notice_id`` (see the module's text).

    An electronic delivery that failed or was refused notifies by its fallback (157号
    art.55): the day of the post (``delivered_on`` of the delivery), or the end of the public
    notice's sixty days once ``today`` has reached it; such a day counts from its first moment
    in China time."""
    row = conn.execute("SELECT signatures FROM documents WHERE id = ?", (notice_id,)).fetchone()
    signatures = [] if row is None else json.loads(row["signatures"])
    today = today or china_today()
    rows = conn.execute("SELECT * FROM deliveries WHERE document_id = ?", (notice_id,))
    sent = [at for r in rows if (at := delivery_store.delivered_at(conn, r, today)) is not None]
    return notified_from(signatures, sent)


def state(conn: sqlite3.Connection, case_id: int, rules: Rules, today: date) -> dict[str, Any]:
    """Where the case's penalty procedure stands, and whether a decision may be made now."""
    notice = conn.execute(
        "SELECT id, number, data, created_at, sha256 FROM documents WHERE case_id = ? "
        "AND kind = 'penalty_notice' ORDER BY id DESC LIMIT 1",
        (case_id,),
    ).fetchone()
    decision = conn.execute(
        "SELECT id, number, created_at FROM documents WHERE case_id = ? "
        "AND kind = 'penalty_decision' ORDER BY id DESC LIMIT 1",
        (case_id,),
    ).fetchone()
    steps = [
        {**dict(r), "detail": json.loads(r["detail"])}
        for r in conn.execute(
            "SELECT id, step, detail, recorded_by, recorded_at FROM penalty_steps "
            "WHERE case_id = ? ORDER BY id",
            (case_id,),
        ).fetchall()
    ]
    out: dict[str, Any] = {
        "notice": None,
        "decision": None if decision is None else dict(decision),
        "steps": steps,
        "payment": next((s for s in steps if s["step"] == "payment"), None),
    }
    if notice is None:
        out["decision_allowed"] = False
        out["refusal"] = {
            "error": "penalty_notice_required",
            "message": "作出行政处罚决定前须先告知拟作出的处罚及陈述、申辩（和听证）权利"
            "（行政处罚法第四十四条、第六十二条）：本案尚无行政处罚告知笔录 / a penalty "
            "decision needs a prior notice of the intended penalty and the rights to state a case "
            "(and to a hearing): this case has no penalty notice",
        }
        return out
    amount = _amount(json.loads(notice["data"]))
    hearing = amount is not None and amount >= HEARING_FROM_YUAN
    waived = {s["detail"].get("right") for s in steps if s["step"] == "waiver"}
    requested = any(s["step"] == "hearing_requested" for s in steps)
    held = any(s["step"] == "hearing_held" for s in steps)
    at = notified_at(conn, notice["id"], today)
    out["notice"] = {
        "id": notice["id"],
        "number": notice["number"],
        "sha256": notice["sha256"],
        "notified_at": at,
        "notified_on": None,
        "amount": amount,
        "hearing_offered": hearing,
        "statement_closes": None,
        "hearing_closes": None,
        "waived": sorted(w for w in waived if w),
        "hearing_requested": requested,
        "hearing_held": held,
    }
    if at is None:
        out["decision_allowed"] = False
        out["refusal"] = {
            "error": "penalty_notice_unserved",
            "message": f"行政处罚告知笔录 {notice['number']} 尚未由当事人签名，也未送达当事人："
            "陈述、申辩（和听证）期限自当事人签收或送达之日起计算 / the penalty notice "
            f"{notice['number']} is neither signed by the party nor delivered to it: the "
            "periods for its statement (and hearing) run from when it is notified",
        }
        return out
    notified = china_date(at)
    statement_closes = rules.due("statement", notified)
    hearing_closes = rules.due("hearing_request", notified) if hearing else None
    out["notice"] |= {
        "notified_on": notified.isoformat(),
        "statement_closes": statement_closes.isoformat(),
        "hearing_closes": None if hearing_closes is None else hearing_closes.isoformat(),
    }
    refusal: dict[str, str] | None = None
    if today <= statement_closes and "statement" not in waived:
        skipped = rules.skipped(notified, statement_closes)
        refusal = {
            "error": "statement_period_open",
            "message": f"陈述、申辩期限尚未届满：{cn_date(notified)} 告知，期限至 "
            f"{cn_date(statement_closes)}"
            + (f"（不计 {skipped}）" if skipped else "")
            + "，当事人放弃陈述申辩的除外 / the period for the party's statement and defence "
            f"runs until {statement_closes.isoformat()} (unless the party waives it)",
        }
    elif hearing and requested and not held:
        refusal = {
            "error": "hearing_pending",
            "message": "当事人已要求听证，听证结束前不能作出决定 / the party asked for a "
            "hearing: no decision before it is held",
        }
    elif (
        hearing
        and hearing_closes is not None
        and today <= hearing_closes
        and not ("hearing" in waived or requested)
    ):
        refusal = {
            "error": "hearing_period_open",
            "message": f"罚款 {amount:g} 元，当事人可在告知后五个工作日内要求听证，期限至 "
            f"{cn_date(hearing_closes)}，当事人放弃听证的除外 / a fine of {amount:g} yuan: the "
            f"party may ask for a hearing until {hearing_closes.isoformat()} (unless it waives it)",
        }
    out["decision_allowed"] = refusal is None
    out["refusal"] = refusal
    return out


def decision_refusal(
    conn: sqlite3.Connection, case_id: int, rules: Rules, today: date
) -> dict[str, str] | None:
    """Why a penalty decision may not be generated now (``{error, message}``), or None."""
    refusal: dict[str, str] | None = state(conn, case_id, rules, today)["refusal"]
    return refusal


async def before_decision(request: web.Request, case_id: int) -> None:
    """The documents area's hook: raise the refusal (409) before a decision is numbered."""
    rules = request.app[RULES]
    today = china_today()
    refusal = await request.app[DB].run(lambda c: decision_refusal(c, case_id, rules, today))
    if refusal is not None:
        raise json_error(web.HTTPConflict, refusal["error"], refusal["message"])


def record_step(
    conn: sqlite3.Connection,
    who: Officer,
    case_id: int,
    step: str,
    detail: dict[str, Any],
    rules: Rules,
    today: date,
) -> tuple[int, dict[str, Any]] | str:
    """A step's row ID and the procedure's state after it, or why not (a message), in one
    transaction (``db.run``). The state is counted on the calendar before anything is written:
    a count the calendar cannot make (:class:`CalendarError`, 409 ``calendar_missing``) raises
    with nothing recorded, so that the request retried later records the step once."""
    state(conn, case_id, rules, today)
    has_notice = conn.execute(
        "SELECT 1 FROM documents WHERE case_id = ? AND kind = 'penalty_notice'", (case_id,)
    ).fetchone()
    if has_notice is None:
        return "须先告知（生成行政处罚告知笔录）/ give the notice (penalty_notice) first"
    if step == "payment":
        decided = conn.execute(
            "SELECT 1 FROM documents WHERE case_id = ? AND kind = 'penalty_decision'", (case_id,)
        ).fetchone()
        if decided is None:
            return "尚未作出处罚决定 / no penalty decision yet"
    cursor = conn.execute(
        "INSERT INTO penalty_steps (case_id, step, detail, recorded_by, recorded_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (case_id, step, json.dumps(detail, ensure_ascii=False), who.actor, now_iso()),
    )
    audit(conn, who.actor, f"penalty.{step}", f"case:{case_id}", case_id, **detail)
    assert cursor.lastrowid is not None
    return cursor.lastrowid, state(conn, case_id, rules, today)


async def get_penalty(request: web.Request) -> web.Response:
    who = await access.officer(request)
    case_id = access.case_id(request)
    case_done(await request.app[DB].run(lambda c: access.load_case(c, who, case_id)))
    rules = request.app[RULES]
    today = china_today()
    return web.json_response(await request.app[DB].run(lambda c: state(c, case_id, rules, today)))


async def post_step(request: web.Request) -> web.Response:
    """The officer records a step as it happened in the call: the party's statement and
    defence, a waiver (of the statement period or the hearing), a hearing asked for or held,
    the payment's reference."""
    who = await access.officer(request)
    case_id = access.case_id(request)
    case_done(await request.app[DB].run(lambda c: access.load_case(c, who, case_id)))
    case_done(await request.app[DB].run(lambda c: access.require_open_case(c, case_id)))
    body = await read_object(request)
    step = body.get("step")
    if step not in STEPS:
        raise json_error(
            web.HTTPBadRequest, "bad_request", f"step：{'、'.join(STEPS)} / step: one of {STEPS}"
        )
    detail: dict[str, Any] = {}
    if step == "payment":
        detail["reference"] = access.text(body, "reference", max_len=200)
    else:
        detail["text"] = access.text(body, "text", max_len=5000, required=step == "statement")
    if step == "waiver":
        if body.get("right") not in RIGHTS:
            raise json_error(
                web.HTTPBadRequest,
                "bad_request",
                "right：statement（陈述申辩）或 hearing（听证）/ right: statement or hearing",
            )
        detail["right"] = body["right"]
    rules = request.app[RULES]
    today = china_today()
    result = await request.app[DB].run(
        lambda c: record_step(c, who, case_id, step, detail, rules, today)
    )
    if isinstance(result, str):
        raise json_error(web.HTTPConflict, "penalty_order", result)
    step_id, after = result
    await request.app[CUSTODY].append_async(
        f"penalty.{step}", actor=who.actor, case=str(case_id), step_id=step_id, **detail
    )
    request.app[EVENTS].publish(case_id, f"penalty.{step}", step_id=step_id)
    return web.json_response(after, status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/cases/{case}/penalty", get_penalty)
    app.router.add_post("/api/cases/{case}/penalty/steps", post_step)


def describe(add: Add) -> None:
    tag = "penalty"
    add(
        "/api/cases/{case}/penalty",
        "get",
        op(
            "The penalty procedure: notice, periods, steps, whether a decision may be made",
            OFFICER,
            responses("200", ANY_OBJECT, "401 404"),
            tag=tag,
        ),
        [CASE],
    )
    add(
        "/api/cases/{case}/penalty/steps",
        "post",
        op(
            "Record a step: statement, waiver, hearing requested or held, payment",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "step": {"type": "string", "enum": list(STEPS)},
                    "text": {"type": "string", "maxLength": 5000},
                    "right": {"type": "string", "enum": list(RIGHTS)},
                    "reference": {"type": "string", "minLength": 1, "maxLength": 200},
                },
                ["step"],
            ),
            description="A penalty_decision document is refused (409 penalty_notice_required, "
            "penalty_notice_unserved, statement_period_open, hearing_period_open, "
            "hearing_pending) until this procedure allows it. The periods run from when the "
            "party was notified (its signature on the notice, or the notice's delivery). A step "
            "the calendar cannot count (409 calendar_missing) is not recorded.",
        ),
        [CASE],
    )
