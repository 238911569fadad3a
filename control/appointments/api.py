"""Online appointments (线上预约): a brigade publishes slots; an officer or the party books one.

A slot belongs to a brigade and holds at most one booking (a partial unique index makes a double
booking impossible even between two processes). A party books with its invitation link, sees only
free slots of its case's brigade, and can reschedule or cancel its own appointment; an officer
does the same for any party of a case it may touch. Every change is audited with a reason.
The SQL is in :mod:`control.appointments.store`; these handlers read the request and answer.
"""

from __future__ import annotations

import datetime
import time
from typing import Any, TypeVar

from aiohttp import web

from .. import access
from ..access import text
from ..appkeys import DB
from ..auth import token_hash
from ..http.jsonio import json_error, read_object
from ..http.openapi import (
    ANY_OBJECT,
    CASE,
    ID,
    OFFICER,
    PARTY,
    REASON,
    TIME,
    Add,
    in_path,
    json_body,
    op,
    query,
    responses,
)
from ..refusals import unwrap
from . import store

MAX_SLOT_HOURS = 8
HORIZON_DAYS = 180
T = TypeVar("T")


def parse_time(body: dict[str, Any], key: str) -> float:
    value = body.get(key)
    try:
        if not isinstance(value, str):
            raise ValueError
        parsed = datetime.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError
    except ValueError:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            key="bad_request.time",
            field=key,
        ) from None
    return parsed.timestamp()


_STATUS: dict[store.Refusal, type[web.HTTPException]] = {
    store.Refusal.NO_CASE: web.HTTPNotFound,
    store.Refusal.CASE_CLOSED: web.HTTPConflict,
    store.Refusal.BAD_SLOT_ID: web.HTTPBadRequest,
    store.Refusal.NO_SLOT: web.HTTPNotFound,
    store.Refusal.SLOT_PAST: web.HTTPConflict,
    store.Refusal.SLOT_TAKEN: web.HTTPConflict,
    store.Refusal.SLOT_BOOKED: web.HTTPConflict,
    store.Refusal.NO_PARTY: web.HTTPNotFound,
    store.Refusal.ALREADY_BOOKED: web.HTTPConflict,
    store.Refusal.NO_APPOINTMENT: web.HTTPNotFound,
    store.Refusal.CANCELLED: web.HTTPConflict,
    store.Refusal.SAME_SLOT: web.HTTPConflict,
    store.Refusal.NO_BOOKING: web.HTTPNotFound,
}


def done(result: T | store.Refusal) -> T:
    """A store function's result, or its refusal raised as the error answer."""
    return unwrap(result, _STATUS)


# -- officers --------------------------------------------------------------------------------
async def post_slot(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    body = await read_object(request)
    starts, ends = parse_time(body, "starts_at"), parse_time(body, "ends_at")
    if not starts < ends <= starts + MAX_SLOT_HOURS * 3600:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            key="bad_request.slot_length",
            field="ends_at",
            max_hours=MAX_SLOT_HOURS,
        )
    if not time.time() < starts < time.time() + HORIZON_DAYS * 86400:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            key="bad_request.slot_start",
            field="starts_at",
            horizon_days=HORIZON_DAYS,
        )
    slot = await request.app[DB].run(lambda c: store.create_slot(c, officer, starts, ends))
    return web.json_response(slot, status=201)


