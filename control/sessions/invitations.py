"""Invitations: a single-use link for one party of a case, valid in a window of time.

An officer creates one (``POST /api/cases/{case}/invitations``) or revokes it; the party
redeems it (``POST /api/invitations/redeem``) while a session of its case is open, giving its
consents, and gets a signalling token for that room only. Invalid links slow the address that
sends them (``REDEEM_LIMIT``). The SQL is in the plain functions first; the handlers below.

Device binding: the party's page sends a random secret it keeps (``device``, kept in the
browser's storage) with its redemption; its hash is stored with the invitation. Opening the
link again later with the same secret, while the session it was first used for is open and the
link valid, admits the party again (a new grant, audited ``invitation.readmitted``; the SFU
replaces the old connection of the same participant, and the grant given before is superseded:
its token joins no more, 4003 ``superseded``). Without the secret, from another device,
the link is used as before (410 ``used``). A party the officer removed is not readmitted.

Renewal: the call token lives ``auth.token_ttl`` (an hour). ``POST /api/party/call-token``
with the link and the device's secret gives a fresh one of the same admission (the same grant:
no readmission, no face check again, nobody sees the party leave) while that grant stands: not
superseded, not revoked (a removal), its session open and its case open. The party's page asks
it before every resume, as the console asks a fresh token for every connection, so that a
party more than an hour into an inquiry who reloads or loses the network resumes the call.
"""

from __future__ import annotations

import enum
import hmac
import json
import math
import secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .. import access
from ..access import audit, id_value, issue_grant, text
from ..appkeys import CONFIG, DB, REDEEM_LIMIT, SIGNER
from ..auth import Officer, now_iso, token_hash
from ..cases.api import done
from ..cases.store import open_case
from ..http.jsonio import json_error, read_object
from ..http.openapi import (
    ANY_OBJECT,
    CASE,
    ID,
    NOBODY,
    OFFICER,
    PARTY,
    REASON,
    Add,
    in_path,
    json_body,
    op,
    responses,
)
from ..mediation.store import agent_admitted
from ..refusals import Refusal
from ..verification.wiring import forget_reference
from .tokens import TokenError

CONSENTS = ("recording", "face", "electronic_delivery")


class RedeemRefusal(enum.Enum):
    """Why a link did not let its party in: the error code."""

    UNKNOWN = "unknown"
    REVOKED = "revoked"
    USED = "used"
    EXPIRED = "expired"
    NOT_YET = "not_yet"
    NO_SESSION = "no_session"
    SESSION_ENDED = "session_ended"
    CASE_CLOSED = "case_closed"
    REMOVED = "removed"
    CONSENT_REQUIRED = "consent_required"


# status, catalog key; the first four count as invalid links for the address's delay
_REDEEM_ERRORS: dict[RedeemRefusal, tuple[type[web.HTTPException], str, bool]] = {
    RedeemRefusal.UNKNOWN: (web.HTTPNotFound, "redeem.not_found", True),
    RedeemRefusal.REVOKED: (web.HTTPGone, "redeem.revoked", True),
    RedeemRefusal.USED: (web.HTTPGone, "redeem.used", True),
    RedeemRefusal.EXPIRED: (web.HTTPGone, "redeem.expired", True),
    RedeemRefusal.NOT_YET: (web.HTTPConflict, "redeem.not_yet", False),
    RedeemRefusal.NO_SESSION: (web.HTTPConflict, "redeem.no_session", False),
    RedeemRefusal.SESSION_ENDED: (web.HTTPGone, "redeem.session_ended", False),
    RedeemRefusal.CASE_CLOSED: (web.HTTPGone, "redeem.case_closed", False),
    RedeemRefusal.REMOVED: (web.HTTPForbidden, "redeem.removed", False),
    RedeemRefusal.CONSENT_REQUIRED: (web.HTTPBadRequest, "consent_required", False),
}

DEVICE_MIN, DEVICE_MAX = access.DEVICE_MIN, access.DEVICE_MAX  # the page's device secret


@dataclass(frozen=True)
class Redemption:
    room: str
    party_id: int
    name: str
    case_id: int
    consent: dict[str, bool]
    grant: str  # the party's call grant, for the signalling token
    readmitted: bool = False  # the same device opened the link again


