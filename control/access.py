"""Who is calling, and what they may touch: the one place the HTTP APIs check access.

* Officers log in (``POST /api/login``) and send ``Authorization: Bearer <login token>``; an
  officer touches the cases of their brigade, a supervisor every case. Another brigade's case
  answers 404, as an absent one does: IDs reveal nothing. An observer (an auditor) reads its
  brigade's cases and custody records but changes nothing and downloads no evidence (403).
* A party has no account. It calls with the token of its invitation link (before the call) or
  the signalling token that redeeming the link gave (during it); either binds one party of one
  case, and a party reaches nothing else.
* Joining a call (:func:`admission`): a case call's signalling token names a grant (a row of
  ``call_grants``) for one participant of one session. Every join is checked against the
  database at the moment it happens: the case open, the session open, the grant not revoked
  (removal revokes it), the invitation it came from not revoked, the officer's login it came
  from not logged out or expired. Tokens without a grant join only in development mode, and
  only rooms outside every session or of an open one.

Every state change goes into the audit trail (:func:`audit`) with actor, time and reason.
"""

from __future__ import annotations

import hmac
import json
import secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .appkeys import CONFIG, DB, SIGNER
from .auth import Officer, now_iso, officer_for, retry_after, token_hash
from .http.jsonio import json_error
from .refusals import Refusal
from .sessions.tokens import Grant, TokenError


@dataclass(frozen=True)
class PartyCaller:
    party_id: int
    case_id: int
    name: str
    via: str  # "invitation" | "call"

    @property
    def actor(self) -> str:
        return f"party:{self.party_id}"


def text(body: dict[str, Any], key: str, *, max_len: int = 200, required: bool = True) -> str:
    value = body.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > max_len:
        raise json_error(
            web.HTTPBadRequest, "bad_request", key="bad_request.text", field=key, max_len=max_len
        )
    return value.strip()


def audit(
    conn: sqlite3.Connection,
    actor: str,
    action: str,
    obj: str,
    case_id: int | None,
    reason: str = "",
    **detail: Any,
) -> None:
    conn.execute(
        "INSERT INTO audit (time, actor, action, object, case_id, reason, detail) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (now_iso(), actor, action, obj, case_id, reason, json.dumps(detail, sort_keys=True)),
    )


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise json_error(web.HTTPUnauthorized, "unauthorized", detail="no_token")
    token = header[len("Bearer ") :].strip()
    if not token.isascii():
        # no token of ours (logins, links and call tokens are base64url); a header's bytes
        # that are not UTF-8 arrive as lone surrogates, which would not even hash
        raise json_error(web.HTTPUnauthorized, "unauthorized", detail="bad_token")
    return token


# what an observer may not do although it is a GET: take the evidence itself away
CONTENT_READS = ("/content", "/media", "/exports/")


def _content_read(path: str) -> bool:
    """A read of evidence content: a path ending in /content or /media, or a file under
    /exports/ (whole segments: /api/cases/1/mediations is no /media)."""
    return any(
        path.endswith(part) if not part.endswith("/") else part in path for part in CONTENT_READS
    )


async def officer(request: web.Request) -> Officer:
    """The logged-in account. Observers read (not the evidence's content) and change nothing."""
    token = bearer(request)
    found = await request.app[DB].run(lambda c: officer_for(c, token))
    if found is None:
        raise json_error(web.HTTPUnauthorized, "unauthorized", detail="login_invalid")
    if (
        found.role == "observer"
        and request.path != "/api/logout"
        and (request.method not in ("GET", "HEAD") or _content_read(request.path))
    ):
        raise json_error(
            web.HTTPForbidden,
            "forbidden",
            detail="observer",
        )
    return found


# the party page's device secret (control/sessions/invitations.py binds a link to it when the
# page redeems it); sent with every request the page makes with the link itself
DEVICE_HEADER = "X-Remotecase-Device"
DEVICE_MIN, DEVICE_MAX = 22, 100  # the page's secret: at least 128 bits in base64url


