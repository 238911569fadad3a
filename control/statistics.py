"""Statistics per brigade and per kind over a date range (``GET /api/statistics``).

Counts, for the days ``from``..``to`` inclusive (Beijing dates, as the deadlines count them):
cases by kind, sessions by purpose (inquiries, mediations, education sessions...), parties'
materials received, evidence displays, invitations redeemed, appointments booked, documents
delivered by kind (a delivery the system shows as sent), reviews asked for and their outcomes,
penalty notices and decisions made, mediations by outcome, and the steps overdue now whose due day
falls in the range, by limit (control/deadlines). ``?kind=`` keeps the cases of one kind. An
officer sees its brigade; a supervisor every brigade, or one with ``?brigade=``.
"""

from __future__ import annotations

import datetime
import sqlite3
from collections import defaultdict
from typing import Any

from aiohttp import web

from . import access
from .appkeys import DB, RULES
from .cases.store import KINDS
from .deadlines.calendar import CalendarError
from .deadlines.rules import CHINA, Rules, china_today
from .http.jsonio import json_error
from .http.openapi import ANY_OBJECT, OFFICER, Add, op, query, responses
from .sessions.store import PURPOSES

MAX_DAYS = 3660
REVIEW_OUTCOMES = ("upheld", "reinvestigate", "not_accepted")


def _day(request: web.Request, key: str, default: datetime.date) -> datetime.date:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        return datetime.date.fromisoformat(raw)
    except ValueError:
        raise json_error(
            web.HTTPBadRequest, "bad_request", key="bad_request.date", field=key
        ) from None


def _utc_start(day: datetime.date) -> str:
    """The UTC instant a Beijing day begins, as stored times are written (``now_iso``)."""
    at = datetime.datetime.combine(day, datetime.time(0, 0), CHINA)
    return at.astimezone(datetime.UTC).isoformat(timespec="milliseconds")


def counts(
    conn: sqlite3.Connection,
    brigade: str | None,
    first: datetime.date,
    last: datetime.date,
    kind: str | None = None,
    rules: Rules | None = None,
    today: datetime.date | None = None,
) -> dict[str, Any]:
    """Counts per brigade (one, or every one for ``None``) from ``first`` to ``last``, of the
    cases of ``kind`` (every kind for None); overdue steps counted with ``rules`` on ``today``."""
    since = _utc_start(first)
    until = _utc_start(last + datetime.timedelta(days=1))
    clauses, params = [], []
    if brigade is not None:
        clauses.append("c.brigade = ?")
        params.append(brigade)
    if kind is not None:
        clauses.append("c.kind = ?")
        params.append(kind)
    where = " AND ".join(clauses) or "1 = 1"
    extra: tuple[Any, ...] = tuple(params)
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "cases": dict.fromkeys(KINDS, 0),
            "sessions": dict.fromkeys(PURPOSES, 0),
            "materials_received": 0,
            "evidence_displays": 0,
            "invitations_redeemed": 0,
            "appointments_booked": 0,
            "documents_delivered": {},
            "reviews": {"requested": 0, "pending": 0, **dict.fromkeys(REVIEW_OUTCOMES, 0)},
            "penalty_notices": 0,
            "penalty_decisions": 0,
            "mediations": {},
            "overdue": {},
            "overdue_uncounted": 0,
        }
    )
    for row in conn.execute(
        f"SELECT c.brigade, c.kind, COUNT(*) n FROM cases c WHERE {where} "
        "AND c.created_at >= ? AND c.created_at < ? GROUP BY 1, 2",
        (*extra, since, until),
    ):
        out[row["brigade"]]["cases"][row["kind"]] = row["n"]
    for row in conn.execute(
        f"SELECT c.brigade, s.purpose, COUNT(*) n FROM sessions s JOIN cases c "
        f"ON c.id = s.case_id WHERE {where} AND s.opened_at >= ? AND s.opened_at < ? "
        "GROUP BY 1, 2",
        (*extra, since, until),
    ):
        out[row["brigade"]]["sessions"][row["purpose"]] = row["n"]
    simple = (
        (
            "materials_received",
            "SELECT c.brigade, COUNT(*) n FROM materials m JOIN cases c "
            "ON c.id = m.case_id WHERE {w} AND m.origin = 'party' AND m.created_at >= ? "
            "AND m.created_at < ? GROUP BY 1",
        ),
        (
            "evidence_displays",
            "SELECT c.brigade, COUNT(*) n FROM displays d JOIN sessions s "
            "ON s.id = d.session_id JOIN cases c ON c.id = s.case_id WHERE {w} "
            "AND d.started_at >= ? AND d.started_at < ? GROUP BY 1",
        ),
        (
            "invitations_redeemed",
            "SELECT c.brigade, COUNT(*) n FROM invitations i JOIN cases "
            "c ON c.id = i.case_id WHERE {w} AND i.used_at >= ? AND i.used_at < ? GROUP BY 1",
        ),
        (
            "appointments_booked",
            "SELECT c.brigade, COUNT(*) n FROM appointments a JOIN "
            "cases c ON c.id = a.case_id WHERE {w} AND a.created_at >= ? "
            "AND a.created_at < ? GROUP BY 1",
        ),
    )
    for key, sql in simple:
        for row in conn.execute(sql.format(w=where), (*extra, since, until)):
            out[row["brigade"]][key] = row["n"]
    for row in conn.execute(
        f"SELECT c.brigade, d.kind, COUNT(*) n FROM deliveries d JOIN cases c ON c.id = d.case_id "
        f"WHERE {where} AND d.status = 'sent' AND d.sent_at >= ? AND d.sent_at < ? GROUP BY 1, 2",
        (*extra, since, until),
    ):
        out[row["brigade"]]["documents_delivered"][row["kind"]] = row["n"]
    for row in conn.execute(
        f"SELECT c.brigade, r.outcome, COUNT(*) n FROM reviews r JOIN cases c ON c.id = r.case_id "
        f"WHERE {where} AND r.requested_at >= ? AND r.requested_at < ? GROUP BY 1, 2",
        (*extra, since, until),
    ):
        reviews = out[row["brigade"]]["reviews"]
        reviews["requested"] += row["n"]
        reviews[row["outcome"] or "pending"] = (
            reviews.get(row["outcome"] or "pending", 0) + row["n"]
        )
    for row in conn.execute(
        f"SELECT c.brigade, d.kind, COUNT(*) n FROM documents d JOIN cases c ON c.id = d.case_id "
        f"WHERE {where} AND d.kind IN ('penalty_notice', 'penalty_decision') "
        "AND d.created_at >= ? AND d.created_at < ? GROUP BY 1, 2",
        (*extra, since, until),
    ):
        out[row["brigade"]][f"{row['kind']}s"] = row["n"]
    _mediations(conn, out, where, extra, since, until)
    if rules is not None:
        _overdue(conn, out, where, extra, first, last, rules, today or china_today())
    for each in out.values():
        each["inquiries"] = each["sessions"]["inquiry"]
        each["education_sessions"] = each["sessions"]["education"]
    return {"from": first.isoformat(), "to": last.isoformat(), "brigades": dict(out)}


