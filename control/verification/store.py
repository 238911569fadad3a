"""The parties and sessions the verification handlers check over one database connection: SQL
in, results (or a :class:`control.refusals.Refusal`) out; nothing here knows HTTP. The identity
check's own tables are kept by :mod:`.prejoin`."""

from __future__ import annotations

import json
import sqlite3

from ..access import load_case
from ..auth import Officer
from ..refusals import Refusal
from .prejoin import PartyInSession


def party_in_case(conn: sqlite3.Connection, case_id: int, party_id: int) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM parties WHERE id = ? AND case_id = ?", (party_id, case_id)
        ).fetchone()
        is not None
    )


def party_of_case(
    conn: sqlite3.Connection, officer: Officer, case_id: int, party_id: int
) -> Refusal | None:
    """None when the party is of a case the officer may touch."""
    case = load_case(conn, officer, case_id)
    if isinstance(case, Refusal):
        return case
    return None if party_in_case(conn, case_id, party_id) else Refusal.NO_PARTY


def party_in_session(conn: sqlite3.Connection, room: str, party_id: int) -> PartyInSession | None:
    """The party in the open session of ``room`` of an open case, or None."""
    row = conn.execute(
        "SELECT s.id, s.room, s.case_id, p.consent FROM sessions s JOIN parties p "
        "ON p.case_id = s.case_id JOIN cases c ON c.id = s.case_id WHERE s.room = ? "
        "AND p.id = ? AND s.ended_at IS NULL AND c.status = 'open'",
        (room, party_id),
    ).fetchone()
    if row is None:
        return None
    consent = json.loads(row["consent"] or "{}")
    return PartyInSession(
        row["case_id"], party_id, row["id"], row["room"], bool(consent.get("face"))
    )
