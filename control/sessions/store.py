"""Sessions of a case and officers' call control over one database connection: SQL in,
results (or a :class:`control.cases.store.Refusal`) out; nothing here knows HTTP."""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass

from ..access import audit, find_case, issue_grant, revoke_grants
from ..auth import Officer, now_iso
from ..cases.store import open_case
from ..refusals import Refusal

PURPOSES = ("inquiry", "mediation", "education", "delivery", "other")
ACTIONS = ("remove", "mute", "unmute", "lock", "unlock")


@dataclass(frozen=True)
class OpenedSession:
    id: int
    room: str
    brigade: str
    grant: str  # the officer's call grant, for the signalling token


def open_room(
    conn: sqlite3.Connection, officer: Officer, case_id: int, session_id: int
) -> str | Refusal:
    """The room of an open session of a case the officer may touch."""
    if find_case(conn, officer, case_id) is None:
        return Refusal.NO_CASE
    row = conn.execute(
        "SELECT room FROM sessions WHERE id = ? AND case_id = ? AND ended_at IS NULL",
        (session_id, case_id),
    ).fetchone()
    if row is None:
        return Refusal.NO_OPEN_SESSION
    room: str = row["room"]
    return room


def open_session(
    conn: sqlite3.Connection,
    officer: Officer,
    case_id: int,
    purpose: str | None,
    participant: str,
    ttl: int,
    login_token: str,
) -> OpenedSession | Refusal:
    case = open_case(conn, officer, case_id)
    if isinstance(case, Refusal):
        return case
    if conn.execute(
        "SELECT 1 FROM sessions WHERE case_id = ? AND ended_at IS NULL", (case_id,)
    ).fetchone():
        return Refusal.SESSION_OPEN
    room = f"case-{case_id}-{secrets.token_hex(4)}"
    chosen = purpose or ("education" if case["kind"] == "education" else "inquiry")
    cursor = conn.execute(
        "INSERT INTO sessions (case_id, room, opened_by, opened_at, purpose) "
        "VALUES (?, ?, ?, ?, ?)",
        (case_id, room, officer.id, now_iso(), chosen),
    )
    assert cursor.lastrowid is not None
    audit(conn, officer.actor, "session.opened", f"session:{cursor.lastrowid}", case_id, room=room)
    grant = issue_grant(
        conn, cursor.lastrowid, participant, "officer", ttl, login_token=login_token
    )
    return OpenedSession(cursor.lastrowid, room, case["brigade"], grant)


def officer_grant(
    conn: sqlite3.Connection,
    officer: Officer,
    case_id: int,
    session_id: int,
    participant: str,
    ttl: int,
    login_token: str,
) -> tuple[str, str] | Refusal:
    """(room, grant) for the officer to (re)join an open session's call."""
    room = open_room(conn, officer, case_id, session_id)
    if isinstance(room, Refusal):
        return room
    audit(conn, officer.actor, "session.token", f"session:{session_id}", case_id)
    return room, issue_grant(
        conn, session_id, participant, officer.role, ttl, login_token=login_token
    )


def end_session(
    conn: sqlite3.Connection, officer: Officer, case_id: int, session_id: int, reason: str
) -> str | Refusal:
    """End the session; its room, to close."""
    if find_case(conn, officer, case_id) is None:
        return Refusal.NO_CASE
    row = conn.execute(
        "SELECT * FROM sessions WHERE id = ? AND case_id = ?", (session_id, case_id)
    ).fetchone()
    if row is None:
        return Refusal.NO_SESSION
    if row["ended_at"] is not None:
        return Refusal.SESSION_ENDED
    conn.execute("UPDATE sessions SET ended_at = ? WHERE id = ?", (now_iso(), row["id"]))
    audit(conn, officer.actor, "session.ended", f"session:{row['id']}", case_id, reason)
    room_id: str = row["room"]
    return room_id


def call_action(
    conn: sqlite3.Connection,
    officer: Officer,
    case_id: int,
    session_id: int,
    room_id: str,
    action: str,
    participant: str,
    kinds: list[str],
    reason: str,
    detail: dict[str, object],
) -> Refusal | None:
    """Record an officer's action on the call as session state (it holds across reconnects
    and a room made again): a removal revokes the participant's grants; mutes and the lock
    are the session's."""
    refusal = open_room(conn, officer, case_id, session_id)
    if isinstance(refusal, Refusal):
        return refusal
    if action == "remove":
        revoke_grants(conn, session_id, participant, "removed")
    elif action in ("mute", "unmute"):
        row = conn.execute(
            "SELECT officer_mutes FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        mutes: dict[str, list[str]] = json.loads(row["officer_mutes"] or "{}")
        held = set(mutes.get(participant, []))
        held = held | set(kinds) if action == "mute" else held - set(kinds)
        if held:
            mutes[participant] = sorted(held)
        else:
            mutes.pop(participant, None)
        conn.execute(
            "UPDATE sessions SET officer_mutes = ? WHERE id = ?",
            (json.dumps(mutes, sort_keys=True), session_id),
        )
    else:
        conn.execute(
            "UPDATE sessions SET locked = ? WHERE id = ?", (int(action == "lock"), session_id)
        )
    audit(conn, officer.actor, f"call.{action}", f"room:{room_id}", case_id, reason, **detail)
    return None


def display_started(
    conn: sqlite3.Connection,
    session_id: int,
    case_id: int,
    actor: str,
    material_id: str,
    mode: str,
    reason: str,
) -> int:
    """Record that an item is being shown into the session's call; the display's ID."""
    cursor = conn.execute(
        "INSERT INTO displays (session_id, material_id, shown_by, mode, started_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (session_id, material_id, actor, mode, now_iso()),
    )
    assert cursor.lastrowid is not None
    audit(
        conn,
        actor,
        "evidence.display_started",
        f"display:{cursor.lastrowid}",
        case_id,
        reason,
        material=material_id,
        mode=mode,
    )
    return cursor.lastrowid


def display_ended(
    conn: sqlite3.Connection,
    display_id: int,
    case_id: int,
    actor: str,
    how: str,
    reason: str,
    viewers: list[str],
) -> None:
    """Record that a display ended, how, and everyone who saw it."""
    conn.execute(
        "UPDATE displays SET ended_at = ?, viewers = ? WHERE id = ?",
        (now_iso(), json.dumps(viewers), display_id),
    )
    audit(
        conn,
        actor,
        "evidence.display_ended",
        f"display:{display_id}",
        case_id,
        reason,
        ended=how,
        viewers=viewers,
    )
