"""The case's timeline over HTTP: ``GET /api/cases/{case}/timeline`` (officers of the case's
brigade and supervisors; observers are refused), each item labelled in the request's language.
Reading it is an access to the case and is audited (``case.timeline_viewed``)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from .. import access, i18n
from ..access import audit
from ..appkeys import CUSTODY, DB, RECORDER, RULES
from ..deadlines.rules import china_today
from ..http.jsonio import json_error
from ..http.openapi import ANY_OBJECT, CASE, OFFICER, Add, op, responses
from ..refusals import done as case_done
from .timeline import Item, build, china, read_manifests


def label(kind: str, lang: str) -> str:
    key = f"timeline.{kind}"
    return i18n.text(key, lang) if i18n.has(key) else kind


def labelled(items: list[Item], lang: str) -> list[dict[str, Any]]:
    return [{**i, "label": label(i["kind"], lang), "china_time": china(i["at"])} for i in items]


async def get_timeline(request: web.Request) -> web.Response:
    who = await access.officer(request)
    if who.role == "observer":
        raise json_error(web.HTTPForbidden, "forbidden", detail="observer")
    case_id = access.case_id(request)
    case_done(await request.app[DB].run(lambda c: access.load_case(c, who, case_id)))
    entries = await asyncio.to_thread(request.app[CUSTODY].entries)
    found = await asyncio.to_thread(read_manifests, request.app[RECORDER].recordings_dir, case_id)
    manifests = [m for _, m in found]
    rules = request.app[RULES]
    today = china_today()

    def run(conn: Any) -> list[Item]:
        items = build(conn, case_id, entries, manifests, rules, today)
        audit(conn, who.actor, "case.timeline_viewed", f"case:{case_id}", case_id, items=len(items))
        return items

    items = await request.app[DB].run(run)
    lang = i18n.negotiate(request.headers.get("Accept-Language"))
    return web.json_response({"case": case_id, "count": len(items), "items": labelled(items, lang)})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/cases/{case}/timeline", get_timeline)


def describe(add: Add) -> None:
    add(
        "/api/cases/{case}/timeline",
        "get",
        op(
            "The case's timeline: everything that happened, in order (custody log and tables)",
            OFFICER,
            responses("200", ANY_OBJECT, "401 403 404 409"),
            tag="cases",
            description="Each item: at (UTC), china_time, kind, label (the request's "
            "language), actor, ref, custody_index (when the custody log holds it), source. "
            "Audited as case.timeline_viewed; observers are refused (403).",
        ),
        [CASE],
    )
