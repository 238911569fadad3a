"""Statistics per brigade and per kind over a date range (``GET /api/statistics``).

Counts cases by kind, sessions by purpose (inquiries, mediations, education sessions...),
parties' materials received, evidence displays and invitations redeemed, for the days
``from``..``to`` inclusive (UTC). An officer sees its brigade; a supervisor every brigade, or one
with ``?brigade=``. Documents delivered will be counted once documents exist.
"""

from __future__ import annotations

import datetime
import sqlite3
from collections import defaultdict
from typing import Any

from aiohttp import web

from . import access
from .appkeys import DB
from .cases.store import KINDS
from .http.jsonio import json_error
from .http.openapi import ANY_OBJECT, OFFICER, Add, op, query, responses
from .sessions.store import PURPOSES

MAX_DAYS = 3660


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


def counts(
    conn: sqlite3.Connection, brigade: str | None, first: datetime.date, last: datetime.date
) -> dict[str, Any]:
    """Counts per brigade (one, or every one for ``None``) from ``first`` to ``last``."""
    since = first.isoformat()
    until = (last + datetime.timedelta(days=1)).isoformat()
    where = "c.brigade = ?" if brigade is not None else "1 = 1"
    extra: tuple[Any, ...] = (brigade,) if brigade is not None else ()
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "cases": dict.fromkeys(KINDS, 0),
            "sessions": dict.fromkeys(PURPOSES, 0),
            "materials_received": 0,
            "evidence_displays": 0,
            "invitations_redeemed": 0,
            "appointments_booked": 0,
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
    for each in out.values():
        each["inquiries"] = each["sessions"]["inquiry"]
        each["education_sessions"] = each["sessions"]["education"]
    return {"from": first.isoformat(), "to": last.isoformat(), "brigades": dict(out)}


async def get_statistics(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    today = datetime.datetime.now(datetime.UTC).date()
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
    return web.json_response(await request.app[DB].run(lambda c: counts(c, brigade, first, last)))


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
            ],
        ),
    )
