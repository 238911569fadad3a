"""The end of an accident case's investigation (调查取证结束): the day the ordinary
determination's 10 working days count from (146号令 第六十二条, ``determination_ordinary`` in
limits.toml, ``from = "investigation_done"``).

* ``POST /api/cases/{case}/investigation`` ``{"day": "YYYY-MM-DD"}`` (default: today, Beijing
  date): recorded once per case; a second record is refused (409 ``investigation_recorded``).
* ``PUT /api/cases/{case}/investigation`` ``{"day": ..., "reason": ...}``: a correction, by the
  officer who recorded it or a supervisor, with a reason.

The day is an accident case's only, never in the future, never before the case was opened.
Every record and correction is an audit row (the old and new day, the reason) and a custody
entry ``case.investigation_done`` naming the case (so the case file's timeline shows it).
"""

from __future__ import annotations

import sqlite3
from datetime import date
from typing import Any

from aiohttp import web

from .. import access
from ..access import audit
from ..appkeys import CUSTODY, DB, EVENTS
from ..auth import Officer, now_iso
from ..http.jsonio import json_error, read_object
from ..http.openapi import ANY_OBJECT, CASE, OFFICER, REASON, Add, json_body, op, responses
from ..refusals import done as case_done
from .rules import china_date, china_today


def recorded(conn: sqlite3.Connection, case_id: int) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM investigations WHERE case_id = ?", (case_id,)).fetchone()
    return None if row is None else dict(row)


def _day(body: dict[str, Any], case: dict[str, Any], today: date) -> date:
    """The day asked for, checked: a date, not after today, not before the case opened."""
    raw = body.get("day")
    if raw is None or raw == "":
        return today
    try:
        day = date.fromisoformat(raw) if isinstance(raw, str) and len(raw) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            "day 应为日期 YYYY-MM-DD / day: a date, YYYY-MM-DD",
        )
    if day > today:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            f"调查取证结束日 {day.isoformat()} 不能晚于今天 {today.isoformat()} / "
            f"the investigation cannot end on {day.isoformat()}, after today "
            f"{today.isoformat()}",
        )
    opened = china_date(case["created_at"])
    if day < opened:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            f"调查取证结束日 {day.isoformat()} 不能早于立案日 {opened.isoformat()} / "
            f"the investigation cannot end on {day.isoformat()}, before the case was opened "
            f"on {opened.isoformat()}",
        )
    return day


async def _case(request: web.Request, who: Officer) -> tuple[int, dict[str, Any]]:
    case_id = access.case_id(request)
    case_done(await request.app[DB].run(lambda c: access.load_case(c, who, case_id)))
    case = case_done(await request.app[DB].run(lambda c: access.require_open_case(c, case_id)))
    if case["kind"] != "accident":
        raise json_error(
            web.HTTPConflict,
            "not_accident",
            "只有事故案件记录调查取证结束 / only an accident case records the end of its "
            "investigation",
        )
    return case_id, case


def _insert(conn: sqlite3.Connection, who: Officer, case_id: int, day: date) -> bool:
    if recorded(conn, case_id) is not None:
        return False
    at = now_iso()
    conn.execute(
        "INSERT INTO investigations (case_id, done_on, recorded_by, recorded_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (case_id, day.isoformat(), who.id, at, at),
    )
    audit(
        conn,
        who.actor,
        "case.investigation_done",
        f"case:{case_id}",
        case_id,
        day=day.isoformat(),
    )
    return True


def _correct(
    conn: sqlite3.Connection, who: Officer, case_id: int, day: date, reason: str
) -> dict[str, Any] | str:
    """The row after the correction, or why not: ``none`` (nothing recorded yet) or
    ``not_yours`` (another officer's record; a supervisor may correct any)."""
    row = recorded(conn, case_id)
    if row is None:
        return "none"
    if who.role != "supervisor" and row["recorded_by"] != who.id:
        return "not_yours"
    conn.execute(
        "UPDATE investigations SET done_on = ?, revision = revision + 1, updated_at = ? "
        "WHERE case_id = ?",
        (day.isoformat(), now_iso(), case_id),
    )
    audit(
        conn,
        who.actor,
        "case.investigation_corrected",
        f"case:{case_id}",
        case_id,
        reason,
        day=day.isoformat(),
        was=row["done_on"],
    )
    return dict(recorded(conn, case_id) or {})


async def _logged(
    request: web.Request, who: Officer, case_id: int, row: dict[str, Any], **more: Any
) -> None:
    await request.app[CUSTODY].append_async(
        "case.investigation_done",
        actor=who.actor,
        case=str(case_id),
        day=row["done_on"],
        revision=row["revision"],
        **more,
    )
    request.app[EVENTS].publish(
        case_id, "case.investigation_done", day=row["done_on"], revision=row["revision"]
    )


async def post_investigation(request: web.Request) -> web.Response:
    who = await access.officer(request)
    case_id, case = await _case(request, who)
    day = _day(await read_object(request), case, china_today())
    if not await request.app[DB].run(lambda c: _insert(c, who, case_id, day)):
        raise json_error(
            web.HTTPConflict,
            "investigation_recorded",
            "调查取证结束日已记录，更正请说明理由 (PUT) / the investigation's end is already "
            "recorded: correct it with a reason (PUT)",
        )
    row = await request.app[DB].run(lambda c: recorded(c, case_id))
    assert row is not None
    await _logged(request, who, case_id, row)
    return web.json_response(row, status=201)


async def put_investigation(request: web.Request) -> web.Response:
    who = await access.officer(request)
    case_id, case = await _case(request, who)
    body = await read_object(request)
    reason = access.text(body, "reason", max_len=500)
    if not body.get("day"):
        raise json_error(
            web.HTTPBadRequest, "bad_request", "更正须给出 day / a correction needs the day"
        )
    day = _day(body, case, china_today())
    result = await request.app[DB].run(lambda c: _correct(c, who, case_id, day, reason))
    if result == "none":
        raise json_error(
            web.HTTPConflict,
            "investigation_not_recorded",
            "尚未记录调查取证结束日 (POST) / the investigation's end is not recorded yet (POST)",
        )
    if result == "not_yours":
        raise json_error(
            web.HTTPForbidden,
            "forbidden",
            "只有记录人或上级可以更正 / only the officer who recorded it or a supervisor may "
            "correct it",
        )
    assert isinstance(result, dict)
    await _logged(request, who, case_id, result, reason=reason)
    return web.json_response(result)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/cases/{case}/investigation", post_investigation)
    app.router.add_put("/api/cases/{case}/investigation", put_investigation)


def describe(add: Add) -> None:
    tag = "deadlines"
    day = {"type": "string", "format": "date", "description": "Beijing date; default today"}
    add(
        "/api/cases/{case}/investigation",
        "post",
        op(
            "Record the end of an accident case's investigation (调查取证结束), once",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body({"day": day}, []),
        ),
        [CASE],
    )
    add(
        "/api/cases/{case}/investigation",
        "put",
        op(
            "Correct the investigation's end with a reason (its recorder or a supervisor)",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body({"day": day, "reason": REASON}, ["day", "reason"]),
        ),
        [CASE],
    )
