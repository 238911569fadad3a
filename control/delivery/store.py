"""Deliveries over one database connection: SQL in, results out (each function runs inside one
``db.run`` transaction and returns rows or a :class:`Refusal`; nothing here sends or signs)."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ..access import PartyCaller, audit
from ..auth import Officer, now_iso
from ..deadlines.rules import CHINA, china_date, china_time, china_today
from ..refusals import CodedRefusal
from .channels import CHANNEL_NAMES, CHANNELS

# The request cut off while the provider had the notice (the server stopping, the connection
# dropped), or the server killed then and the delivery found still ``sending`` at a later start
# (:func:`abandon_stale`): whether the party got it is not known, so it is not delivered; the
# fallback opens.
INTERRUPTED = (
    "发送中断（服务器停止或请求中止）：未确认当事人是否收到，视为未送达，"
    "可重新送达或改用邮寄、公告 / "
    "the send was interrupted (the server stopped or the request was dropped) before the "
    "provider answered: whether the party got it is not known, so it is not delivered; deliver "
    "again, or by post or public notice"
)
# the kinds a review (复核) may be asked of (146号令 art.71)
REVIEWABLE = ("determination_ordinary", "determination_simple", "accident_certificate")


class Refusal(CodedRefusal):
    """Why a delivery function did nothing: ``(code, message)``, Chinese first."""

    NO_CASE = ("not_found", "没有该案件 / no such case")
    NO_DOCUMENT = ("not_found", "本案没有该文书 / no such document in this case")
    NO_PARTY = ("not_found", "本案没有该当事人 / no such party in this case")
    NO_DELIVERY = ("not_found", "没有该送达记录 / no such delivery")
    NO_CONSENT = (
        "consent_required",
        "该当事人尚未签署送达地址确认书（同意电子送达并选定方式和地址），不能电子送达 / "
        "the party has not signed the consent to electronic delivery (送达地址确认书) with "
        "a channel and an address: no electronic delivery",
    )
    BAD_CONSENT = (
        "consent_required",
        "送达地址确认书未写明同意电子送达、送达方式（短信或电子邮件）和地址 / the consent "
        "does not state the party's agreement, a channel (SMS or e-mail) and an address",
    )
    RECEIPT = (
        "bad_request",
        "送达凭证和送达地址确认书本身不再送达 / receipts and consents are not delivered",
    )
    NOT_SENT = (
        "not_sent",
        "该文书未发送成功，不能查阅或签收 / the delivery was not sent: nothing to open",
    )
    NOT_OPENED = ("not_opened", "请先查阅文书再确认签收 / open the document before acknowledging")
    ANSWERED = (
        "already_answered",
        "该送达已签收或已拒收 / the delivery was acknowledged or refused already",
    )
    NOT_FAILED = (
        "not_failed",
        "只有电子送达失败或被拒收时才记录邮寄或公告送达 / post or a public notice is "
        "recorded only after electronic delivery failed or was refused",
    )
    NOT_EFFECTIVE = (
        "not_effective",
        "文书尚未签署完毕（仍有签名位置未签名或未记录拒签），不能送达 / the document is not "
        "complete (a box is neither signed nor refused): it cannot be delivered yet",
    )
    POST_FIRST = (
        "post_first",
        "公告送达前须先记录邮寄送达（157号令第五十五条）/ a public notice comes after "
        "delivery by post was tried (157号令 art.55)",
    )
    BAD_DAY = (
        "bad_day",
        "done_on：补救送达的日期不能早于电子送达的日期，也不能晚于今天 / done_on: the fallback "
        "cannot be dated before the electronic delivery, nor after today",
    )


def consent_for(conn: sqlite3.Connection, case_id: int, party_id: int) -> dict[str, Any] | Refusal:
    """The party's latest signed consent to electronic delivery, with its channel and address."""
    rows = conn.execute(
        "SELECT * FROM documents WHERE case_id = ? AND kind = 'delivery_consent' ORDER BY id DESC",
        (case_id,),
    ).fetchall()
    box = f"p{party_id}"
    for row in rows:
        data = json.loads(row["data"])
        parties = data.get("parties") or [{}]
        if parties[0].get("party") != party_id:
            continue
        required = json.loads(row["required"])
        signed = {s["field"] for s in json.loads(row["signatures"])}
        fields = [r["field"] for r in required if r["role"] == "party" and r["signer_id"] == box]
        if not fields or not all(f in signed for f in fields):
            continue  # not (yet) signed by the party itself: a refusal is no consent
        delivery = data.get("delivery") or {}
        address = str(delivery.get("address", "")).strip()
        channel = str(delivery.get("channel", "")).strip() or guess_channel(address)
        if not str(delivery.get("agreed", "")).startswith("同意") or not address:
            return Refusal.BAD_CONSENT
        if channel not in CHANNELS:
            return Refusal.BAD_CONSENT
        return {
            "id": row["id"],
            "number": row["number"],
            "sha256": row["sha256"],
            "channel": channel,
            "address": address,
        }
    return Refusal.NO_CONSENT


