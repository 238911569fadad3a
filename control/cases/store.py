"""Cases, parties and their audit trail over one database connection: SQL in, results out.

Each function runs inside one ``db.run`` transaction and returns what happened: a row, or a
:class:`control.refusals.Refusal` saying why nothing was done (the HTTP handlers turn it into
an error answer; nothing here knows HTTP). Raising in a transaction is kept for faults, which
roll it back.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from ..access import audit, find_case
from ..appointments.store import case_appointments
from ..auth import Officer, now_iso
from ..db import rows
from ..materials.records import case_materials
from ..refusals import Refusal

KINDS = ("accident", "violation", "education", "vehicle_service", "licence_service")
PARTY_ROLES = ("driver", "owner", "witness", "insurer", "safety_manager", "other")
ID_NUMBER = re.compile(r"^[0-9A-Za-z]{6,20}$")


def open_case(conn: sqlite3.Connection, officer: Officer, case_id: int) -> dict[str, Any] | Refusal:
    """The case, if the officer may touch it and it is open."""
    case = find_case(conn, officer, case_id)
    if case is None:
        return Refusal.NO_CASE
    return Refusal.CASE_CLOSED if case["status"] != "open" else case


def create_case(
    conn: sqlite3.Connection, officer: Officer, kind: str, title: str
) -> dict[str, Any]:
    cursor = conn.execute(
        "INSERT INTO cases (kind, title, brigade, created_by, created_at) VALUES (?, ?, ?, ?, ?)",
        (kind, title, officer.brigade, officer.id, now_iso()),
    )
    case_id = cursor.lastrowid
    audit(conn, officer.actor, "case.created", f"case:{case_id}", case_id, kind=kind)
    return dict(conn.execute("SELECT * FROM cases WHERE id = ?", (case_id,)).fetchone())


def list_cases(conn: sqlite3.Connection, officer: Officer) -> list[dict[str, Any]]:
    if officer.role == "supervisor":
        return rows(conn.execute("SELECT * FROM cases ORDER BY id"))
    return rows(
        conn.execute("SELECT * FROM cases WHERE brigade = ? ORDER BY id", (officer.brigade,))
    )


def case_detail(
    conn: sqlite3.Connection, officer: Officer, case_id: int
) -> dict[str, Any] | Refusal:
    case = find_case(conn, officer, case_id)
    if case is None:
        return Refusal.NO_CASE
    case["parties"] = rows(
        conn.execute(
            "SELECT id, role, name, id_number_masked, phone FROM parties WHERE case_id = ?",
            (case_id,),
        )
    )
    case["sessions"] = rows(
        conn.execute(
            "SELECT id, room, opened_at, ended_at FROM sessions WHERE case_id = ?", (case_id,)
        )
    )
    case["invitations"] = rows(
        conn.execute(
            "SELECT id, party_id, not_before, expires_at, used_at, revoked_at "
            "FROM invitations WHERE case_id = ?",
            (case_id,),
        )
    )
    case["appointments"] = case_appointments(conn, case_id)
    case["materials"] = case_materials(conn, case_id)
    return case


def close_case(
    conn: sqlite3.Connection, officer: Officer, case_id: int, reason: str
) -> list[int] | Refusal:
    """Close the case and revoke its unused invitations; the IDs of its parties (whose face
    references go next)."""
    case = open_case(conn, officer, case_id)
    if isinstance(case, Refusal):
        return case
    if conn.execute(
        "SELECT 1 FROM sessions WHERE case_id = ? AND ended_at IS NULL", (case_id,)
    ).fetchone():
        return Refusal.END_SESSION_FIRST
    conn.execute("UPDATE cases SET status = 'closed' WHERE id = ?", (case_id,))
    conn.execute(
        "UPDATE invitations SET revoked_at = ? WHERE case_id = ? "
        "AND used_at IS NULL AND revoked_at IS NULL",
        (now_iso(), case_id),
    )
    audit(conn, officer.actor, "case.closed", f"case:{case_id}", case_id, reason)
    return [r["id"] for r in conn.execute("SELECT id FROM parties WHERE case_id = ?", (case_id,))]


def mask_id_number(number: str) -> str:
    """Keep the last four characters; an ID number is personal data."""
    return "*" * (len(number) - 4) + number[-4:]


def mask_phone(phone: str) -> str:
    digits = re.sub(r"\D", "", phone)
    return digits[:3] + "****" + digits[-4:] if len(digits) >= 7 else ""


def add_party(
    conn: sqlite3.Connection,
    officer: Officer,
    case_id: int,
    role: str,
    name: str,
    id_number: str,
    phone: str,
) -> dict[str, Any] | Refusal:
    if find_case(conn, officer, case_id) is None:
        return Refusal.NO_CASE
    cursor = conn.execute(
        "INSERT INTO parties (case_id, role, name, id_number_masked, phone, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            case_id,
            role,
            name,
            mask_id_number(id_number) if id_number else "",
            mask_phone(phone),
            now_iso(),
        ),
    )
    party_id = cursor.lastrowid
    audit(conn, officer.actor, "party.added", f"party:{party_id}", case_id, role=role)
    return dict(
        conn.execute(
            "SELECT id, case_id, role, name, id_number_masked, phone FROM parties WHERE id = ?",
            (party_id,),
        ).fetchone()
    )


def case_audit(
    conn: sqlite3.Connection, officer: Officer, case_id: int
) -> list[dict[str, Any]] | Refusal:
    if find_case(conn, officer, case_id) is None:
        return Refusal.NO_CASE
    return rows(conn.execute("SELECT * FROM audit WHERE case_id = ? ORDER BY id", (case_id,)))
