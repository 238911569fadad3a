"""A mediation's rows over one database connection: SQL in, results out (no HTTP, no PDFs).

Each function runs inside one ``db.run`` transaction and returns rows (JSON-ready dicts) or a
:class:`Refusal`. The draft's validation (:func:`check_draft`) is pure and lives here too.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from common.hashing import canonical

from ..access import audit
from ..auth import Officer, now_iso
from ..deadlines.rules import Rules, china_date, china_today, cn_date
from ..refusals import CodedRefusal

# 146号令 art.89: at most three people take part for each side
PER_SIDE = 3
KINDS = ("party", "agent", "insurer")
DETERMINATIONS = ("determination_ordinary", "determination_simple", "accident_certificate")
_YUAN = re.compile(r"^(0|[1-9][0-9]{0,11})(\.[0-9]{1,2})?$")
_PERCENT = re.compile(r"^(0|[1-9][0-9]{0,2})(\.[0-9]{1,2})?$")


class Refusal(CodedRefusal):
    """Why a mediation function did nothing: ``(code, message)``, Chinese first."""

    NO_MEDIATION = ("not_found", "没有该调解 / no such mediation")
    NO_PARTICIPANT = ("not_found", "没有该调解参加人 / no such participant of the mediation")
    NO_SESSION = (
        "bad_request",
        "session_id：本案进行中的调解会话（purpose 为 mediation）/ session_id: an open session "
        "of this case whose purpose is mediation",
    )
    BAD_SIDES = (
        "bad_request",
        "sides：本案两名以上不同当事人的 ID / sides: the IDs of two or more different parties "
        "of this case",
    )
    BAD_SIDE = ("bad_request", "side：本调解一方当事人的 ID / side: the party ID of a side")
    ALREADY_OPEN = ("mediation_open", "本案已有进行中的调解 / this case has an open mediation")
    NOT_OPEN = ("mediation_closed", "调解已结束（已生效或已终结）/ the mediation has ended")
    SIDE_FULL = (
        "side_full",
        "每方参加调解的人员不得超过三人（146号令第八十九条）/ at most three people take part "
        "for each side",
    )
    BAD_ATTORNEY = (
        "bad_request",
        "attorney_material：本案中由该方当事人或民警上传的授权委托书材料 ID / "
        "attorney_material: a material of this case uploaded by that party or an officer",
    )
    NOT_AGENT = (
        "bad_request",
        "只有委托代理人有授权委托书 / only an agent has a power of attorney",
    )
    ALREADY_CHECKED = (
        "already_checked",
        "授权委托书已审核通过 / the power of attorney is accepted already",
    )
    NO_INSURER = (
        "bad_request",
        "party_id：本案中角色为保险公司（insurer）的当事人 / party_id: a party of the case "
        "whose role is insurer",
    )
    NO_DRAFT = ("no_draft", "尚无协议草案 / there is no draft agreement yet")
    SIGNING_STARTED = (
        "signing_started",
        "调解书已有签名，不能再修改草案 / the agreement has signatures: the draft is final",
    )
    NO_AGREEMENT = ("no_agreement", "尚未生成调解书 / no agreement has been generated")
    NOT_A_PARTY = (
        "bad_request",
        "只有一方当事人退出调解会终结调解 / only a side's party walking out ends the mediation",
    )
    ALREADY_LEFT = ("already_left", "该参加人已记录退出 / this participant has left already")


@dataclass(frozen=True)
class LateApplication:
    """An application after the 10 working days from receiving the determination."""

    received_on: date
    closed_on: date
    skipped: str


@dataclass(frozen=True)
class NoticeShort:
    """Notified fewer than 3 working days before the mediation."""

    notified_on: date
    earliest: date


class DraftError(ValueError):
    """What is wrong with a draft: ``field`` names it."""

    def __init__(self, field: str, zh: str, en: str) -> None:
        super().__init__(f"{field}：{zh} / {field}: {en}")
        self.field = field


def _json(row: sqlite3.Row | None) -> dict[str, Any] | None:
    return None if row is None else dict(row)


def participants(conn: sqlite3.Connection, mediation_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT * FROM mediation_participants WHERE mediation_id = ? ORDER BY id", (mediation_id,)
    ).fetchall()
    out = []
    for row in rows:
        item = dict(row)
        item["detail"] = json.loads(item["detail"])
        item["counts"] = _counts(item)
        item["signs"] = item["kind"] == "party" or (
            item["kind"] == "agent" and item["attorney_status"] == "accepted"
        )
        out.append(item)
    return out


def _counts(p: dict[str, Any]) -> bool:
    """Whether a participant takes one of the side's three places (a rejected agent does not)."""
    return not (p["kind"] == "agent" and p["attorney_status"] == "rejected")


