"""The control plane's embedded store: SQLite in WAL mode, with numbered migrations.

One connection, owned by one thread: every query runs there (``await db.run(fn, ...)``), never
on the event loop. ``fn`` receives the connection and runs inside a transaction that commits
when it returns and rolls back when it raises.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
BUSY_TIMEOUT = 30.0  # seconds a statement waits for another process's lock

MIGRATIONS: list[str] = [
    # 1: officers, their login sessions, cases, parties, invitations, the audit trail
    """
    CREATE TABLE officers (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('officer', 'supervisor')),
        brigade TEXT NOT NULL,
        created_at TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE logins (
        token_hash TEXT PRIMARY KEY,
        officer_id INTEGER NOT NULL REFERENCES officers(id),
        created_at TEXT NOT NULL,
        expires_at REAL NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE cases (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('accident', 'violation', 'education',
                                           'vehicle_service', 'licence_service')),
        title TEXT NOT NULL,
        brigade TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'open',
        created_by INTEGER NOT NULL REFERENCES officers(id),
        created_at TEXT NOT NULL
    );
    CREATE TABLE parties (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        role TEXT NOT NULL,
        name TEXT NOT NULL,
        id_number_masked TEXT NOT NULL DEFAULT '',
        phone TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    );
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        room TEXT NOT NULL UNIQUE,
        opened_by INTEGER NOT NULL REFERENCES officers(id),
        opened_at TEXT NOT NULL,
        ended_at TEXT
    );
    CREATE TABLE invitations (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        party_id INTEGER NOT NULL REFERENCES parties(id),
        token_hash TEXT NOT NULL UNIQUE,
        not_before REAL NOT NULL,
        expires_at REAL NOT NULL,
        created_by INTEGER NOT NULL REFERENCES officers(id),
        created_at TEXT NOT NULL,
        used_at TEXT,
        revoked_at TEXT
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        object TEXT NOT NULL,
        case_id INTEGER,
        reason TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_case ON audit(case_id);
    """,
    # 2: appointment slots and bookings, materials and evidence items, evidence displays
    """
    CREATE TABLE slots (
        id INTEGER PRIMARY KEY,
        brigade TEXT NOT NULL,
        starts_at REAL NOT NULL,
        ends_at REAL NOT NULL,
        created_by INTEGER NOT NULL REFERENCES officers(id),
        created_at TEXT NOT NULL,
        withdrawn_at TEXT,
        CHECK (ends_at > starts_at)
    );
    CREATE INDEX slots_time ON slots(brigade, starts_at);
    CREATE TABLE appointments (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        party_id INTEGER NOT NULL REFERENCES parties(id),
        slot_id INTEGER NOT NULL REFERENCES slots(id),
        status TEXT NOT NULL CHECK (status IN ('booked', 'cancelled')),
        booked_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        reschedules INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX one_booking_per_slot ON appointments(slot_id) WHERE status = 'booked';
    CREATE TABLE materials (
        id TEXT PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        party_id INTEGER REFERENCES parties(id),
        origin TEXT NOT NULL CHECK (origin IN ('party', 'officer')),
        uploaded_by TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        content TEXT NOT NULL DEFAULT '{}',
        wrapped_key TEXT NOT NULL,
        kek_fingerprint TEXT NOT NULL,
        custody_index INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX materials_case ON materials(case_id);
    CREATE TABLE displays (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        material_id TEXT NOT NULL REFERENCES materials(id),
        shown_by TEXT NOT NULL,
        mode TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        viewers TEXT NOT NULL DEFAULT '[]'
    );
    ALTER TABLE sessions ADD COLUMN purpose TEXT NOT NULL DEFAULT 'inquiry'
    """,
    # 3: each party's consents as last given (face checks need one)
    """
    ALTER TABLE parties ADD COLUMN consent TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE parties ADD COLUMN consent_at TEXT
    """,
    # 4: observer accounts (auditors who read, never change); SQLite changes a CHECK only by
    # rebuilding the table (foreign keys are off while migrations run, then checked)
    """
    CREATE TABLE officers_new (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('officer', 'supervisor', 'observer')),
        brigade TEXT NOT NULL,
        created_at TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO officers_new SELECT id, username, password_hash, role, brigade, created_at,
        disabled FROM officers;
    DROP TABLE officers;
    ALTER TABLE officers_new RENAME TO officers
    """,
    # 5: call admission: every signalling token of a case call is a grant for one participant
    # of one session, checked against the session, the case, the invitation and the login at
    # each join; the room's lock and the officer's mutes are the session's, not the room's
    """
    CREATE TABLE call_grants (
        id TEXT PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        participant TEXT NOT NULL,
        role TEXT NOT NULL,
        invitation_id INTEGER REFERENCES invitations(id),
        login_hash TEXT REFERENCES logins(token_hash),
        created_at TEXT NOT NULL,
        expires_at REAL NOT NULL,
        revoked_at TEXT,
        revoked_reason TEXT
    );
    CREATE INDEX call_grants_session ON call_grants(session_id, participant);
    CREATE INDEX call_grants_login ON call_grants(login_hash);
    ALTER TABLE sessions ADD COLUMN locked INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN officer_mutes TEXT NOT NULL DEFAULT '{}'
    """,
    # 6: the identity check before a party joins a session (control/verification/prejoin.py):
    # the face check's attempt and verdicts, or the officer's manual admission or document
    # attestation
    """
    CREATE TABLE prejoin_checks (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        participant TEXT NOT NULL,
        route TEXT NOT NULL CHECK (route IN ('face', 'document', 'officer')),
        status TEXT NOT NULL CHECK (status IN ('checking', 'passed', 'failed', 'admitted',
                                               'attested')),
        attempt INTEGER NOT NULL DEFAULT 1,
        samples INTEGER NOT NULL DEFAULT 0,
        matches INTEGER NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '',
        verdicts TEXT NOT NULL DEFAULT '[]',
        started_at TEXT NOT NULL,
        decided_at TEXT,
        decided_by TEXT,
        attestation TEXT,
        UNIQUE (session_id, participant)
    )
    """,
    # 7: legal documents of a case (the PDF's revisions are files under documents/) and the
    # inquiry record written during a session (its state is documents.record's JSON)
    """
    CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        kind TEXT NOT NULL,
        number TEXT NOT NULL,
        brigade TEXT NOT NULL,
        year INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        data TEXT NOT NULL,
        required TEXT NOT NULL,
        signatures TEXT NOT NULL DEFAULT '[]',
        refusals TEXT NOT NULL DEFAULT '[]',
        revision INTEGER NOT NULL DEFAULT 1,
        sha256 TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (brigade, kind, year, seq)
    );
    CREATE INDEX documents_case ON documents(case_id);
    CREATE TABLE inquiry_records (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        party_id INTEGER NOT NULL REFERENCES parties(id),
        recording_id TEXT,
        header TEXT NOT NULL,
        state TEXT NOT NULL,
        version INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        document_id INTEGER REFERENCES documents(id),
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX inquiry_records_case ON inquiry_records(case_id);
    CREATE INDEX inquiry_records_party ON inquiry_records(party_id)
    """,
    # electronic delivery (control/delivery/): each delivery of a document to a party with its
    # receipt, what the officer did when it failed, the embedded outbox of notices; reviews
    # (复核) asked for by parties; the steps of the penalty procedure
    """
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        document_id INTEGER NOT NULL REFERENCES documents(id),
        party_id INTEGER NOT NULL REFERENCES parties(id),
        consent_id INTEGER NOT NULL REFERENCES documents(id),
        kind TEXT NOT NULL,
        document_number TEXT NOT NULL,
        document_sha256 TEXT NOT NULL,
        document_revision INTEGER NOT NULL,
        channel TEXT NOT NULL,
        provider TEXT NOT NULL,
        address TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('sending', 'sent', 'failed')),
        provider_ref TEXT NOT NULL DEFAULT '',
        failure TEXT NOT NULL DEFAULT '',
        sent_at TEXT,
        opened_at TEXT,
        acknowledged_at TEXT,
        refused_at TEXT,
        refusal TEXT NOT NULL DEFAULT '',
        receipt_id INTEGER REFERENCES documents(id),
        officer_id INTEGER NOT NULL REFERENCES officers(id),
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX deliveries_case ON deliveries(case_id);
    CREATE INDEX deliveries_party ON deliveries(party_id);
    CREATE TABLE delivery_fallbacks (
        id INTEGER PRIMARY KEY,
        delivery_id INTEGER NOT NULL REFERENCES deliveries(id),
        action TEXT NOT NULL CHECK (action IN ('post', 'public_notice')),
        reference TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT '',
        done_on TEXT NOT NULL,
        notice_ends TEXT,
        recorded_by TEXT NOT NULL,
        recorded_at TEXT NOT NULL
    );
    CREATE TABLE delivery_outbox (
        id INTEGER PRIMARY KEY,
        delivery_id INTEGER NOT NULL REFERENCES deliveries(id),
        channel TEXT NOT NULL,
        address TEXT NOT NULL,
        text TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE reviews (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        party_id INTEGER NOT NULL REFERENCES parties(id),
        delivery_id INTEGER NOT NULL REFERENCES deliveries(id),
        document_id INTEGER NOT NULL REFERENCES documents(id),
        reasons TEXT NOT NULL,
        materials TEXT NOT NULL DEFAULT '[]',
        requested_at TEXT NOT NULL,
        window_closes TEXT NOT NULL,
        outcome TEXT,
        outcome_note TEXT NOT NULL DEFAULT '',
        decided_by TEXT,
        decided_at TEXT,
        UNIQUE (party_id, document_id)
    );
    CREATE INDEX reviews_case ON reviews(case_id);
    CREATE TABLE penalty_steps (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        step TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}',
        recorded_by TEXT NOT NULL,
        recorded_at TEXT NOT NULL
    );
    CREATE INDEX penalty_steps_case ON penalty_steps(case_id)
    """,
    # accounts: the first start's one-time setup links (control/accounts/setup.py)
    """
    CREATE TABLE setup_links (
        token_hash TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        expires_at REAL NOT NULL,
        used_at TEXT
    )
    """,
    # party signatures prepared and waiting for the browser's r||s (control/documents/): in the
    # database, not one worker's memory, so that prepare and finish may reach different
    # workers; ``state`` is documents.signing.PendingSignature.state() (no secret, and not the
    # document's text: only the incremental update that reserves the signature); a row is
    # taken (deleted) by the one finish that uses it, and dropped when ``expires_at`` passes
    """
    CREATE TABLE party_signing_requests (
        id TEXT PRIMARY KEY,
        document_id INTEGER NOT NULL REFERENCES documents(id),
        party_id INTEGER NOT NULL REFERENCES parties(id),
        field TEXT NOT NULL,
        base_sha256 TEXT NOT NULL,
        serial TEXT NOT NULL,
        verdict_id TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX party_signing_requests_expiry ON party_signing_requests(expires_at)
    """,
    # documents' PDFs encrypted at rest (control/documents/desk.py): each revision's file, the
    # SHA-256 of its plaintext, its own data key wrapped under the KEK and the KEK's
    # fingerprint (rewrapped by ``keys rotate --kek``); written in the revision's transaction
    """
    CREATE TABLE document_files (
        document_id INTEGER NOT NULL REFERENCES documents(id),
        revision INTEGER NOT NULL,
        file TEXT NOT NULL UNIQUE,
        sha256 TEXT NOT NULL,
        wrapped_key TEXT NOT NULL,
        kek_fingerprint TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (document_id, revision)
    )
    """,
    # the party page's device binding: the hash of the secret the first redemption came with
    # (control/sessions/invitations.py), so the same device is admitted again after a reload
    """
    ALTER TABLE invitations ADD COLUMN device_hash TEXT
    """,
    # education (control/education/): rosters of transport companies' managers and drivers,
    # who of a roster an education case invites, the proof of attendance per viewer and
    # session, and the signed records made of it
    """
    CREATE TABLE edu_companies (
        id INTEGER PRIMARY KEY,
        brigade TEXT NOT NULL,
        name TEXT NOT NULL,
        city TEXT NOT NULL DEFAULT '',
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (brigade, name)
    );
    CREATE TABLE edu_people (
        id INTEGER PRIMARY KEY,
        company_id INTEGER NOT NULL REFERENCES edu_companies(id),
        role TEXT NOT NULL CHECK (role IN ('manager', 'driver')),
        name TEXT NOT NULL,
        id_number_masked TEXT NOT NULL,
        id_number_sha256 TEXT NOT NULL,
        phone TEXT NOT NULL DEFAULT '',
        photo_sha256 TEXT,
        photo_consent TEXT,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (company_id, id_number_sha256)
    );
    CREATE TABLE edu_courses (
        case_id INTEGER PRIMARY KEY REFERENCES cases(id),
        topic TEXT NOT NULL,
        required_seconds REAL NOT NULL,
        updated_by TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE edu_viewers (
        case_id INTEGER NOT NULL REFERENCES cases(id),
        person_id INTEGER NOT NULL REFERENCES edu_people(id),
        party_id INTEGER NOT NULL UNIQUE REFERENCES parties(id),
        added_by TEXT NOT NULL,
        added_at TEXT NOT NULL,
        PRIMARY KEY (case_id, person_id)
    );
    CREATE TABLE edu_attendance (
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        party_id INTEGER NOT NULL REFERENCES parties(id),
        joined_at REAL,
        left_at REAL,
        watch_seconds REAL NOT NULL DEFAULT 0,
        checks_passed INTEGER NOT NULL DEFAULT 0,
        checks_failed INTEGER NOT NULL DEFAULT 0,
        flags INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}',
        updated_at TEXT NOT NULL,
        PRIMARY KEY (session_id, party_id)
    );
    CREATE TABLE edu_records (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        kind TEXT NOT NULL CHECK (kind IN ('education_attendance', 'education_certificate')),
        company_id INTEGER REFERENCES edu_companies(id),
        party_id INTEGER REFERENCES parties(id),
        number TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        file TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX edu_records_session ON edu_records(session_id)
    """,
    # education records encrypted at rest: the record's data key wrapped under the KEK (NULL:
    # a record written before, its file plaintext)
    """
    ALTER TABLE edu_records ADD COLUMN wrapped_key TEXT;
    ALTER TABLE edu_records ADD COLUMN kek_fingerprint TEXT
    """,
    # 约谈: one officer's talk with one party of an education case, its draft and its record
    """
    CREATE TABLE edu_talks (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        party_id INTEGER NOT NULL REFERENCES parties(id),
        session_id INTEGER REFERENCES sessions(id),
        subject TEXT NOT NULL,
        place TEXT NOT NULL,
        turns TEXT NOT NULL DEFAULT '[]',
        content TEXT NOT NULL DEFAULT '',
        requirements TEXT NOT NULL DEFAULT '',
        started_at TEXT NOT NULL,
        ended_at TEXT,
        document_id INTEGER REFERENCES documents(id),
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX edu_talks_case ON edu_talks(case_id)
    """,
    # compensation mediation (control/mediation, docs/mediation.md)
    """
    CREATE TABLE mediations (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        room TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('open', 'terminating', 'effective', 'terminated')),
        received_on TEXT NOT NULL,
        received_from TEXT NOT NULL,
        applied_on TEXT NOT NULL,
        application_closes TEXT NOT NULL,
        notified_on TEXT NOT NULL,
        earliest_start TEXT NOT NULL,
        started_on TEXT NOT NULL,
        concludes_by TEXT NOT NULL,
        opened_by TEXT NOT NULL,
        mediator INTEGER NOT NULL REFERENCES officers(id),
        opened_at TEXT NOT NULL,
        agreement_id INTEGER REFERENCES documents(id),
        agreement_draft INTEGER,
        superseded TEXT NOT NULL DEFAULT '[]',
        termination_id INTEGER REFERENCES documents(id),
        end_reason TEXT,
        ended_at TEXT,
        ended_by TEXT
    );
    CREATE UNIQUE INDEX mediations_one_open ON mediations(case_id)
        WHERE status IN ('open', 'terminating');
    CREATE TABLE mediation_participants (
        id INTEGER PRIMARY KEY,
        mediation_id INTEGER NOT NULL REFERENCES mediations(id),
        side INTEGER NOT NULL REFERENCES parties(id),
        kind TEXT NOT NULL CHECK (kind IN ('party', 'agent', 'insurer')),
        party_id INTEGER REFERENCES parties(id),
        name TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}',
        attorney_material TEXT REFERENCES materials(id),
        attorney_status TEXT CHECK (attorney_status IN ('pending', 'accepted', 'rejected')),
        attorney_reason TEXT NOT NULL DEFAULT '',
        checked_by TEXT,
        checked_at TEXT,
        left_at TEXT,
        left_note TEXT,
        added_by TEXT NOT NULL,
        added_at TEXT NOT NULL
    );
    CREATE INDEX mediation_participants_of ON mediation_participants(mediation_id);
    CREATE TABLE mediation_drafts (
        mediation_id INTEGER NOT NULL REFERENCES mediations(id),
        revision INTEGER NOT NULL,
        draft TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        revised_by TEXT NOT NULL,
        revised_at TEXT NOT NULL,
        PRIMARY KEY (mediation_id, revision)
    )
    """,
    # readmission (control/sessions/invitations.py): the same device opening its link again
    # supersedes the call grant given before (not a revocation: revoked_at means removed)
    """
    ALTER TABLE call_grants ADD COLUMN superseded_at TEXT;
    ALTER TABLE call_grants ADD COLUMN superseded_by TEXT
    """,
    # issue 17, the live session: viewers' questions and officers' answers and announcements,
    # a session's quiz and each viewer's one answer, guest speakers among a case's viewers
    """
    CREATE TABLE edu_messages (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        kind TEXT NOT NULL CHECK (kind IN ('question', 'answer', 'announcement')),
        party_id INTEGER REFERENCES parties(id),
        author TEXT NOT NULL,
        name TEXT NOT NULL,
        text TEXT NOT NULL,
        reply_to INTEGER REFERENCES edu_messages(id),
        answered_at TEXT,
        answered_by TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX edu_messages_session ON edu_messages(session_id, id);
    CREATE TABLE edu_quizzes (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL UNIQUE REFERENCES sessions(id),
        questions TEXT NOT NULL,
        pass_mark INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE edu_quiz_answers (
        quiz_id INTEGER NOT NULL REFERENCES edu_quizzes(id),
        party_id INTEGER NOT NULL REFERENCES parties(id),
        answers TEXT NOT NULL,
        score INTEGER NOT NULL,
        total INTEGER NOT NULL,
        passed INTEGER NOT NULL,
        answered_at TEXT NOT NULL,
        PRIMARY KEY (quiz_id, party_id)
    );
    ALTER TABLE edu_viewers ADD COLUMN speaker INTEGER NOT NULL DEFAULT 0
    """,
    # the end of an accident case's investigation (调查取证结束, deadlines/investigation.py);
    # the day the ordinary determination's 10 working days count from; corrections: the audit
    """
    CREATE TABLE investigations (
        case_id INTEGER PRIMARY KEY REFERENCES cases(id),
        done_on TEXT NOT NULL,
        recorded_by INTEGER NOT NULL,
        recorded_at TEXT NOT NULL,
        revision INTEGER NOT NULL DEFAULT 1,
        updated_at TEXT NOT NULL
    )
    """,
    # the raised hands and the floor of a live education session, kept so that a server
    # restarted mid-session gives them back (control/education/desk.py)
    """
    CREATE TABLE edu_floor (
        session_id INTEGER PRIMARY KEY REFERENCES sessions(id),
        state TEXT NOT NULL,
        saved_at TEXT NOT NULL
    )
    """,
    # issue 17's "done when": each company receives its attendance record. A company's
    # address (e-mail or a mobile number, '' none); one row per record sent (its link's token
    # kept hashed, revoked when sent again), every visit of the link; the outbox keeps a
    # company's notice too (delivery_id NULL then: the table is rebuilt, its rows kept)
    """
    ALTER TABLE edu_companies ADD COLUMN contact TEXT NOT NULL DEFAULT '';
    CREATE TABLE edu_sends (
        id INTEGER PRIMARY KEY,
        record_id INTEGER NOT NULL REFERENCES edu_records(id),
        case_id INTEGER NOT NULL REFERENCES cases(id),
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        company_id INTEGER NOT NULL REFERENCES edu_companies(id),
        channel TEXT NOT NULL CHECK (channel IN ('sms', 'email')),
        provider TEXT NOT NULL,
        address TEXT NOT NULL,
        token_sha256 TEXT NOT NULL UNIQUE,
        expires_at TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('sending', 'sent', 'failed')),
        reference TEXT NOT NULL DEFAULT '',
        failure TEXT NOT NULL DEFAULT '',
        sent_at TEXT,
        opened_at TEXT,
        downloaded_at TEXT,
        revoked_at TEXT,
        revoked_by TEXT,
        sent_by TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX edu_sends_session ON edu_sends(session_id, company_id);
    CREATE TABLE edu_send_visits (
        id INTEGER PRIMARY KEY,
        send_id INTEGER NOT NULL REFERENCES edu_sends(id),
        kind TEXT NOT NULL CHECK (kind IN ('opened', 'downloaded')),
        remote TEXT NOT NULL DEFAULT '',
        at TEXT NOT NULL
    );
    CREATE INDEX edu_send_visits_of ON edu_send_visits(send_id);
    CREATE TABLE delivery_outbox_new (
        id INTEGER PRIMARY KEY,
        delivery_id INTEGER REFERENCES deliveries(id),
        edu_send_id INTEGER REFERENCES edu_sends(id),
        channel TEXT NOT NULL,
        address TEXT NOT NULL,
        text TEXT NOT NULL,
        created_at TEXT NOT NULL,
        CHECK ((delivery_id IS NULL) <> (edu_send_id IS NULL))
    );
    INSERT INTO delivery_outbox_new (id, delivery_id, channel, address, text, created_at)
        SELECT id, delivery_id, channel, address, text, created_at FROM delivery_outbox;
    DROP TABLE delivery_outbox;
    ALTER TABLE delivery_outbox_new RENAME TO delivery_outbox
    """,
]


def _enter_wal(conn: sqlite3.Connection) -> None:
    """Switch a (possibly fresh) database to WAL. SQLite answers "database is locked" to this
    pragma at once, without its busy handler, while another process holds the file in its
    rollback journal (several processes creating it together): retry until BUSY_TIMEOUT."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    delay = 0.01
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # several processes share the file (workers, a CLI next to the server): wait for the
        # others' locks rather than fail at once
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
        )
        conn.row_factory = sqlite3.Row
        _enter_wal(conn)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        conn.execute("PRAGMA foreign_keys=OFF")  # table rebuilds; checked before commit
        while True:
            # the version is read under the write lock: two processes starting at once never
            # both run a migration (the second finds it done and goes on)
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = row[0] or 0
            if current >= len(MIGRATIONS):
                conn.execute("COMMIT")
                break
            number, script = current + 1, MIGRATIONS[current]
            try:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                broken = conn.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise sqlite3.IntegrityError(
                        f"migration {number}: foreign keys broken: {[tuple(r) for r in broken[:5]]}"
                    )
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
                conn.execute("COMMIT")
            except Exception:
                conn.execute("ROLLBACK")
                raise
        conn.execute("PRAGMA foreign_keys=ON")
        self._conn = conn

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        assert conn is not None, "database not open"
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._transaction, fn
        )

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """For command-line tools, which have no event loop."""
        if self._conn is None:
            self._open()
        return self._transaction(fn)

    def close_sync(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)


def rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    return [dict(row) for row in cursor.fetchall()]
