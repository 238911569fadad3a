"""Online appointments (线上预约): a brigade publishes slots; an officer or the party books one.

A slot belongs to a brigade and holds at most one booking (a partial unique index makes a double
booking impossible even between two processes). A party books with its invitation link, sees only
free slots of its case's brigade, and can reschedule or cancel its own appointment; an officer
does the same for any party of a case it may touch. Every change is audited with a reason.
"""

from __future__ import annotations

import datetime
import sqlite3
import time
from typing import Any

from aiohttp import web

from .. import access
from ..access import PartyCaller, audit, text
from ..appkeys import DB
from ..auth import now_iso
from ..db import rows
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

MAX_SLOT_HOURS = 8
HORIZON_DAYS = 180


def parse_time(body: dict[str, Any], key: str) -> float:
    value = body.get(key)
    try:
        if not isinstance(value, str):
            raise ValueError
        parsed = datetime.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError
    except ValueError:
        raise json_error(web.HTTPBadRequest, "bad_request",
                         f"{key}: an ISO 8601 time with its UTC offset, like "
                         "2026-12-01T09:30:00+08:00") from None
    return parsed.timestamp()


def iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(timespec="seconds")


def _slot_json(row: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["starts_at"], out["ends_at"] = iso(out["starts_at"]), iso(out["ends_at"])
    return out


def _appointment(conn: sqlite3.Connection, appointment_id: int) -> dict[str, Any]:
    row = conn.execute(
        "SELECT a.id, a.case_id, a.party_id, a.slot_id, a.status, a.booked_by, a.created_at, "
        "a.updated_at, a.reschedules, s.starts_at, s.ends_at FROM appointments a "
        "JOIN slots s ON s.id = a.slot_id WHERE a.id = ?", (appointment_id,)).fetchone()
    return _slot_json(row)


def case_appointments(conn: sqlite3.Connection, case_id: int) -> list[dict[str, Any]]:
    ids = [r["id"] for r in conn.execute("SELECT id FROM appointments WHERE case_id = ? "
                                         "ORDER BY id", (case_id,))]
    return [_appointment(conn, i) for i in ids]


def _usable_slot(conn: sqlite3.Connection, slot_id: object, brigade: str) -> sqlite3.Row:
    if access.id_value(slot_id) is None:
        raise json_error(web.HTTPBadRequest, "bad_request", "slot_id: a slot's ID")
    slot = conn.execute("SELECT * FROM slots WHERE id = ? AND brigade = ?",
                        (slot_id, brigade)).fetchone()
    if slot is None or slot["withdrawn_at"] is not None:
        raise json_error(web.HTTPNotFound, "not_found", "no such slot")
    if slot["starts_at"] <= time.time():
        raise json_error(web.HTTPConflict, "slot_past", "the slot has already begun")
    if conn.execute("SELECT 1 FROM appointments WHERE slot_id = ? AND status = 'booked'",
                    (slot_id,)).fetchone():
        raise json_error(web.HTTPConflict, "slot_taken", "the slot is booked already")
    return slot


def book(conn: sqlite3.Connection, actor: str, case: dict[str, Any], party_id: object,
         slot_id: object, reason: str) -> dict[str, Any]:
    if access.id_value(party_id) is None or conn.execute(
            "SELECT 1 FROM parties WHERE id = ? AND case_id = ?",
            (party_id, case["id"])).fetchone() is None:
        raise json_error(web.HTTPNotFound, "not_found", "no such party in this case")
    if conn.execute("SELECT 1 FROM appointments WHERE case_id = ? AND party_id = ? "
                    "AND status = 'booked'", (case["id"], party_id)).fetchone():
        raise json_error(web.HTTPConflict, "already_booked",
                         "this party has an appointment in this case: reschedule it instead")
    _usable_slot(conn, slot_id, case["brigade"])
    now = now_iso()
    cursor = conn.execute(
        "INSERT INTO appointments (case_id, party_id, slot_id, status, booked_by, created_at, "
        "updated_at) VALUES (?, ?, ?, 'booked', ?, ?, ?)",
        (case["id"], party_id, slot_id, actor, now, now))
    assert cursor.lastrowid is not None
    audit(conn, actor, "appointment.booked", f"appointment:{cursor.lastrowid}", case["id"],
          reason, slot=slot_id, party=party_id)
    return _appointment(conn, cursor.lastrowid)


def _own_booking(conn: sqlite3.Connection, case_id: int, appointment_id: int,
                 party_id: int | None = None) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM appointments WHERE id = ? AND case_id = ?",
                       (appointment_id, case_id)).fetchone()
    if row is None or (party_id is not None and row["party_id"] != party_id):
        raise json_error(web.HTTPNotFound, "not_found", "no such appointment")
    if row["status"] != "booked":
        raise json_error(web.HTTPConflict, "cancelled", "the appointment was cancelled")
    return row


