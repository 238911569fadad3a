"""Document numbers per brigade, kind and year: 〔2026〕第0001号, never reused, never skipped.

The numbers live in one SQLite table (its file and name given by the caller, so ``control/`` can
keep it in its own database). A number is taken inside ``BEGIN IMMEDIATE``: SQLite lets one
writer at a time hold that lock, so two processes cannot take the same number, and the primary
key would refuse a duplicate anyway. A taken number is never deleted: one that is not used (the
document was wrong, the case was dropped) is marked ``voided`` with its reason, so the sequence
has no silent gaps and :meth:`NumberStore.gaps` can prove it.
"""

from __future__ import annotations

import builtins
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import NumberingError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class DocumentNumber:
    brigade: str
    kind: str
    year: int
    seq: int
    text: str  # as printed: 〔2026〕第0001号, prefixed by the template's short name
    status: str  # taken | voided
    document_id: str | None
    void_reason: str | None


def format_number(short: str, year: int, seq: int, prefix: str = "") -> str:
    """``{prefix}{short}〔{year}〕第{seq:04d}号``, e.g. 某公交认〔2026〕第0001号."""
    return f"{prefix}{short}〔{year}〕第{seq:04d}号"


class NumberStore:
    """Numbers in ``table`` of the SQLite file ``path``. Thread-safe; safe across processes."""

    def __init__(self, path: Path, table: str = "document_numbers") -> None:
        if not _NAME.match(table):
            raise NumberingError(f"表名无效：{table} / invalid table name {table}")
        self._table = table
        self._lock = threading.Lock()
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            str(path), timeout=30, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} ("
            " brigade TEXT NOT NULL, kind TEXT NOT NULL, year INTEGER NOT NULL,"
            " seq INTEGER NOT NULL, text TEXT NOT NULL,"
            " status TEXT NOT NULL CHECK (status IN ('taken', 'voided')),"
            " document_id TEXT, taken_at REAL NOT NULL, voided_at REAL, void_reason TEXT,"
            " PRIMARY KEY (brigade, kind, year, seq))"
        )

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise NumberingError("编号库已关闭 / the number store is closed")
        return self._conn

    def take(
        self,
        brigade: str,
        kind: str,
        year: int,
        short: str,
        prefix: str = "",
        document_id: str | None = None,
    ) -> DocumentNumber:
        """The next number of (brigade, kind, year), recorded as taken before it is returned."""
        if not brigade or not kind:
            raise NumberingError("大队和文书种类不能为空 / brigade and kind are required")
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    f"SELECT COALESCE(MAX(seq), 0) FROM {self._table}"
                    " WHERE brigade = ? AND kind = ? AND year = ?",
                    (brigade, kind, year),
                ).fetchone()
                seq = int(row[0]) + 1
                text = format_number(short, year, seq, prefix)
                db.execute(
                    f"INSERT INTO {self._table} (brigade, kind, year, seq, text, status,"
                    " document_id, taken_at) VALUES (?, ?, ?, ?, ?, 'taken', ?, ?)",
                    (brigade, kind, year, seq, text, document_id, time.time()),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return DocumentNumber(brigade, kind, year, seq, text, "taken", document_id, None)

    def void(self, brigade: str, kind: str, year: int, seq: int, reason: str) -> DocumentNumber:
        """Mark a taken number as not used; it stays in the table and is never given again."""
        if not reason.strip():
            raise NumberingError("作废编号须说明理由 / voiding a number needs a reason")
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute(
                    f"UPDATE {self._table} SET status = 'voided', voided_at = ?, void_reason = ?"
                    " WHERE brigade = ? AND kind = ? AND year = ? AND seq = ? AND status = 'taken'",
                    (time.time(), reason, brigade, kind, year, seq),
                )
                if cur.rowcount != 1:
                    raise NumberingError(
                        f"编号 {year}/{seq} 不存在或已作废 / number {year}/{seq} does not exist "
                        "or is already voided"
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return self.get(brigade, kind, year, seq)

    def get(self, brigade: str, kind: str, year: int, seq: int) -> DocumentNumber:
        with self._lock:
            row = (
                self._db()
                .execute(
                    f"SELECT text, status, document_id, void_reason FROM {self._table}"
                    " WHERE brigade = ? AND kind = ? AND year = ? AND seq = ?",
                    (brigade, kind, year, seq),
                )
                .fetchone()
            )
        if row is None:
            raise NumberingError(f"编号 {year}/{seq} 不存在 / no number {year}/{seq}")
        return DocumentNumber(brigade, kind, year, seq, row[0], row[1], row[2], row[3])

    def numbers(self, brigade: str, kind: str, year: int) -> builtins.list[DocumentNumber]:
        with self._lock:
            rows = (
                self._db()
                .execute(
                    f"SELECT seq, text, status, document_id, void_reason FROM {self._table}"
                    " WHERE brigade = ? AND kind = ? AND year = ? ORDER BY seq",
                    (brigade, kind, year),
                )
                .fetchall()
            )
        return [DocumentNumber(brigade, kind, year, r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def gaps(self, brigade: str, kind: str, year: int) -> builtins.list[int]:
        """Sequence numbers missing from 1..max (empty unless someone edited the table)."""
        seqs = {n.seq for n in self.numbers(brigade, kind, year)}
        return [s for s in range(1, max(seqs, default=0) + 1) if s not in seqs]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
