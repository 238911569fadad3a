"""Records of an education session made of its attendance: the attendance record of the
whole session and one per company (``education_attendance``), and a certificate
(``education_certificate``) per viewer who watched, on proof of face, at least the required
time. Each is a numbered PDF/A rendered from the templates in ``documents/templates/`` and
signed with the department's seal (PAdES B-LT: timestamp, chain and CRL inside), so it
validates offline with ``documents.verify.verify_pdf`` and the deployment's root certificate.

:func:`session_facts` (SQL) gathers what the records print; :func:`record_data` turns it into
a document's data; :func:`make_signed` renders and seals (blocking: call it in a thread).

Files, encrypted at rest like the documents' revisions (:mod:`control.documents.desk`):
``<data_dir>/education/case-<id>/<kind>-<record id>-<sha256[:16]>-<random>.pdf.enc``, a random
AES-256-GCM data key per record wrapped under the key-encryption key, with the record's ID,
kind and the plaintext's SHA-256 bound in as associated data; the wrapped key and the KEK's
fingerprint are columns of the record's ``edu_records`` row (written in the same
transaction). Mode 0600, written whole before named, never overwritten; read back only when
it decrypts and its plaintext has the hash the row holds (:class:`RecordIntegrity`
otherwise: the API answers 409 ``integrity_failed``). ``remotecase keys rotate --kek``
rewraps the rows' keys (:func:`rewrap_keys`), the files untouched. A record written before
encryption at rest (``<kind>-<id>-<sha256[:16]>.pdf``, no wrapped key) is read as it is, still
checked against its hash.

Numbers: the child takes them (``documents.NumberStore``, per brigade, kind and year). A number
whose record is then not kept (the signing or a later job failed in the child, the rows or
files could not be written) is voided with its reason (:func:`void_numbers`), never given
again and never a silent gap.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import os
import secrets
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from documents import NumberStore
from documents.errors import DocumentError
from documents.pool import sign_builtin
from documents.seal import draw_seal
from recorder.keys import KeyEncryptionKey, KeyProblem

from ..access import audit, find_case
from ..auth import Officer, now_iso
from ..documents.desk import DocumentDesk
from ..refusals import Refusal
from .chat import question_counts
from .quiz import results as quiz_results
from .quiz import session_quiz

BEIJING = datetime.timezone(datetime.timedelta(hours=8))
ROLE_ZH = {"manager": "安全管理人员", "driver": "驾驶员"}
SEAL_FIELD = "seal-department"


def beijing(t: float | None) -> str:
    if t is None:
        return "—"
    return datetime.datetime.fromtimestamp(t, BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def iso_beijing(iso: str | None) -> str:
    if not iso:
        return "—"
    return datetime.datetime.fromisoformat(iso).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def minutes(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60} 分 {whole % 60} 秒"


@dataclass(frozen=True)
class ViewerFacts:
    party_id: int
    person_id: int
    company_id: int
    company: str
    name: str
    role: str
    id_number_masked: str
    attendance: dict[str, Any] | None  # the ledger's viewer (None: never joined)
    quiz: dict[str, Any] | None = None  # the quiz result (score, total, passed); None: none
    questions: int = 0  # questions the viewer asked in the session

    @property
    def watch_seconds(self) -> float:
        return float(self.attendance["watch_seconds"]) if self.attendance else 0.0

    @property
    def passed(self) -> int:
        return int(self.attendance["checks_passed"]) if self.attendance else 0


@dataclass(frozen=True)
class SessionFacts:
    case_id: int
    session_id: int
    brigade: str
    topic: str
    required_seconds: float
    opened_at: str
    ended_at: str | None
    officer: str
    viewers: list[ViewerFacts]
    quiz_pass_mark: int | None = None  # the session's quiz, in percent (None: no quiz)

    def certified(self, v: ViewerFacts) -> bool:
        """A certificate needs the required watch time and at least one passed face check, and
        the quiz passed when the session has one."""
        if self.quiz_pass_mark is not None and not (v.quiz and v.quiz["passed"]):
            return False
        return v.watch_seconds >= self.required_seconds and v.passed >= 1

    def quiz_text(self, v: ViewerFacts) -> str:
        if self.quiz_pass_mark is None:
            return "本次未设测验"
        if v.quiz is None:
            return f"未作答（及格线 {self.quiz_pass_mark}%）"
        verdict = "及格" if v.quiz["passed"] else "不及格"
        return (
            f"{v.quiz['score']}/{v.quiz['total']} 题正确，{verdict}"
            f"（及格线 {self.quiz_pass_mark}%）"
        )


def session_facts(
    conn: sqlite3.Connection,
    officer: Officer,
    case_id: int,
    session_id: int,
    default_required: float,
) -> SessionFacts | Refusal:
    case = find_case(conn, officer, case_id)
    if case is None:
        return Refusal.NO_CASE
    session = conn.execute(
        "SELECT s.*, o.username FROM sessions s JOIN officers o ON o.id = s.opened_by "
        "WHERE s.id = ? AND s.case_id = ?",
        (session_id, case_id),
    ).fetchone()
    if session is None:
        return Refusal.NO_SESSION
    course = conn.execute("SELECT * FROM edu_courses WHERE case_id = ?", (case_id,)).fetchone()
    attendance = {
        int(r["party_id"]): json.loads(r["detail"])
        for r in conn.execute(
            "SELECT party_id, detail FROM edu_attendance WHERE session_id = ?", (session_id,)
        )
    }
    quiz = session_quiz(conn, session_id)
    results = quiz_results(conn, session_id)
    asked = question_counts(conn, session_id)
    viewers = [
        ViewerFacts(
            int(r["party_id"]),
            int(r["person_id"]),
            int(r["company_id"]),
            r["company"],
            r["name"],
            r["role"],
            r["id_number_masked"],
            attendance.get(int(r["party_id"])),
            results.get(int(r["party_id"])),
            asked.get(int(r["party_id"]), 0),
        )
        for r in conn.execute(
            "SELECT v.party_id, v.person_id, p.company_id, c.name AS company, p.name, p.role, "
            "p.id_number_masked FROM edu_viewers v JOIN edu_people p ON p.id = v.person_id "
            "JOIN edu_companies c ON c.id = p.company_id WHERE v.case_id = ? "
            "ORDER BY c.name, p.name, v.party_id",
            (case_id,),
        )
    ]
    return SessionFacts(
        case_id,
        session_id,
        case["brigade"],
        course["topic"] if course else case["title"],
        float(course["required_seconds"]) if course else default_required,
        session["opened_at"],
        session["ended_at"],
        session["username"],
        viewers,
        quiz.pass_mark if quiz is not None else None,
    )


RULES_TEXT = (
    "学员入场时及此后随机时刻（间隔不超过 {interval}）由系统将摄像头画面中的人脸与登记照片比对；"
    "仅在确认本人在镜头前时计入学习时长，未检测到人脸、人脸不符或画面中断时暂停计时；"
    "发现他人在镜头前时向主讲民警提示。"
)


def _viewer_item(facts: SessionFacts, v: ViewerFacts) -> dict[str, Any]:
    a = v.attendance
    flags = a["flags"] if a else []
    reasons = {"different_face": "人脸不符", "multiple_faces": "多人", "liveness_failed": "非真人"}
    return {
        "id": f"p{v.party_id}",
        "name": v.name,
        "role": ROLE_ZH.get(v.role, v.role),
        "company": v.company,
        "id_number": v.id_number_masked,
        "joined": beijing(a["joined_at"]) if a else "未参加",
        "left": beijing(a["left_at"]) if a else "—",
        "watched": minutes(v.watch_seconds),
        "passed": str(a["checks_passed"] if a else 0),
        "failed": str(a["checks_failed"] if a else 0),
        "flags": "；".join(
            f"{beijing(f['at'])} {reasons.get(f['reason'], f['reason'])}" for f in flags
        )
        or "无",
        "quiz": facts.quiz_text(v),
        "questions": str(v.questions),
        "result": "达到学习要求" if facts.certified(v) else "未达到学习要求",
    }


def record_data(
    facts: SessionFacts,
    department: str,
    interval_seconds: float,
    viewers: list[ViewerFacts],
    scope: str,
) -> dict[str, Any]:
    return {
        "department": {"name": department, "brigade": facts.brigade, "abbr": ""},
        "case": {
            "id": facts.case_id,
            "session": facts.session_id,
            "topic": facts.topic,
            "start_time": iso_beijing(facts.opened_at),
            "end_time": iso_beijing(facts.ended_at) if facts.ended_at else "（进行中）",
            "required": minutes(facts.required_seconds),
            "scope": scope,
            "attended": str(sum(v.attendance is not None for v in viewers)),
            "certified": str(sum(facts.certified(v) for v in viewers)),
            "rules": RULES_TEXT.format(interval=minutes(interval_seconds)),
        },
        "officers": [{"id": "o1", "name": facts.officer}],
        "parties": [_viewer_item(facts, v) for v in viewers],
    }


@dataclass(frozen=True)
class MadeRecord:
    kind: str
    number: str
    pdf: bytes
    sha256: str
    company_id: int | None
    party_id: int | None
    brigade: str  # the number's brigade, year and sequence: to void it if it is not kept
    year: int
    seq: int


def make_signed(
    desk: DocumentDesk,
    kind: str,
    data: dict[str, Any],
    company_id: int | None,
    party_id: int | None,
) -> MadeRecord:
    """Render, number and seal one record (blocking)."""
    template = desk.templates[kind]
    doc, year, seq, number = desk.render_numbered(template, data)
    department = str(data["department"]["name"])
    brigade = str(data["department"]["brigade"])
    try:
        label = next(s.label for s in template.signers if s.role == "seal")
        signer_args = {"brigade": brigade, "department": department}
        image = draw_seal(department, label)
        pdf, _ = desk.pool.call(
            sign_builtin, desk.spec, doc.pdf, SEAL_FIELD, "seal", signer_args, image
        )
    except BaseException as exc:
        desk.void(brigade, kind, year, seq, f"盖章失败 / sealing failed: {exc}")
        raise
    return MadeRecord(
        kind,
        number,
        pdf,
        hashlib.sha256(pdf).hexdigest(),
        company_id,
        party_id,
        brigade,
        year,
        seq,
    )


def void_numbers(data_dir: Path, made: list[MadeRecord], reason: str) -> None:
    """Void the numbers of records that were made but not kept (blocking)."""
    if not made:
        return
    store = NumberStore(data_dir / "documents" / "numbers.sqlite3")
    try:
        for m in made:
            store.void(m.brigade, m.kind, m.year, m.seq, reason)
    finally:
        store.close()


# (kind, data, company ID, party ID) of each record to make
Job = tuple[str, dict[str, Any], int | None, int | None]


class ChildFailed(Exception):
    """Making the records failed in the child process (the message is its last error line)."""

    def __init__(self, message: str, document: bool) -> None:
        super().__init__(message)
        self.document = document  # the documents library refused (bad data, font, CA)


async def make_in_child(data_dir: Path, keys_dir: Path, jobs: list[Job]) -> list[MadeRecord]:
    """Render, number and seal in a child process. In the server's process the rendering and
    signing (fpdf2, fontTools, pyhanko: pure Python, seconds of it for a session's records)
    hold the GIL in stretches that stall the event loop; a child costs the loop nothing but
    reading the result. The child shares the CA and the numbers through their own locks."""
    request = json.dumps(
        {"data_dir": str(data_dir), "keys_dir": str(keys_dir), "jobs": jobs}, ensure_ascii=False
    ).encode()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "control.education.records",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, errors = await child.communicate(request)
    except BaseException:
        # cancelled (the server closing, the request dropped): the child is ours to stop, or
        # it would go on taking numbers and sealing records nobody keeps
        if child.returncode is None:
            child.kill()
        await asyncio.shield(child.wait())
        raise
    if child.returncode != 0:
        lines = errors.decode(errors="replace").strip().splitlines()
        raise ChildFailed(
            lines[-1] if lines else f"exited with {child.returncode}", child.returncode == 2
        )
    made = []
    for item in json.loads(out):
        pdf = base64.b64decode(item["pdf"])
        made.append(
            MadeRecord(
                item["kind"],
                item["number"],
                pdf,
                hashlib.sha256(pdf).hexdigest(),
                item["company_id"],
                item["party_id"],
                item["brigade"],
                item["year"],
                item["seq"],
            )
        )
    return made


def _child_main() -> int:
    request = json.loads(sys.stdin.buffer.read())
    # the child numbers, renders and seals only: it never writes or reads a document file, so
    # the key those files are wrapped by is not needed here (a throwaway one fills the slot)
    desk = DocumentDesk(
        Path(request["data_dir"]), Path(request["keys_dir"]), kek=KeyEncryptionKey.generate()
    )
    made: list[MadeRecord] = []
    try:
        for kind, data, c, p in request["jobs"]:
            made.append(make_signed(desk, kind, data, c, p))
    except BaseException as exc:
        # the records made before this one are not kept either: their numbers are voided
        # (this one's number is voided by make_signed / render_numbered)
        reason = f"同批记录生成失败 / a record of the batch failed: {exc}"
        void_numbers(Path(request["data_dir"]), made, reason)
        if isinstance(exc, DocumentError):
            print(str(exc).replace("\n", " "), file=sys.stderr)
            return 2
        raise
    out = [
        {
            "kind": m.kind,
            "number": m.number,
            "pdf": base64.b64encode(m.pdf).decode(),
            "company_id": m.company_id,
            "party_id": m.party_id,
            "brigade": m.brigade,
            "year": m.year,
            "seq": m.seq,
        }
        for m in made
    ]
    sys.stdout.write(json.dumps(out))
    return 0


MAGIC = b"RCEDU1\0\0"  # an encrypted record: MAGIC, 12-byte nonce, AES-256-GCM ciphertext


def _aad(record_id: int, kind: str, sha256: str) -> bytes:
    return f"remotecase-education-record-v1\0{record_id}\0{kind}\0{sha256}".encode()


class RecordIntegrity(Exception):
    """A stored record whose bytes are not those its row recorded (or that do not decrypt)."""

    def __init__(self, record_id: int, detail: str = "") -> None:
        super().__init__(
            f"教育记录 {record_id} 的文件与记录的哈希不符或无法解密 / education record "
            f"{record_id} does not match its recorded hash or does not decrypt"
            + (f" ({detail})" if detail else "")
        )


def record_path(directory: Path, case_id: int, kind: str, record_id: int, sha256: str) -> Path:
    """A record's file from before encryption at rest (read only)."""
    return directory / f"case-{case_id}" / f"{kind}-{record_id}-{sha256[:16]}.pdf"


def write_sealed(
    directory: Path, kek: KeyEncryptionKey, case_id: int, kind: str, record_id: int, pdf: bytes
) -> tuple[Path, str]:
    """The record's file, encrypted under its own data key (0600, written whole and fsynced
    before it is named, never replacing a file). (path, wrapped data key)."""
    sha = hashlib.sha256(pdf).hexdigest()
    key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    blob = MAGIC + nonce + AESGCM(key).encrypt(nonce, pdf, _aad(record_id, kind, sha))
    path = (
        directory
        / f"case-{case_id}"
        / f"{kind}-{record_id}-{sha[:16]}-{secrets.token_hex(4)}.pdf.enc"
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # refuses to replace an existing file
    finally:
        tmp.unlink(missing_ok=True)
    return path, kek.wrap(key)


def keep_records(
    conn: sqlite3.Connection,
    officer: Officer,
    directory: Path,
    kek: KeyEncryptionKey,
    facts: SessionFacts,
    made: list[MadeRecord],
) -> list[dict[str, Any]]:
    """Rows and encrypted files of the records (the files written inside the transaction: a
    failed write keeps no row, and the files already written for it are removed)."""
    out: list[dict[str, Any]] = []
    written: list[Path] = []
    try:
        for m in made:
            out.append(_keep_one(conn, officer, directory, kek, facts, m, written))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return out


def _keep_one(
    conn: sqlite3.Connection,
    officer: Officer,
    directory: Path,
    kek: KeyEncryptionKey,
    facts: SessionFacts,
    m: MadeRecord,
    written: list[Path],
) -> dict[str, Any]:
    cursor = conn.execute(
        "INSERT INTO edu_records (case_id, session_id, kind, company_id, party_id, number, "
        "sha256, file, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, ?)",
        (
            facts.case_id,
            facts.session_id,
            m.kind,
            m.company_id,
            m.party_id,
            m.number,
            m.sha256,
            officer.actor,
            now_iso(),
        ),
    )
    record_id = cursor.lastrowid
    assert record_id is not None
    path, wrapped = write_sealed(directory, kek, facts.case_id, m.kind, record_id, m.pdf)
    written.append(path)
    conn.execute(
        "UPDATE edu_records SET file = ?, wrapped_key = ?, kek_fingerprint = ? WHERE id = ?",
        (path.name, wrapped, kek.fingerprint, record_id),
    )
    audit(
        conn,
        officer.actor,
        "education.record_made",
        f"edu_record:{record_id}",
        facts.case_id,
        kind=m.kind,
        number=m.number,
        sha256=m.sha256,
        company=m.company_id,
        party=m.party_id,
    )
    return {
        "id": record_id,
        "kind": m.kind,
        "number": m.number,
        "sha256": m.sha256,
        "company_id": m.company_id,
        "party_id": m.party_id,
        "download": f"/api/education/records/{record_id}",
    }


def record_row(
    conn: sqlite3.Connection, officer: Officer, record_id: int
) -> dict[str, Any] | Refusal:
    row = conn.execute("SELECT * FROM edu_records WHERE id = ?", (record_id,)).fetchone()
    if row is None or find_case(conn, officer, row["case_id"]) is None:
        return Refusal.NO_CASE
    return dict(row)


def read_record(directory: Path, kek: KeyEncryptionKey, row: dict[str, Any]) -> bytes:
    """The record's file, decrypted (when it was written encrypted) and checked against the
    hash its row holds (blocking). Raises :class:`RecordIntegrity` when it differs, does not
    decrypt or is missing."""
    record_id = int(row["id"])
    try:
        data = (directory / f"case-{row['case_id']}" / row["file"]).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise RecordIntegrity(record_id, "file missing") from None
    if row.get("wrapped_key"):
        try:
            key = kek.unwrap(str(row["wrapped_key"]), str(row["kek_fingerprint"]))
        except KeyProblem as exc:
            raise RecordIntegrity(record_id, str(exc)) from None
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 12 + 16:
            raise RecordIntegrity(record_id)
        nonce = data[len(MAGIC) : len(MAGIC) + 12]
        try:
            data = AESGCM(key).decrypt(
                nonce, data[len(MAGIC) + 12 :], _aad(record_id, str(row["kind"]), row["sha256"])
            )
        except InvalidTag:
            raise RecordIntegrity(record_id) from None
    if hashlib.sha256(data).hexdigest() != row["sha256"]:
        raise RecordIntegrity(record_id)
    return data


def rewrap_keys(database: Path) -> Callable[[KeyEncryptionKey, KeyEncryptionKey], int]:
    """For ``remotecase keys rotate --kek`` (``recorder.rotation.rotate_kek``): rewrap every
    encrypted education record's data key from the old KEK to the new one, in one
    transaction; rows already under the new KEK (a rotation interrupted and run again) and
    records from before encryption at rest are left as they are. The files are not touched.
    Answers how many encrypted records there are."""

    def run(old: KeyEncryptionKey, new: KeyEncryptionKey) -> int:
        if not database.exists():
            return 0
        conn = sqlite3.connect(database, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(
                    "SELECT id, wrapped_key, kek_fingerprint FROM edu_records "
                    "WHERE wrapped_key IS NOT NULL"
                ).fetchall()
            except sqlite3.OperationalError:  # a database from before these records
                conn.execute("ROLLBACK")
                return 0
            for record_id, wrapped, fingerprint in rows:
                if fingerprint != new.fingerprint:
                    conn.execute(
                        "UPDATE edu_records SET wrapped_key = ?, kek_fingerprint = ? WHERE id = ?",
                        (old.rewrap(wrapped, fingerprint, new), new.fingerprint, record_id),
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


if __name__ == "__main__":
    sys.exit(_child_main())
