"""Inquiry records over one database connection: SQL in, results out.

A record belongs to one session and one party of the case. Its header (time, place, which
inquiry, questioner and recorder, the person's identity fields, rights told) is filled from the
case and the party and stays editable until the record is final; its turns, corrections and
phase are :class:`documents.record.InquiryRecord`'s JSON. Every change runs in one transaction
that reads the record, applies the change and writes the new version, so two officers' edits
never lose each other. Each function returns the record (JSON-ready) with the version to log,
or a :class:`Refusal`; a refusal writes nothing.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

from documents.record import InquiryRecord, RecordError, RecordVersion

from ..access import PartyCaller, audit, find_case, id_value
from ..auth import Officer, now_iso
from ..refusals import CodedRefusal

RIGHTS_TOLD = (
    "已告知被询问人有陈述、申辩的权利，对与本案无关的问题有拒绝回答的权利，"
    "以及如实陈述的义务和作伪证应负的法律责任。"
)
HEADER_SECTIONS = ("department", "case", "person", "officers")


class Refusal(CodedRefusal):
    NO_CASE = ("not_found", "没有该案件 / no such case")
    CASE_CLOSED = ("case_closed", "案件已结案 / the case is closed")
    NO_SESSION = ("not_found", "本案没有该会话 / no such session in this case")
    NO_PARTY = ("bad_request", "party_id：本案当事人的 ID / the ID of a party of the case")
    NO_RECORD = ("not_found", "没有该笔录 / no such record")
    NO_OFFICER = (
        "bad_request",
        "officers[].account：本大队民警账号的 ID / the ID of an officer "
        "account of the case's brigade",
    )
    FINAL = ("record_final", "笔录已定稿，不能再修改 / the record is final")


class Changed(Exception):
    """The record's state refused the change (``documents.record.RecordError``'s text)."""


def _officer(conn: sqlite3.Connection, brigade: str, given: Any) -> dict[str, Any] | None:
    if not isinstance(given, dict) or id_value(given.get("account")) is None:
        return None
    row = conn.execute(
        "SELECT id, username, brigade, role FROM officers WHERE id = ? AND disabled = 0",
        (given.get("account"),),
    ).fetchone()
    if (
        row is None
        or row["role"] == "observer"
        or (row["brigade"] != brigade and row["role"] != "supervisor")
    ):
        return None
    entry = {"id": f"o{row['id']}", "account": row["id"], "name": row["username"], "badge": ""}
    entry.update({k: v for k, v in given.items() if k in ("name", "badge")})
    return entry


def _json(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["header"] = json.loads(out["header"])
    state = json.loads(out.pop("state"))
    out.update({k: state[k] for k in ("recording_start", "turns", "corrections", "phase")})
    return out


def session_room(conn: sqlite3.Connection, case_id: int, session_id: int) -> str | None:
    """The room of a session of this case (open or not), or None."""
    row = conn.execute(
        "SELECT room FROM sessions WHERE id = ? AND case_id = ?", (session_id, case_id)
    ).fetchone()
    return None if row is None else str(row["room"])


def create(
    conn: sqlite3.Connection,
    who: Officer,
    case_id: int,
    session_id: int,
    party_id: Any,
    recording: tuple[str | None, datetime | None],
) -> tuple[dict[str, Any], RecordVersion] | Refusal:
    case = find_case(conn, who, case_id)
    if case is None:
        return Refusal.NO_CASE
    if case["status"] != "open":
        return Refusal.CASE_CLOSED
    session = conn.execute(
        "SELECT * FROM sessions WHERE id = ? AND case_id = ?", (session_id, case_id)
    ).fetchone()
    if session is None:
        return Refusal.NO_SESSION
    party = (
        conn.execute(
            "SELECT * FROM parties WHERE id = ? AND case_id = ?", (party_id, case_id)
        ).fetchone()
        if type(party_id) is int
        else None
    )
    if party is None:
        return Refusal.NO_PARTY
    (earlier,) = conn.execute(
        "SELECT COUNT(*) FROM inquiry_records WHERE party_id = ?", (party_id,)
    ).fetchone()
    recording_id, started = recording
    start = started or datetime.fromisoformat(session["opened_at"])
    me = _officer(conn, case["brigade"], {"account": who.id})
    header = {
        "department": {"name": case["brigade"], "brigade": case["brigade"], "abbr": ""},
        "case": {
            "id": str(case_id),
            "title": case["title"],
            "place": "",
            "start_time": start.astimezone().strftime("%Y年%m月%d日 %H时%M分"),
            "end_time": "",
            "inquiry_no": earlier + 1,
            "rights_told": RIGHTS_TOLD,
        },
        "person": {
            "name": party["name"],
            "phone": party["phone"],
            "role": party["role"],
            "sex": "",
            "birth_date": "",
            "id_type": "居民身份证",
            "id_number": "",
            "address": "",
        },
        "officers": [me] if me else [],
    }
    record = InquiryRecord(start)
    version = _with_header(record.snapshot(), header)
    now = now_iso()
    cursor = conn.execute(
        "INSERT INTO inquiry_records (case_id, session_id, party_id, recording_id, header, "
        "state, version, sha256, created_by, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            case_id,
            session_id,
            party_id,
            recording_id,
            json.dumps(header, ensure_ascii=False),
            json.dumps(record.to_json(), ensure_ascii=False),
            version.version,
            version.sha256,
            who.actor,
            now,
            now,
        ),
    )
    audit(
        conn,
        who.actor,
        "record.created",
        f"record:{cursor.lastrowid}",
        case_id,
        session=session_id,
        party=party_id,
    )
    row = conn.execute("SELECT * FROM inquiry_records WHERE id = ?", (cursor.lastrowid,)).fetchone()
    return _json(row), version


def get(
    conn: sqlite3.Connection, who: Officer, case_id: int, record_id: int
) -> dict[str, Any] | Refusal:
    if find_case(conn, who, case_id) is None:
        return Refusal.NO_CASE
    row = conn.execute(
        "SELECT * FROM inquiry_records WHERE id = ? AND case_id = ?", (record_id, case_id)
    ).fetchone()
    return Refusal.NO_RECORD if row is None else _json(row)


def list_for_case(
    conn: sqlite3.Connection, who: Officer, case_id: int
) -> list[dict[str, Any]] | Refusal:
    if find_case(conn, who, case_id) is None:
        return Refusal.NO_CASE
    return [
        _json(r)
        for r in conn.execute(
            "SELECT * FROM inquiry_records WHERE case_id = ? ORDER BY id", (case_id,)
        ).fetchall()
    ]


def for_party(conn: sqlite3.Connection, caller: PartyCaller) -> dict[str, Any] | Refusal:
    """The party's newest record in its case (it reads it live during the call)."""
    row = conn.execute(
        "SELECT * FROM inquiry_records WHERE party_id = ? AND case_id = ? ORDER BY id DESC LIMIT 1",
        (caller.party_id, caller.case_id),
    ).fetchone()
    if row is None:
        return Refusal.NO_RECORD
    out = _json(row)
    out.pop("created_by", None)
    return out


