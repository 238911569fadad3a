"""Each company receives its attendance record (issue 17's "done when"): SQL over one
connection (results or a :class:`SendRefusal` out; the sending itself is in :mod:`.api`).

An attendance record is a notification to a company, not a legal document served on a party:
no 送达地址确认书 is needed, and the company's address is the one on the roster
(``edu_companies.contact``: an e-mail address or a mobile number). The notice goes through the
delivery's channels (``control/delivery/channels.py``: the outbox, the SMS gateway, SMTP) and
carries a link to the company download page, ``/company-record#t=<token>``: the token is random
(32 bytes), kept only as its SHA-256 (``edu_sends.token_sha256``), scoped to that one record,
valid for ``education.record_link_days`` days, and dead once the record is sent again (the new
send revokes the old). It sits after ``#``, so it never reaches a log or a Referer: the page
posts it to the API.

Every visit of the link is a row of ``edu_send_visits`` (opened: the page read the record's
facts; downloaded: the PDF fetched), the first of each kind a time on the send's row and an
entry of the custody log (``education.record_opened`` / ``education.record_downloaded``).
"""

from __future__ import annotations

import datetime
import sqlite3
from typing import Any

from ..access import audit, find_case
from ..auth import Officer, now_iso
from ..auth import token_hash as auth_token_hash
from ..delivery.outcomes import stale_after as stale_after  # shared with deliveries
from ..refusals import CodedRefusal
from .roster import contact_channel

COMPANY_PAGE = "/company-record"
TOKEN_BYTES = 32
# why a send ended without the provider's answer: its request was cancelled (the server
# stopping, the request dropped), or the server died and a later one found it still ``sending``
INTERRUPTED = (
    "发送中断（服务器停止或请求中止）：未确认企业是否收到，链接不可用，请重新发送 / the send was "
    "interrupted (the server stopped or the request was dropped) before the provider answered: "
    "whether the company got it is not known and its link does not open: send again"
)
ABANDONED = (
    "发送未完成（服务器在发送中停止）：未确认企业是否收到，链接不可用，请重新发送 / the send never "
    "finished (the server stopped while sending): whether the company got it is not known and "
    "its link does not open: send again"
)


class SendRefusal(CodedRefusal):
    NO_CASE = ("not_found", "没有该案件 / no such case")
    NO_SESSION = ("not_found", "本案没有该场次 / no such session in this case")
    NO_RECORDS = (
        "no_records",
        "本场次尚未生成企业学习记录，请先生成记录 / the session has no company records yet: "
        "make the records first",
    )
    NO_LINK = ("not_found", "链接无效 / no such link")
    REVOKED = (
        "link_revoked",
        "此链接已作废：记录已重新发送，请使用最新收到的链接 / this link was revoked: the record "
        "was sent again, use the newest link received",
    )
    EXPIRED = (
        "link_expired",
        "此链接已过期，请联系发送记录的交警大队重新发送 / this link has expired: ask the "
        "brigade that sent the record to send it again",
    )


def token_hash(token: str) -> str:
    """A company token's SHA-256 (:func:`control.auth.token_hash`: never raises; the API
    refuses a token that is not ASCII before it gets here)."""
    return auth_token_hash(token)


def _session(
    conn: sqlite3.Connection, officer: Officer, case_id: int, session_id: int
) -> dict[str, Any] | SendRefusal:
    case = find_case(conn, officer, case_id)
    if case is None:
        return SendRefusal.NO_CASE
    if not conn.execute(
        "SELECT 1 FROM sessions WHERE id = ? AND case_id = ?", (session_id, case_id)
    ).fetchone():
        return SendRefusal.NO_SESSION
    return case


def company_records(
    conn: sqlite3.Connection, session_id: int, company_ids: list[int] | None = None
) -> list[dict[str, Any]]:
    """The newest attendance record of each company of the session, with the company's name
    and address, in the companies' order."""
    found = [
        dict(r)
        for r in conn.execute(
            "SELECT r.id AS record_id, r.number, r.sha256, r.case_id, r.session_id, "
            "c.id AS company_id, c.name AS company, c.contact FROM edu_records r "
            "JOIN edu_companies c ON c.id = r.company_id "
            "WHERE r.session_id = ? AND r.kind = 'education_attendance' AND r.party_id IS NULL "
            "AND r.id = (SELECT MAX(id) FROM edu_records x WHERE x.session_id = r.session_id "
            "AND x.kind = r.kind AND x.company_id = r.company_id AND x.party_id IS NULL) "
            "ORDER BY c.name, c.id",
            (session_id,),
        )
    ]
    if company_ids is not None:
        found = [r for r in found if r["company_id"] in company_ids]
    return found


