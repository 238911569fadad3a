"""Slots and appointments over one database connection: SQL in, results out.

Each function runs inside one ``db.run`` transaction and returns a row (as JSON-ready dict) or
a :class:`Refusal` saying why nothing was done; nothing here knows HTTP. Refusals come before
any write, so a refused call leaves the database as it was.
"""

from __future__ import annotations

import datetime
import sqlite3
import time
from typing import Any

from ..access import PartyCaller, audit, find_case, id_value
from ..auth import Officer, now_iso
from ..db import rows
from ..refusals import CodedRefusal


class Refusal(CodedRefusal):
    """Why a slot or appointment function did nothing: ``(code, message)``."""

    NO_CASE = ("not_found", "no such case")
    CASE_CLOSED = ("case_closed", "the case is closed")
    BAD_SLOT_ID = ("bad_request", "slot_id: a slot's ID")
    NO_SLOT = ("not_found", "no such slot")
    SLOT_PAST = ("slot_past", "the slot has already begun")
    SLOT_TAKEN = ("slot_taken", "the slot is booked already")
    SLOT_BOOKED = ("slot_taken", "the slot is booked: reschedule or cancel the appointment first")
    NO_PARTY = ("not_found", "no such party in this case")
    ALREADY_BOOKED = (
        "already_booked",
        "this party has an appointment in this case: reschedule it instead",
    )
    NO_APPOINTMENT = ("not_found", "no such appointment")
    CANCELLED = ("cancelled", "the appointment was cancelled")
    SAME_SLOT = ("same_slot", "the appointment is in that slot")
    NO_BOOKING = ("not_found", "no booked appointment")


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
        "JOIN slots s ON s.id = a.slot_id WHERE a.id = ?",
        (appointment_id,),
    ).fetchone()
    return _slot_json(row)


def case_appointments(conn: sqlite3.Connection, case_id: int) -> list[dict[str, Any]]:
    ids = [
        r["id"]
        for r in conn.execute(
            "SELECT id FROM appointments WHERE case_id = ? ORDER BY id", (case_id,)
        )
    ]
    return [_appointment(conn, i) for i in ids]


def _is_open(conn: sqlite3.Connection, case_id: int) -> bool:
    row = conn.execute("SELECT status FROM cases WHERE id = ?", (case_id,)).fetchone()
    return row is not None and row["status"] == "open"


def _case_row(conn: sqlite3.Connection, case_id: int) -> dict[str, Any]:
    return dict(conn.execute("SELECT * FROM cases WHERE id = ?", (case_id,)).fetchone())


def _usable_slot(conn: sqlite3.Connection, slot_id: object, brigade: str) -> Refusal | None:
    if id_value(slot_id) is None:
        return Refusal.BAD_SLOT_ID
    slot = conn.execute(
        "SELECT * FROM slots WHERE id = ? AND brigade = ?", (slot_id, brigade)
    ).fetchone()
    if slot is None or slot["withdrawn_at"] is not None:
        return Refusal.NO_SLOT
    if slot["starts_at"] <= time.time():
        return Refusal.SLOT_PAST
    if conn.execute(
        "SELECT 1 FROM appointments WHERE slot_id = ? AND status = 'booked'", (slot_id,)
    ).fetchone():
        return Refusal.SLOT_TAKEN
    return None


def _book(
    conn: sqlite3.Connection,
    actor: str,
    case: dict[str, Any],
    party_id: object,
    slot_id: object,
    reason: str,
) -> dict[str, Any] | Refusal:
    if (
        id_value(party_id) is None
        or conn.execute(
            "SELECT 1 FROM parties WHERE id = ? AND case_id = ?", (party_id, case["id"])
        ).fetchone()
        is None
    ):
        return Refusal.NO_PARTY
    if conn.execute(
        "SELECT 1 FROM appointments WHERE case_id = ? AND party_id = ? AND status = 'booked'",
        (case["id"], party_id),
    ).fetchone():
        return Refusal.ALREADY_BOOKED
    refusal = _usable_slot(conn, slot_id, case["brigade"])
    if refusal is not None:
        return refusal
    now = now_iso()
    cursor = conn.execute(
        "INSERT INTO appointments (case_id, party_id, slot_id, status, booked_by, created_at, "
        "updated_at) VALUES (?, ?, ?, 'booked', ?, ?, ?)",
        (case["id"], party_id, slot_id, actor, now, now),
    )
    assert cursor.lastrowid is not None
    audit(
        conn,
        actor,
        "appointment.booked",
        f"appointment:{cursor.lastrowid}",
        case["id"],
        reason,
        slot=slot_id,
        party=party_id,
    )
    return _appointment(conn, cursor.lastrowid)