def drafts(conn: sqlite3.Connection, mediation_id: int) -> list[dict[str, Any]]:
    """Every revision of the mediation's draft, oldest first."""
    rows = conn.execute(
        "SELECT * FROM mediation_drafts WHERE mediation_id = ? ORDER BY revision",
        (mediation_id,),
    ).fetchall()
    return [dict(r) | {"draft": json.loads(r["draft"])} for r in rows]


def agreement_department(conn: sqlite3.Connection, document_id: int) -> dict[str, Any]:
    """The department named in an agreement's data (its termination names the same)."""
    row = conn.execute("SELECT data FROM documents WHERE id = ?", (document_id,)).fetchone()
    department = json.loads(row["data"]).get("department", {}) if row is not None else {}
    return department if isinstance(department, dict) else {}


def latest_draft(conn: sqlite3.Connection, mediation_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT * FROM mediation_drafts WHERE mediation_id = ? ORDER BY revision DESC LIMIT 1",
        (mediation_id,),
    ).fetchone()
    if row is None:
        return None
    out = dict(row)
    out["draft"] = json.loads(out["draft"])
    return out


def full(conn: sqlite3.Connection, mediation_id: int, today: date) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM mediations WHERE id = ?", (mediation_id,)).fetchone()
    out = dict(row)
    out["participants"] = participants(conn, mediation_id)
    out["draft"] = latest_draft(conn, mediation_id)
    out["revisions"] = conn.execute(
        "SELECT COUNT(*) FROM mediation_drafts WHERE mediation_id = ?", (mediation_id,)
    ).fetchone()[0]
    out["overdue"] = out["status"] == "open" and today > date.fromisoformat(out["concludes_by"])
    out["limits"] = {
        "application_closes": out["application_closes"],
        "earliest_start": out["earliest_start"],
        "concludes_by": out["concludes_by"],
    }
    return out


def get(conn: sqlite3.Connection, case_id: int, mediation_id: int) -> dict[str, Any] | Refusal:
    row = conn.execute(
        "SELECT id FROM mediations WHERE id = ? AND case_id = ?", (mediation_id, case_id)
    ).fetchone()
    if row is None:
        return Refusal.NO_MEDIATION
    return full(conn, mediation_id, china_today())


def listing(conn: sqlite3.Connection, case_id: int, today: date) -> list[dict[str, Any]]:
    ids = conn.execute(
        "SELECT id FROM mediations WHERE case_id = ? ORDER BY id", (case_id,)
    ).fetchall()
    return [full(conn, r["id"], today) for r in ids]


def _received(
    conn: sqlite3.Connection, case_id: int, given: date | None
) -> tuple[date, str] | None:
    """When the determination was received: the first successful delivery of one in the system
    (its date is the law's), else the date the officer gives (delivered on paper)."""
    marks = ",".join("?" * len(DETERMINATIONS))
    row = conn.execute(
        f"SELECT id, sent_at FROM deliveries WHERE case_id = ? AND status = 'sent' "
        f"AND kind IN ({marks}) ORDER BY sent_at LIMIT 1",
        (case_id, *DETERMINATIONS),
    ).fetchone()
    if row is not None:
        return china_date(row["sent_at"]), f"delivery:{row['id']}"
    if given is None:
        return None
    return given, "officer"


