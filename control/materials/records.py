"""The ``materials`` table over one database connection: SQL in, results out.

Each function runs inside one ``db.run`` transaction and returns a row (as served) or a
:class:`control.refusals.Refusal`; nothing here knows HTTP (the handlers are in ``api.py``; the
encrypted files themselves are in ``store.py``).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from ..access import audit, load_case, require_open_case
from ..auth import Officer, now_iso
from ..config import MaterialsConfig
from ..db import rows
from ..refusals import Refusal
from .store import StoredMaterial

PUBLIC = (
    "id, case_id, party_id, origin, uploaded_by, name, description, media_type, size, "
    "sha256, content, custody_index, created_at"
)


@dataclass(frozen=True)
class Room:
    """How much more a case and a party may keep."""

    bytes: int
    zh: str
    en: str


def room_left(
    conn: sqlite3.Connection, m: MaterialsConfig, case_id: int, party_id: int | None
) -> Room:
    (case_used,) = conn.execute(
        "SELECT COALESCE(SUM(size), 0) FROM materials WHERE case_id = ?", (case_id,)
    ).fetchone()
    case_limit = m.max_case_total_mb << 20
    room = Room(
        case_limit - case_used,
        f"本案已存材料 {case_used / (1 << 20):.1f} MiB，上限为 {m.max_case_total_mb} MiB",
        f"the case holds {case_used / (1 << 20):.1f} MiB of materials, at most "
        f"{m.max_case_total_mb} MiB",
    )
    if party_id is None:
        return room
    (party_used,) = conn.execute(
        "SELECT COALESCE(SUM(size), 0) FROM materials WHERE case_id = ? "
        "AND party_id = ? AND origin = 'party'",
        (case_id, party_id),
    ).fetchone()
    party_limit = m.max_party_total_mb << 20
    if party_limit - party_used < room.bytes:
        room = Room(
            party_limit - party_used,
            f"您已上传 {party_used / (1 << 20):.1f} MiB，上限为 {m.max_party_total_mb} MiB",
            f"you have uploaded {party_used / (1 << 20):.1f} MiB, at most "
            f"{m.max_party_total_mb} MiB",
        )
    return room


def _row_json(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["content"] = json.loads(row["content"])
    return row


def case_materials(
    conn: sqlite3.Connection, case_id: int, party_id: int | None = None
) -> list[dict[str, Any]]:
    query = f"SELECT {PUBLIC} FROM materials WHERE case_id = ?"
    params: list[Any] = [case_id]
    if party_id is not None:
        query += " AND party_id = ? AND origin = 'party'"
        params.append(party_id)
    return [_row_json(r) for r in rows(conn.execute(query + " ORDER BY created_at", params))]


def officer_materials(
    conn: sqlite3.Connection, officer: Officer, case_id: int
) -> list[dict[str, Any]] | Refusal:
    case = load_case(conn, officer, case_id)
    return case if isinstance(case, Refusal) else case_materials(conn, case_id)


def may_upload(conn: sqlite3.Connection, officer: Officer, case_id: int) -> Refusal | None:
    """None when the officer may add to the case: one they may touch, and open."""
    case = load_case(conn, officer, case_id)
    if isinstance(case, Refusal):
        return case
    case = require_open_case(conn, case_id)
    return case if isinstance(case, Refusal) else None


def record_material(
    conn: sqlite3.Connection,
    actor: str,
    case_id: int,
    party_id: int | None,
    name: str,
    description: str,
    media_type: str,
    content: dict[str, object],
    stored: StoredMaterial,
    custody_index: int,
) -> dict[str, Any]:
    """The row of a kept file (its custody entry written already), audited; as served."""
    conn.execute(
        "INSERT INTO materials (id, case_id, party_id, origin, uploaded_by, name, "
        "description, media_type, size, sha256, content, wrapped_key, kek_fingerprint, "
        "custody_index, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            stored.material_id,
            case_id,
            party_id,
            "party" if party_id is not None else "officer",
            actor,
            name,
            description,
            media_type,
            stored.size,
            stored.sha256,
            json.dumps(content),
            stored.wrapped_key,
            stored.kek_fingerprint,
            custody_index,
            now_iso(),
        ),
    )
    audit(
        conn,
        actor,
        "material.received",
        f"material:{stored.material_id}",
        case_id,
        sha256=stored.sha256,
        size=stored.size,
        media_type=media_type,
    )
    return _row_json(
        conn.execute(
            f"SELECT {PUBLIC} FROM materials WHERE id = ?", (stored.material_id,)
        ).fetchone()
    )


def material_row(
    conn: sqlite3.Connection, case_id: int, material_id: str, party_id: int | None = None
) -> dict[str, Any] | Refusal:
    """The whole row of a case's material (with its wrapped key); with ``party_id``, only one
    that party uploaded itself."""
    row = conn.execute(
        "SELECT * FROM materials WHERE id = ? AND case_id = ?", (material_id, case_id)
    ).fetchone()
    if row is None or (
        party_id is not None and (row["party_id"] != party_id or row["origin"] != "party")
    ):
        return Refusal.NO_MATERIAL
    return dict(row)


def officer_material(
    conn: sqlite3.Connection, officer: Officer, case_id: int, material_id: str
) -> dict[str, Any] | Refusal:
    case = load_case(conn, officer, case_id)
    return case if isinstance(case, Refusal) else material_row(conn, case_id, material_id)