async def list_slots(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    free_only = request.query.get("free", "") in ("1", "true")
    brigade = None if officer.role == "supervisor" else officer.brigade
    slots = await request.app[DB].run(
        lambda c: store.list_slots(c, brigade, free_only=free_only, since=time.time() - 86400)
    )
    return web.json_response({"slots": slots})


async def withdraw_slot(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    slot_id = access.path_int(request, "slot", "slot")
    reason = text(await read_object(request), "reason", max_len=500)
    done(await request.app[DB].run(lambda c: store.withdraw_slot(c, officer, slot_id, reason)))
    return web.json_response({"withdrawn": slot_id})


async def post_appointment(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    body = await read_object(request)
    reason = text(body, "reason", max_len=500, required=False)
    appointment = done(
        await request.app[DB].run(
            lambda c: store.book_for_case(
                c, officer, case_id, body.get("party_id"), body.get("slot_id"), reason
            )
        )
    )
    return web.json_response(appointment, status=201)


async def change_appointment(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    appointment_id = access.path_int(request, "appointment", "appointment")
    action = request.match_info["action"]
    body = await read_object(request)
    reason = text(body, "reason", max_len=500)
    return web.json_response(
        done(
            await request.app[DB].run(
                lambda c: store.change(
                    c, officer, case_id, appointment_id, action, body.get("slot_id"), reason
                )
            )
        )
    )


# -- parties ---------------------------------------------------------------------------------
async def get_party(request: web.Request) -> web.Response:
    caller = await access.party(request)
    link = token_hash(access.bearer(request)) if caller.via == "invitation" else None
    return web.json_response(await request.app[DB].run(lambda c: store.party_view(c, caller, link)))


async def party_slots(request: web.Request) -> web.Response:
    caller = await access.party(request)
    return web.json_response(
        {"slots": await request.app[DB].run(lambda c: store.party_slots(c, caller))}
    )


async def party_book(request: web.Request) -> web.Response:
    """Book a slot, or move the party's appointment to it."""
    caller = await access.party(request)
    body = await read_object(request)
    reason = text(body, "reason", max_len=500, required=False)
    new, appointment = done(
        await request.app[DB].run(
            lambda c: store.party_book(c, caller, body.get("slot_id"), reason)
        )
    )
    return web.json_response(appointment, status=201 if new else 200)


async def party_cancel(request: web.Request) -> web.Response:
    caller = await access.party(request)
    reason = text(await read_object(request), "reason", max_len=500)
    return web.json_response(
        done(await request.app[DB].run(lambda c: store.party_cancel(c, caller, reason)))
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/slots", post_slot)
    app.router.add_get("/api/slots", list_slots)
    app.router.add_post("/api/slots/{slot}/withdraw", withdraw_slot)
    app.router.add_post("/api/cases/{case}/appointments", post_appointment)
    app.router.add_post(
        "/api/cases/{case}/appointments/{appointment}/{action:reschedule|cancel}",
        change_appointment,
    )
    app.router.add_get("/api/party", get_party)
    app.router.add_get("/api/party/slots", party_slots)
    app.router.add_post("/api/party/appointment", party_book)
    app.router.add_post("/api/party/appointment/cancel", party_cancel)


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    add(
        "/api/slots",
        "post",
        op(
            "Publish a slot of the officer's brigade",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401"),
            tag="appointments",
            body=json_body({"starts_at": TIME, "ends_at": TIME}, ["starts_at", "ends_at"]),
            description=f"In the future, within {HORIZON_DAYS} days, at most 8 hours long.",
        ),
    )
    add(
        "/api/slots",
        "get",
        op(
            "The brigade's slots and their bookings",
            OFFICER,
            responses("200", ANY_OBJECT, "401"),
            tag="appointments",
            params=[query("free", {"type": "string", "enum": ["1", "true", "0", "false"]})],
        ),
    )
    add(
        "/api/slots/{slot}/withdraw",
        "post",
        op(
            "Withdraw an unbooked slot",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 404 409"),
            tag="appointments",
            body=json_body({"reason": REASON}, ["reason"]),
        ),
        [in_path("slot", ID)],
    )
    add(
        "/api/cases/{case}/appointments",
        "post",
        op(
            "Book a slot for a party of the case",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 404 409"),
            tag="appointments",
            body=json_body(
                {"party_id": ID, "slot_id": ID, "reason": REASON}, ["party_id", "slot_id"]
            ),
        ),
        [CASE],
    )
    add(
        "/api/cases/{case}/appointments/{appointment}/{action}",
        "post",
        op(
            "Reschedule (to slot_id) or cancel an appointment",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 404 409"),
            tag="appointments",
            body=json_body({"slot_id": ID, "reason": REASON}, ["reason"]),
        ),
        [
            CASE,
            in_path("appointment", ID),
            in_path("action", {"type": "string", "enum": ["reschedule", "cancel"]}),
        ],
    )

    # -- parties ---------------------------------------------------------------------------
    add(
        "/api/party",
        "get",
        op(
            "The party's case, name and appointment",
            PARTY,
            responses("200", ANY_OBJECT, "401 403"),
            tag="parties",
        ),
    )
    add(
        "/api/party/slots",
        "get",
        op(
            "Free slots of the case's brigade",
            PARTY,
            responses("200", ANY_OBJECT, "401 403"),
            tag="parties",
        ),
    )
    add(
        "/api/party/appointment",
        "post",
        op(
            "Book a slot, or move the party's appointment to it",
            PARTY,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag="parties",
            body=json_body({"slot_id": ID, "reason": REASON}, ["slot_id"]),
        ),
    )
    add(
        "/api/party/appointment/cancel",
        "post",
        op(
            "Cancel the party's appointment",
            PARTY,
            responses("200", ANY_OBJECT, "400 401 403 404"),
            tag="parties",
            body=json_body({"reason": REASON}, ["reason"]),
        ),
    )