def open_mediation(
    conn: sqlite3.Connection,
    who: Officer,
    case_id: int,
    session_id: int,
    sides: list[int],
    received_given: date | None,
    applied_on: date,
    notified_on: date,
    rules: Rules,
    today: date,
) -> dict[str, Any] | Refusal | LateApplication | NoticeShort | str:
    """Open a mediation; a string answer names the missing date (``determination_received_on``)."""
    session = conn.execute(
        "SELECT * FROM sessions WHERE id = ? AND case_id = ? AND ended_at IS NULL "
        "AND purpose = 'mediation'",
        (session_id, case_id),
    ).fetchone()
    if session is None:
        return Refusal.NO_SESSION
    if len(set(sides)) != len(sides) or len(sides) < 2:
        return Refusal.BAD_SIDES
    names: dict[int, str] = {}
    for pid in sides:
        row = conn.execute(
            "SELECT name, role FROM parties WHERE id = ? AND case_id = ?", (pid, case_id)
        ).fetchone()
        if row is None or row["role"] in ("agent", "insurer"):
            return Refusal.BAD_SIDES
        names[pid] = row["name"]
    if conn.execute(
        "SELECT 1 FROM mediations WHERE case_id = ? AND status IN ('open', 'terminating')",
        (case_id,),
    ).fetchone():
        return Refusal.ALREADY_OPEN
    found = _received(conn, case_id, received_given)
    if found is None:
        return "determination_received_on"
    received_on, source = found
    closes = rules.due("mediation_application", received_on)
    if applied_on > closes:
        return LateApplication(received_on, closes, rules.skipped(received_on, closes))
    earliest = rules.due("mediation_notice", notified_on)
    if today < earliest:
        return NoticeShort(notified_on, earliest)
    concludes = rules.due("mediation_conclusion", today)
    now = now_iso()
    cursor = conn.execute(
        "INSERT INTO mediations (case_id, session_id, room, status, received_on, received_from, "
        "applied_on, application_closes, notified_on, earliest_start, started_on, concludes_by, "
        "opened_by, mediator, opened_at) VALUES (?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            case_id,
            session_id,
            session["room"],
            received_on.isoformat(),
            source,
            applied_on.isoformat(),
            closes.isoformat(),
            notified_on.isoformat(),
            earliest.isoformat(),
            today.isoformat(),
            concludes.isoformat(),
            who.actor,
            who.id,
            now,
        ),
    )
    mediation_id = int(cursor.lastrowid or 0)
    audit(
        conn,
        who.actor,
        "mediation.opened",
        f"mediation:{mediation_id}",
        case_id,
        session=session_id,
        sides=sides,
        concludes_by=concludes.isoformat(),
    )
    for pid in sides:
        conn.execute(
            "INSERT INTO mediation_participants (mediation_id, side, kind, party_id, name, "
            "added_by, added_at) VALUES (?, ?, 'party', ?, ?, ?, ?)",
            (mediation_id, pid, pid, names[pid], who.actor, now),
        )
    return full(conn, mediation_id, today)


def _open_row(conn: sqlite3.Connection, case_id: int, mediation_id: int) -> sqlite3.Row | Refusal:
    row = conn.execute(
        "SELECT * FROM mediations WHERE id = ? AND case_id = ?", (mediation_id, case_id)
    ).fetchone()
    if row is None:
        return Refusal.NO_MEDIATION
    if row["status"] != "open":
        return Refusal.NOT_OPEN
    return row