def guess_channel(address: str) -> str:
    if re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", address):
        return "email"
    if re.fullmatch(r"\+?\d[\d -]{6,20}", address):
        return "sms"
    return ""


def begin(
    conn: sqlite3.Connection,
    who: Officer,
    case_id: int,
    document_id: int,
    party_id: int,
    provider: str,
) -> dict[str, Any] | Refusal:
    """A delivery row in state ``sending``, after every check (consent first)."""
    doc = conn.execute(
        "SELECT * FROM documents WHERE id = ? AND case_id = ?", (document_id, case_id)
    ).fetchone()
    if doc is None:
        return Refusal.NO_DOCUMENT
    if doc["kind"] in ("delivery_receipt", "delivery_consent"):
        return Refusal.RECEIPT
    signed = {sig["field"] for sig in json.loads(doc["signatures"])}
    if any(r["field"] not in signed and not r.get("refused") for r in json.loads(doc["required"])):
        return Refusal.NOT_EFFECTIVE
    party = conn.execute(
        "SELECT id FROM parties WHERE id = ? AND case_id = ?", (party_id, case_id)
    ).fetchone()
    if party is None:
        return Refusal.NO_PARTY
    consent = consent_for(conn, case_id, party_id)
    if isinstance(consent, Refusal):
        return consent
    now = now_iso()
    cursor = conn.execute(
        "INSERT INTO deliveries (case_id, document_id, party_id, consent_id, kind, "
        "document_number, document_sha256, document_revision, channel, provider, address, "
        "status, officer_id, created_by, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'sending', ?, ?, ?)",
        (
            case_id,
            document_id,
            party_id,
            consent["id"],
            doc["kind"],
            doc["number"],
            doc["sha256"],
            doc["revision"],
            consent["channel"],
            provider,
            consent["address"],
            who.id,
            who.actor,
            now,
        ),
    )
    assert cursor.lastrowid is not None
    row = get(conn, case_id, cursor.lastrowid)
    assert not isinstance(row, Refusal)
    return row | {"consent_number": consent["number"]}


def finish_send(
    conn: sqlite3.Connection, actor: str, delivery_id: int, reference: str, failure: str
) -> tuple[dict[str, Any], bool]:
    """Sent (the delivery date is this moment, 157号令 art.56) or failed, and audited: the row,
    and whether the answer came late.

    Only a delivery still ``sending`` takes its outcome. One already marked failed
    (:func:`abandon_stale`: past any live answer, and the officer may be delivering by post
    since) keeps that: never sent, no delivery date; what the provider said is kept in the
    audit trail (``delivery.late_answer``), so that a party that did get the notice can be
    explained."""
    now = now_iso()
    if failure:
        taken = conn.execute(
            "UPDATE deliveries SET status = 'failed', failure = ? "
            "WHERE id = ? AND status = 'sending'",
            (failure, delivery_id),
        ).rowcount
    else:
        taken = conn.execute(
            "UPDATE deliveries SET status = 'sent', provider_ref = ?, sent_at = ? "
            "WHERE id = ? AND status = 'sending'",
            (reference, now, delivery_id),
        ).rowcount
    row = conn.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
    late = not taken
    more = {"reference": reference, "provider_failure": failure} if late else {}
    audit(
        conn,
        actor,
        "delivery.late_answer" if late else "delivery.failed" if failure else "delivery.sent",
        f"delivery:{delivery_id}",
        row["case_id"],
        late_answer(reference, failure) if late else failure,
        document=row["document_id"],
        sha256=row["document_sha256"],
        channel=row["channel"],
        provider=row["provider"],
        **more,
    )
    return public(conn, row), late