def _mediations(
    conn: sqlite3.Connection,
    out: dict[str, dict[str, Any]],
    where: str,
    extra: tuple[Any, ...],
    since: str,
    until: str,
) -> None:
    """Mediations by outcome (control/mediation's ``status``: open, terminating, effective,
    terminated), counted on the day they ended, or opened while still open."""
    for r in conn.execute(
        "SELECT c.brigade, m.status outcome, COUNT(*) n FROM mediations m JOIN cases c "
        f"ON c.id = m.case_id WHERE {where} AND COALESCE(m.ended_at, m.opened_at) >= ? "
        "AND COALESCE(m.ended_at, m.opened_at) < ? GROUP BY 1, 2",
        (*extra, since, until),
    ):
        out[r["brigade"]]["mediations"][str(r["outcome"])] = r["n"]


def _overdue(
    conn: sqlite3.Connection,
    out: dict[str, dict[str, Any]],
    where: str,
    extra: tuple[Any, ...],
    first: datetime.date,
    last: datetime.date,
    rules: Rules,
    today: datetime.date,
) -> None:
    """The steps overdue today whose due day is in the range, by limit; a case whose dates
    the calendar cannot count is counted apart (``overdue_uncounted``), not an error."""
    from .deadlines.api import case_deadlines

    for case in conn.execute(
        f"SELECT c.id, c.brigade FROM cases c WHERE {where} AND c.status = 'open'", extra
    ).fetchall():
        try:
            items = case_deadlines(conn, case["id"], rules, today)
        except CalendarError:
            out[case["brigade"]]["overdue_uncounted"] += 1
            continue
        for item in items:
            due = datetime.date.fromisoformat(item["due"])
            if item["status"] == "overdue" and first <= due <= last:
                by_limit = out[case["brigade"]]["overdue"]
                by_limit[item["limit"]] = by_limit.get(item["limit"], 0) + 1


async def get_statistics(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    today = china_today()
    first = _day(request, "from", today - datetime.timedelta(days=30))
    last = _day(request, "to", today)
    if first > last or (last - first).days > MAX_DAYS:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            key="bad_request.range",
            max_days=MAX_DAYS,
        )
    brigade = request.query.get("brigade")
    if officer.role != "supervisor":
        if brigade not in (None, officer.brigade):
            raise json_error(web.HTTPForbidden, "forbidden", detail="other_brigade")
        brigade = officer.brigade
    kind = request.query.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise json_error(
            web.HTTPBadRequest, "bad_request", f"kind：{'、'.join(KINDS)} / kind: one of {KINDS}"
        )
    rules = request.app[RULES]
    result = await request.app[DB].run(
        lambda c: counts(c, brigade, first, last, kind, rules, today)
    )
    return web.json_response(result | {"kind": kind})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/statistics", get_statistics)


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    add(
        "/api/statistics",
        "get",
        op(
            "Counts per brigade and kind over a date range",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403"),
            tag="officers",
            params=[
                query("from", {"type": "string", "format": "date"}),
                query("to", {"type": "string", "format": "date"}),
                query("brigade", {"type": "string"}, description="supervisors only: one brigade"),
                query("kind", {"type": "string", "enum": list(KINDS)}),
            ],
        ),
    )