def device_secret(request: web.Request) -> str | None:
    """The party page's device secret (:data:`DEVICE_HEADER`), None when not sent; one that is
    not ASCII (no page makes one: base64url) is refused, 400."""
    device = request.headers.get(DEVICE_HEADER) or None
    if device is not None and not device.isascii():
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            key="bad_request.device",
            field=DEVICE_HEADER,
            min=DEVICE_MIN,
            max=DEVICE_MAX,
        )
    return device


async def party(request: web.Request) -> PartyCaller:
    """The party an invitation token or a party's signalling token stands for."""
    token = bearer(request)
    if token.startswith("v1."):
        try:
            grant = request.app[SIGNER].verify(token)
        except TokenError as exc:
            raise json_error(web.HTTPUnauthorized, exc.code, exc.message) from None
        if (
            grant.role != "party"
            or not grant.participant.startswith("party-")
            or not grant.participant[6:].isdigit()
        ):
            raise json_error(web.HTTPForbidden, "forbidden", detail="not_party_token")
        party_id = int(grant.participant[6:])
        if grant.grant_id is None and not request.app[CONFIG].auth.dev_join:
            raise json_error(web.HTTPUnauthorized, "not_admitted", REFUSALS["not_admitted"])

        def by_grant(conn: sqlite3.Connection) -> PartyCaller | None:
            row = conn.execute(
                "SELECT p.id, p.case_id, p.name FROM sessions s JOIN parties p "
                "ON p.case_id = s.case_id WHERE s.room = ? AND p.id = ?",
                (grant.room, party_id),
            ).fetchone()
            if row is not None and grant.grant_id is not None:
                # a call token from a removal, a revoked link or a readmission since (which
                # superseded its grant) reaches nothing any more
                live = conn.execute(
                    "SELECT 1 FROM call_grants g LEFT JOIN invitations i "
                    "ON i.id = g.invitation_id WHERE g.id = ? AND g.participant = ? "
                    "AND g.revoked_at IS NULL AND g.superseded_at IS NULL "
                    "AND i.revoked_at IS NULL",
                    (grant.grant_id, grant.participant),
                ).fetchone()
                if live is None:
                    return None
            return (
                None if row is None else PartyCaller(row["id"], row["case_id"], row["name"], "call")
            )

        caller = await request.app[DB].run(by_grant)
    else:
        device = device_secret(request) or ""

        def by_invitation(conn: sqlite3.Connection) -> PartyCaller | str | None:
            # joining uses a link once; until it expires or is revoked it still lets its party
            # book, upload and read its own things, from the device that used it only: a link
            # redeemed by a page (which binds it to its device secret) answers nothing to a
            # request without that secret, so a forwarded or overheard SMS reads nothing
            row = conn.execute(
                "SELECT p.id, p.case_id, p.name, i.device_hash FROM invitations i "
                "JOIN parties p ON p.id = i.party_id WHERE i.token_hash = ? "
                "AND i.revoked_at IS NULL AND i.expires_at > ?",
                (token_hash(token), time.time()),
            ).fetchone()
            if row is None:
                return None
            bound = row["device_hash"]
            if bound is not None and not (
                device and hmac.compare_digest(token_hash(device), bound)
            ):
                return "other_device"
            return PartyCaller(row["id"], row["case_id"], row["name"], "invitation")

        found = await request.app[DB].run(by_invitation)
        if found == "other_device":
            raise json_error(web.HTTPForbidden, "forbidden", detail="other_device")
        caller = found if isinstance(found, PartyCaller) else None
    if caller is None:
        raise json_error(web.HTTPUnauthorized, "unauthorized", detail="link_invalid")
    return caller


MAX_ID = (1 << 63) - 1  # SQLite's INTEGER


def id_value(value: object) -> int | None:
    """A row ID from JSON: an integer (not a boolean) that SQLite can hold, else None."""
    return value if type(value) is int and 0 < value <= MAX_ID else None


def path_int(request: web.Request, name: str, what: str) -> int:
    raw = request.match_info[name]
    value = id_value(int(raw)) if raw.isascii() and raw.isdigit() and len(raw) <= 19 else None
    if value is None:
        raise json_error(web.HTTPNotFound, "not_found", detail=f"no_{what}")
    return value