def create_invitation(
    conn: sqlite3.Connection,
    officer: Officer,
    case_id: int,
    party_id: int,
    token: str,
    start: float,
    hours: float,
) -> dict[str, Any] | Refusal:
    case = open_case(conn, officer, case_id)
    if isinstance(case, Refusal):
        return case
    if (
        conn.execute(
            "SELECT 1 FROM parties WHERE id = ? AND case_id = ?", (party_id, case_id)
        ).fetchone()
        is None
    ):
        return Refusal.NO_PARTY
    if not agent_admitted(conn, party_id):
        return Refusal.AGENT_NOT_ACCEPTED
    cursor = conn.execute(
        "INSERT INTO invitations (case_id, party_id, token_hash, not_before, expires_at, "
        "created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (case_id, party_id, token_hash(token), start, start + hours * 3600, officer.id, now_iso()),
    )
    audit(
        conn,
        officer.actor,
        "invitation.created",
        f"invitation:{cursor.lastrowid}",
        case_id,
        party=party_id,
        valid_hours=hours,
    )
    return {
        "id": cursor.lastrowid,
        "party_id": party_id,
        "not_before": start,
        "expires_at": start + hours * 3600,
    }


def revoke_invitation(
    conn: sqlite3.Connection, officer: Officer, invitation_id: str, reason: str
) -> Refusal | None:
    row = conn.execute("SELECT * FROM invitations WHERE id = ?", (invitation_id,)).fetchone()
    if row is None:
        return Refusal.NO_INVITATION
    if access.find_case(conn, officer, row["case_id"]) is None:
        return Refusal.NO_CASE
    conn.execute(
        "UPDATE invitations SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (now_iso(), row["id"]),
    )
    audit(
        conn, officer.actor, "invitation.revoked", f"invitation:{row['id']}", row["case_id"], reason
    )
    return None


def _refused(conn: sqlite3.Connection, row: sqlite3.Row, refusal: RedeemRefusal) -> RedeemRefusal:
    audit(
        conn,
        f"party:{row['party_id']}",
        "invitation.refused",
        f"invitation:{row['id']}",
        row["case_id"],
        refusal.value,
    )
    return refusal


def _same_device(row: sqlite3.Row, device: str | None) -> bool:
    stored = row["device_hash"]
    return (
        device is not None
        and stored is not None
        and hmac.compare_digest(token_hash(device), stored)
    )


def _readmit(conn: sqlite3.Connection, row: sqlite3.Row, ttl: int) -> Redemption | RedeemRefusal:
    """The device that used the link opens it again: back into the session it was used for."""
    first = conn.execute(
        "SELECT session_id FROM call_grants WHERE invitation_id = ? ORDER BY created_at, rowid "
        "LIMIT 1",
        (row["id"],),
    ).fetchone()
    session = (
        None
        if first is None
        else conn.execute(
            "SELECT s.*, c.status AS case_status FROM sessions s JOIN cases c "
            "ON c.id = s.case_id WHERE s.id = ?",
            (first["session_id"],),
        ).fetchone()
    )
    if session is None or session["ended_at"] is not None:
        return _refused(conn, row, RedeemRefusal.SESSION_ENDED)
    if session["case_status"] != "open":
        return _refused(conn, row, RedeemRefusal.CASE_CLOSED)
    participant = f"party-{row['party_id']}"
    if (
        conn.execute(
            # a removal revokes the grants this link gave; a new link is the officer's way back
            "SELECT 1 FROM call_grants WHERE invitation_id = ? AND revoked_at IS NOT NULL",
            (row["id"],),
        ).fetchone()
        is not None
    ):
        return _refused(conn, row, RedeemRefusal.REMOVED)
    party = conn.execute("SELECT * FROM parties WHERE id = ?", (row["party_id"],)).fetchone()
    consents = {k: bool(v) for k, v in json.loads(party["consent"] or "{}").items()}
    grant = issue_grant(conn, session["id"], participant, "party", ttl, invitation_id=row["id"])
    # the grant given before (to the page before the reload, or to another tab of the device)
    # stops being accepted: one live admission per link
    superseded = conn.execute(
        "UPDATE call_grants SET superseded_at = ?, superseded_by = ? WHERE invitation_id = ? "
        "AND id != ? AND superseded_at IS NULL AND revoked_at IS NULL",
        (now_iso(), grant, row["id"], grant),
    ).rowcount
    audit(
        conn,
        f"party:{party['id']}",
        "invitation.readmitted",
        f"invitation:{row['id']}",
        row["case_id"],
        f"the same device opened the link again; {superseded} earlier grant(s) superseded",
        room=session["room"],
    )
    return Redemption(
        session["room"], party["id"], party["name"], row["case_id"], consents, grant, True
    )


