"""Who is calling, and what they may touch: the one place the HTTP APIs check access.

* Officers log in (``POST /api/login``) and send ``Authorization: Bearer <login token>``; an
  officer touches the cases of their brigade, a supervisor every case. Another brigade's case
  answers 404, as an absent one does: IDs reveal nothing. An observer (an auditor) reads its
  brigade's cases and custody records but changes nothing and downloads no evidence (403).
* A party has no account. It calls with the token of its invitation link (before the call) or
  the signalling token that redeeming the link gave (during it); either binds one party of one
  case, and a party reaches nothing else.

Every state change goes into the audit trail (:func:`audit`) with actor, time and reason.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .auth import Officer, Throttle, now_iso, officer_for, token_hash
from .db import Database
from .http_json import json_error
from .tokens import TokenError

DB = web.AppKey("db", Database)
LOGIN_LIMIT = web.AppKey("login_limit", Throttle)  # per user name (control/auth.py)
LOGIN_ADDRESS_LIMIT = web.AppKey("login_address_limit", Throttle)  # per client address
REDEEM_LIMIT = web.AppKey("redeem_limit", Throttle)


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
        raise json_error(web.HTTPBadRequest, "bad_request",
                         f"{key}: a string of 1-{max_len} characters")
    return value.strip()


def audit(conn: sqlite3.Connection, actor: str, action: str, obj: str,
          case_id: int | None, reason: str = "", **detail: Any) -> None:
    conn.execute("INSERT INTO audit (time, actor, action, object, case_id, reason, detail) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (now_iso(), actor, action, obj, case_id, reason,
                  json.dumps(detail, sort_keys=True)))


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise json_error(web.HTTPUnauthorized, "unauthorized", "log in first")
    return header[len("Bearer "):].strip()


# what an observer may not do although it is a GET: take the evidence itself away
CONTENT_READS = ("/content", "/media", "/exports/")


async def officer(request: web.Request) -> Officer:
    """The logged-in account. Observers read (not the evidence's content) and change nothing."""
    token = bearer(request)
    found = await request.app[DB].run(lambda c: officer_for(c, token))
    if found is None:
        raise json_error(web.HTTPUnauthorized, "unauthorized",
                         "the login is unknown, expired or logged out")
    if found.role == "observer" and request.path != "/api/logout" and (
            request.method not in ("GET", "HEAD")
            or any(part in request.path for part in CONTENT_READS)):
        raise json_error(web.HTTPForbidden, "forbidden",
                         "an observer reads cases and custody records and changes nothing")
    return found


async def party(request: web.Request) -> PartyCaller:
    """The party an invitation token or a party's signalling token stands for."""
    from .app import SIGNER

    token = bearer(request)
    if token.startswith("v1."):
        try:
            grant = request.app[SIGNER].verify(token)
        except TokenError as exc:
            raise json_error(web.HTTPUnauthorized, exc.code, exc.message) from None
        if grant.role != "party" or not grant.participant.startswith("party-") or \
                not grant.participant[6:].isdigit():
            raise json_error(web.HTTPForbidden, "forbidden", "not a party's token")
        party_id = int(grant.participant[6:])

        def by_grant(conn: sqlite3.Connection) -> PartyCaller | None:
            row = conn.execute(
                "SELECT p.id, p.case_id, p.name FROM sessions s JOIN parties p "
                "ON p.case_id = s.case_id WHERE s.room = ? AND p.id = ?",
                (grant.room, party_id)).fetchone()
            return None if row is None else PartyCaller(row["id"], row["case_id"],
                                                        row["name"], "call")

        caller = await request.app[DB].run(by_grant)
    else:
        def by_invitation(conn: sqlite3.Connection) -> PartyCaller | None:
            # joining uses a link once; until it expires or is revoked it still lets its party
            # book, upload and read its own things
            row = conn.execute(
                "SELECT p.id, p.case_id, p.name FROM invitations i JOIN parties p "
                "ON p.id = i.party_id WHERE i.token_hash = ? AND i.revoked_at IS NULL "
                "AND i.expires_at > ?", (token_hash(token), time.time())).fetchone()
            return None if row is None else PartyCaller(row["id"], row["case_id"],
                                                        row["name"], "invitation")

        caller = await request.app[DB].run(by_invitation)
    if caller is None:
        raise json_error(web.HTTPUnauthorized, "unauthorized",
                         "the link is unknown, expired or revoked")
    return caller


MAX_ID = (1 << 63) - 1  # SQLite's INTEGER


def id_value(value: object) -> int | None:
    """A row ID from JSON: an integer (not a boolean) that SQLite can hold, else None."""
    return value if type(value) is int and 0 < value <= MAX_ID else None


def path_int(request: web.Request, name: str, what: str) -> int:
    raw = request.match_info[name]
    value = id_value(int(raw)) if raw.isascii() and raw.isdigit() and len(raw) <= 19 else None
    if value is None:
        raise json_error(web.HTTPNotFound, "not_found", f"no such {what}")
    return value


def case_id(request: web.Request) -> int:
    return path_int(request, "case", "case")


def require_open_case(conn: sqlite3.Connection, case: int) -> None:
    """A party's link keeps working for reading its own things once a case is closed; it
    changes nothing there any more."""
    row = conn.execute("SELECT status FROM cases WHERE id = ?", (case,)).fetchone()
    if row is None or row["status"] != "open":
        raise json_error(web.HTTPConflict, "case_closed", "the case is closed")


def load_case(conn: sqlite3.Connection, who: Officer, case: int) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM cases WHERE id = ?", (case,)).fetchone()
    if row is None or not who.may_touch(row["brigade"]):
        raise json_error(web.HTTPNotFound, "not_found", "no such case")
    return dict(row)
