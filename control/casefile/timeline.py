"""One timeline per case: everything that happened, in order, each item with its time (UTC; pages
show China time), kind, actor and a reference.

The items come from three places:

* the **custody log**: every entry naming the case, or the room of one of its sessions
  (materials, evidence displays, verdicts, records, documents generated, signed, refused,
  deliveries and fallbacks, reviews, penalty steps, recordings started, stopped, sealed,
  viewed, exported...), each with its ``custody_index``: the log is the proof, so an item it
  holds is never taken from a table as well. ``segment.written`` entries (one every two
  seconds of media) are summed into their recording's ``recording.sealed`` item instead;
* the **recordings' sealed manifests**: who joined and left the call when, and each gap with
  its cause;
* **the tables**, through :data:`SOURCES`: what the log does not hold (sessions opened and
  ended, links redeemed, identity checks before joining, deadlines). An area adds its own
  source with one line: ``SOURCES.append(my_source)`` where ``my_source(conn, case_id)``
  yields :class:`Item` dicts made with :func:`item` (mediation does so when it lands; its
  custody entries name the case and come in by themselves). A source whose table does not
  exist returns nothing.

Plain functions over a connection (``db.run``) and plain data: the API, the case package and the
tests build the same timeline.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, TypedDict

from ..deadlines.rules import CHINA, Rules


class Item(TypedDict):
    at: str  # UTC, ISO 8601
    kind: str
    actor: str
    ref: dict[str, Any]
    custody_index: int | None
    source: str  # custody | recording | table | deadline


# a table's items (None for an event that did not happen: a session not yet ended...)
Source = Callable[[sqlite3.Connection, int], Iterable["Item | None"]]

# custody entry fields that are the item's own (time, kind, actor) or the log's bookkeeping
_OWN = ("index", "type", "time", "actor")
# segment entries are summed into the recording's sealing instead of listed one by one
_SUMMED = ("segment.written",)


def item(
    at: str | None,
    kind: str,
    actor: str = "",
    source: str = "table",
    custody_index: int | None = None,
    /,
    **ref: Any,
) -> Item | None:
    if not at:
        return None
    return Item(at=at, kind=kind, actor=actor, ref=ref, custody_index=custody_index, source=source)


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


def case_rooms(conn: sqlite3.Connection, case_id: int) -> set[str]:
    return {
        r["room"] for r in conn.execute("SELECT room FROM sessions WHERE case_id = ?", (case_id,))
    }


def case_entries(
    entries: Iterable[dict[str, Any]], case_id: int, rooms: set[str], recordings: set[str]
) -> list[dict[str, Any]]:
    """The custody entries of a case: naming it, one of its rooms or one of its recordings."""
    case = str(case_id)
    return [
        e
        for e in entries
        if e.get("case") == case
        or (e.get("room") and e.get("room") in rooms)
        or (e.get("recording") and e.get("recording") in recordings)
    ]


def custody_items(entries: Iterable[dict[str, Any]]) -> list[Item]:
    out: list[Item] = []
    segments: dict[str, int] = {}
    for e in entries:
        if e.get("type") in _SUMMED:
            rec = str(e.get("recording", ""))
            segments[rec] = segments.get(rec, 0) + 1
            continue
        ref = {k: v for k, v in e.items() if k not in _OWN and v not in ("", None)}
        made = item(
            str(e.get("time", "")),
            str(e.get("type", "")),
            str(e.get("actor", "")),
            "custody",
            int(e["index"]),
            **ref,
        )
        if made is not None:
            out.append(made)
    for it in out:
        if it["kind"] == "recording.sealed":
            it["ref"]["segments"] = segments.get(str(it["ref"].get("recording", "")), 0)
    return out


def recording_items(manifests: Iterable[dict[str, Any]]) -> list[Item]:
    """Who joined and left each recorded call, and what the recording lacks (its gaps)."""
    out: list[Item | None] = []
    for m in manifests:
        rec = m.get("recording_id", "")
        for p in m.get("participants", []):
            for x in p.get("presence", []) or [
                {"joined_at": p.get("joined_at"), "left_at": p.get("left_at")}
            ]:
                common = {"recording": rec, "room": m.get("room"), "participant": p.get("id")}
                out.append(
                    item(x.get("joined_at"), "participant.joined", "", "recording", **common)
                )
                out.append(
                    item(
                        x.get("left_at"),
                        "participant.left",
                        "",
                        "recording",
                        reason=x.get("left_reason", ""),
                        **common,
                    )
                )
        for g in m.get("gaps", []):
            out.append(
                item(
                    g.get("start_time"),
                    "recording.gap",
                    "",
                    "recording",
                    recording=rec,
                    track=g.get("track"),
                    participant=g.get("participant"),
                    cause=g.get("cause"),
                    duration=g.get("duration"),
                    frames=g.get("frames"),
                )
            )
        if m.get("status") == "incomplete":
            out.append(
                item(
                    m.get("stopped_at"),
                    "recording.incomplete",
                    "",
                    "recording",
                    recording=rec,
                    note=m.get("note", ""),
                )
            )
    return [i for i in out if i is not None]


# -- the tables' sources ------------------------------------------------------------------------
def sessions_source(conn: sqlite3.Connection, case_id: int) -> Iterable[Item | None]:
    for r in conn.execute(
        "SELECT s.*, o.username FROM sessions s LEFT JOIN officers o ON o.id = s.opened_by "
        "WHERE s.case_id = ? ORDER BY s.id",
        (case_id,),
    ):
        ref = {"session": r["id"], "room": r["room"], "purpose": r["purpose"]}
        actor = f"officer:{r['username']}" if r["username"] else ""
        yield item(r["opened_at"], "session.opened", actor, **ref)
        yield item(r["ended_at"], "session.ended", actor, **ref)


def invitations_source(conn: sqlite3.Connection, case_id: int) -> Iterable[Item | None]:
    for r in conn.execute(
        "SELECT i.id, i.party_id, i.used_at, p.name FROM invitations i JOIN parties p "
        "ON p.id = i.party_id WHERE i.case_id = ? ORDER BY i.id",
        (case_id,),
    ):
        yield item(
            r["used_at"],
            "party.link_redeemed",
            f"party:{r['party_id']}",
            invitation=r["id"],
            party=r["party_id"],
            name=r["name"],
        )


def identity_source(conn: sqlite3.Connection, case_id: int) -> Iterable[Item | None]:
    for r in conn.execute(
        "SELECT c.* FROM prejoin_checks c JOIN sessions s ON s.id = c.session_id "
        "WHERE s.case_id = ? ORDER BY c.id",
        (case_id,),
    ):
        yield item(
            r["decided_at"],
            "identity.checked",
            r["decided_by"] or "",
            session=r["session_id"],
            participant=r["participant"],
            route=r["route"],
            status=r["status"],
            attempt=r["attempt"],
            reason=r["reason"],
        )


def parties_source(conn: sqlite3.Connection, case_id: int) -> Iterable[Item | None]:
    for r in conn.execute("SELECT * FROM cases WHERE id = ?", (case_id,)):
        yield item(
            r["created_at"], "case.created", "", case=case_id, kind=r["kind"], title=r["title"]
        )
    for r in conn.execute("SELECT * FROM parties WHERE case_id = ? ORDER BY id", (case_id,)):
        yield item(
            r["created_at"], "party.added", "", party=r["id"], role=r["role"], name=r["name"]
        )


SOURCES: list[Source] = [
    parties_source,
    sessions_source,
    invitations_source,
    identity_source,
]


def _end_of(day: str) -> str:
    """A deadline's item time: the end of its (Beijing) day, in UTC."""
    at = datetime.combine(date.fromisoformat(day), time(23, 59, 59), CHINA)
    return at.astimezone(UTC).isoformat()


