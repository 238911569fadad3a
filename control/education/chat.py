"""Questions from viewers, officers' answers and announcements of an education session.

Viewers send short questions (``MAX_CHARS``, at most ``RATE_COUNT`` in ``RATE_SECONDS`` each);
they go to the room's officers live and into ``edu_messages``. Officers answer one (marking it
answered) or announce to everyone; every participant sees those. The text is kept as sent
(control characters other than line breaks removed) and is escaped where it is shown: the pages
put it in ``textContent``, never in HTML. The attendance record counts each viewer's questions.
"""

from __future__ import annotations

import sqlite3
import unicodedata
from collections import deque
from typing import Any

from ..auth import now_iso

MAX_CHARS = 300
RATE_COUNT = 3
RATE_SECONDS = 30.0


class ChatRefused(Exception):
    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


def clean_text(value: object, max_chars: int = MAX_CHARS) -> str:
    """The text of a question or answer, or :class:`ChatRefused` (``text_required``,
    ``text_too_long``)."""
    if not isinstance(value, str):
        raise ChatRefused("text_required")
    kept = "".join(
        c for c in value if c in "\n\t" or not unicodedata.category(c).startswith("C")
    ).strip()
    if not kept:
        raise ChatRefused("text_required")
    if len(kept) > max_chars:
        raise ChatRefused("text_too_long", max_chars=max_chars)
    return kept


class RateLimit:
    """At most ``count`` in any ``seconds`` per participant."""

    def __init__(self, count: int = RATE_COUNT, seconds: float = RATE_SECONDS) -> None:
        self.count = count
        self.seconds = seconds
        self._sent: dict[str, deque[float]] = {}

    def take(self, participant: str, now: float) -> None:
        sent = self._sent.setdefault(participant, deque())
        while sent and sent[0] <= now - self.seconds:
            sent.popleft()
        if len(sent) >= self.count:
            wait = max(1, round(sent[0] + self.seconds - now))
            raise ChatRefused("too_many_questions", seconds=wait)
        sent.append(now)


def _row(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": int(row["id"]),
        "kind": row["kind"],
        "party_id": row["party_id"],
        "participant": row["author"],
        "name": row["name"],
        "text": row["text"],
        "reply_to": row["reply_to"],
        "answered_at": row["answered_at"],
        "answered_by": row["answered_by"],
        "at": row["created_at"],
    }


def add_message(
    conn: sqlite3.Connection,
    session_id: int,
    kind: str,
    author: str,
    name: str,
    text: str,
    *,
    party_id: int | None = None,
    reply_to: int | None = None,
) -> dict[str, Any]:
    cursor = conn.execute(
        "INSERT INTO edu_messages (session_id, kind, party_id, author, name, text, reply_to, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (session_id, kind, party_id, author, name, text, reply_to, now_iso()),
    )
    row = conn.execute("SELECT * FROM edu_messages WHERE id = ?", (cursor.lastrowid,)).fetchone()
    return _row(row)


def answer_question(
    conn: sqlite3.Connection, session_id: int, question_id: int, by: str, text: str | None
) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """Mark a question answered (again: no change) and, with a text, store the answer.
    None when the session has no such question."""
    row = conn.execute(
        "SELECT * FROM edu_messages WHERE id = ? AND session_id = ? AND kind = 'question'",
        (question_id, session_id),
    ).fetchone()
    if row is None:
        return None
    if row["answered_at"] is None:
        conn.execute(
            "UPDATE edu_messages SET answered_at = ?, answered_by = ? WHERE id = ?",
            (now_iso(), by, question_id),
        )
    answer = None
    if text is not None:
        answer = add_message(conn, session_id, "answer", by, by, text, reply_to=question_id)
    question = conn.execute("SELECT * FROM edu_messages WHERE id = ?", (question_id,)).fetchone()
    return _row(question), answer


def session_messages(conn: sqlite3.Connection, session_id: int) -> list[dict[str, Any]]:
    return [
        _row(r)
        for r in conn.execute(
            "SELECT * FROM edu_messages WHERE session_id = ? ORDER BY id", (session_id,)
        )
    ]


def question_counts(conn: sqlite3.Connection, session_id: int) -> dict[int, int]:
    """Questions per viewer (party ID), for the attendance record."""
    return {
        int(r["party_id"]): int(r["n"])
        for r in conn.execute(
            "SELECT party_id, COUNT(*) AS n FROM edu_messages WHERE session_id = ? "
            "AND kind = 'question' AND party_id IS NOT NULL GROUP BY party_id",
            (session_id,),
        )
    }