def redeem(
    conn: sqlite3.Connection,
    token: str,
    consents: dict[str, bool],
    now: float,
    ttl: int,
    device: str | None = None,
) -> Redemption | RedeemRefusal:
    """Use the link (once, inside its window, while its case has an open session): the
    party's consents are stored and a call grant issued, the link bound to ``device`` when
    given. The bound device is admitted again later (:func:`_readmit`). Refusals that end a
    link's life are audited."""
    row = conn.execute(
        "SELECT * FROM invitations WHERE token_hash = ?", (token_hash(token),)
    ).fetchone()
    if row is None:
        return RedeemRefusal.UNKNOWN
    if row["revoked_at"] is not None:
        return _refused(conn, row, RedeemRefusal.REVOKED)
    if row["used_at"] is not None and not _same_device(row, device):
        return _refused(conn, row, RedeemRefusal.USED)
    if now > row["expires_at"]:
        return _refused(conn, row, RedeemRefusal.EXPIRED)
    if row["used_at"] is not None:
        return _readmit(conn, row, ttl)
    if now < row["not_before"]:
        return RedeemRefusal.NOT_YET
    if not consents.get("recording"):
        return RedeemRefusal.CONSENT_REQUIRED
    session = conn.execute(
        "SELECT * FROM sessions WHERE case_id = ? AND ended_at IS NULL", (row["case_id"],)
    ).fetchone()
    if session is None:
        return RedeemRefusal.NO_SESSION
    actor = f"party:{row['party_id']}"
    party = conn.execute("SELECT * FROM parties WHERE id = ?", (row["party_id"],)).fetchone()
    conn.execute(
        "UPDATE invitations SET used_at = ?, device_hash = ? WHERE id = ?",
        (now_iso(), None if device is None else token_hash(device), row["id"]),
    )
    conn.execute(
        "UPDATE parties SET consent = ?, consent_at = ? WHERE id = ?",
        (json.dumps(consents, sort_keys=True), now_iso(), party["id"]),
    )
    audit(conn, actor, "consent.given", f"party:{party['id']}", row["case_id"], "", **consents)
    audit(
        conn,
        actor,
        "invitation.redeemed",
        f"invitation:{row['id']}",
        row["case_id"],
        room=session["room"],
        device_bound=device is not None,
    )
    grant = issue_grant(
        conn, session["id"], f"party-{party['id']}", "party", ttl, invitation_id=row["id"]
    )
    return Redemption(session["room"], party["id"], party["name"], row["case_id"], consents, grant)


# why a renewal was refused: (status, code, detail, catalog key)
_RENEW_ERRORS: dict[str, tuple[type[web.HTTPException], str, str | None, str]] = {
    "link_invalid": (
        web.HTTPUnauthorized,
        "unauthorized",
        "link_invalid",
        "unauthorized.link_invalid",
    ),
    "other_device": (web.HTTPForbidden, "forbidden", "other_device", "forbidden.other_device"),
    "not_admitted": (web.HTTPConflict, "not_admitted", None, "renew.not_admitted"),
    "superseded": (web.HTTPConflict, "superseded", None, "renew.superseded"),
    "removed": (web.HTTPForbidden, "removed", None, "redeem.removed"),
    "session_ended": (web.HTTPGone, "session_ended", None, "redeem.session_ended"),
    "case_closed": (web.HTTPGone, "case_closed", None, "redeem.case_closed"),
}


@dataclass(frozen=True)
class Renewal:
    room: str
    participant: str
    name: str
    grant: str


