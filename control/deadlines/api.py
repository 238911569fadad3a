"""Deadlines over HTTP: each case's deadlines and the next one, and what is overdue in a
brigade. The dates come from what the case recorded (documents made, deliveries sent, the
penalty procedure's steps, reviews) and the rules (control/deadlines/limits.toml) counted on
the working-day calendar."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from aiohttp import web

from .. import access
from ..appkeys import DB, RULES
from ..delivery import store as delivery_store
from ..delivery.penalty import notified_at
from ..http.jsonio import json_error
from ..http.openapi import ANY_OBJECT, CASE, OFFICER, Add, op, query, responses
from ..refusals import done as case_done
from .calendar import CalendarError
from .investigation import recorded as investigation_row
from .rules import Rules, china_date, china_today


@web.middleware
async def calendar_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A count that runs outside the calendar's years (a case from before it, a limit that
    reaches past its last year) answers 409 ``calendar_missing`` naming the year, wherever it
    is counted (deadlines, reviews, the penalty procedure), instead of a 500."""
    try:
        return await handler(request)
    except CalendarError as exc:
        raise json_error(web.HTTPConflict, "calendar_missing", str(exc)) from None


DETERMINATIONS = ("determination_ordinary", "determination_simple", "accident_certificate")


def _item(
    rules: Rules,
    today: date,
    limit_id: str,
    start: date,
    done_at: str | None,
    **about: Any,
) -> dict[str, Any]:
    limit = rules.limits[limit_id]
    due = rules.due(limit_id, start)
    if done_at is not None:
        status = "done"
    elif today > due:
        # the department's duty undone is overdue; a party's window simply closed, except an
        # unpaid fine, which the brigade follows up
        status = "overdue" if limit.who == "department" or limit_id == "fine_payment" else "closed"
    else:
        status = "open"
    warn = False
    if status == "open":
        left = 0
        day = today
        while day < due:
            day = rules.calendar.add_working_days(day, 1)
            left += 1
        warn = left <= rules.warn_days
    return {
        "limit": limit_id,
        "name": limit.name,
        "who": limit.who,
        "days": limit.days,
        "unit": limit.unit,
        "basis": limit.basis,
        "start": start.isoformat(),
        "due": due.isoformat(),
        "status": status,
        "warn": warn,
        "done_at": done_at,
        **about,
    }


def case_deadlines(
    conn: sqlite3.Connection, case_id: int, rules: Rules, today: date
) -> list[dict[str, Any]]:
    """Every deadline the case's recorded events started, oldest start first."""
    out: list[dict[str, Any]] = []
    docs = conn.execute(
        "SELECT id, kind, number, data, created_at FROM documents WHERE case_id = ? ORDER BY id",
        (case_id,),
    ).fetchall()
    # each delivery with when it delivered (a refused one by its fallback, if any yet)
    deliveries = [
        (d, at)
        for d in conn.execute(
            "SELECT * FROM deliveries WHERE case_id = ? ORDER BY id", (case_id,)
        ).fetchall()
        if (at := delivery_store.delivered_at(conn, d, today)) is not None
    ]
    reviews = {
        (r["party_id"], r["document_id"]): r["requested_at"]
        for r in conn.execute("SELECT * FROM reviews WHERE case_id = ?", (case_id,)).fetchall()
    }
    mediations = conn.execute(
        "SELECT id, status, started_on, opened_at, ended_at FROM mediations WHERE case_id = ? "
        "ORDER BY id",
        (case_id,),
    ).fetchall()
    steps = conn.execute(
        "SELECT step, detail, recorded_at FROM penalty_steps WHERE case_id = ? ORDER BY id",
        (case_id,),
    ).fetchall()
    case = conn.execute("SELECT kind, created_at FROM cases WHERE id = ?", (case_id,)).fetchone()
    made = {
        kind: next((d for d in docs if d["kind"] == kind), None)
        for kind in ("determination_ordinary", "determination_simple")
    }
    investigation = conn.execute(
        "SELECT done_on FROM investigations WHERE case_id = ?", (case_id,)
    ).fetchone()
    if investigation is not None:  # control/deadlines/investigation.py
        first = made["determination_ordinary"]
        out.append(
            _item(
                rules,
                today,
                "determination_ordinary",
                date.fromisoformat(investigation["done_on"]),
                None if first is None else first["created_at"],
                **({} if first is None else {"document": first["id"], "number": first["number"]}),
            )
        )
    simple = made["determination_simple"]
    if case is not None and simple is not None:
        # nothing marks a case simple before its simple-procedure determination is made: the
        # limit is shown (done, in time or not) once that determination exists
        out.append(
            _item(
                rules,
                today,
                "determination_simple",
                china_date(case["created_at"]),
                simple["created_at"],
                document=simple["id"],
                number=simple["number"],
            )
        )
    for doc in docs:
        about = {"document": doc["id"], "number": doc["number"]}
        if doc["kind"] in DETERMINATIONS:
            sent = [at for d, at in deliveries if d["document_id"] == doc["id"]]
            out.append(
                _item(
                    rules,
                    today,
                    "determination_delivery",
                    china_date(doc["created_at"]),
                    min(sent) if sent else None,
                    **about,
                )
            )
        served = notified_at(conn, doc["id"], today) if doc["kind"] == "penalty_notice" else None
        if served is not None:  # the periods run from the notification (delivery/penalty.py)
            notified = china_date(served)
            waived = {
                json.loads(s["detail"]).get("right"): s["recorded_at"]
                for s in steps
                if s["step"] == "waiver"
            }
            statement = next((s["recorded_at"] for s in steps if s["step"] == "statement"), None)
            out.append(
                _item(
                    rules,
                    today,
                    "statement",
                    notified,
                    waived.get("statement") or statement,
                    **about,
                )
            )
            amount = (json.loads(doc["data"]).get("penalty") or {}).get("amount")
            if isinstance(amount, (int, float)) and amount >= 2000:
                asked = next(
                    (s["recorded_at"] for s in steps if s["step"] == "hearing_requested"), None
                )
                out.append(
                    _item(
                        rules,
                        today,
                        "hearing_request",
                        notified,
                        waived.get("hearing") or asked,
                        **about,
                    )
                )
    for d, at in deliveries:
        about = {
            "document": d["document_id"],
            "number": d["document_number"],
            "party": d["party_id"],
        }
        delivered = china_date(at)
        if d["kind"] in DETERMINATIONS:
            out.append(
                _item(
                    rules,
                    today,
                    "review_request",
                    delivered,
                    reviews.get((d["party_id"], d["document_id"])),
                    **about,
                )
            )
            applied = next((m["opened_at"] for m in mediations), None)
            out.append(_item(rules, today, "mediation_application", delivered, applied, **about))
        if d["kind"] == "penalty_decision":
            paid = next((s["recorded_at"] for s in steps if s["step"] == "payment"), None)
            out.append(_item(rules, today, "fine_payment", delivered, paid, **about))
    for m in mediations:  # control/mediation: concluded (effective or terminated) in time
        out.append(
            _item(
                rules,
                today,
                "mediation_conclusion",
                date.fromisoformat(m["started_on"]),
                m["ended_at"] if m["status"] in ("effective", "terminated") else None,
                mediation=m["id"],
            )
        )
    out.sort(key=lambda i: (i["due"], i["limit"]))
    return out


