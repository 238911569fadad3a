"""Which case has which document, over one database connection: SQL in, results out.

Each function runs inside one ``db.run`` transaction and returns rows (JSON-ready dicts) or a
:class:`Refusal`; nothing here knows HTTP, and nothing here renders or signs (that is
:mod:`control.documents.desk`, in a thread).
"""

from __future__ import annotations

import copy
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recorder.keys import KeyEncryptionKey

from ..access import PartyCaller, audit, find_case, id_value
from ..auth import Officer, now_iso
from ..refusals import CodedRefusal

# the parts of a document's data a request may give besides what the case holds
EXTRA_SECTIONS = ("findings", "penalty", "mediation", "delivery", "talk")
# the template paths :func:`base_data` fills from the case by itself (``parties.N`` written as
# ``parties[]``; of the officers only the one generating): the officer's form does not ask
# for them. The unit's
# name is not here: the case knows only the brigade's code, which the form offers to replace.
FILLED = frozenset(
    {
        "department.brigade",
        "department.seal_name",
        "case.id",
        "case.title",
        "case.kind",
        "parties[].name",
        "parties[].role",
        "parties[].phone",
        "officers.0.name",
    }
)


class Refusal(CodedRefusal):
    """Why a documents function did nothing: ``(code, message)``, Chinese first."""

    NO_CASE = ("not_found", "没有该案件 / no such case")
    NO_DOCUMENT = ("not_found", "没有该文书 / no such document")
    NO_OFFICER = (
        "bad_request",
        "officers[].account：本大队民警账号的 ID / the ID of an officer "
        "account of the case's brigade",
    )
    BAD_SECTION = (
        "bad_request",
        "department、case、findings、penalty、mediation、delivery、talk "
        "应为对象 / these sections are objects",
    )
    NO_PARTY = ("bad_request", "parties[].id：本案当事人的 ID / the ID of a party of the case")


def _officer_entry(row: sqlite3.Row, given: dict[str, Any]) -> dict[str, Any]:
    entry = {"id": f"o{row['id']}", "name": row["username"], "account": row["id"]}
    entry.update({k: v for k, v in given.items() if k not in ("id", "account")})
    return entry


def base_data(
    conn: sqlite3.Connection, who: Officer, case_id: int, body: dict[str, Any]
) -> dict[str, Any] | Refusal:
    """The document's data: the case, its parties and the officers from the database, with
    what the request adds (``department``, ``case``, ``parties`` by ID, ``officers`` by account,
    and the sections of :data:`EXTRA_SECTIONS`). The library checks what is still missing."""
    case = find_case(conn, who, case_id)
    if case is None:
        return Refusal.NO_CASE
    for section in ("department", "case", *EXTRA_SECTIONS):
        if not isinstance(body.get(section, {}), dict):
            return Refusal.BAD_SECTION
    if not isinstance(body.get("parties", []), list) or any(
        not isinstance(p, dict) or id_value(p.get("id")) is None for p in body.get("parties", [])
    ):
        return Refusal.NO_PARTY
    if not isinstance(body.get("officers", []), list) or any(
        not isinstance(o, dict) or id_value(o.get("account")) is None
        for o in body.get("officers", [])
    ):
        return Refusal.NO_OFFICER
    department = {
        "name": case["brigade"],
        "brigade": case["brigade"],
        "abbr": "",
        "seal_name": "交通事故处理专用章",
    }
    department.update(body.get("department") or {})
    department["brigade"] = case["brigade"]  # numbers are the case's brigade's
    case_data = {"id": str(case["id"]), "title": case["title"], "kind": case["kind"]}
    case_data.update(body.get("case") or {})
    parties: list[dict[str, Any]] = []
    given = {p["id"]: p for p in body.get("parties") or []}
    rows = conn.execute(
        # an agent (control/mediation) signs only the mediation's papers, which list it itself
        "SELECT id, role, name, phone FROM parties WHERE case_id = ? AND role != 'agent' "
        "ORDER BY id",
        (case_id,),
    ).fetchall()
    known = {row["id"] for row in rows}
    if any(pid not in known for pid in given):
        return Refusal.NO_PARTY
    for row in rows:
        entry: dict[str, Any] = {
            "id": f"p{row['id']}",
            "name": row["name"],
            "role": row["role"],
            "phone": row["phone"],
            "party": row["id"],
        }
        entry.update({k: v for k, v in given.get(row["id"], {}).items() if k != "id"})
        parties.append(entry)
    officers: list[dict[str, Any]] = []
    wanted = list(body.get("officers") or []) or [{"account": who.id}]
    for item in wanted:
        row = conn.execute(
            "SELECT id, username, brigade, role FROM officers WHERE id = ? AND disabled = 0",
            (item.get("account"),),
        ).fetchone()
        if (
            row is None
            or row["role"] == "observer"
            or (row["brigade"] != case["brigade"] and row["role"] != "supervisor")
        ):
            return Refusal.NO_OFFICER
        officers.append(_officer_entry(row, item))
    data: dict[str, Any] = {
        "department": department,
        "case": case_data,
        "parties": parties,
        "officers": officers,
    }
    for section in EXTRA_SECTIONS:
        if isinstance(body.get(section), dict):
            data[section] = copy.deepcopy(body[section])
    return data