def plan(
    conn: sqlite3.Connection,
    officer: Officer,
    case_id: int,
    session_id: int,
    company_ids: list[int] | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]] | SendRefusal:
    """What a send covers: the case (with its course's ``topic``, else its title) and the
    companies' newest records (all, or those of ``company_ids``)."""
    case = _session(conn, officer, case_id, session_id)
    if isinstance(case, SendRefusal):
        return case
    found = company_records(conn, session_id, company_ids)
    if not found:
        return SendRefusal.NO_RECORDS
    course = conn.execute("SELECT topic FROM edu_courses WHERE case_id = ?", (case_id,)).fetchone()
    return {**case, "topic": course["topic"] if course else case["title"]}, found


def begin(
    conn: sqlite3.Connection,
    *,
    officer: Officer,
    item: dict[str, Any],
    token: str,
    days: int,
    provider: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A new send of ``item``'s record to its company's address (status ``sending``): (the
    send, no sends revoked). The company's earlier links are revoked only once this one has
    gone out (:func:`finish`): a send that fails leaves the company the link it has."""
    now = now_iso()
    revoked: list[dict[str, Any]] = []
    expires = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)).isoformat(
        timespec="seconds"
    )
    contact = str(item["contact"])
    cursor = conn.execute(
        "INSERT INTO edu_sends (record_id, case_id, session_id, company_id, channel, provider, "
        "address, token_sha256, expires_at, status, sent_by, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'sending', ?, ?)",
        (
            item["record_id"],
            item["case_id"],
            item["session_id"],
            item["company_id"],
            contact_channel(contact),
            provider,
            contact,
            token_hash(token),
            expires,
            officer.actor,
            now,
        ),
    )
    assert cursor.lastrowid is not None
    return send_row(conn, cursor.lastrowid), revoked


def finish(
    conn: sqlite3.Connection, *, actor: str, send_id: int, reference: str, failure: str
) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    """The send's outcome: (the send, the company's earlier links revoked by it, only when it
    went out, whether the answer came late).

    Only a send still ``sending`` takes its outcome. One already marked failed
    (:func:`abandon_stale`: its provider was past any live answer, and the officer may have sent
    again since) keeps that: its link never opens and nothing of the company's is revoked
    (the link of a newer send stays live); what the provider said late is kept in the audit
    trail (``education.record_send_late_answer``), so that a company that did get the notice
    can be explained."""
    revoked: list[dict[str, Any]] = []
    now = now_iso()
    if failure:
        taken = conn.execute(
            "UPDATE edu_sends SET status = 'failed', failure = ? "
            "WHERE id = ? AND status = 'sending'",
            (failure, send_id),
        ).rowcount
    else:
        taken = conn.execute(
            "UPDATE edu_sends SET status = 'sent', reference = ?, sent_at = ? "
            "WHERE id = ? AND status = 'sending'",
            (reference, now, send_id),
        ).rowcount
    if taken and not failure:
        this = conn.execute(
            "SELECT session_id, company_id FROM edu_sends WHERE id = ?", (send_id,)
        ).fetchone()
        for (old,) in conn.execute(
            "SELECT id FROM edu_sends WHERE session_id = ? AND company_id = ? AND id != ? "
            "AND revoked_at IS NULL AND status != 'failed'",
            (this["session_id"], this["company_id"], send_id),
        ).fetchall():
            conn.execute(
                "UPDATE edu_sends SET revoked_at = ?, revoked_by = ? WHERE id = ?",
                (now, actor, old),
            )
            revoked.append(send_row(conn, old))
    row = send_row(conn, send_id)
    late = not taken
    if late:
        action = "education.record_send_late_answer"
        said = late_answer(reference, failure)
    else:
        action = "education.record_send_failed" if failure else "education.record_sent"
        said = failure
    audit(
        conn,
        actor,
        action,
        f"edu_send:{send_id}",
        int(row["case_id"]),
        said,
        record=row["record_id"],
        company=row["company_id"],
        channel=row["channel"],
        address=row["address"],
        **({"reference": reference, "provider_failure": failure} if late else {}),
    )
    return row, revoked, late


def late_answer(reference: str, failure: str) -> str:
    """What the audit trail says of a provider's answer to a send already marked failed."""
    receipt = reference or "无"
    zh = f"服务商报告失败：{failure}" if failure else f"服务商报告已发出（回执：{receipt}）"
    en = (
        f"the provider reported a failure: {failure}"
        if failure
        else f"the provider reported it sent (reference: {reference or 'none'})"
    )
    return (
        f"发送已标记为失败后服务商才回复，{zh}；记录仍为失败，链接不可用，未撤销任何链接 / the "
        f"provider answered after the send was marked failed, {en}; it stays failed, its link "
        "does not open and no link was revoked"
    )