def _own_booking(
    conn: sqlite3.Connection, case_id: int, appointment_id: int, party_id: int | None = None
) -> sqlite3.Row | Refusal:
    row = conn.execute(
        "SELECT * FROM appointments WHERE id = ? AND case_id = ?", (appointment_id, case_id)
    ).fetchone()
    if row is None or (party_id is not None and row["party_id"] != party_id):
        return Refusal.NO_APPOINTMENT
    if row["status"] != "booked":
        return Refusal.CANCELLED
    result: sqlite3.Row = row
    return result


def _reschedule(
    conn: sqlite3.Connection,
    actor: str,
    case: dict[str, Any],
    row: sqlite3.Row,
    slot_id: object,
    reason: str,
) -> dict[str, Any] | Refusal:
    if slot_id == row["slot_id"]:
        return Refusal.SAME_SLOT
    refusal = _usable_slot(conn, slot_id, case["brigade"])
    if refusal is not None:
        return refusal
    conn.execute(
        "UPDATE appointments SET slot_id = ?, updated_at = ?, "
        "reschedules = reschedules + 1 WHERE id = ?",
        (slot_id, now_iso(), row["id"]),
    )
    audit(
        conn,
        actor,
        "appointment.rescheduled",
        f"appointment:{row['id']}",
        case["id"],
        reason,
        from_slot=row["slot_id"],
        to_slot=slot_id,
    )
    return _appointment(conn, row["id"])


def _cancel(
    conn: sqlite3.Connection, actor: str, case_id: int, row: sqlite3.Row, reason: str
) -> dict[str, Any]:
    conn.execute(
        "UPDATE appointments SET status = 'cancelled', updated_at = ? WHERE id = ?",
        (now_iso(), row["id"]),
    )
    audit(
        conn,
        actor,
        "appointment.cancelled",
        f"appointment:{row['id']}",
        case_id,
        reason,
        slot=row["slot_id"],
    )
    return _appointment(conn, row["id"])


# -- officers --------------------------------------------------------------------------------
def create_slot(
    conn: sqlite3.Connection, officer: Officer, starts: float, ends: float
) -> dict[str, Any]:
    cursor = conn.execute(
        "INSERT INTO slots (brigade, starts_at, ends_at, created_by, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (officer.brigade, starts, ends, officer.id, now_iso()),
    )
    audit(
        conn,
        officer.actor,
        "slot.created",
        f"slot:{cursor.lastrowid}",
        None,
        brigade=officer.brigade,
    )
    return _slot_json(
        conn.execute("SELECT * FROM slots WHERE id = ?", (cursor.lastrowid,)).fetchone()
    )


def list_slots(
    conn: sqlite3.Connection, brigade: str | None, *, free_only: bool, since: float
) -> list[dict[str, Any]]:
    query = (
        "SELECT s.*, a.id AS appointment_id, a.case_id AS case_id FROM slots s "
        "LEFT JOIN appointments a ON a.slot_id = s.id AND a.status = 'booked' "
        "WHERE s.withdrawn_at IS NULL AND s.ends_at > ?"
    )
    params: list[Any] = [since]
    if brigade is not None:
        query += " AND s.brigade = ?"
        params.append(brigade)
    if free_only:
        query += " AND a.id IS NULL"
    return [_slot_json(r) for r in rows(conn.execute(query + " ORDER BY s.starts_at", params))]


def withdraw_slot(
    conn: sqlite3.Connection, officer: Officer, slot_id: int, reason: str
) -> Refusal | None:
    slot = conn.execute(
        "SELECT * FROM slots WHERE id = ? AND withdrawn_at IS NULL", (slot_id,)
    ).fetchone()
    if slot is None or not officer.may_touch(slot["brigade"]):
        return Refusal.NO_SLOT
    if conn.execute(
        "SELECT 1 FROM appointments WHERE slot_id = ? AND status = 'booked'", (slot_id,)
    ).fetchone():
        return Refusal.SLOT_BOOKED
    conn.execute("UPDATE slots SET withdrawn_at = ? WHERE id = ?", (now_iso(), slot_id))
    audit(conn, officer.actor, "slot.withdrawn", f"slot:{slot_id}", None, reason)
    return None