def case_id(request: web.Request) -> int:
    return path_int(request, "case", "case")


def require_open_case(conn: sqlite3.Connection, case: int) -> dict[str, Any] | Refusal:
    """The case's row while it is open, else :attr:`Refusal.CASE_CLOSED` (an absent case too).

    A party's link keeps working for reading its own things once a case is closed; it changes
    nothing there any more."""
    row = conn.execute("SELECT * FROM cases WHERE id = ?", (case,)).fetchone()
    if row is None or row["status"] != "open":
        return Refusal.CASE_CLOSED
    return dict(row)


def find_case(conn: sqlite3.Connection, who: Officer, case: int) -> dict[str, Any] | None:
    """The case's row, or None when there is none or it is another brigade's (the same: IDs
    reveal nothing)."""
    row = conn.execute("SELECT * FROM cases WHERE id = ?", (case,)).fetchone()
    if row is None or not who.may_touch(row["brigade"]):
        return None
    return dict(row)


def load_case(conn: sqlite3.Connection, who: Officer, case: int) -> dict[str, Any] | Refusal:
    """The case's row, or :attr:`Refusal.NO_CASE` when there is none or it is another
    brigade's (the handler answers 404 for both: IDs reveal nothing)."""
    found = find_case(conn, who, case)
    return Refusal.NO_CASE if found is None else found


def too_many(wait: float, zh: str, en: str) -> web.HTTPException:
    """429 with Retry-After, for a caller its failures have slowed (auth.Throttle)."""
    seconds = retry_after(wait)
    error = json_error(
        web.HTTPTooManyRequests,
        "rate_limited",
        f"{zh}，请 {seconds} 秒后再试 / {en}; try again in {seconds} s",
    )
    error.headers["Retry-After"] = retry_after(wait)
    return error


# -- call admission --------------------------------------------------------------------------
REFUSALS = {
    "not_admitted": "该令牌不是为开放的案件会话签发的 / the token was not issued for an open case "
    "session",
    "case_closed": "案件已结案 / the case is closed",
    "session_ended": "本次会话已结束 / the session has ended",
    "removed": "民警已将您移出本次会话 / an officer removed you from this session",
    "invitation_revoked": "邀请链接已被撤销 / the invitation was revoked",
    "logged_out": "民警已退出登录或登录已过期 / the officer has logged out or the login has "
    "expired",
    "superseded": "此链接已在本设备上重新打开，本次入会凭证已失效；请使用最新打开的页面 / the "
    "link was opened again on this device, so this earlier admission is no longer valid; use "
    "the page opened last",
    "identity_unchecked": "入会前须先完成身份核验（人脸核验，或由民警核验证件） / your "
    "identity must be checked before you join: the face check, or the "
    "officer's check of your identity document",
}


class CallRefused(Exception):
    """A join the case's state does not allow; ``code`` is one of :data:`REFUSALS`."""

    def __init__(self, code: str, case_id: int | None = None) -> None:
        super().__init__(REFUSALS[code])
        self.code = code
        self.message = REFUSALS[code]
        self.case_id = case_id  # for the case's audit trail, when the token named a case


@dataclass(frozen=True)
class CallAdmission:
    """What the session says about a join that may go ahead."""

    session_id: int | None  # None: a development room outside every case
    case_id: int | None
    locked: bool
    officer_muted: frozenset[str]  # kinds an officer muted for this participant


DEV_ROOM = CallAdmission(None, None, False, frozenset())


def _session_open(row: sqlite3.Row) -> None:
    if row["case_status"] != "open":
        raise CallRefused("case_closed", row["case_id"])
    if row["ended_at"] is not None:
        raise CallRefused("session_ended", row["case_id"])


def _admitted(row: sqlite3.Row, participant: str) -> CallAdmission:
    mutes = json.loads(row["officer_mutes"] or "{}").get(participant, [])
    return CallAdmission(row["session_id"], row["case_id"], bool(row["locked"]), frozenset(mutes))