def case_officers(
    conn: sqlite3.Connection, who: Officer, case_id: int
) -> list[dict[str, Any]] | Refusal:
    """The accounts that may be a document's or a record's officer in this case (``officers[]``
    by account, as :func:`base_data` accepts them): active, not observers, of the case's brigade
    or supervisors."""
    case = find_case(conn, who, case_id)
    if case is None:
        return Refusal.NO_CASE
    rows = conn.execute(
        "SELECT id, username, role FROM officers WHERE disabled = 0 AND role != 'observer' "
        "AND (brigade = ? OR role = 'supervisor') ORDER BY id",
        (case["brigade"],),
    ).fetchall()
    return [{"account": r["id"], "name": r["username"], "role": r["role"]} for r in rows]


def insert(
    conn: sqlite3.Connection,
    who: Officer,
    case_id: int,
    kind: str,
    number: str,
    brigade: str,
    year: int,
    seq: int,
    data: dict[str, Any],
    required: list[dict[str, Any]],
    sha256: str,
) -> int:
    now = now_iso()
    cursor = conn.execute(
        "INSERT INTO documents (case_id, kind, number, brigade, year, seq, data, required, "
        "sha256, created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            case_id,
            kind,
            number,
            brigade,
            year,
            seq,
            json.dumps(data, ensure_ascii=False),
            json.dumps(required, ensure_ascii=False),
            sha256,
            who.actor,
            now,
            now,
        ),
    )
    assert cursor.lastrowid is not None
    audit(
        conn,
        who.actor,
        "document.generated",
        f"document:{cursor.lastrowid}",
        case_id,
        kind=kind,
        number=number,
        sha256=sha256,
    )
    return cursor.lastrowid


def insert_file(
    conn: sqlite3.Connection, document_id: int, revision: int, sealed: dict[str, str]
) -> None:
    """The encrypted file of a revision and its wrapped data key."""
    conn.execute(
        "INSERT INTO document_files (document_id, revision, file, sha256, wrapped_key, "
        "kek_fingerprint, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            document_id,
            revision,
            sealed["file"],
            sealed["sha256"],
            sealed["wrapped_key"],
            sealed["kek_fingerprint"],
            now_iso(),
        ),
    )


def file_of(conn: sqlite3.Connection, document_id: int, revision: int) -> dict[str, Any] | None:
    """A revision's ``document_files`` row (None: written before encryption at rest)."""
    row = conn.execute(
        "SELECT * FROM document_files WHERE document_id = ? AND revision = ?",
        (document_id, revision),
    ).fetchone()
    return None if row is None else dict(row)


