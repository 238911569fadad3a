"""The quiz of an education session: an officer's questions and pass mark, each viewer's one
answer and its score.

A question is single choice (exactly one right choice) or multiple choice (one or more; the
answer must name exactly the right ones). The score is the number of questions answered right;
a viewer passes with at least ``pass_mark`` percent of them. The quiz can be replaced until the
first viewer has answered; a viewer answers once (a second answer is refused, the first kept).
Viewers see the questions without the right choices. When a session has a quiz, a certificate
needs it passed (:meth:`.records.SessionFacts.certified`).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from ..auth import now_iso

MAX_QUESTIONS = 30
MAX_CHOICES = 8
MAX_QUESTION_CHARS = 200
MAX_CHOICE_CHARS = 100


class QuizRefused(Exception):
    """``code`` (catalog ``education.<code>``) and where: the question's number from 1."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


@dataclass(frozen=True)
class Question:
    text: str
    choices: tuple[str, ...]
    correct: frozenset[int]
    multiple: bool

    def public(self) -> dict[str, Any]:
        return {"text": self.text, "choices": list(self.choices), "multiple": self.multiple}

    def as_json(self) -> dict[str, Any]:
        return self.public() | {"correct": sorted(self.correct)}


def _text(value: object, limit: int, number: int, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise QuizRefused("quiz_text", number=number, what=what)
    text = value.strip()
    if len(text) > limit:
        raise QuizRefused("quiz_text_long", number=number, what=what, max_chars=limit)
    return text


def parse_questions(value: object) -> list[Question]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_QUESTIONS:
        raise QuizRefused("quiz_questions", max_questions=MAX_QUESTIONS)
    out = []
    for number, item in enumerate(value, 1):
        if not isinstance(item, dict):
            raise QuizRefused("quiz_question", number=number)
        text = _text(item.get("text"), MAX_QUESTION_CHARS, number, "text")
        choices = item.get("choices")
        if not isinstance(choices, list) or not 2 <= len(choices) <= MAX_CHOICES:
            raise QuizRefused("quiz_choices", number=number, max_choices=MAX_CHOICES)
        kept = tuple(_text(c, MAX_CHOICE_CHARS, number, "choices") for c in choices)
        if len(set(kept)) != len(kept):
            raise QuizRefused("quiz_choices_same", number=number)
        multiple = item.get("multiple", False)
        correct = item.get("correct")
        if (
            not isinstance(multiple, bool)
            or not isinstance(correct, list)
            or not correct
            or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(kept)
                for i in correct
            )
            or len(set(correct)) != len(correct)
            or (not multiple and len(correct) != 1)
        ):
            raise QuizRefused("quiz_correct", number=number)
        out.append(Question(text, kept, frozenset(correct), multiple))
    return out


def parse_pass_mark(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100:
        raise QuizRefused("quiz_pass_mark")
    return value


def score(questions: list[Question], answers: object) -> int:
    """The number of questions answered right; :class:`QuizRefused` for a malformed answer
    (one list of choice indices per question; one index for a single-choice question)."""
    if not isinstance(answers, list) or len(answers) != len(questions):
        raise QuizRefused("quiz_answers", count=len(questions))
    right = 0
    for number, (question, chosen) in enumerate(zip(questions, answers, strict=True), 1):
        if (
            not isinstance(chosen, list)
            or not chosen
            or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(question.choices)
                for i in chosen
            )
            or len(set(chosen)) != len(chosen)
            or (not question.multiple and len(chosen) != 1)
        ):
            raise QuizRefused("quiz_answer", number=number)
        right += frozenset(chosen) == question.correct
    return right


def passed(right: int, total: int, pass_mark: int) -> bool:
    return right * 100 >= pass_mark * total


# -- storage -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Quiz:
    quiz_id: int
    session_id: int
    questions: list[Question]
    pass_mark: int

    def public(self) -> dict[str, Any]:
        return {
            "id": self.quiz_id,
            "questions": [q.public() for q in self.questions],
            "pass_mark": self.pass_mark,
        }


def _quiz(row: sqlite3.Row) -> Quiz:
    questions = [
        Question(q["text"], tuple(q["choices"]), frozenset(q["correct"]), q["multiple"])
        for q in json.loads(row["questions"])
    ]
    return Quiz(int(row["id"]), int(row["session_id"]), questions, int(row["pass_mark"]))


def session_quiz(conn: sqlite3.Connection, session_id: int) -> Quiz | None:
    row = conn.execute("SELECT * FROM edu_quizzes WHERE session_id = ?", (session_id,)).fetchone()
    return None if row is None else _quiz(row)


def set_quiz(
    conn: sqlite3.Connection, session_id: int, questions: list[Question], pass_mark: int, by: str
) -> Quiz:
    """The session's quiz (replacing one nobody has answered yet)."""
    old = session_quiz(conn, session_id)
    data = json.dumps([q.as_json() for q in questions], ensure_ascii=False)
    if old is not None:
        if conn.execute(
            "SELECT 1 FROM edu_quiz_answers WHERE quiz_id = ?", (old.quiz_id,)
        ).fetchone():
            raise QuizRefused("quiz_answered")
        conn.execute(
            "UPDATE edu_quizzes SET questions = ?, pass_mark = ?, created_by = ?, created_at = ? "
            "WHERE id = ?",
            (data, pass_mark, by, now_iso(), old.quiz_id),
        )
    else:
        conn.execute(
            "INSERT INTO edu_quizzes (session_id, questions, pass_mark, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (session_id, data, pass_mark, by, now_iso()),
        )
    quiz = session_quiz(conn, session_id)
    assert quiz is not None
    return quiz


def answer_quiz(
    conn: sqlite3.Connection, session_id: int, quiz_id: object, party_id: int, answers: object
) -> dict[str, Any]:
    """Score and keep a viewer's one answer."""
    quiz = session_quiz(conn, session_id)
    if quiz is None or quiz.quiz_id != quiz_id:
        raise QuizRefused("no_quiz")
    right = score(quiz.questions, answers)
    total = len(quiz.questions)
    ok = passed(right, total, quiz.pass_mark)
    try:
        conn.execute(
            "INSERT INTO edu_quiz_answers (quiz_id, party_id, answers, score, total, passed, "
            "answered_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (quiz.quiz_id, party_id, json.dumps(answers), right, total, int(ok), now_iso()),
        )
    except sqlite3.IntegrityError:
        raise QuizRefused("quiz_answered_already") from None
    return {"quiz": quiz.quiz_id, "score": right, "total": total, "passed": ok}


def results(conn: sqlite3.Connection, session_id: int) -> dict[int, dict[str, Any]]:
    """Each viewer's result (party ID -> score, total, passed, answered_at)."""
    return {
        int(r["party_id"]): {
            "score": int(r["score"]),
            "total": int(r["total"]),
            "passed": bool(r["passed"]),
            "answered_at": r["answered_at"],
        }
        for r in conn.execute(
            "SELECT a.* FROM edu_quiz_answers a JOIN edu_quizzes q ON q.id = a.quiz_id "
            "WHERE q.session_id = ?",
            (session_id,),
        )
    }


def answered(conn: sqlite3.Connection, session_id: int, party_id: int) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM edu_quiz_answers a JOIN edu_quizzes q ON q.id = a.quiz_id "
            "WHERE q.session_id = ? AND a.party_id = ?",
            (session_id, party_id),
        ).fetchone()
        is not None
    )