def add_participant(
    conn: sqlite3.Connection,
    who: Officer,
    case_id: int,
    mediation_id: int,
    side: int,
    kind: str,
    name: str,
    phone: str,
    attorney_material: str | None,
    insurer_party: int | None,
    detail: dict[str, str],
) -> dict[str, Any] | Refusal:
    row = _open_row(conn, case_id, mediation_id)
    if isinstance(row, Refusal):
        return row
    people = participants(conn, mediation_id)
    principal = next((p for p in people if p["kind"] == "party" and p["side"] == side), None)
    if principal is None:
        return Refusal.BAD_SIDE
    if sum(1 for p in people if p["side"] == side and p["counts"]) >= PER_SIDE:
        return Refusal.SIDE_FULL
    party_id: int | None = None
    status: str | None = None
    if kind == "agent":
        material = conn.execute(
            "SELECT party_id, origin FROM materials WHERE id = ? AND case_id = ?",
            (attorney_material, case_id),
        ).fetchone()
        if material is None or (
            material["origin"] == "party" and material["party_id"] != principal["party_id"]
        ):
            return Refusal.BAD_ATTORNEY
        # the agent signs and joins the call as a person of the case: a party row of its own
        # (role agent: no box on the case's other documents, no invitation until accepted)
        cursor = conn.execute(
            "INSERT INTO parties (case_id, role, name, phone, created_at) "
            "VALUES (?, 'agent', ?, ?, ?)",
            (case_id, name, phone, now_iso()),
        )
        party_id = int(cursor.lastrowid or 0)
        status = "pending"
    elif insurer_party is not None:
        found = conn.execute(
            "SELECT name FROM parties WHERE id = ? AND case_id = ? AND role = 'insurer'",
            (insurer_party, case_id),
        ).fetchone()
        if found is None:
            return Refusal.NO_INSURER
        party_id = insurer_party
        name = name or found["name"]
    cursor = conn.execute(
        "INSERT INTO mediation_participants (mediation_id, side, kind, party_id, name, detail, "
        "attorney_material, attorney_status, added_by, added_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            mediation_id,
            side,
            kind,
            party_id,
            name,
            json.dumps(detail, ensure_ascii=False),
            attorney_material if kind == "agent" else None,
            status,
            who.actor,
            now_iso(),
        ),
    )
    participant_id = int(cursor.lastrowid or 0)
    audit(
        conn,
        who.actor,
        "mediation.participant_added",
        f"mediation:{mediation_id}",
        case_id,
        participant=participant_id,
        side=side,
        kind=kind,
        party=party_id,
        attorney_material=attorney_material if kind == "agent" else None,
    )
    return next(p for p in participants(conn, mediation_id) if p["id"] == participant_id)


def check_attorney(
    conn: sqlite3.Connection,
    who: Officer,
    case_id: int,
    mediation_id: int,
    participant_id: int,
    accepted: bool,
    reason: str,
) -> dict[str, Any] | Refusal:
    row = _open_row(conn, case_id, mediation_id)
    if isinstance(row, Refusal):
        return row
    person = conn.execute(
        "SELECT * FROM mediation_participants WHERE id = ? AND mediation_id = ?",
        (participant_id, mediation_id),
    ).fetchone()
    if person is None:
        return Refusal.NO_PARTICIPANT
    if person["kind"] != "agent":
        return Refusal.NOT_AGENT
    if person["attorney_status"] == "accepted":
        return Refusal.ALREADY_CHECKED
    if accepted and person["attorney_status"] == "rejected":
        # a rejected agent freed its place: taking it back must fit in the three again
        people = participants(conn, mediation_id)
        if sum(1 for p in people if p["side"] == person["side"] and p["counts"]) >= PER_SIDE:
            return Refusal.SIDE_FULL
    decision = "accepted" if accepted else "rejected"
    conn.execute(
        "UPDATE mediation_participants SET attorney_status = ?, attorney_reason = ?, "
        "checked_by = ?, checked_at = ? WHERE id = ?",
        (decision, reason, who.actor, now_iso(), participant_id),
    )
    audit(
        conn,
        who.actor,
        "mediation.attorney_checked",
        f"mediation:{mediation_id}",
        case_id,
        reason,
        participant=participant_id,
        decision=decision,
        material=person["attorney_material"],
    )
    return next(p for p in participants(conn, mediation_id) if p["id"] == participant_id)