def late_answer(reference: str, failure: str) -> str:
    """What the audit trail says of a provider's answer to a delivery already marked failed."""
    zh = (
        f"服务商报告失败：{failure}"
        if failure
        else f"服务商报告已发出（回执：{reference or '无'}）"
    )
    en = (
        f"the provider reported a failure: {failure}"
        if failure
        else f"the provider reported it sent (reference: {reference or 'none'})"
    )
    return (
        f"送达已标记为失败后服务商才回复，{zh}；仍视为未送达，请按补救送达办理 / the provider "
        f"answered after the delivery was marked failed, {en}; it stays not delivered: the "
        "fallback (post, public notice) stands"
    )


def abandon_stale(
    conn: sqlite3.Connection, started_before: str | None, case_id: int | None = None
) -> list[dict[str, Any]]:
    """Deliveries a server left ``sending`` (it was killed mid-provider, or its outcome write
    did not finish before it stopped: ``outcomes.OutcomeWriter.close``), begun before
    ``started_before`` (an ISO time; None: all of them, at the start of the only server on the
    database), of ``case_id`` only when given: marked ``failed`` with :data:`INTERRUPTED` and
    audited by ``server``, so that the fallback (post, public notice) opens and the officer sees
    it. The rows, for the custody log."""
    query = "SELECT id FROM deliveries WHERE status = 'sending'"
    args: list[Any] = []
    if started_before is not None:
        query += " AND created_at < ?"
        args.append(started_before)
    if case_id is not None:
        query += " AND case_id = ?"
        args.append(case_id)
    out = []
    for (delivery_id,) in conn.execute(query, args).fetchall():
        if not conn.execute(
            "UPDATE deliveries SET status = 'failed', failure = ? "
            "WHERE id = ? AND status = 'sending'",
            (INTERRUPTED, delivery_id),
        ).rowcount:
            continue
        row = conn.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        audit(
            conn,
            "server",
            "delivery.failed",
            f"delivery:{delivery_id}",
            row["case_id"],
            INTERRUPTED,
            document=row["document_id"],
            sha256=row["document_sha256"],
            channel=row["channel"],
            provider=row["provider"],
        )
        out.append(public(conn, row))
    return out