def rewrap_keys(database: Path) -> Callable[[KeyEncryptionKey, KeyEncryptionKey], int]:
    """For ``remotecase keys rotate --kek`` (``recorder.rotation.rotate_kek``): rewrap every
    document revision's data key from the old KEK to the new one, in one transaction; rows
    already under the new KEK (a rotation interrupted and run again) are left as they are.
    The encrypted files are not touched. Answers how many revisions there are."""

    def run(old: KeyEncryptionKey, new: KeyEncryptionKey) -> int:
        if not database.exists():
            return 0
        conn = sqlite3.connect(database, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(
                    "SELECT document_id, revision, wrapped_key, kek_fingerprint FROM document_files"
                ).fetchall()
            except sqlite3.OperationalError:  # a database from before encryption at rest
                conn.execute("ROLLBACK")
                return 0
            for document_id, revision, wrapped, fingerprint in rows:
                if fingerprint != new.fingerprint:
                    conn.execute(
                        "UPDATE document_files SET wrapped_key = ?, kek_fingerprint = ? "
                        "WHERE document_id = ? AND revision = ?",
                        (
                            old.rewrap(wrapped, fingerprint, new),
                            new.fingerprint,
                            document_id,
                            revision,
                        ),
                    )
            conn.execute("COMMIT")
            return len(rows)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    return run


def row_json(row: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in ("data", "required", "signatures", "refusals"):
        out[key] = json.loads(out[key])
    return out


def get(
    conn: sqlite3.Connection, who: Officer, case_id: int, document_id: int
) -> dict[str, Any] | Refusal:
    if find_case(conn, who, case_id) is None:
        return Refusal.NO_CASE
    row = conn.execute(
        "SELECT * FROM documents WHERE id = ? AND case_id = ?", (document_id, case_id)
    ).fetchone()
    return Refusal.NO_DOCUMENT if row is None else row_json(row)


# kinds that concern one party even without a box of theirs: shown only to the party a
# delivery names (the receipt of a delivery to that party)
PERSONAL_KINDS = frozenset({"delivery_receipt"})


def visible_to_party(conn: sqlite3.Connection, doc: dict[str, Any], party_id: int) -> bool:
    """Whether a party of the document's case may see it: a document with a box for this party
    (its record, its consent, its penalty notice), one delivered to it or the receipt of such a
    delivery, or a document of the whole case that asks no party's signature (a determination
    signed by the officer and the seal). Another party's consent (with its address), receipts
    and penalty papers stay with that party."""
    own = f"p{party_id}"
    boxes = doc["required"]
    if any(b.get("role") == "party" and b.get("signer_id") == own for b in boxes):
        return True
    delivered = conn.execute(
        "SELECT 1 FROM deliveries WHERE party_id = ? AND (document_id = ? OR receipt_id = ?)",
        (party_id, doc["id"], doc["id"]),
    ).fetchone()
    if delivered is not None:
        return True
    if doc["kind"] in PERSONAL_KINDS:
        return False
    return not any(b.get("role") == "party" for b in boxes)


def get_for_party(
    conn: sqlite3.Connection, caller: PartyCaller, document_id: int
) -> dict[str, Any] | Refusal:
    """A document of the party's own case that concerns it (:func:`visible_to_party`); another
    case's, or another party's, answers 404 as an absent one."""
    row = conn.execute(
        "SELECT * FROM documents WHERE id = ? AND case_id = ?", (document_id, caller.case_id)
    ).fetchone()
    if row is None:
        return Refusal.NO_DOCUMENT
    doc = row_json(row)
    return doc if visible_to_party(conn, doc, caller.party_id) else Refusal.NO_DOCUMENT


def listing_for_party(conn: sqlite3.Connection, caller: PartyCaller) -> list[dict[str, Any]]:
    return [d for d in listing(conn, caller.case_id) if visible_to_party(conn, d, caller.party_id)]


def listing(conn: sqlite3.Connection, case_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, case_id, kind, number, revision, sha256, signatures, "
        "refusals, required, created_by, created_at, updated_at FROM documents "
        "WHERE case_id = ? ORDER BY id",
        (case_id,),
    ).fetchall()
    out = []
    for row in rows:
        item = dict(row)
        for key in ("signatures", "refusals", "required"):
            item[key] = json.loads(item[key])
        out.append(item)
    return out


def list_for_officer(
    conn: sqlite3.Connection, who: Officer, case_id: int
) -> list[dict[str, Any]] | Refusal:
    if find_case(conn, who, case_id) is None:
        return Refusal.NO_CASE
    return listing(conn, case_id)


def new_revision(
    conn: sqlite3.Connection,
    actor: str,
    document_id: int,
    expected_sha: str,
    sha256: str,
    *,
    sealed: dict[str, str],
    signature: dict[str, Any] | None = None,
    refusal: dict[str, Any] | None = None,
    required: list[dict[str, Any]] | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Record the next revision and its file (``sealed``: :meth:`SealedFile.row`), only if the
    current one is still ``expected_sha`` (None when another change came first: nothing
    written)."""
    row = conn.execute("SELECT * FROM documents WHERE id = ?", (document_id,)).fetchone()
    if row is None or row["sha256"] != expected_sha:
        return None
    insert_file(conn, document_id, row["revision"] + 1, sealed)
    signatures = json.loads(row["signatures"])
    refusals = json.loads(row["refusals"])
    if signature is not None:
        signatures.append(signature)
    if refusal is not None:
        refusals.append(refusal)
    conn.execute(
        "UPDATE documents SET revision = revision + 1, sha256 = ?, signatures = ?, "
        "refusals = ?, required = ?, data = COALESCE(?, data), updated_at = ? WHERE id = ?",
        (
            sha256,
            json.dumps(signatures, ensure_ascii=False),
            json.dumps(refusals, ensure_ascii=False),
            row["required"] if required is None else json.dumps(required, ensure_ascii=False),
            None if data is None else json.dumps(data, ensure_ascii=False),
            now_iso(),
            document_id,
        ),
    )
    action = "document.signed" if signature is not None else "document.refused"
    audit(
        conn,
        actor,
        action,
        f"document:{document_id}",
        row["case_id"],
        sha256=sha256,
        **(signature or refusal or {}),
    )
    out = conn.execute("SELECT * FROM documents WHERE id = ?", (document_id,)).fetchone()
    return row_json(out)


def party_rooms(conn: sqlite3.Connection, case_id: int) -> list[str]:
    return [
        r["room"]
        for r in conn.execute("SELECT room FROM sessions WHERE case_id = ?", (case_id,)).fetchall()
    ]


# -- party signatures prepared, waiting for the browser ---------------------------------------
def keep_pending(
    conn: sqlite3.Connection,
    request_id: str,
    *,
    document_id: int,
    party_id: int,
    field: str,
    base_sha256: str,
    serial: str,
    verdict_id: str,
    state: dict[str, Any],
    now: float,
    expires_at: float,
) -> None:
    """Keep a prepared party signature (and drop those whose time has passed)."""
    conn.execute("DELETE FROM party_signing_requests WHERE expires_at <= ?", (now,))
    conn.execute(
        "INSERT INTO party_signing_requests (id, document_id, party_id, field, base_sha256, "
        "serial, verdict_id, state, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            request_id,
            document_id,
            party_id,
            field,
            base_sha256,
            serial,
            verdict_id,
            json.dumps(state),
            now_iso(),
            expires_at,
        ),
    )


def take_pending(
    conn: sqlite3.Connection, request_id: str, document_id: int, party_id: int, now: float
) -> dict[str, Any] | None:
    """The prepared signature ``request_id`` of this party and document, taken: a second
    finish (in this worker or another) finds nothing. None when there is none, or it expired."""
    row = conn.execute(
        "DELETE FROM party_signing_requests WHERE id = ? AND document_id = ? AND party_id = ? "
        "RETURNING *",
        (request_id, document_id, party_id),
    ).fetchone()
    if row is None or row["expires_at"] <= now:
        return None
    out = dict(row)
    out["state"] = json.loads(out["state"])
    return out