def agent_admitted(conn: sqlite3.Connection, party_id: int) -> bool:
    """Whether a person of the case may be invited: an agent only with an accepted power of
    attorney (anyone else: yes)."""
    row = conn.execute("SELECT role FROM parties WHERE id = ?", (party_id,)).fetchone()
    if row is None or row["role"] != "agent":
        return True
    return (
        conn.execute(
            "SELECT 1 FROM mediation_participants WHERE party_id = ? AND kind = 'agent' "
            "AND attorney_status = 'accepted'",
            (party_id,),
        ).fetchone()
        is not None
    )


# -- the draft -----------------------------------------------------------------------------
def _fen(item: dict[str, Any], where: str) -> int:
    if "amount_fen" in item:
        fen = item["amount_fen"]
        if isinstance(fen, bool) or not isinstance(fen, int):
            raise DraftError(f"{where}.amount_fen", "应为整数（分）", "an integer of fen")
    else:
        raw = item.get("amount")
        if not isinstance(raw, str) or not _YUAN.match(raw):
            raise DraftError(
                f"{where}.amount",
                '金额以元为单位的字符串，最多两位小数，不能为负（如 "8600.50"）',
                'yuan as a string, at most two decimals, not negative (e.g. "8600.50")',
            )
        fen = int(Decimal(raw) * 100)
    if fen <= 0:
        raise DraftError(f"{where}.amount", "金额须大于零", "the amount must be more than zero")
    if fen > 10**13:
        raise DraftError(f"{where}.amount", "金额过大", "the amount is too large")
    return fen


def _text(item: dict[str, Any], key: str, where: str, max_len: int = 500) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise DraftError(
            f"{where}.{key}", f"必填文字，最多 {max_len} 字", f"text, at most {max_len} characters"
        )
    return value.strip()