def change(
    conn: sqlite3.Connection,
    actor: str,
    row_filter: tuple[str, tuple[Any, ...]],
    apply: Callable[[InquiryRecord, dict[str, Any]], RecordVersion | None],
) -> tuple[dict[str, Any], RecordVersion] | Refusal:
    """Read the record, ``apply`` a change to it (and to its header, in place), write the new
    version. ``apply`` raises :class:`Changed` (nothing written) when the state refuses."""
    where, args = row_filter
    row = conn.execute(f"SELECT * FROM inquiry_records WHERE {where}", args).fetchone()
    if row is None:
        return Refusal.NO_RECORD
    status = conn.execute("SELECT status FROM cases WHERE id = ?", (row["case_id"],)).fetchone()
    if status["status"] != "open":
        return Refusal.CASE_CLOSED
    record = InquiryRecord.from_json(json.loads(row["state"]))
    header = json.loads(row["header"])
    try:
        version = apply(record, header)
    except RecordError as exc:
        raise Changed(str(exc)) from None
    if version is None:  # the header changed: a new version of the record all the same
        record.version += 1
        version = record.snapshot()
    version = _with_header(version, header)
    conn.execute(
        "UPDATE inquiry_records SET header = ?, state = ?, version = ?, sha256 = ?, "
        "updated_at = ? WHERE id = ?",
        (
            json.dumps(header, ensure_ascii=False),
            json.dumps(record.to_json(), ensure_ascii=False),
            version.version,
            version.sha256,
            now_iso(),
            row["id"],
        ),
    )
    audit(
        conn,
        actor,
        "record.saved",
        f"record:{row['id']}",
        row["case_id"],
        version=version.version,
        sha256=version.sha256,
        phase=record.phase,
    )
    out = conn.execute("SELECT * FROM inquiry_records WHERE id = ?", (row["id"],)).fetchone()
    return _json(out), version


def _with_header(version: RecordVersion, header: dict[str, Any]) -> RecordVersion:
    """The version's hash covers the header too: the canonical JSON of both."""
    import hashlib

    body = json.loads(version.canonical)
    canonical = json.dumps(
        {"header": header, "record": body},
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return RecordVersion(version.version, hashlib.sha256(canonical).hexdigest(), canonical)


def edit_header(
    conn: sqlite3.Connection, who: Officer, case_id: int, record_id: int, given: dict[str, Any]
) -> tuple[dict[str, Any], RecordVersion] | Refusal:
    case = find_case(conn, who, case_id)
    if case is None:
        return Refusal.NO_CASE
    officers: list[dict[str, Any]] | None = None
    if "officers" in given:
        officers = []
        for item in given["officers"]:
            entry = _officer(conn, case["brigade"], item)
            if entry is None:
                return Refusal.NO_OFFICER
            officers.append(entry)

    def apply(record: InquiryRecord, header: dict[str, Any]) -> None:
        if record.phase == "final":
            raise RecordError(Refusal.FINAL.message)
        for section in ("department", "case", "person"):
            if section in given:
                header[section].update(copy.deepcopy(given[section]))
        header["department"]["brigade"] = case["brigade"]
        header["case"]["id"] = str(case_id)
        if officers is not None:
            header["officers"] = officers

    return change(conn, who.actor, ("id = ? AND case_id = ?", (record_id, case_id)), apply)


def document_base(row: dict[str, Any]) -> dict[str, Any]:
    """What the inquiry_record template renders, besides the turns: the header as data."""
    header = row["header"]
    person = dict(header["person"])
    person["id"] = f"p{row['party_id']}"
    return {
        "department": header["department"],
        "case": header["case"],
        "parties": [person],
        "officers": header["officers"],
    }


def link_document(conn: sqlite3.Connection, record_id: int, document_id: int) -> None:
    conn.execute(
        "UPDATE inquiry_records SET document_id = ? WHERE id = ?", (document_id, record_id)
    )