def admission(
    conn: sqlite3.Connection,
    grant: Grant,
    *,
    dev_join: bool,
    now: float | None = None,
    prejoin_check: bool = False,
) -> CallAdmission:
    """May this token join now? Raises :class:`CallRefused` with the reason when it may not."""
    now = time.time() if now is None else now
    if grant.grant_id is None:
        if not dev_join:
            raise CallRefused("not_admitted")
        # development tokens name no grant: they reach rooms outside every case, and a case's
        # room only while its session is open (a bench drives one so)
        row = conn.execute(
            "SELECT s.id AS session_id, s.case_id, s.ended_at, s.locked, s.officer_mutes, "
            "c.status AS case_status FROM sessions s JOIN cases c ON c.id = s.case_id "
            "WHERE s.room = ?",
            (grant.room,),
        ).fetchone()
        if row is None:
            return DEV_ROOM
        _session_open(row)
        return _admitted(row, grant.participant)
    row = conn.execute(
        "SELECT g.participant, g.role, g.revoked_at, g.revoked_reason, g.superseded_at, "
        "g.invitation_id, "
        "g.login_hash, s.id AS session_id, s.case_id, s.room, s.ended_at, s.locked, "
        "s.officer_mutes, c.status AS case_status FROM call_grants g "
        "JOIN sessions s ON s.id = g.session_id JOIN cases c ON c.id = s.case_id "
        "WHERE g.id = ?",
        (grant.grant_id,),
    ).fetchone()
    if (
        row is None
        or row["room"] != grant.room
        or row["participant"] != grant.participant
        or row["role"] != grant.role
    ):
        raise CallRefused("not_admitted")
    _session_open(row)
    case = row["case_id"]
    if row["revoked_at"] is not None:
        reason = row["revoked_reason"]
        raise CallRefused(reason if reason in REFUSALS else "removed", case)
    if row["superseded_at"] is not None:
        raise CallRefused("superseded", case)
    if row["invitation_id"] is not None:
        invitation = conn.execute(
            "SELECT revoked_at FROM invitations WHERE id = ?", (row["invitation_id"],)
        ).fetchone()
        if invitation is None or invitation["revoked_at"] is not None:
            raise CallRefused("invitation_revoked", case)
    if row["login_hash"] is not None:
        login = conn.execute(
            "SELECT 1 FROM logins l JOIN officers o ON o.id = l.officer_id "
            "WHERE l.token_hash = ? AND l.revoked_at IS NULL AND l.expires_at > ? "
            "AND o.disabled = 0",
            (row["login_hash"], now),
        ).fetchone()
        if login is None:
            raise CallRefused("logged_out", case)
    # a party joins once its identity was checked before the call (control/verification/prejoin.py)
    if (
        prejoin_check
        and row["role"] == "party"
        and conn.execute(
            "SELECT 1 FROM prejoin_checks WHERE session_id = ? AND participant = ? AND status "
            "IN ('passed', 'admitted', 'attested')",
            (row["session_id"], grant.participant),
        ).fetchone()
        is None
    ):
        raise CallRefused("identity_unchecked", case)
    return _admitted(row, grant.participant)


def issue_grant(
    conn: sqlite3.Connection,
    session_id: int,
    participant: str,
    role: str,
    ttl: int,
    *,
    invitation_id: int | None = None,
    login_token: str | None = None,
) -> str:
    """A grant for one participant of an open session; its ID goes into the token's ``gid``."""
    grant_id = secrets.token_hex(16)
    conn.execute(
        "INSERT INTO call_grants (id, session_id, participant, role, invitation_id, "
        "login_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            grant_id,
            session_id,
            participant,
            role,
            invitation_id,
            None if login_token is None else token_hash(login_token),
            now_iso(),
            time.time() + ttl,
        ),
    )
    return grant_id


def revoke_grants(conn: sqlite3.Connection, session_id: int, participant: str, reason: str) -> int:
    """End every grant of a participant in a session (a removal): its tokens join no more."""
    cursor = conn.execute(
        "UPDATE call_grants SET revoked_at = ?, revoked_reason = ? WHERE session_id = ? "
        "AND participant = ? AND revoked_at IS NULL",
        (now_iso(), reason, session_id, participant),
    )
    return cursor.rowcount