def check_draft(raw: Any, people: list[dict[str, Any]], today: date) -> dict[str, Any]:
    """The draft in its stored form (amounts in fen, shares as strings), or :class:`DraftError`:
    no negative or zero amounts, payers and payees among the participants, shares adding up to
    exactly 100 %, due dates after today."""
    if not isinstance(raw, dict):
        raise DraftError("draft", "应为对象", "an object")
    active = {p["id"]: p for p in people if p["left_at"] is None and p["counts"]}
    sides = {p["side"]: p for p in people if p["kind"] == "party"}
    items = raw.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= 50:
        raise DraftError("items", "1 至 50 项赔偿项目", "1 to 50 items")
    out_items = []
    for n, item in enumerate(items):
        where = f"items[{n}]"
        if not isinstance(item, dict):
            raise DraftError(where, "应为对象", "an object")
        fen = _fen(item, where)
        payer, payee = item.get("payer"), item.get("payee")
        if payer not in active or active[payer]["kind"] == "agent":
            raise DraftError(
                f"{where}.payer",
                "付款人：本调解的当事人或保险公司参加人 ID",
                "the participant ID of a party or an insurer of this mediation",
            )
        if payee not in active or active[payee]["kind"] != "party" or payee == payer:
            raise DraftError(
                f"{where}.payee",
                "收款人：另一方当事人的参加人 ID",
                "the participant ID of another side's party",
            )
        if active[payer]["side"] == active[payee]["side"]:
            raise DraftError(f"{where}.payee", "收款人须为另一方", "the payee is on another side")
        due_raw = item.get("due")
        try:
            due = date.fromisoformat(due_raw) if isinstance(due_raw, str) else None
        except ValueError:
            due = None
        if due is None:
            raise DraftError(f"{where}.due", "履行期限 YYYY-MM-DD", "the due date, YYYY-MM-DD")
        if due <= today:
            raise DraftError(
                f"{where}.due",
                f"履行期限须在今天（{cn_date(today)}）之后",
                f"the due date must be after today ({today.isoformat()})",
            )
        out_items.append(
            {
                "what": _text(item, "what", where, 200),
                "amount_fen": fen,
                "payer": payer,
                "payee": payee,
                "method": _text(item, "method", where, 200),
                "due": due.isoformat(),
            }
        )
    shares = raw.get("shares")
    if not isinstance(shares, list) or not shares:
        raise DraftError("shares", "各方的赔偿比例（列表）", "each side's share (a list)")
    total = Decimal(0)
    out_shares = []
    seen: set[int] = set()
    for n, share in enumerate(shares):
        where = f"shares[{n}]"
        if not isinstance(share, dict) or share.get("side") not in sides:
            raise DraftError(f"{where}.side", "本调解一方当事人的 ID", "the party ID of a side")
        side = int(share["side"])
        if side in seen:
            raise DraftError(f"{where}.side", "每方只列一次", "each side once")
        seen.add(side)
        raw_pct = share.get("percent")
        pct_text = (
            str(raw_pct) if isinstance(raw_pct, int) and not isinstance(raw_pct, bool) else raw_pct
        )
        if not isinstance(pct_text, str) or not _PERCENT.match(pct_text):
            raise DraftError(
                f"{where}.percent",
                '百分比 0 至 100，最多两位小数（如 "70"）',
                'a percentage from 0 to 100, at most two decimals (e.g. "70")',
            )
        try:
            pct = Decimal(pct_text)
        except InvalidOperation:
            raise DraftError(f"{where}.percent", "百分比", "a percentage") from None
        if pct > 100:
            raise DraftError(f"{where}.percent", "不能超过 100", "at most 100")
        total += pct
        out_shares.append({"side": side, "percent": pct_text})
    if total != 100:
        raise DraftError(
            "shares",
            f"各方比例合计须为 100%（现为 {total}%）",
            f"the shares must add up to 100 % (they add up to {total} %)",
        )
    return {
        "losses": _text(raw, "losses", "draft", 2000),
        "items": out_items,
        "shares": out_shares,
        "note": (_text(raw, "note", "draft", 2000) if raw.get("note") else ""),
    }


def yuan(fen: int) -> str:
    """Fen as printed: ``人民币8,600.50元``."""
    return f"人民币{fen // 100:,}.{fen % 100:02d}元"


def draft_texts(draft: dict[str, Any], people: list[dict[str, Any]]) -> dict[str, str]:
    """The agreement's paragraphs from a stored draft."""
    names = {p["id"]: p["name"] for p in people}
    side_names = {p["side"]: p["name"] for p in people if p["kind"] == "party"}
    items = []
    payments = []
    total = 0
    for n, item in enumerate(draft["items"], 1):
        total += item["amount_fen"]
        items.append(f"{n}. {item['what']}{yuan(item['amount_fen'])}")
        due = date.fromisoformat(item["due"])
        payments.append(
            f"{n}. {names[item['payer']]}于{cn_date(due)}前以{item['method']}方式向"
            f"{names[item['payee']]}支付{yuan(item['amount_fen'])}"
        )
    items.append(f"合计{yuan(total)}")
    shares = "；".join(f"{side_names[s['side']]}承担{s['percent']}%" for s in draft["shares"])
    return {
        "losses": draft["losses"],
        "items": "；".join(items),
        "shares": shares,
        "payment": "；".join(payments) + (f"。{draft['note']}" if draft.get("note") else ""),
    }


def draft_sha256(draft: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(draft)).hexdigest()