def abandon_stale(conn: sqlite3.Connection, started_before: str | None) -> list[dict[str, Any]]:
    """Sends left ``sending`` by a server that stopped mid-send (created before
    ``started_before``, an ISO time; None: all of them, at the start of the only server on the
    database) marked failed (:data:`ABANDONED`), audited: the rows, so that the officer sees
    them failed and can send again rather than wait for ever."""
    rows = conn.execute(
        "SELECT id FROM edu_sends WHERE status = 'sending'"
        + ("" if started_before is None else " AND created_at < ?"),
        () if started_before is None else (started_before,),
    ).fetchall()
    out = []
    for (send_id,) in rows:
        if not conn.execute(
            "UPDATE edu_sends SET status = 'failed', failure = ? "
            "WHERE id = ? AND status = 'sending'",
            (ABANDONED, send_id),
        ).rowcount:
            continue
        row = send_row(conn, send_id)
        audit(
            conn,
            "server",
            "education.record_send_failed",
            f"edu_send:{send_id}",
            int(row["case_id"]),
            ABANDONED,
            record=row["record_id"],
            company=row["company_id"],
            channel=row["channel"],
            address=row["address"],
        )
        out.append(row)
    return out


def send_row(conn: sqlite3.Connection, send_id: int) -> dict[str, Any]:
    return dict(
        conn.execute(
            "SELECT s.*, r.number, r.sha256, c.name AS company FROM edu_sends s "
            "JOIN edu_records r ON r.id = s.record_id "
            "JOIN edu_companies c ON c.id = s.company_id WHERE s.id = ?",
            (send_id,),
        ).fetchone()
    )


def state_of(item: dict[str, Any], send: dict[str, Any] | None) -> str:
    """no_address, not_sent, sending, failed, sent, opened, downloaded, expired (sent, never
    opened, and its link has run out) or revoked."""
    if send is None:
        return "not_sent" if item["contact"] else "no_address"
    if send["status"] != "sent":
        return str(send["status"])
    if send["revoked_at"]:
        return "revoked"
    if send["downloaded_at"]:
        return "downloaded"
    if send["opened_at"]:
        return "opened"
    if datetime.datetime.fromisoformat(send["expires_at"]) <= datetime.datetime.now(datetime.UTC):
        return "expired"
    return "sent"


def public_send(send: dict[str, Any]) -> dict[str, Any]:
    """A send as the console shows it (never the token's hash)."""
    keys = (
        "id", "channel", "provider", "address", "status", "failure", "sent_at", "opened_at",
        "downloaded_at", "revoked_at", "expires_at", "sent_by",
    )  # fmt: skip
    return {k: send[k] for k in keys}