def renew_call(
    conn: sqlite3.Connection,
    token: str,
    device: str | None,
    ttl: int,
    now: float,
    held: str | None = None,
) -> Renewal | str:
    """The admission the link gave its bound ``device``, for a fresh call token (the key of
    ``_RENEW_ERRORS`` when there is none to renew). The grant's expiry moves on; audited.
    ``held``: the grant of the call token the asking page holds; when the link has admitted
    the device again since (another page of it: that grant superseded this one), nothing is
    renewed, so the older page cannot take the call back with the newer page's admission."""
    row = conn.execute(
        "SELECT * FROM invitations WHERE token_hash = ? AND revoked_at IS NULL",
        (token_hash(token),),
    ).fetchone()
    if row is None:
        return "link_invalid"
    if not _same_device(row, device):
        # a link redeemed without a secret, or by another device: nothing proves this is the
        # party's own device, so the link alone (a forwarded SMS) renews nothing
        return "other_device"
    grant = conn.execute(
        "SELECT g.id, g.participant, g.revoked_at, s.room, s.ended_at, s.case_id, "
        "c.status AS case_status FROM call_grants g JOIN sessions s ON s.id = g.session_id "
        "JOIN cases c ON c.id = s.case_id WHERE g.invitation_id = ? AND g.superseded_at IS NULL "
        "ORDER BY g.created_at DESC, g.rowid DESC LIMIT 1",
        (row["id"],),
    ).fetchone()
    if grant is None:
        return "not_admitted"
    if held is not None and held != str(grant["id"]):
        return "superseded"
    if grant["revoked_at"] is not None:
        return "removed"
    if grant["ended_at"] is not None:
        return "session_ended"
    if grant["case_status"] != "open":
        return "case_closed"
    party = conn.execute("SELECT name FROM parties WHERE id = ?", (row["party_id"],)).fetchone()
    conn.execute("UPDATE call_grants SET expires_at = ? WHERE id = ?", (now + ttl, grant["id"]))
    audit(
        conn,
        f"party:{row['party_id']}",
        "invitation.call_token",
        f"invitation:{row['id']}",
        grant["case_id"],
        "a fresh call token of the same admission",
        room=grant["room"],
    )
    return Renewal(grant["room"], grant["participant"], party["name"], grant["id"])


async def post_call_token(request: web.Request) -> web.Response:
    """A fresh call token for the party's bound device while its admission stands. Not
    throttled like a redemption: a wrong link answers 401 as every party endpoint does (a link
    is 192 random bits, and without its device's secret it renews nothing anyway)."""
    token = access.bearer(request)
    device = access.device_secret(request)
    ttl = request.app[CONFIG].auth.token_ttl
    now = time.time()
    body = await read_object(request, empty_ok=True)
    held: str | None = None
    if body.get("token") is not None:
        # the call token the page holds (expired or not): which admission it renews
        try:
            held = request.app[SIGNER].verify(body["token"], check_expiry=False).grant_id or ""
        except TokenError:
            raise json_error(web.HTTPBadRequest, "bad_token", key="bad_token.signature") from None
    result = await request.app[DB].run(lambda c: renew_call(c, token, device, ttl, now, held))
    if isinstance(result, str):
        cls, code, detail, message = _RENEW_ERRORS[result]
        raise json_error(cls, code, detail=detail, key=message)
    signalling = request.app[SIGNER].mint(
        result.room,
        result.participant,
        name=result.name,
        role="party",
        ttl=ttl,
        grant_id=result.grant,
    )
    return web.json_response(
        {
            "room": result.room,
            "participant": result.participant,
            "token": signalling,
            "ttl": ttl,
        }
    )


def _number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


async def post_invitation(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    body = await read_object(request)
    party_id = id_value(body.get("party_id"))
    hours = body.get("valid_hours", 72)
    delay = body.get("valid_from_seconds", 0)
    if (
        party_id is None
        or not _number(hours)
        or not 0 < hours <= 24 * 30
        or not _number(delay)
        or not 0 <= delay <= 30 * 86400
    ):
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            key="bad_request.invitation",
        )
    token = secrets.token_urlsafe(24)
    start = time.time() + float(delay)
    invitation = done(
        await request.app[DB].run(
            lambda c: create_invitation(c, officer, case_id, party_id, token, start, hours)
        )
    )
    invitation["token"] = token
    invitation["link"] = f"/?invite={token}"
    return web.json_response(invitation, status=201)