def revise(
    conn: sqlite3.Connection,
    who: Officer,
    case_id: int,
    mediation_id: int,
    raw: Any,
    today: date,
) -> dict[str, Any] | Refusal | DraftError:
    row = _open_row(conn, case_id, mediation_id)
    if isinstance(row, Refusal):
        return row
    if row["agreement_id"] is not None:
        signed = conn.execute(
            "SELECT signatures FROM documents WHERE id = ?", (row["agreement_id"],)
        ).fetchone()
        if signed is not None and json.loads(signed["signatures"]):
            return Refusal.SIGNING_STARTED
    try:
        draft = check_draft(raw, participants(conn, mediation_id), today)
    except DraftError as exc:
        return exc
    last = conn.execute(
        "SELECT COALESCE(MAX(revision), 0) FROM mediation_drafts WHERE mediation_id = ?",
        (mediation_id,),
    ).fetchone()[0]
    sha = draft_sha256(draft)
    conn.execute(
        "INSERT INTO mediation_drafts (mediation_id, revision, draft, sha256, revised_by, "
        "revised_at) VALUES (?, ?, ?, ?, ?, ?)",
        (mediation_id, last + 1, json.dumps(draft, ensure_ascii=False), sha, who.actor, now_iso()),
    )
    # a generated but unsigned agreement is superseded by the new draft (and never signed)
    if row["agreement_id"] is not None:
        old = [*json.loads(row["superseded"]), row["agreement_id"]]
        conn.execute(
            "UPDATE mediations SET agreement_id = NULL, superseded = ? WHERE id = ?",
            (json.dumps(old), mediation_id),
        )
    audit(
        conn,
        who.actor,
        "mediation.draft_revised",
        f"mediation:{mediation_id}",
        case_id,
        revision=last + 1,
        sha256=sha,
    )
    return {"revision": last + 1, "sha256": sha, "draft": draft}


def agreement_signed(conn: sqlite3.Connection, mediation_id: int) -> bool:
    """Whether the mediation's current agreement has a signature (then it is final)."""
    row = conn.execute(
        "SELECT d.signatures FROM mediations m JOIN documents d ON d.id = m.agreement_id "
        "WHERE m.id = ?",
        (mediation_id,),
    ).fetchone()
    return row is not None and bool(json.loads(row["signatures"]))


def set_agreement(
    conn: sqlite3.Connection, mediation_id: int, document_id: int, revision: int
) -> None:
    """The new agreement; an unsigned earlier one is superseded (never signed any more)."""
    row = conn.execute(
        "SELECT agreement_id, superseded FROM mediations WHERE id = ?", (mediation_id,)
    ).fetchone()
    old = json.loads(row["superseded"])
    if row["agreement_id"] is not None:
        old.append(row["agreement_id"])
    conn.execute(
        "UPDATE mediations SET agreement_id = ?, agreement_draft = ?, superseded = ? WHERE id = ?",
        (document_id, revision, json.dumps(old), mediation_id),
    )


def by_agreement(conn: sqlite3.Connection, document_id: int) -> dict[str, Any] | None:
    """The open mediation whose current agreement this document is."""
    return _json(
        conn.execute(
            "SELECT * FROM mediations WHERE agreement_id = ? AND status = 'open'", (document_id,)
        ).fetchone()
    )


def agreement_closed(conn: sqlite3.Connection, document_id: int) -> bool:
    """Whether the document is a mediation's agreement that may no longer be signed: its
    mediation ended, or a later draft superseded it."""
    row = conn.execute(
        "SELECT status, agreement_id FROM mediations WHERE agreement_id = ? OR EXISTS "
        "(SELECT 1 FROM json_each(superseded) WHERE value = ?)",
        (document_id, document_id),
    ).fetchone()
    return row is not None and (row["status"] != "open" or row["agreement_id"] != document_id)