def public(conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out.pop("officer_id", None)
    fallbacks = [
        dict(f)
        for f in conn.execute(
            "SELECT * FROM delivery_fallbacks WHERE delivery_id = ? ORDER BY id", (row["id"],)
        ).fetchall()
    ]
    out["fallbacks"] = fallbacks
    out["delivered_on"] = None
    if row["status"] == "sent" and row["sent_at"] and not row["refused_at"]:
        # a refused one delivered nothing: its fallback (below) delivers
        out["delivered_on"] = china_date(row["sent_at"]).isoformat()
    if row["status"] == "failed" or row["refused_at"]:
        done = {f["action"] for f in fallbacks}
        out["fallback"] = {
            "needed": True,
            "next": None
            if "public_notice" in done
            else "public_notice"
            if "post" in done
            else "post",
            "message": "电子送达未成功：先邮寄送达，邮寄不成的公告送达，公告六十日视为送达 / "
            "electronic delivery did not succeed: deliver by post; failing that, by public "
            "notice (delivered when sixty days have passed)",
        }
        for f in fallbacks:
            if f["action"] == "public_notice":
                out["delivered_on"] = f["notice_ends"]
            elif f["action"] == "post" and out["delivered_on"] is None:
                out["delivered_on"] = f["done_on"]
    else:
        out["fallback"] = {"needed": False}
    return out


def delivered_at(conn: sqlite3.Connection, row: sqlite3.Row, today: date) -> str | None:
    """When ``row`` delivered its document (UTC ISO), or None while it has not: the sent time
    of an electronic delivery the party did not refuse (157号 art.56); for a failed or refused
    one, the first moment (Beijing time) of its fallback's day, the post's or the end of the
    public notice, once ``today`` has reached it (art.55). The periods a delivery starts
    (``control/deadlines``, the penalty's notification) all count from this."""
    if row["status"] == "sent" and row["sent_at"] and not row["refused_at"]:
        return str(row["sent_at"])
    on = public(conn, row)["delivered_on"]
    if on is None or date.fromisoformat(on) > today:
        return None
    day = date.fromisoformat(on)
    return datetime(day.year, day.month, day.day, tzinfo=CHINA).astimezone(UTC).isoformat()


def get(conn: sqlite3.Connection, case_id: int, delivery_id: int) -> dict[str, Any] | Refusal:
    row = conn.execute(
        "SELECT * FROM deliveries WHERE id = ? AND case_id = ?", (delivery_id, case_id)
    ).fetchone()
    return Refusal.NO_DELIVERY if row is None else public(conn, row)


def listing(conn: sqlite3.Connection, case_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT * FROM deliveries WHERE case_id = ? ORDER BY id", (case_id,)
    ).fetchall()
    return [public(conn, r) for r in rows]


def for_party(conn: sqlite3.Connection, caller: PartyCaller) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT * FROM deliveries WHERE case_id = ? AND party_id = ? AND status = 'sent' "
        "ORDER BY id",
        (caller.case_id, caller.party_id),
    ).fetchall()
    return [_party_view(conn, r) for r in rows]