def overview(
    conn: sqlite3.Connection, officer: Officer, case_id: int, session_id: int
) -> list[dict[str, Any]] | SendRefusal:
    """Per company of the session: its newest record, address, newest send and state."""
    case = _session(conn, officer, case_id, session_id)
    if isinstance(case, SendRefusal):
        return case
    out = []
    for item in company_records(conn, session_id):
        latest = conn.execute(
            "SELECT * FROM edu_sends WHERE session_id = ? AND company_id = ? "
            "ORDER BY id DESC LIMIT 1",
            (session_id, item["company_id"]),
        ).fetchone()
        send = dict(latest) if latest else None
        visits = 0
        if send is not None:
            visits = conn.execute(
                "SELECT COUNT(*) FROM edu_send_visits WHERE send_id = ?", (send["id"],)
            ).fetchone()[0]
        out.append(
            {
                "company_id": item["company_id"],
                "company": item["company"],
                "contact": item["contact"],
                "record_id": item["record_id"],
                "number": item["number"],
                "sha256": item["sha256"],
                "state": state_of(item, send),
                "send": None
                if send is None
                else public_send(send)
                | {
                    "visits": visits,
                    # the records were made again since: this company has an older one
                    "superseded": send["record_id"] != item["record_id"],
                },
            }
        )
    return out


def live_send(conn: sqlite3.Connection, token: str) -> dict[str, Any] | SendRefusal:
    """The send a company's token opens (with its record's row as ``record``), or why none:
    unknown (or never sent), revoked, expired."""
    row = conn.execute(
        "SELECT id, status, revoked_at, expires_at, record_id FROM edu_sends "
        "WHERE token_sha256 = ?",
        (token_hash(token),),
    ).fetchone()
    if row is None or row["status"] != "sent":
        return SendRefusal.NO_LINK
    if row["revoked_at"]:
        return SendRefusal.REVOKED
    if datetime.datetime.fromisoformat(row["expires_at"]) <= datetime.datetime.now(datetime.UTC):
        return SendRefusal.EXPIRED
    found = dict(row)
    record = conn.execute("SELECT * FROM edu_records WHERE id = ?", (row["record_id"],))
    found["record"] = dict(record.fetchone())
    return found


def visit(
    conn: sqlite3.Connection, token: str, kind: str, remote: str
) -> tuple[dict[str, Any], bool] | SendRefusal:
    """The send a company's token opens, the visit recorded: (the send, whether it is the
    first visit of this kind). Unknown, revoked and expired tokens are refused (nothing
    recorded: they open nothing)."""
    row = live_send(conn, token)
    if isinstance(row, SendRefusal):
        return row
    now = now_iso()
    conn.execute(
        "INSERT INTO edu_send_visits (send_id, kind, remote, at) VALUES (?, ?, ?, ?)",
        (row["id"], kind, remote, now),
    )
    column = "opened_at" if kind == "opened" else "downloaded_at"
    first = (
        conn.execute(
            f"UPDATE edu_sends SET {column} = ? WHERE id = ? AND {column} IS NULL",
            (now, row["id"]),
        ).rowcount
        == 1
    )
    if kind == "downloaded":  # a download reads the record: it was opened, by any account
        conn.execute(
            "UPDATE edu_sends SET opened_at = ? WHERE id = ? AND opened_at IS NULL",
            (now, row["id"]),
        )
    send = send_row(conn, int(row["id"]))
    if first:
        audit(
            conn,
            f"company-link:{send['id']}",
            f"education.record_{kind}",
            f"edu_send:{send['id']}",
            int(send["case_id"]),
            record=send["record_id"],
            company=send["company_id"],
            address=send["address"],
            remote=remote,
        )
    return send, first


def page_facts(conn: sqlite3.Connection, send: dict[str, Any]) -> dict[str, Any]:
    """What the company page shows: the record, who sent it, how to check it."""
    row = conn.execute(
        "SELECT r.kind, r.created_at, c.brigade, c.title, s.opened_at, s.ended_at, "
        "co.topic FROM edu_records r JOIN cases c ON c.id = r.case_id "
        "JOIN sessions s ON s.id = r.session_id "
        "LEFT JOIN edu_courses co ON co.case_id = r.case_id WHERE r.id = ?",
        (send["record_id"],),
    ).fetchone()
    return {
        "company": send["company"],
        "number": send["number"],
        "sha256": send["sha256"],
        "brigade": row["brigade"],
        "topic": row["topic"] or row["title"],
        "session_started": row["opened_at"],
        "session_ended": row["ended_at"],
        "made_at": row["created_at"],
        "sent_at": send["sent_at"],
        "address": send["address"],
        "expires_at": send["expires_at"],
        "root_certificate": "/api/ca/root",
        "verify_command": "remotecase documents verify record.pdf --trust ca-root.pem",
    }