def reschedule(conn: sqlite3.Connection, actor: str, case: dict[str, Any], row: sqlite3.Row,
               slot_id: object, reason: str) -> dict[str, Any]:
    if slot_id == row["slot_id"]:
        raise json_error(web.HTTPConflict, "same_slot", "the appointment is in that slot")
    _usable_slot(conn, slot_id, case["brigade"])
    conn.execute("UPDATE appointments SET slot_id = ?, updated_at = ?, "
                 "reschedules = reschedules + 1 WHERE id = ?", (slot_id, now_iso(), row["id"]))
    audit(conn, actor, "appointment.rescheduled", f"appointment:{row['id']}", case["id"],
          reason, from_slot=row["slot_id"], to_slot=slot_id)
    return _appointment(conn, row["id"])


def cancel(conn: sqlite3.Connection, actor: str, case_id: int, row: sqlite3.Row,
           reason: str) -> dict[str, Any]:
    conn.execute("UPDATE appointments SET status = 'cancelled', updated_at = ? WHERE id = ?",
                 (now_iso(), row["id"]))
    audit(conn, actor, "appointment.cancelled", f"appointment:{row['id']}", case_id, reason,
          slot=row["slot_id"])
    return _appointment(conn, row["id"])


# -- officers --------------------------------------------------------------------------------
async def post_slot(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    body = await read_object(request)
    starts, ends = parse_time(body, "starts_at"), parse_time(body, "ends_at")
    if not starts < ends <= starts + MAX_SLOT_HOURS * 3600:
        raise json_error(web.HTTPBadRequest, "bad_request",
                         f"ends_at: after starts_at, at most {MAX_SLOT_HOURS} hours later")
    if not time.time() < starts < time.time() + HORIZON_DAYS * 86400:
        raise json_error(web.HTTPBadRequest, "bad_request",
                         f"starts_at: in the future, within {HORIZON_DAYS} days")

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        cursor = conn.execute(
            "INSERT INTO slots (brigade, starts_at, ends_at, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?)", (officer.brigade, starts, ends, officer.id, now_iso()))
        audit(conn, officer.actor, "slot.created", f"slot:{cursor.lastrowid}", None,
              brigade=officer.brigade)
        return _slot_json(conn.execute("SELECT * FROM slots WHERE id = ?",
                                       (cursor.lastrowid,)).fetchone())

    return web.json_response(await request.app[DB].run(run), status=201)


def _slots(conn: sqlite3.Connection, brigade: str | None, *, free_only: bool,
           since: float) -> list[dict[str, Any]]:
    query = ("SELECT s.*, a.id AS appointment_id, a.case_id AS case_id FROM slots s "
             "LEFT JOIN appointments a ON a.slot_id = s.id AND a.status = 'booked' "
             "WHERE s.withdrawn_at IS NULL AND s.ends_at > ?")
    params: list[Any] = [since]
    if brigade is not None:
        query += " AND s.brigade = ?"
        params.append(brigade)
    if free_only:
        query += " AND a.id IS NULL"
    return [_slot_json(r) for r in rows(conn.execute(query + " ORDER BY s.starts_at", params))]


async def list_slots(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    free_only = request.query.get("free", "") in ("1", "true")
    brigade = None if officer.role == "supervisor" else officer.brigade
    slots = await request.app[DB].run(
        lambda c: _slots(c, brigade, free_only=free_only, since=time.time() - 86400))
    return web.json_response({"slots": slots})


async def withdraw_slot(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    slot_id = access.path_int(request, "slot", "slot")
    reason = text(await read_object(request), "reason", max_len=500)

    def run(conn: sqlite3.Connection) -> None:
        slot = conn.execute("SELECT * FROM slots WHERE id = ? AND withdrawn_at IS NULL",
                            (slot_id,)).fetchone()
        if slot is None or not officer.may_touch(slot["brigade"]):
            raise json_error(web.HTTPNotFound, "not_found", "no such slot")
        if conn.execute("SELECT 1 FROM appointments WHERE slot_id = ? AND status = 'booked'",
                        (slot_id,)).fetchone():
            raise json_error(web.HTTPConflict, "slot_taken",
                             "the slot is booked: reschedule or cancel the appointment first")
        conn.execute("UPDATE slots SET withdrawn_at = ? WHERE id = ?", (now_iso(), slot_id))
        audit(conn, officer.actor, "slot.withdrawn", f"slot:{slot_id}", None, reason)

    await request.app[DB].run(run)
    return web.json_response({"withdrawn": slot_id})


async def post_appointment(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    body = await read_object(request)
    reason = text(body, "reason", max_len=500, required=False)

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        case = access.load_case(conn, officer, case_id)
        access.require_open_case(conn, case_id)
        return book(conn, officer.actor, case, body.get("party_id"), body.get("slot_id"),
                    reason)

    return web.json_response(await request.app[DB].run(run), status=201)


async def change_appointment(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    appointment_id = access.path_int(request, "appointment", "appointment")
    action = request.match_info["action"]
    body = await read_object(request)
    reason = text(body, "reason", max_len=500)

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        case = access.load_case(conn, officer, case_id)
        row = _own_booking(conn, case_id, appointment_id)
        if action == "reschedule":
            return reschedule(conn, officer.actor, case, row, body.get("slot_id"), reason)
        return cancel(conn, officer.actor, case_id, row, reason)

    return web.json_response(await request.app[DB].run(run))


# -- parties ---------------------------------------------------------------------------------
def _party_view(conn: sqlite3.Connection, caller: PartyCaller) -> dict[str, Any]:
    case = conn.execute("SELECT id, kind, title, status FROM cases WHERE id = ?",
                        (caller.case_id,)).fetchone()
    booked = conn.execute("SELECT id FROM appointments WHERE case_id = ? AND party_id = ? "
                          "AND status = 'booked'", (caller.case_id, caller.party_id)).fetchone()
    return {"case": dict(case), "party": {"id": caller.party_id, "name": caller.name},
            "appointment": None if booked is None else _appointment(conn, booked["id"])}


async def get_party(request: web.Request) -> web.Response:
    caller = await access.party(request)
    return web.json_response(await request.app[DB].run(lambda c: _party_view(c, caller)))


def _case_row(conn: sqlite3.Connection, case_id: int) -> dict[str, Any]:
    return dict(conn.execute("SELECT * FROM cases WHERE id = ?", (case_id,)).fetchone())


async def party_slots(request: web.Request) -> web.Response:
    caller = await access.party(request)

    def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
        brigade = _case_row(conn, caller.case_id)["brigade"]
        # a party sees when the brigade is free, not whose appointments fill the rest
        return [{"id": s["id"], "starts_at": s["starts_at"], "ends_at": s["ends_at"]}
                for s in _slots(conn, brigade, free_only=True, since=time.time())]

    return web.json_response({"slots": await request.app[DB].run(run)})


async def party_book(request: web.Request) -> web.Response:
    """Book a slot, or move the party's appointment to it."""
    caller = await access.party(request)
    body = await read_object(request)
    reason = text(body, "reason", max_len=500, required=False)

    def run(conn: sqlite3.Connection) -> tuple[int, dict[str, Any]]:
        access.require_open_case(conn, caller.case_id)
        case = _case_row(conn, caller.case_id)
        booked = conn.execute("SELECT * FROM appointments WHERE case_id = ? AND party_id = ? "
                              "AND status = 'booked'", (case["id"], caller.party_id)).fetchone()
        if booked is not None:
            return 200, reschedule(conn, caller.actor, case, booked, body.get("slot_id"),
                                   reason or "moved by the party")
        return 201, book(conn, caller.actor, case, caller.party_id, body.get("slot_id"),
                         reason)

    status, appointment = await request.app[DB].run(run)
    return web.json_response(appointment, status=status)


async def party_cancel(request: web.Request) -> web.Response:
    caller = await access.party(request)
    reason = text(await read_object(request), "reason", max_len=500)

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        booked = conn.execute("SELECT id FROM appointments WHERE case_id = ? AND party_id = ? "
                              "AND status = 'booked'", (caller.case_id,
                                                        caller.party_id)).fetchone()
        if booked is None:
            raise json_error(web.HTTPNotFound, "not_found", "no booked appointment")
        row = _own_booking(conn, caller.case_id, booked["id"], caller.party_id)
        return cancel(conn, caller.actor, caller.case_id, row, reason)

    return web.json_response(await request.app[DB].run(run))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/slots", post_slot)
    app.router.add_get("/api/slots", list_slots)
    app.router.add_post("/api/slots/{slot}/withdraw", withdraw_slot)
    app.router.add_post("/api/cases/{case}/appointments", post_appointment)
    app.router.add_post("/api/cases/{case}/appointments/{appointment}/{action:reschedule|cancel}",
                        change_appointment)
    app.router.add_get("/api/party", get_party)
    app.router.add_get("/api/party/slots", party_slots)
    app.router.add_post("/api/party/appointment", party_book)
    app.router.add_post("/api/party/appointment/cancel", party_cancel)


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    add("/api/slots", "post", op(
        "Publish a slot of the officer's brigade", OFFICER,
        responses("201", ANY_OBJECT, "400 401"), tag="appointments",
        body=json_body({"starts_at": TIME, "ends_at": TIME}, ["starts_at", "ends_at"]),
        description=f"In the future, within {HORIZON_DAYS} days, at most 8 hours long."))
    add("/api/slots", "get", op(
        "The brigade's slots and their bookings", OFFICER,
        responses("200", ANY_OBJECT, "401"), tag="appointments",
        params=[query("free", {"type": "string", "enum": ["1", "true", "0", "false"]})]))
    add("/api/slots/{slot}/withdraw", "post", op(
        "Withdraw an unbooked slot", OFFICER, responses("200", ANY_OBJECT, "400 401 404 409"),
        tag="appointments", body=json_body({"reason": REASON}, ["reason"])),
        [in_path("slot", ID)])
    add("/api/cases/{case}/appointments", "post", op(
        "Book a slot for a party of the case", OFFICER,
        responses("201", ANY_OBJECT, "400 401 404 409"), tag="appointments",
        body=json_body({"party_id": ID, "slot_id": ID, "reason": REASON},
                       ["party_id", "slot_id"])), [CASE])
    add("/api/cases/{case}/appointments/{appointment}/{action}", "post", op(
        "Reschedule (to slot_id) or cancel an appointment", OFFICER,
        responses("200", ANY_OBJECT, "400 401 404 409"), tag="appointments",
        body=json_body({"slot_id": ID, "reason": REASON}, ["reason"])),
        [CASE, in_path("appointment", ID),
         in_path("action", {"type": "string", "enum": ["reschedule", "cancel"]})])

    # -- parties ---------------------------------------------------------------------------
    add("/api/party", "get", op(
        "The party's case, name and appointment", PARTY,
        responses("200", ANY_OBJECT, "401 403"), tag="parties"))
    add("/api/party/slots", "get", op(
        "Free slots of the case's brigade", PARTY, responses("200", ANY_OBJECT, "401 403"),
        tag="parties"))
    add("/api/party/appointment", "post", op(
        "Book a slot, or move the party's appointment to it", PARTY,
        responses("200", ANY_OBJECT, "400 401 403 404 409"), tag="parties",
        body=json_body({"slot_id": ID, "reason": REASON}, ["slot_id"])))
    add("/api/party/appointment/cancel", "post", op(
        "Cancel the party's appointment", PARTY,
        responses("200", ANY_OBJECT, "400 401 403 404"), tag="parties",
        body=json_body({"reason": REASON}, ["reason"])))
