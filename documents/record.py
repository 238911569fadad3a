"""The inquiry record as it is written during the call, reviewed and corrected.

While the call runs the officer adds and edits question/answer turns freely; each turn keeps its
wall-clock time and its offset in the session's recording, so the record can be checked against
the video. When the party starts reviewing, the text is frozen: a change is then a *correction*
the party must confirm (or reject) before the record can be finalised, and every correction
(confirmed or not) is printed on the record. Every saved state is a numbered version with the
SHA-256 of its canonical JSON, for the custody log. Plain data, no I/O: the control plane stores
``to_json()`` and rebuilds with ``from_json()``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import DocumentError

FIELDS = ("q", "a")


class RecordError(DocumentError):
    """A change the record's state does not allow."""


@dataclass(frozen=True)
class RecordVersion:
    version: int
    sha256: str
    canonical: bytes


class InquiryRecord:
    def __init__(self, recording_start: datetime) -> None:
        if recording_start.tzinfo is None:
            raise RecordError("录像开始时间须带时区 / the recording start needs a time zone")
        self.recording_start = recording_start
        self.turns: list[dict[str, Any]] = []
        self.corrections: list[dict[str, Any]] = []
        self.phase = "writing"  # writing -> review -> final
        self.version = 0

    def _bump(self) -> RecordVersion:
        self.version += 1
        return self.snapshot()

    def _turn(self, n: int) -> dict[str, Any]:
        if not 1 <= n <= len(self.turns):
            raise RecordError(f"没有第{n}个问答 / no turn {n}")
        return self.turns[n - 1]

    def add_turn(self, q: str, a: str, at: datetime) -> RecordVersion:
        """A question and its answer, asked at ``at`` (aware; its offset in the recording is
        ``at - recording_start``)."""
        if self.phase != "writing":
            raise RecordError("审阅开始后不能再添加问答 / no new turns once the review began")
        if not q.strip():
            raise RecordError("问题不能为空 / the question is empty")
        if at.tzinfo is None:
            raise RecordError("时间须带时区 / the time needs a time zone")
        offset = (at - self.recording_start).total_seconds()
        if offset < 0:
            raise RecordError("问答时间早于录像开始 / the turn is before the recording started")
        self.turns.append(
            {
                "n": len(self.turns) + 1,
                "q": q,
                "a": a,
                "time": at.strftime("%H:%M:%S"),
                "at": at.isoformat(),
                "offset": round(offset, 1),
            }
        )
        return self._bump()

    def edit_turn(self, n: int, q: str | None = None, a: str | None = None) -> RecordVersion:
        """While writing: change a turn's text (the version history keeps the earlier text)."""
        if self.phase != "writing":
            raise RecordError(
                "审阅中的修改须作为更正由当事人确认 / during review a change is a "
                "correction the party confirms"
            )
        turn = self._turn(n)
        if q is not None:
            turn["q"] = q
        if a is not None:
            turn["a"] = a
        return self._bump()

    def start_review(self) -> RecordVersion:
        if self.phase != "writing":
            raise RecordError("笔录已在审阅或已定稿 / the record is already in review or final")
        if not self.turns:
            raise RecordError("笔录没有问答 / the record has no turns")
        self.phase = "review"
        return self._bump()

    def correct(self, n: int, field: str, text: str, asked_by: str, at: datetime) -> RecordVersion:
        """During review: the officer changes a turn's text, as the party asked."""
        if self.phase != "review":
            raise RecordError("只有审阅中才能更正 / corrections are made during review")
        if field not in FIELDS:
            raise RecordError(f"字段应为 q 或 a：{field} / field must be q or a")
        turn = self._turn(n)
        self.corrections.append(
            {
                "id": len(self.corrections) + 1,
                "turn": n,
                "field": field,
                "before": turn[field],
                "after": text,
                "asked_by": asked_by,
                "at": at.isoformat(),
                "status": "proposed",
            }
        )
        turn[field] = text
        return self._bump()

    def answer_correction(self, correction_id: int, confirmed: bool, at: datetime) -> RecordVersion:
        """The party confirms the correction as shown, or rejects it (the text goes back)."""
        if not 1 <= correction_id <= len(self.corrections):
            raise RecordError(f"没有第{correction_id}项更正 / no correction {correction_id}")
        c = self.corrections[correction_id - 1]
        if c["status"] != "proposed":
            raise RecordError(
                f"第{correction_id}项更正已处理 / correction {correction_id} was already answered"
            )
        c["status"] = "confirmed" if confirmed else "rejected"
        c["answered_at"] = at.isoformat()
        if not confirmed:
            self._turn(c["turn"])[c["field"]] = c["before"]
        return self._bump()

    def pending(self) -> list[dict[str, Any]]:
        return [c for c in self.corrections if c["status"] == "proposed"]

    def finalise(self) -> RecordVersion:
        """No more changes: the text that is rendered and signed."""
        if self.phase != "review":
            raise RecordError("须先审阅 / review first")
        if self.pending():
            ids = "、".join(str(c["id"]) for c in self.pending())
            raise RecordError(f"还有未确认的更正：{ids} / corrections not yet answered: {ids}")
        self.phase = "final"
        return self._bump()

    def document_data(self, base: dict[str, Any]) -> dict[str, Any]:
        """``base`` (department, case, parties, officers) with this record's turns and
        corrections, ready for ``render`` with the inquiry_record template."""
        if self.phase != "final":
            raise RecordError("笔录尚未定稿 / the record is not final")
        data = copy.deepcopy(base)
        data["turns"] = [{k: t[k] for k in ("q", "a", "time", "offset")} for t in self.turns]
        data["corrections"] = [
            {
                "turn": c["turn"],
                "field": "问" if c["field"] == "q" else "答",
                "before": c["before"],
                "after": c["after"],
                "status": c["status"],
            }
            for c in self.corrections
        ]
        return data

    def to_json(self) -> dict[str, Any]:
        return {
            "recording_start": self.recording_start.isoformat(),
            "turns": self.turns,
            "corrections": self.corrections,
            "phase": self.phase,
            "version": self.version,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> InquiryRecord:
        record = cls(datetime.fromisoformat(raw["recording_start"]))
        record.turns = copy.deepcopy(raw["turns"])
        record.corrections = copy.deepcopy(raw["corrections"])
        record.phase = raw["phase"]
        record.version = int(raw["version"])
        return record

    def snapshot(self) -> RecordVersion:
        canonical = json.dumps(
            self.to_json(), ensure_ascii=False, sort_keys=True, separators=(",", ":")
        ).encode()
        return RecordVersion(self.version, hashlib.sha256(canonical).hexdigest(), canonical)