def mark_effective(
    conn: sqlite3.Connection, mediation_id: int, actor: str, sha256: str
) -> dict[str, Any] | None:
    """The agreement took effect (its last signature): once, only while open."""
    cursor = conn.execute(
        "UPDATE mediations SET status = 'effective', ended_at = ?, ended_by = ? "
        "WHERE id = ? AND status = 'open'",
        (now_iso(), actor, mediation_id),
    )
    if cursor.rowcount != 1:
        return None
    row = conn.execute("SELECT * FROM mediations WHERE id = ?", (mediation_id,)).fetchone()
    audit(
        conn,
        actor,
        "mediation.effective",
        f"mediation:{mediation_id}",
        row["case_id"],
        document=row["agreement_id"],
        sha256=sha256,
    )
    return dict(row)


def walk_out(
    conn: sqlite3.Connection,
    who: Officer,
    case_id: int,
    mediation_id: int,
    participant_id: int,
    note: str,
) -> dict[str, Any] | Refusal:
    row = _open_row(conn, case_id, mediation_id)
    if isinstance(row, Refusal):
        return row
    person = conn.execute(
        "SELECT * FROM mediation_participants WHERE id = ? AND mediation_id = ?",
        (participant_id, mediation_id),
    ).fetchone()
    if person is None:
        return Refusal.NO_PARTICIPANT
    if person["left_at"] is not None:
        return Refusal.ALREADY_LEFT
    conn.execute(
        "UPDATE mediation_participants SET left_at = ?, left_note = ? WHERE id = ?",
        (now_iso(), note, participant_id),
    )
    return dict(person)


def begin_termination(
    conn: sqlite3.Connection, case_id: int, mediation_id: int
) -> dict[str, Any] | Refusal:
    """Take the mediation out of 'open' at once (one termination, whoever asks first)."""
    cursor = conn.execute(
        "UPDATE mediations SET status = 'terminating' WHERE id = ? AND case_id = ? "
        "AND status = 'open'",
        (mediation_id, case_id),
    )
    if cursor.rowcount != 1:
        exists = conn.execute(
            "SELECT 1 FROM mediations WHERE id = ? AND case_id = ?", (mediation_id, case_id)
        ).fetchone()
        return Refusal.NOT_OPEN if exists else Refusal.NO_MEDIATION
    return dict(conn.execute("SELECT * FROM mediations WHERE id = ?", (mediation_id,)).fetchone())


def undo_termination(conn: sqlite3.Connection, mediation_id: int) -> None:
    conn.execute(
        "UPDATE mediations SET status = 'open' WHERE id = ? AND status = 'terminating'",
        (mediation_id,),
    )


def finish_termination(
    conn: sqlite3.Connection,
    actor: str,
    mediation_id: int,
    reason: str,
    document_id: int,
    sha256: str,
) -> None:
    conn.execute(
        "UPDATE mediations SET status = 'terminated', termination_id = ?, end_reason = ?, "
        "ended_at = ?, ended_by = ? WHERE id = ?",
        (document_id, reason, now_iso(), actor, mediation_id),
    )
    case_id = conn.execute(
        "SELECT case_id FROM mediations WHERE id = ?", (mediation_id,)
    ).fetchone()[0]
    audit(
        conn,
        actor,
        "mediation.terminated",
        f"mediation:{mediation_id}",
        case_id,
        reason,
        document=document_id,
        sha256=sha256,
    )


def for_party(
    conn: sqlite3.Connection, case_id: int, party_id: int, today: date
) -> dict[str, Any] | None:
    """The latest mediation of the case the person takes part in (party, agent, insurer)."""
    row = conn.execute(
        "SELECT m.id FROM mediations m JOIN mediation_participants p ON p.mediation_id = m.id "
        "WHERE m.case_id = ? AND p.party_id = ? ORDER BY m.id DESC LIMIT 1",
        (case_id, party_id),
    ).fetchone()
    if row is None:
        return None
    out = full(conn, row["id"], today)
    for p in out["participants"]:
        p.pop("attorney_material", None)
        p.pop("detail", None)
    return out