def _party_view(conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    keys = (
        "id",
        "document_id",
        "kind",
        "document_number",
        "document_sha256",
        "channel",
        "address",
        "sent_at",
        "opened_at",
        "acknowledged_at",
        "refused_at",
        "receipt_id",
    )
    return {k: row[k] for k in keys}


def party_step(
    conn: sqlite3.Connection, caller: PartyCaller, delivery_id: int, step: str, reason: str = ""
) -> tuple[dict[str, Any], bool] | Refusal:
    """The party opens, acknowledges or refuses its own delivery: the row, and whether this
    call changed it (``opened`` is kept the first time only)."""
    row = conn.execute(
        "SELECT * FROM deliveries WHERE id = ? AND case_id = ? AND party_id = ?",
        (delivery_id, caller.case_id, caller.party_id),
    ).fetchone()
    if row is None:
        return Refusal.NO_DELIVERY
    if row["status"] != "sent":
        return Refusal.NOT_SENT
    now = now_iso()
    changed = True
    if step == "open":
        changed = row["opened_at"] is None
        if changed:
            conn.execute("UPDATE deliveries SET opened_at = ? WHERE id = ?", (now, delivery_id))
            audit(conn, caller.actor, "delivery.opened", f"delivery:{delivery_id}", row["case_id"])
    else:
        if step == "acknowledge" and row["acknowledged_at"] is not None:
            if row["receipt_id"] is None:  # acknowledged, the receipt not made: make it now
                return public(conn, row), True
            return Refusal.ANSWERED
        if row["acknowledged_at"] is not None or row["refused_at"] is not None:
            return Refusal.ANSWERED
        if step == "acknowledge":
            if row["opened_at"] is None:
                return Refusal.NOT_OPENED
            conn.execute(
                "UPDATE deliveries SET acknowledged_at = ? WHERE id = ?", (now, delivery_id)
            )
        else:
            conn.execute(
                "UPDATE deliveries SET refused_at = ?, refusal = ? WHERE id = ?",
                (now, reason, delivery_id),
            )
        audit(
            conn,
            caller.actor,
            "delivery.acknowledged" if step == "acknowledge" else "delivery.refused",
            f"delivery:{delivery_id}",
            row["case_id"],
            reason,
        )
    out = conn.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
    return public(conn, out), changed


def set_receipt(conn: sqlite3.Connection, delivery_id: int, receipt_id: int) -> dict[str, Any]:
    conn.execute("UPDATE deliveries SET receipt_id = ? WHERE id = ?", (receipt_id, delivery_id))
    return public(
        conn, conn.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
    )


def officer_of(conn: sqlite3.Connection, delivery_id: int) -> Officer:
    row = conn.execute(
        "SELECT o.id, o.username, o.role, o.brigade FROM deliveries d "
        "JOIN officers o ON o.id = d.officer_id WHERE d.id = ?",
        (delivery_id,),
    ).fetchone()
    return Officer(row["id"], row["username"], row["role"], row["brigade"])


def add_fallback(
    conn: sqlite3.Connection,
    who: Officer,
    case_id: int,
    delivery_id: int,
    action: str,
    reference: str,
    note: str,
    done_on: date,
    notice_days: int,
) -> dict[str, Any] | Refusal:
    row = conn.execute(
        "SELECT * FROM deliveries WHERE id = ? AND case_id = ?", (delivery_id, case_id)
    ).fetchone()
    if row is None:
        return Refusal.NO_DELIVERY
    if row["status"] != "failed" and row["refused_at"] is None:
        return Refusal.NOT_FAILED
    done = {
        r["action"]
        for r in conn.execute(
            "SELECT action FROM delivery_fallbacks WHERE delivery_id = ?", (delivery_id,)
        ).fetchall()
    }
    if action == "public_notice" and "post" not in done:
        return Refusal.POST_FIRST
    # (a public notice dated back would have its sixty days already run)
    if not china_date(row["created_at"]) <= done_on <= china_today():
        return Refusal.BAD_DAY
    ends = (
        (done_on + timedelta(days=notice_days)).isoformat() if action == "public_notice" else None
    )
    conn.execute(
        "INSERT INTO delivery_fallbacks (delivery_id, action, reference, note, done_on, "
        "notice_ends, recorded_by, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (delivery_id, action, reference, note, done_on.isoformat(), ends, who.actor, now_iso()),
    )
    audit(
        conn,
        who.actor,
        "delivery.fallback",
        f"delivery:{delivery_id}",
        case_id,
        note,
        fallback=action,
        reference=reference,
        done_on=done_on.isoformat(),
    )
    return public(
        conn, conn.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
    )


def receipt_data(
    conn: sqlite3.Connection, base: dict[str, Any], delivery: dict[str, Any], titles: dict[str, str]
) -> dict[str, Any]:
    """The receipt's data: ``base`` (the case's, from documents.store.base_data) narrowed to
    the recipient, with the delivery's trail in ``delivery``."""
    doc = conn.execute(
        "SELECT kind, number FROM documents WHERE id = ?", (delivery["document_id"],)
    ).fetchone()
    consent = conn.execute(
        "SELECT number FROM documents WHERE id = ?", (delivery["consent_id"],)
    ).fetchone()
    data = dict(base)
    data["parties"] = [p for p in base["parties"] if p["party"] == delivery["party_id"]]
    data["delivery"] = {
        "document_title": titles.get(doc["kind"], doc["kind"]),
        "document_number": doc["number"],
        "document_sha256": delivery["document_sha256"],
        "channel": CHANNEL_NAMES.get(delivery["channel"], delivery["channel"]),
        "address": delivery["address"],
        "consent_number": consent["number"],
        "sent_at": china_time(delivery["sent_at"]),
        "opened_at": china_time(delivery["opened_at"]),
        "acknowledged_at": china_time(delivery["acknowledged_at"]),
        "delivery_id": delivery["id"],
    }
    return data
