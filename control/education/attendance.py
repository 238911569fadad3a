"""Attendance accounting of one education session: who watched, for how long, on proof.

A :class:`Ledger` takes three kinds of events and keeps, per viewer, join and leave times,
watch time, checks passed and failed, and flags. It does no I/O and reads no clock: every
method takes the time, so the rules are tested on their own and the desk
(:mod:`.desk`) feeds it from the room and the verifier.

The rules (docs/education.md, "Attendance"):

* **Watch time counts only while the right face is present**: from a ``match`` verdict of the
  verifier on, until a verdict says otherwise (``no_face``, ``no_match``, ``multiple_faces``,
  ``liveness_failed``), the viewer leaves, or no matching sample has come for ``verdict_gap``
  seconds (the video stopped, or the picture cannot be judged: ``low_quality`` does not extend
  it). A sample that got no picture at all (``low_quality`` for ``no_picture``: the camera or
  the network stopped, no keyframe came) pauses at once, for ``no_picture``. A pause is told
  to the viewer; the next match resumes it.
* **Checks**: one when the viewer joins (and joins again), then at random moments, each at most
  ``check_interval`` seconds after the last one was decided. A check passes at the first
  ``match`` after it opened; with none within ``check_window`` it fails, with the worst thing
  seen meanwhile as its reason (another face, several faces, a spoof, nobody, no picture).
* **Someone else in front of the camera** is flagged to the officer: when the verifier's state
  for the viewer becomes ``alert`` for ``different_face``, ``multiple_faces`` or
  ``liveness_failed`` (its own rule: a face judged not to match for ``verifier.alert_after``
  seconds, several faces twice running...), once per alert.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

ABSENT = {
    "no_face": "no_face",
    "no_match": "different_face",
    "multiple_faces": "multiple_faces",
    "liveness_failed": "liveness_failed",
}
IMPOSTOR_ALERTS = ("different_face", "multiple_faces", "liveness_failed")
# worst first: what a failed check names when several things were seen in its window
FAILURE_ORDER = ("different_face", "multiple_faces", "liveness_failed", "no_face")

# what the viewer is told, Chinese first
VIEWER_TEXT: dict[str, str] = {
    "checking": "正在核验您的身份，请正对摄像头 / checking your identity: please face the camera",
    "counting": "身份已核验，学习时长计时中 / identity confirmed: your watch time is counting",
    "no_face": "未检测到您的人脸，学习计时已暂停，请回到摄像头前 / no face in your picture: "
    "your watch time is paused until you are back in front of the camera",
    "different_face": "画面中的人与登记照片不符，学习计时已暂停 / the person on camera does not "
    "match the photo on record: your watch time is paused",
    "multiple_faces": "画面中有多人，学习计时已暂停，请仅本人在镜头前 / several people on camera: "
    "your watch time is paused; only you should be in front of the camera",
    "liveness_failed": "未能确认是真人，学习计时已暂停 / we could not confirm a live person: "
    "your watch time is paused",
    "no_picture": "无法确认您在镜头前（画面中断或无法核验），学习计时已暂停 / we cannot see you "
    "(no picture, or one too poor to check): your watch time is paused",
    "check_failed": "本次人脸核验未通过 / this face check failed",
}
OFFICER_TEXT: dict[str, str] = {
    "different_face": "疑似他人代学：画面中的人与登记照片不符 / someone else may be studying "
    "for the viewer: the face does not match the photo on record",
    "multiple_faces": "画面中有多人 / several people in front of the camera",
    "liveness_failed": "疑似照片或屏幕代替真人 / a photo or a screen instead of a person",
}


@dataclass(frozen=True)
class Rules:
    check_interval: float = 900.0
    check_window: float = 60.0
    verdict_gap: float = 10.0


@dataclass
class Check:
    kind: str  # join | random
    opened_at: float
    result: str = ""  # "" while open, passed, failed, cancelled (the viewer left)
    decided_at: float | None = None
    reason: str = ""
    seen: list[str] = field(default_factory=list)  # what the window saw, for the reason

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "opened_at": self.opened_at,
            "result": self.result or "open",
            "decided_at": self.decided_at,
            "reason": self.reason,
        }


@dataclass
class Flag:
    at: float
    reason: str
    score: float | None

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at, "reason": self.reason, "score": self.score}


@dataclass(frozen=True)
class Notice:
    """Something to tell: ``to`` is ``viewer`` (the viewer's own signalling) or ``officer``."""

    to: str
    participant: str
    message: dict[str, Any]


@dataclass
class Viewer:
    participant: str
    joined_at: float | None = None  # first join
    left_at: float | None = None  # last leave
    connected: bool = False
    visits: list[list[float | None]] = field(default_factory=list)  # [joined, left]
    watch_seconds: float = 0.0
    counting: bool = False
    reason: str = "not_joined"  # why not counting
    credited_until: float = 0.0
    last_match: float | None = None
    counted: list[list[float]] = field(default_factory=list)  # [from, to] of watch time
    checks: list[Check] = field(default_factory=list)
    next_check_at: float | None = None
    flags: list[Flag] = field(default_factory=list)
    alert: str = ""

    @property
    def open_check(self) -> Check | None:
        return self.checks[-1] if self.checks and not self.checks[-1].result else None

    @property
    def passed(self) -> int:
        return sum(c.result == "passed" for c in self.checks)

    @property
    def failed(self) -> int:
        return sum(c.result == "failed" for c in self.checks)

    @property
    def state(self) -> str:
        if not self.connected:
            return "left" if self.joined_at is not None else "not_joined"
        return "counting" if self.counting else "paused"

    def as_json(self) -> dict[str, Any]:
        return {
            "participant": self.participant,
            "state": self.state,
            "reason": "" if self.counting else self.reason,
            "joined_at": self.joined_at,
            "left_at": self.left_at,
            "visits": self.visits,
            "watch_seconds": round(self.watch_seconds, 1),
            "counted": [[round(a, 3), round(b, 3)] for a, b in self.counted],
            "checks_passed": self.passed,
            "checks_failed": self.failed,
            "checks": [c.as_json() for c in self.checks],
            "next_check_at": self.next_check_at,
            "flags": [f.as_json() for f in self.flags],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Viewer:
        """A viewer as persisted (a server that restarted mid-session goes on from there)."""
        viewer = cls(
            data["participant"],
            joined_at=data.get("joined_at"),
            left_at=data.get("left_at"),
            visits=[list(v) for v in data.get("visits", [])],
            watch_seconds=float(data.get("watch_seconds", 0.0)),
            counted=[list(c) for c in data.get("counted", [])],
            flags=[Flag(f["at"], f["reason"], f.get("score")) for f in data.get("flags", [])],
        )
        for c in data.get("checks", []):
            result = c.get("result", "")
            viewer.checks.append(
                Check(
                    c["kind"],
                    c["opened_at"],
                    "cancelled" if result in ("open", "") else result,
                    c.get("decided_at"),
                    c.get("reason", ""),
                )
            )
        for visit in viewer.visits:
            if visit[1] is None:  # the process stopped during the visit: the last proof of it
                start = visit[0] or 0.0
                visit[1] = max([start, *(c[1] for c in viewer.counted if c[1] >= start)])
                viewer.left_at = visit[1]
        return viewer


class Ledger:
    """The attendance of one session's viewers (only the participants it is told of)."""

    def __init__(self, rules: Rules, viewers: list[str], rng: random.Random | None = None) -> None:
        self.rules = rules
        self.viewers: dict[str, Viewer] = {p: Viewer(p) for p in viewers}
        self._rng = rng or random.SystemRandom()  # the moments must not be predictable

    def restore(self, data: dict[str, Any]) -> None:
        viewer = Viewer.from_json(data)
        if viewer.participant in self.viewers:
            self.viewers[viewer.participant] = viewer

    def add_viewer(self, participant: str) -> None:
        self.viewers.setdefault(participant, Viewer(participant))

    # -- the events --------------------------------------------------------------------------
    def join(self, participant: str, t: float) -> list[Notice]:
        v = self.viewers.get(participant)
        if v is None or v.connected:
            return []
        v.connected = True
        v.joined_at = t if v.joined_at is None else v.joined_at
        v.visits.append([t, None])
        v.counting, v.reason, v.alert = False, "checking", ""
        v.checks.append(Check("join", t))
        v.next_check_at = None
        return [self._tell(v, "checking")]

    def leave(self, participant: str, t: float) -> list[Notice]:
        v = self.viewers.get(participant)
        if v is None or not v.connected:
            return []
        self._credit(v, t)
        v.connected, v.counting, v.reason = False, False, "left"
        v.left_at = t
        if v.visits and v.visits[-1][1] is None:
            v.visits[-1][1] = t
        check = v.open_check
        if check is not None:  # not failed: nobody was asked to show a face any more
            check.result, check.decided_at, check.reason = "cancelled", t, "left"
        v.next_check_at = None
        return []

    def verdict(
        self,
        participant: str,
        t: float,
        verdict: str,
        state: str = "",
        reason: str = "",
        score: float | None = None,
        verdict_reason: str = "",
    ) -> list[Notice]:
        """One sample of the verifier for a viewer (with the verifier's state after it, and
        the verdict's own reason: a ``low_quality`` sample that got ``no_picture`` at all
        pauses at once, like a face gone)."""
        v = self.viewers.get(participant)
        if v is None or not v.connected:
            return []
        notices: list[Notice] = []
        self._credit(v, t)
        check = v.open_check
        if verdict == "match":
            v.last_match = t
            if not v.counting:
                v.counting, v.credited_until = True, t
                v.counted.append([t, t])
                notices.append(self._tell(v, "counting"))
            if check is not None:
                check.result, check.decided_at = "passed", t
                self._schedule(v, t)
        elif verdict in ABSENT or (verdict == "low_quality" and verdict_reason == "no_picture"):
            why = ABSENT.get(verdict, "no_picture")
            if check is not None:
                check.seen.append(why)
            if v.counting:
                v.counting, v.reason = False, why
                notices.append(self._tell(v, why))
        # low_quality and the rest: neither proof nor disproof; the gap decides
        if state == "alert" and reason in IMPOSTOR_ALERTS and v.alert != reason:
            v.flags.append(Flag(t, reason, score))
            notices.append(
                Notice(
                    "officer",
                    participant,
                    {
                        "type": "attendance_flag",
                        "participant": participant,
                        "reason": reason,
                        "score": score,
                        "at": t,
                        "message": OFFICER_TEXT[reason],
                    },
                )
            )
        v.alert = reason if state == "alert" else ""
        return notices

    def tick(self, t: float) -> list[Notice]:
        """Time passing: watch time stops after the gap, checks time out, checks open."""
        notices: list[Notice] = []
        for v in self.viewers.values():
            if not v.connected:
                continue
            self._credit(v, t)
            if v.counting and (v.last_match is None or t - v.last_match > self.rules.verdict_gap):
                v.counting, v.reason = False, "no_picture"
                notices.append(self._tell(v, "no_picture"))
            check = v.open_check
            if check is not None and t - check.opened_at >= self.rules.check_window:
                why = next((r for r in FAILURE_ORDER if r in check.seen), "no_picture")
                check.result, check.decided_at, check.reason = "failed", t, why
                notices.append(self._tell(v, "check_failed", check_reason=why))
                self._schedule(v, t)
            elif check is None and v.next_check_at is not None and t >= v.next_check_at:
                v.checks.append(Check("random", t))
                v.next_check_at = None
        return notices

    def close(self, t: float) -> None:
        """The session ended: everyone still there leaves now."""
        for participant in list(self.viewers):
            self.leave(participant, t)

    # -- inside ------------------------------------------------------------------------------
    def _credit(self, v: Viewer, t: float) -> None:
        """Count the watch time up to ``t``, but never past the gap after the last match."""
        if not v.counting or v.last_match is None:
            return
        end = min(t, v.last_match + self.rules.verdict_gap)
        if end > v.credited_until:
            v.watch_seconds += end - v.credited_until
            v.credited_until = end
            if v.counted:
                v.counted[-1][1] = end

    def _schedule(self, v: Viewer, t: float) -> None:
        r = self.rules
        v.next_check_at = t + self._rng.uniform(
            min(r.check_window, r.check_interval / 2), r.check_interval
        )

    def _tell(self, v: Viewer, what: str, **extra: Any) -> Notice:
        message = {
            "type": "attendance",
            "state": "counting" if v.counting else ("checking" if what == "checking" else "paused"),
            "reason": "" if what == "counting" else what,
            "message": VIEWER_TEXT[what],
            "watch_seconds": round(v.watch_seconds, 1),
            **extra,
        }
        return Notice("viewer", v.participant, message)
