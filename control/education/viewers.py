"""An education case's course (topic, required watch time), its viewers taken from the
roster, and their links, over one database connection (SQL in, results or a refusal out).

A viewer is an ordinary party of the case (role ``driver`` or ``safety_manager``) tied to its
roster person (``edu_viewers``), so that everything a party has works for it unchanged:
links and consent (:func:`control.sessions.invitations.create_invitation`, reused here), the
signalling token, and the verifier, which compares a case's parties with the references of
the scope ``case-<id>``: :func:`copy_reference` puts the roster person's encrypted embedding
there (the photo itself was never kept; closing the case deletes the copy, not the roster's).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from verifier.enrollment import EnrollmentStore

from ..access import audit
from ..auth import Officer, now_iso
from ..cases.store import open_case
from ..refusals import CodedRefusal, Refusal
from ..sessions.invitations import create_invitation
from .roster import PARTY_ROLE, roster_participant, roster_scope


class ViewerRefusal(CodedRefusal):
    NOT_EDUCATION = ("not_education", "此案件不是宣教案件 / the case is not an education case")
    NO_PERSON = ("not_found", "名单中没有此人或此企业 / no such person or company on the roster")
    NOTHING = ("bad_request", "person_ids 或 company_ids 至少一项 / person_ids or company_ids")


CASE_STATUS: dict[Refusal, type[web.HTTPException]] = {
    Refusal.NO_CASE: web.HTTPNotFound,
    Refusal.CASE_CLOSED: web.HTTPConflict,
}


def _education_case(
    conn: sqlite3.Connection, officer: Officer, case_id: int
) -> dict[str, Any] | Refusal | ViewerRefusal:
    case = open_case(conn, officer, case_id)
    if isinstance(case, Refusal):
        return case
    return case if case["kind"] == "education" else ViewerRefusal.NOT_EDUCATION


def set_course(
    conn: sqlite3.Connection, officer: Officer, case_id: int, topic: str, required_seconds: float
) -> dict[str, Any] | Refusal | ViewerRefusal:
    case = _education_case(conn, officer, case_id)
    if not isinstance(case, dict):
        return case
    conn.execute(
        "INSERT INTO edu_courses (case_id, topic, required_seconds, updated_by, updated_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (case_id) DO UPDATE SET topic = excluded.topic, "
        "required_seconds = excluded.required_seconds, updated_by = excluded.updated_by, "
        "updated_at = excluded.updated_at",
        (case_id, topic, required_seconds, officer.actor, now_iso()),
    )
    audit(
        conn,
        officer.actor,
        "education.course_set",
        f"case:{case_id}",
        case_id,
        topic=topic,
        required_seconds=required_seconds,
    )
    return {"case_id": case_id, "topic": topic, "required_seconds": required_seconds}


def add_viewers(
    conn: sqlite3.Connection,
    officer: Officer,
    case_id: int,
    person_ids: list[int],
    company_ids: list[int],
) -> list[dict[str, Any]] | Refusal | ViewerRefusal:
    """The people named, and everyone of the companies named, as parties of the case (those
    already on it are left as they are). All or nothing: an unknown ID adds nobody."""
    case = _education_case(conn, officer, case_id)
    if not isinstance(case, dict):
        return case
    if not person_ids and not company_ids:
        return ViewerRefusal.NOTHING
    wanted: dict[int, sqlite3.Row] = {}
    for person_id in person_ids:
        row = conn.execute(
            "SELECT p.*, c.brigade FROM edu_people p JOIN edu_companies c "
            "ON c.id = p.company_id WHERE p.id = ?",
            (person_id,),
        ).fetchone()
        if row is None or row["brigade"] != case["brigade"]:
            return ViewerRefusal.NO_PERSON
        wanted[person_id] = row
    for company_id in company_ids:
        company = conn.execute(
            "SELECT brigade FROM edu_companies WHERE id = ?", (company_id,)
        ).fetchone()
        if company is None or company["brigade"] != case["brigade"]:
            return ViewerRefusal.NO_PERSON
        for row in conn.execute(
            "SELECT p.*, ? AS brigade FROM edu_people p WHERE p.company_id = ? ORDER BY p.id",
            (company["brigade"], company_id),
        ):
            wanted.setdefault(int(row["id"]), row)
    out: list[dict[str, Any]] = []
    for person_id, person in wanted.items():
        if conn.execute(
            "SELECT 1 FROM edu_viewers WHERE case_id = ? AND person_id = ?", (case_id, person_id)
        ).fetchone():
            continue
        cursor = conn.execute(
            "INSERT INTO parties (case_id, role, name, id_number_masked, phone, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                case_id,
                PARTY_ROLE[person["role"]],
                person["name"],
                person["id_number_masked"],
                person["phone"],
                now_iso(),
            ),
        )
        party_id = cursor.lastrowid
        conn.execute(
            "INSERT INTO edu_viewers (case_id, person_id, party_id, added_by, added_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (case_id, person_id, party_id, officer.actor, now_iso()),
        )
        audit(
            conn,
            officer.actor,
            "education.viewer_added",
            f"party:{party_id}",
            case_id,
            person=person_id,
        )
        out.append(
            {
                "party_id": party_id,
                "person_id": person_id,
                "name": person["name"],
                "role": person["role"],
                "company_id": person["company_id"],
                "photo_sha256": person["photo_sha256"],
            }
        )
    return out


def copy_reference(
    store: EnrollmentStore, case_id: int, viewer: dict[str, Any], actor: str
) -> bool:
    """The roster person's reference as the case party's (blocking: files and decryption)."""
    loaded = store.load(roster_scope(), roster_participant(int(viewer["person_id"])))
    if loaded is None:
        return False
    record, embedding = loaded
    store.save(
        f"case-{case_id}",
        f"party-{viewer['party_id']}",
        photo_sha256=record["photo_sha256"],
        quality=record["quality"],
        embedding=embedding,
        model=record["model"],
        actor=actor,
    )
    return True


def invite_all(
    conn: sqlite3.Connection,
    officer: Officer,
    case_id: int,
    new_token: Callable[[], str],
    start: float,
    hours: float,
) -> list[dict[str, Any]] | Refusal | ViewerRefusal:
    """A link for every viewer without one still usable (not used, revoked or expired)."""
    case = _education_case(conn, officer, case_id)
    if not isinstance(case, dict):
        return case
    out: list[dict[str, Any]] = []
    for v in conn.execute(
        "SELECT v.party_id, v.person_id, p.name, c.name AS company FROM edu_viewers v "
        "JOIN edu_people p ON p.id = v.person_id JOIN edu_companies c ON c.id = p.company_id "
        "WHERE v.case_id = ? ORDER BY v.party_id",
        (case_id,),
    ).fetchall():
        if conn.execute(
            "SELECT 1 FROM invitations WHERE party_id = ? AND used_at IS NULL "
            "AND revoked_at IS NULL AND expires_at > ?",
            (v["party_id"], time.time()),
        ).fetchone():
            continue
        token = new_token()
        made = create_invitation(conn, officer, case_id, v["party_id"], token, start, hours)
        if isinstance(made, Refusal):
            return made
        out.append(
            {
                **made,
                "person_id": v["person_id"],
                "name": v["name"],
                "company": v["company"],
                "token": token,
                "link": f"/?invite={token}",
            }
        )
    return out


def viewer_parties(conn: sqlite3.Connection, person_id: int) -> list[dict[str, Any]]:
    """Where a roster person is a viewer of an open case (a photo enrolled later goes there)."""
    return [
        {"case_id": r["case_id"], "party_id": r["party_id"], "person_id": person_id}
        for r in conn.execute(
            "SELECT v.case_id, v.party_id FROM edu_viewers v JOIN cases c ON c.id = v.case_id "
            "WHERE v.person_id = ? AND c.status = 'open'",
            (person_id,),
        )
    ]


def session_room(conn: sqlite3.Connection, session_id: int) -> str | None:
    row = conn.execute("SELECT room FROM sessions WHERE id = ?", (session_id,)).fetchone()
    return None if row is None else str(row["room"])


def set_speaker(
    conn: sqlite3.Connection, officer: Officer, case_id: int, party_id: int, speaker: bool
) -> list[str] | None:
    """Mark a viewer of the case as a guest speaker (or not), audited; the rooms of the case's
    open sessions, where the change applies at once; None when no such viewer."""
    changed = conn.execute(
        "UPDATE edu_viewers SET speaker = ? WHERE case_id = ? AND party_id = ?",
        (int(speaker), case_id, party_id),
    ).rowcount
    if not changed:
        return None
    audit(conn, officer.actor, "education.speaker", f"party:{party_id}", case_id, speaker=speaker)
    return [
        str(r["room"])
        for r in conn.execute(
            "SELECT room FROM sessions WHERE case_id = ? AND ended_at IS NULL", (case_id,)
        )
    ]