def overdue(
    conn: sqlite3.Connection, brigades: list[str] | None, rules: Rules, today: date
) -> list[dict[str, Any]]:
    sql = "SELECT id, title, kind, brigade FROM cases WHERE status = 'open'"
    args: tuple[Any, ...] = ()
    if brigades is not None:
        sql += f" AND brigade IN ({','.join('?' * len(brigades))})"
        args = tuple(brigades)
    out = []
    for case in conn.execute(sql + " ORDER BY id", args).fetchall():
        for item in case_deadlines(conn, case["id"], rules, today):
            if item["status"] == "overdue":
                out.append(
                    {"case_id": case["id"], "title": case["title"], "brigade": case["brigade"]}
                    | item
                )
    return out


async def get_case_deadlines(request: web.Request) -> web.Response:
    who = await access.officer(request)
    case_id = access.case_id(request)
    case_done(await request.app[DB].run(lambda c: access.load_case(c, who, case_id)))
    rules = request.app[RULES]
    today = china_today()
    items = await request.app[DB].run(lambda c: case_deadlines(c, case_id, rules, today))
    investigation = await request.app[DB].run(lambda c: investigation_row(c, case_id))
    upcoming = [i for i in items if i["status"] in ("open", "overdue")]
    return web.json_response(
        {
            "today": today.isoformat(),
            "deadlines": items,
            "next": upcoming[0] if upcoming else None,
            "investigation": investigation,
        }
    )


async def get_overdue(request: web.Request) -> web.Response:
    """Officers and observers see their brigade; a supervisor every brigade, or one
    (``?brigade=``)."""
    who = await access.officer(request)
    brigade = request.query.get("brigade")
    brigades: list[str] | None
    if who.role == "supervisor":
        brigades = [brigade] if brigade else None
    else:
        brigades = [who.brigade]
    rules = request.app[RULES]
    today = china_today()
    items = await request.app[DB].run(lambda c: overdue(c, brigades, rules, today))
    by_brigade: dict[str, int] = {}
    for item in items:
        by_brigade[item["brigade"]] = by_brigade.get(item["brigade"], 0) + 1
    return web.json_response({"today": today.isoformat(), "overdue": items, "count": by_brigade})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/cases/{case}/deadlines", get_case_deadlines)
    app.router.add_get("/api/deadlines/overdue", get_overdue)


def describe(add: Add) -> None:
    tag = "deadlines"
    add(
        "/api/cases/{case}/deadlines",
        "get",
        op(
            "The case's deadlines (working days on the calendar) and the next one",
            OFFICER,
            responses("200", ANY_OBJECT, "401 404"),
            tag=tag,
        ),
        [CASE],
    )
    add(
        "/api/deadlines/overdue",
        "get",
        op(
            "What is overdue in the caller's brigade (a supervisor: every brigade, or one)",
            OFFICER,
            responses("200", ANY_OBJECT, "401"),
            tag=tag,
        ),
        [
            query(
                "brigade", {"type": "string", "maxLength": 100}, description="a supervisor's filter"
            )
        ],
    )