def deadline_items(
    conn: sqlite3.Connection, case_id: int, rules: Rules | None, today: date
) -> list[Item]:
    """The case's deadlines (control/deadlines), each at the end of its due day; none when the
    calendar cannot count them (the item says so)."""
    if rules is None:
        return []
    from ..deadlines.api import case_deadlines
    from ..deadlines.calendar import CalendarError

    try:
        found = case_deadlines(conn, case_id, rules, today)
    except CalendarError as exc:
        missing = item(
            datetime.now(UTC).isoformat(), "deadline.uncounted", "", "deadline", error=str(exc)
        )
        return [missing] if missing else []
    out: list[Item] = []
    for d in found:
        made = item(
            _end_of(d["due"]),
            f"deadline.{d['status']}",
            "",
            "deadline",
            limit=d["limit"],
            name=d["name"],
            start=d["start"],
            due=d["due"],
            done_at=d.get("done_at"),
            document=d.get("document"),
            number=d.get("number"),
        )
        if made is not None:
            out.append(made)
    return out


def _order(it: Item) -> tuple[datetime, int, str]:
    at = datetime.fromisoformat(it["at"].replace("Z", "+00:00"))
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    index = it["custody_index"]
    return (at, -1 if index is None else index, it["kind"])


def build(
    conn: sqlite3.Connection,
    case_id: int,
    entries: Iterable[dict[str, Any]],
    manifests: Iterable[dict[str, Any]] = (),
    rules: Rules | None = None,
    today: date | None = None,
) -> list[Item]:
    """The case's timeline, oldest first. ``entries``: the custody log's entries (all, or the
    case's); ``manifests``: the sealed manifests of the case's recordings."""
    manifests = list(manifests)
    recordings = {str(m.get("recording_id")) for m in manifests}
    mine = case_entries(entries, case_id, case_rooms(conn, case_id), recordings)
    items: list[Item] = custody_items(mine) + recording_items(manifests)
    for source in SOURCES:
        items.extend(i for i in source(conn, case_id) if i is not None)
    items.extend(deadline_items(conn, case_id, rules, today or datetime.now(CHINA).date()))
    items.sort(key=_order)
    return items


def china(at: str) -> str:
    """An item's time as pages and the printed timeline show it: ``2026-12-01 10:30:05``
    (Beijing time)."""
    parsed = datetime.fromisoformat(at.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S")


def ref_text(ref: dict[str, Any]) -> str:
    """A reference in one line (for the printed timeline)."""
    keep = {k: v for k, v in ref.items() if not isinstance(v, (dict, list)) or k == "viewers"}
    return json.dumps(keep, ensure_ascii=False, sort_keys=True)[1:-1]


def read_manifests(recordings_dir: Path, case_id: int) -> list[tuple[Path, dict[str, Any]]]:
    """The sealed recordings of a case: each directory and its manifest (blocks: a thread)."""
    out: list[tuple[Path, dict[str, Any]]] = []
    case = str(case_id)
    for path in sorted(recordings_dir.glob("*/manifest.json")):
        try:
            manifest = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue  # a damaged manifest is what `custody verify` names; not a case's item
        if isinstance(manifest, dict) and manifest.get("case") == case:
            out.append((path.parent, manifest))
    return out