async def post_revoke(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    body = await read_object(request)
    reason = text(body, "reason", max_len=500)
    invitation_id = request.match_info["invitation"]
    done(await request.app[DB].run(lambda c: revoke_invitation(c, officer, invitation_id, reason)))
    return web.json_response({"revoked": int(invitation_id)})


async def post_redeem(request: web.Request) -> web.Response:
    """A party's link: single use, inside its window, while a session of its case is open."""
    limiter = request.app[REDEEM_LIMIT]
    key = f"ip:{request.remote}"
    wait = limiter.wait(key)
    if wait > 0:
        raise access.too_many(
            wait, "此地址的无效邀请过多", "too many invalid invitations from here"
        )
    body = await read_object(request)
    token = body.get("token")
    if not isinstance(token, str) or not 10 <= len(token) <= 100 or not token.isascii():
        limiter.fail(key)
        raise json_error(web.HTTPBadRequest, "bad_request", key="bad_request.token", field="token")
    device = body.get("device")
    if device is not None and (
        not isinstance(device, str)
        or not DEVICE_MIN <= len(device) <= DEVICE_MAX
        or not device.isascii()
    ):
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            key="bad_request.device",
            field="device",
            min=DEVICE_MIN,
            max=DEVICE_MAX,
        )
    consent = body.get("consent", {})
    if not isinstance(consent, dict) or not all(
        k in CONSENTS and isinstance(v, bool) for k, v in consent.items()
    ):
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            key="bad_request.consent",
            field="consent",
            allowed=", ".join(CONSENTS),
        )
    if not consent.get("recording") and device is None:
        # (with a device secret the link may be the device's own again, whose consents stand)
        cls, message, _ = _REDEEM_ERRORS[RedeemRefusal.CONSENT_REQUIRED]
        raise json_error(cls, RedeemRefusal.CONSENT_REQUIRED.value, key=message)
    consents = {k: bool(consent.get(k)) for k in CONSENTS}
    now = time.time()
    ttl = request.app[CONFIG].auth.token_ttl
    result = await request.app[DB].run(lambda c: redeem(c, token, consents, now, ttl, device))
    if isinstance(result, RedeemRefusal):
        cls, message, invalid = _REDEEM_ERRORS[result]
        if invalid:
            limiter.fail(key)
        raise json_error(cls, result.value, key=message)
    participant = f"party-{result.party_id}"
    if not result.readmitted and not result.consent["face"]:
        await forget_reference(
            request.app,
            result.case_id,
            result.party_id,
            actor=f"party:{result.party_id}",
            reason="the party declined face checks",
        )
    signalling = request.app[SIGNER].mint(
        result.room, participant, name=result.name, role="party", ttl=ttl, grant_id=result.grant
    )
    return web.json_response(
        {
            "room": result.room,
            "party_id": result.party_id,
            "name": result.name,
            "case_id": result.case_id,
            "consent": result.consent,
            "participant": participant,
            "token": signalling,
            "readmitted": result.readmitted,
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/cases/{case}/invitations", post_invitation)
    app.router.add_post("/api/invitations/{invitation:[0-9]{1,18}}/revoke", post_revoke)
    app.router.add_post("/api/invitations/redeem", post_redeem)
    app.router.add_post("/api/party/call-token", post_call_token)


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    add(
        "/api/cases/{case}/invitations",
        "post",
        op(
            "Invite a party: a single-use link with a validity window",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 404 409"),
            tag="invitations",
            body=json_body(
                {
                    "party_id": ID,
                    "valid_hours": {
                        "type": "number",
                        "minimum": 0,
                        "exclusiveMinimum": True,
                        "maximum": 720,
                    },
                    "valid_from_seconds": {"type": "number", "minimum": 0, "maximum": 2592000},
                },
                ["party_id"],
            ),
        ),
        [CASE],
    )
    add(
        "/api/invitations/{invitation}/revoke",
        "post",
        op(
            "Revoke an invitation",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 404"),
            tag="invitations",
            body=json_body({"reason": REASON}, ["reason"]),
        ),
        [in_path("invitation", ID)],
    )
    add(
        "/api/party/call-token",
        "post",
        op(
            "A fresh call token of the party's admission, for the device the link is bound to "
            "(X-Remotecase-Device), while that admission stands: a call outlives its first token",
            PARTY,
            responses("200", ANY_OBJECT, "401 403 409 410"),
            tag="invitations",
        ),
    )
    add(
        "/api/invitations/redeem",
        "post",
        op(
            "A party uses its link: consents, then a signalling token for the session's room "
            "(the device that used it, by its secret, again while that session is open)",
            NOBODY,
            responses("200", ANY_OBJECT, "400 403 404 409 410 429"),
            tag="invitations",
            body=json_body(
                {
                    "token": {"type": "string", "minLength": 10, "maxLength": 100},
                    "consent": {
                        "type": "object",
                        "properties": {k: {"type": "boolean"} for k in CONSENTS},
                    },
                    "device": {"type": "string", "minLength": DEVICE_MIN, "maxLength": DEVICE_MAX},
                },
                ["token", "consent"],
            ),
        ),
    )