def book_for_case(
    conn: sqlite3.Connection,
    officer: Officer,
    case_id: int,
    party_id: object,
    slot_id: object,
    reason: str,
) -> dict[str, Any] | Refusal:
    case = find_case(conn, officer, case_id)
    if case is None:
        return Refusal.NO_CASE
    if not _is_open(conn, case_id):
        return Refusal.CASE_CLOSED
    return _book(conn, officer.actor, case, party_id, slot_id, reason)


def change(
    conn: sqlite3.Connection,
    officer: Officer,
    case_id: int,
    appointment_id: int,
    action: str,
    slot_id: object,
    reason: str,
) -> dict[str, Any] | Refusal:
    """``reschedule`` (to ``slot_id``) or ``cancel`` an appointment of a case."""
    case = find_case(conn, officer, case_id)
    if case is None:
        return Refusal.NO_CASE
    row = _own_booking(conn, case_id, appointment_id)
    if isinstance(row, Refusal):
        return row
    if action == "reschedule":
        return _reschedule(conn, officer.actor, case, row, slot_id, reason)
    return _cancel(conn, officer.actor, case_id, row, reason)


# -- parties ---------------------------------------------------------------------------------
def party_view(
    conn: sqlite3.Connection, caller: PartyCaller, link_hash: str | None = None
) -> dict[str, Any]:
    """What the party's page shows at the top: the case, the police unit (the case's brigade),
    whether a session is open now, and the party's appointment; asked with the link itself
    (``link_hash``), whether the link was used (then only its device gets back in) and until
    when it is valid."""
    case = conn.execute(
        "SELECT id, kind, title, status, brigade FROM cases WHERE id = ?", (caller.case_id,)
    ).fetchone()
    booked = conn.execute(
        "SELECT id FROM appointments WHERE case_id = ? AND party_id = ? AND status = 'booked'",
        (caller.case_id, caller.party_id),
    ).fetchone()
    session = conn.execute(
        "SELECT opened_at FROM sessions WHERE case_id = ? AND ended_at IS NULL",
        (caller.case_id,),
    ).fetchone()
    link = (
        None
        if link_hash is None
        else conn.execute(
            "SELECT used_at, expires_at FROM invitations WHERE token_hash = ?", (link_hash,)
        ).fetchone()
    )
    return {
        "case": dict(case),
        "unit": case["brigade"],
        "invitation": None
        if link is None
        else {"used": link["used_at"] is not None, "expires_at": iso(link["expires_at"])},
        "party": {"id": caller.party_id, "name": caller.name},
        "session": None if session is None else {"opened_at": session["opened_at"]},
        "appointment": None if booked is None else _appointment(conn, booked["id"]),
    }


def party_slots(conn: sqlite3.Connection, caller: PartyCaller) -> list[dict[str, Any]]:
    brigade = _case_row(conn, caller.case_id)["brigade"]
    # a party sees when the brigade is free, not whose appointments fill the rest
    return [
        {"id": s["id"], "starts_at": s["starts_at"], "ends_at": s["ends_at"]}
        for s in list_slots(conn, brigade, free_only=True, since=time.time())
    ]


def party_book(
    conn: sqlite3.Connection, caller: PartyCaller, slot_id: object, reason: str
) -> tuple[bool, dict[str, Any]] | Refusal:
    """Book the slot, or move the party's appointment to it: (whether it was new, the
    appointment)."""
    if not _is_open(conn, caller.case_id):
        return Refusal.CASE_CLOSED
    case = _case_row(conn, caller.case_id)
    booked = conn.execute(
        "SELECT * FROM appointments WHERE case_id = ? AND party_id = ? AND status = 'booked'",
        (case["id"], caller.party_id),
    ).fetchone()
    if booked is not None:
        moved = _reschedule(
            conn, caller.actor, case, booked, slot_id, reason or "moved by the party"
        )
        return moved if isinstance(moved, Refusal) else (False, moved)
    made = _book(conn, caller.actor, case, caller.party_id, slot_id, reason)
    return made if isinstance(made, Refusal) else (True, made)


def party_cancel(
    conn: sqlite3.Connection, caller: PartyCaller, reason: str
) -> dict[str, Any] | Refusal:
    booked = conn.execute(
        "SELECT id FROM appointments WHERE case_id = ? AND party_id = ? AND status = 'booked'",
        (caller.case_id, caller.party_id),
    ).fetchone()
    if booked is None:
        return Refusal.NO_BOOKING
    row = _own_booking(conn, caller.case_id, booked["id"], caller.party_id)
    if isinstance(row, Refusal):
        return row
    return _cancel(conn, caller.actor, caller.case_id, row, reason)
