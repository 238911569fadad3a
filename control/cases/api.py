"""Officers, cases, parties, sessions and invitations (first part of issue 5).

Officers log in (``POST /api/login``) and send ``Authorization: Bearer <login token>``; an
officer touches the cases of their brigade, a supervisor every case. Parties have no account:
an officer invites a party of a case (a single-use link with a validity window), and redeeming
it while a session of that case is open gives a signalling token for that room only. Every
state change goes into the audit trail with actor, time and reason.

Errors are ``{"error": code, "message": text}`` with a 4xx status.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import sqlite3
import time
from typing import Any

from aiohttp import web

from mediaserver.protocols import CloseReason
from mediaserver.room import SfuRoom

from .access import (
    DB,
    LOGIN_ADDRESS_LIMIT,
    LOGIN_LIMIT,
    REDEEM_LIMIT,
    id_value,
    issue_grant,
    load_case,
    path_int,
    revoke_grants,
)
from .access import audit as _audit
from .access import bearer as _bearer
from .access import case_id as _case_id
from .access import officer as _officer
from .access import text as _text
from .appointments_api import case_appointments
from .auth import Officer, login_async, logout, now_iso, retry_after, token_hash
from .db import rows
from .events import EVENTS
from .http_json import json_error as _json_error
from .http_json import read_object
from .materials_api import case_materials

KINDS = ("accident", "violation", "education", "vehicle_service", "licence_service")
CONSENTS = ("recording", "face", "electronic_delivery")
PURPOSES = ("inquiry", "mediation", "education", "delivery", "other")
PARTY_ROLES = ("driver", "owner", "witness", "insurer", "safety_manager", "other")
_ID_NUMBER = re.compile(r"^[0-9A-Za-z]{6,20}$")


def _open_session(conn: sqlite3.Connection, officer: Officer, case_id: int,
                  session_id: int) -> str:
    """The room of an open session of a case the officer may touch."""
    load_case(conn, officer, case_id)
    row = conn.execute("SELECT room FROM sessions WHERE id = ? AND case_id = ? "
                       "AND ended_at IS NULL", (session_id, case_id)).fetchone()
    if row is None:
        raise _json_error(web.HTTPNotFound, "not_found", "no open session with this ID")
    room: str = row["room"]
    return room


def _number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def _open_case(case: dict[str, Any]) -> None:
    if case["status"] != "open":
        raise _json_error(web.HTTPConflict, "case_closed", "the case is closed")


# -- login -----------------------------------------------------------------------------------
async def post_login(request: web.Request) -> web.Response:
    body = await read_object(request)
    username = _text(body, "username", max_len=64)
    password = body.get("password")
    if not isinstance(password, str) or len(password) > 256:
        raise _json_error(web.HTTPBadRequest, "bad_request", "password: a string")
    users, addresses = request.app[LOGIN_LIMIT], request.app[LOGIN_ADDRESS_LIMIT]
    user, address = f"user:{username}", f"ip:{request.remote}"
    wait = max(users.wait(user), addresses.wait(address))
    if wait > 0:
        raise _too_many(wait, "登录失败次数过多", "too many failed logins")
    # charged before the check, so that attempts sent at once count at once
    users.fail(user)
    addresses.fail(address)
    result = await login_async(request.app[DB], username, password)
    if result is None:
        users.restart(user)  # the delay runs from the answer, not from the question
        addresses.restart(address)
        await request.app[DB].run(lambda c: _audit(c, f"anonymous@{request.remote}",
                                                   "login.failed", f"user:{username}", None))
        raise _json_error(web.HTTPUnauthorized, "bad_credentials",
                          "wrong user name or password")
    token, officer = result
    users.forgive(user)  # the owner is in
    addresses.refund(address)  # this attempt was no failure; earlier ones from here still are
    await request.app[DB].run(lambda c: _audit(c, officer.actor, "login", officer.actor, None))
    return web.json_response({"token": token, "officer": {
        "username": officer.username, "role": officer.role, "brigade": officer.brigade}})


def _too_many(wait: float, zh: str, en: str) -> web.HTTPException:
    seconds = retry_after(wait)
    error = _json_error(web.HTTPTooManyRequests, "rate_limited",
                        f"{zh}，请 {seconds} 秒后再试 / {en}; try again in {seconds} s")
    error.headers["Retry-After"] = retry_after(wait)
    return error


async def post_logout(request: web.Request) -> web.Response:
    officer = await _officer(request)
    token = _bearer(request)

    def run(conn: sqlite3.Connection) -> None:
        logout(conn, token)
        _audit(conn, officer.actor, "logout", officer.actor, None)

    await request.app[DB].run(run)
    return web.json_response({"logged_out": True})


# -- cases -----------------------------------------------------------------------------------
async def post_case(request: web.Request) -> web.Response:
    officer = await _officer(request)
    body = await read_object(request)
    kind = body.get("kind")
    if kind not in KINDS:
        raise _json_error(web.HTTPBadRequest, "bad_request", f"kind: one of {', '.join(KINDS)}")
    title = _text(body, "title")

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        cursor = conn.execute(
            "INSERT INTO cases (kind, title, brigade, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?)", (kind, title, officer.brigade, officer.id, now_iso()))
        case_id = cursor.lastrowid
        _audit(conn, officer.actor, "case.created", f"case:{case_id}", case_id, kind=kind)
        return dict(conn.execute("SELECT * FROM cases WHERE id = ?", (case_id,)).fetchone())

    return web.json_response(await request.app[DB].run(run), status=201)


async def list_cases(request: web.Request) -> web.Response:
    officer = await _officer(request)

    def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
        if officer.role == "supervisor":
            return rows(conn.execute("SELECT * FROM cases ORDER BY id"))
        return rows(conn.execute("SELECT * FROM cases WHERE brigade = ? ORDER BY id",
                                 (officer.brigade,)))

    return web.json_response({"cases": await request.app[DB].run(run)})


async def get_case(request: web.Request) -> web.Response:
    officer = await _officer(request)
    case_id = _case_id(request)

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        case = load_case(conn, officer, case_id)
        case["parties"] = rows(conn.execute(
            "SELECT id, role, name, id_number_masked, phone FROM parties WHERE case_id = ?",
            (case_id,)))
        case["sessions"] = rows(conn.execute(
            "SELECT id, room, opened_at, ended_at FROM sessions WHERE case_id = ?", (case_id,)))
        case["invitations"] = rows(conn.execute(
            "SELECT id, party_id, not_before, expires_at, used_at, revoked_at "
            "FROM invitations WHERE case_id = ?", (case_id,)))
        case["appointments"] = case_appointments(conn, case_id)
        case["materials"] = case_materials(conn, case_id)
        return case

    return web.json_response(await request.app[DB].run(run))


def mask_id_number(number: str) -> str:
    """Keep the last four characters; an ID number is personal data."""
    return "*" * (len(number) - 4) + number[-4:]


def mask_phone(phone: str) -> str:
    digits = re.sub(r"\D", "", phone)
    return digits[:3] + "****" + digits[-4:] if len(digits) >= 7 else ""


async def post_party(request: web.Request) -> web.Response:
    officer = await _officer(request)
    case_id = _case_id(request)
    body = await read_object(request)
    role = body.get("role")
    if role not in PARTY_ROLES:
        raise _json_error(web.HTTPBadRequest, "bad_request",
                          f"role: one of {', '.join(PARTY_ROLES)}")
    name = _text(body, "name", max_len=100)
    id_number = _text(body, "id_number", max_len=20, required=False)
    if id_number and not _ID_NUMBER.match(id_number):
        raise _json_error(web.HTTPBadRequest, "bad_request", "id_number: 6-20 letters or digits")
    phone = _text(body, "phone", max_len=32, required=False)

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        load_case(conn, officer, case_id)
        cursor = conn.execute(
            "INSERT INTO parties (case_id, role, name, id_number_masked, phone, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (case_id, role, name, mask_id_number(id_number) if id_number else "",
             mask_phone(phone), now_iso()))
        party_id = cursor.lastrowid
        _audit(conn, officer.actor, "party.added", f"party:{party_id}", case_id, role=role)
        return dict(conn.execute("SELECT id, case_id, role, name, id_number_masked, phone "
                                 "FROM parties WHERE id = ?", (party_id,)).fetchone())

    return web.json_response(await request.app[DB].run(run), status=201)


# -- sessions --------------------------------------------------------------------------------
async def post_session(request: web.Request) -> web.Response:
    from .app import CONFIG, SIGNER

    officer = await _officer(request)
    case_id = _case_id(request)
    body = await read_object(request, empty_ok=True)
    purpose = body.get("purpose")
    if purpose is not None and purpose not in PURPOSES:
        raise _json_error(web.HTTPBadRequest, "bad_request",
                          f"purpose: one of {', '.join(PURPOSES)}")

    ttl = request.app[CONFIG].auth.token_ttl
    participant = f"officer-{officer.username}"
    login_token = _bearer(request)

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        case = load_case(conn, officer, case_id)
        _open_case(case)
        if conn.execute("SELECT 1 FROM sessions WHERE case_id = ? AND ended_at IS NULL",
                        (case_id,)).fetchone():
            raise _json_error(web.HTTPConflict, "session_open",
                              "this case already has an open session")
        room = f"case-{case_id}-{secrets.token_hex(4)}"
        chosen = purpose or ("education" if case["kind"] == "education" else "inquiry")
        cursor = conn.execute(
            "INSERT INTO sessions (case_id, room, opened_by, opened_at, purpose) "
            "VALUES (?, ?, ?, ?, ?)", (case_id, room, officer.id, now_iso(), chosen))
        assert cursor.lastrowid is not None
        _audit(conn, officer.actor, "session.opened", f"session:{cursor.lastrowid}", case_id,
               room=room)
        grant = issue_grant(conn, cursor.lastrowid, participant, "officer", ttl,
                            login_token=login_token)
        return {"id": cursor.lastrowid, "room": room, "brigade": case["brigade"],
                "grant": grant}

    session = await request.app[DB].run(run)
    events = request.app[EVENTS]
    events.know_case(case_id, session.pop("brigade"))
    events.publish(case_id, "session", session["room"], state="opened", session=session["id"],
                   by=officer.actor)
    session["token"] = request.app[SIGNER].mint(
        session["room"], participant, name=officer.username, role="officer", ttl=ttl,
        grant_id=session.pop("grant"))
    return web.json_response(session, status=201)


async def session_token(request: web.Request) -> web.Response:
    """A fresh signalling token for the officer to (re)join an open session's call."""
    from .app import CONFIG, SIGNER

    officer = await _officer(request)
    case_id = _case_id(request)
    session_id = path_int(request, "session", "session")

    ttl = request.app[CONFIG].auth.token_ttl
    participant = f"{officer.role}-{officer.username}"
    login_token = _bearer(request)

    def run(conn: sqlite3.Connection) -> tuple[str, str]:
        room = _open_session(conn, officer, case_id, session_id)
        _audit(conn, officer.actor, "session.token", f"session:{session_id}", case_id)
        return room, issue_grant(conn, session_id, participant, officer.role, ttl,
                                 login_token=login_token)

    room, grant = await request.app[DB].run(run)
    token = request.app[SIGNER].mint(room, participant, name=officer.username,
                                     role=officer.role, ttl=ttl, grant_id=grant)
    return web.json_response({"room": room, "token": token})


async def end_session(request: web.Request) -> web.Response:
    from .app import RECORDER, SFU

    officer = await _officer(request)
    case_id = _case_id(request)
    body = await read_object(request)
    reason = _text(body, "reason", max_len=500)
    session_id = path_int(request, "session", "session")

    def run(conn: sqlite3.Connection) -> str:
        load_case(conn, officer, case_id)
        row = conn.execute("SELECT * FROM sessions WHERE id = ? AND case_id = ?",
                           (session_id, case_id)).fetchone()
        if row is None:
            raise _json_error(web.HTTPNotFound, "not_found", "no such session")
        if row["ended_at"] is not None:
            raise _json_error(web.HTTPConflict, "ended", "the session has ended already")
        conn.execute("UPDATE sessions SET ended_at = ? WHERE id = ?", (now_iso(), row["id"]))
        _audit(conn, officer.actor, "session.ended", f"session:{row['id']}", case_id, reason)
        room_id: str = row["room"]
        return room_id

    room_id = await request.app[DB].run(run)
    recorder = request.app[RECORDER]
    sealed = None
    if room_id in recorder.active:
        manifest = await recorder.stop(room_id, actor=officer.actor, reason=reason)
        sealed = manifest["recording_id"]
    room = request.app[SFU].rooms.get(room_id)
    if room is not None:
        await room.close(CloseReason.REMOVED)
    request.app[EVENTS].publish(case_id, "session", room_id, state="ended", by=officer.actor,
                                reason=reason, recording=sealed)
    return web.json_response({"ended": room_id, "recording_sealed": sealed})


async def open_session_room(request: web.Request,
                            officer: Officer) -> tuple[int, int, SfuRoom]:
    """(case, session, live room) of an open session of a case the officer may touch."""
    from .app import SFU

    case_id = _case_id(request)
    session_id = path_int(request, "session", "session")

    room_id = await request.app[DB].run(
        lambda conn: _open_session(conn, officer, case_id, session_id))
    room = request.app[SFU].rooms.get(room_id)
    if room is None or room.closed:
        raise _json_error(web.HTTPConflict, "empty", "nobody is in the session's room")
    return case_id, session_id, room


async def session_action(request: web.Request) -> web.Response:
    """An officer acts on the call: remove or mute a participant, lock or unlock the room.

    Each is session state in the database first (a removal revokes the participant's grants,
    a mute and the lock are the session's), then applied to the live room: it holds when the
    participant reconnects and when the room empties and is made again."""
    from .app import SFU

    officer = await _officer(request)
    action = request.match_info["action"]
    body = await read_object(request)
    reason = _text(body, "reason", max_len=500)
    case_id = _case_id(request)
    session_id = path_int(request, "session", "session")
    room_id = await request.app[DB].run(
        lambda conn: _open_session(conn, officer, case_id, session_id))
    room = request.app[SFU].rooms.get(room_id)
    live = room if room is not None and not room.closed else None
    detail: dict[str, Any] = {}
    participant_id = ""
    kinds: list[str] = []
    if action in ("remove", "mute", "unmute"):
        participant_id = _text(body, "participant", max_len=64)
        if live is None or participant_id not in live.participants:
            raise _json_error(web.HTTPNotFound, "not_found", "no such participant in the call")
        detail["participant"] = participant_id
        if action != "remove":
            kinds = body.get("kinds", ["audio", "video"])
            if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds) \
                    or not set(kinds) <= {"audio", "video"}:
                raise _json_error(web.HTTPBadRequest, "bad_request", "kinds: audio and/or video")
            detail["kinds"] = kinds
    elif action not in ("lock", "unlock"):
        raise _json_error(web.HTTPNotFound, "not_found", "unknown action")

    def run(conn: sqlite3.Connection) -> None:
        _open_session(conn, officer, case_id, session_id)
        if action == "remove":
            revoke_grants(conn, session_id, participant_id, "removed")
        elif action in ("mute", "unmute"):
            row = conn.execute("SELECT officer_mutes FROM sessions WHERE id = ?",
                               (session_id,)).fetchone()
            mutes: dict[str, list[str]] = json.loads(row["officer_mutes"] or "{}")
            held = set(mutes.get(participant_id, []))
            held = held | set(kinds) if action == "mute" else held - set(kinds)
            if held:
                mutes[participant_id] = sorted(held)
            else:
                mutes.pop(participant_id, None)
            conn.execute("UPDATE sessions SET officer_mutes = ? WHERE id = ?",
                         (json.dumps(mutes, sort_keys=True), session_id))
        else:
            conn.execute("UPDATE sessions SET locked = ? WHERE id = ?",
                         (int(action == "lock"), session_id))
        _audit(conn, officer.actor, f"call.{action}", f"room:{room_id}", case_id, reason,
               **detail)

    await request.app[DB].run(run)
    if live is not None:
        participant = live.participants.get(participant_id)
        if action in ("lock", "unlock"):
            live.locked = action == "lock"
        elif participant is not None and action == "remove":
            await participant.close(CloseReason.REMOVED)
        elif participant is not None:
            participant.set_officer_muted(kinds, action == "mute")
    return web.json_response({"done": action, "room": room_id, **detail})


# -- invitations -----------------------------------------------------------------------------
async def post_invitation(request: web.Request) -> web.Response:
    officer = await _officer(request)
    case_id = _case_id(request)
    body = await read_object(request)
    party_id = body.get("party_id")
    hours = body.get("valid_hours", 72)
    delay = body.get("valid_from_seconds", 0)
    if id_value(party_id) is None or not _number(hours) or not 0 < hours <= 24 * 30 or \
            not _number(delay) or not 0 <= delay <= 30 * 86400:
        raise _json_error(web.HTTPBadRequest, "bad_request",
                          "party_id (a party's ID), valid_hours (0-720), "
                          "valid_from_seconds (0-2592000)")
    token = secrets.token_urlsafe(24)
    start = time.time() + float(delay)

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        _open_case(load_case(conn, officer, case_id))
        if conn.execute("SELECT 1 FROM parties WHERE id = ? AND case_id = ?",
                        (party_id, case_id)).fetchone() is None:
            raise _json_error(web.HTTPNotFound, "not_found", "no such party in this case")
        cursor = conn.execute(
            "INSERT INTO invitations (case_id, party_id, token_hash, not_before, expires_at, "
            "created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (case_id, party_id, token_hash(token), start, start + hours * 3600, officer.id,
             now_iso()))
        _audit(conn, officer.actor, "invitation.created", f"invitation:{cursor.lastrowid}",
               case_id, party=party_id, valid_hours=hours)
        return {"id": cursor.lastrowid, "party_id": party_id, "not_before": start,
                "expires_at": start + hours * 3600}

    invitation = await request.app[DB].run(run)
    invitation["token"] = token
    invitation["link"] = f"/?invite={token}"
    return web.json_response(invitation, status=201)


async def revoke_invitation(request: web.Request) -> web.Response:
    officer = await _officer(request)
    body = await read_object(request)
    reason = _text(body, "reason", max_len=500)
    invitation_id = request.match_info["invitation"]

    def run(conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT * FROM invitations WHERE id = ?",
                           (invitation_id,)).fetchone()
        if row is None:
            raise _json_error(web.HTTPNotFound, "not_found", "no such invitation")
        load_case(conn, officer, row["case_id"])
        conn.execute("UPDATE invitations SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                     (now_iso(), row["id"]))
        _audit(conn, officer.actor, "invitation.revoked", f"invitation:{row['id']}",
               row["case_id"], reason)

    await request.app[DB].run(run)
    return web.json_response({"revoked": int(invitation_id)})


async def redeem_invitation(request: web.Request) -> web.Response:
    """A party's link: single use, inside its window, while a session of its case is open."""
    from .app import CONFIG, SIGNER

    limiter = request.app[REDEEM_LIMIT]
    key = f"ip:{request.remote}"
    wait = limiter.wait(key)
    if wait > 0:
        raise _too_many(wait, "此地址的无效邀请过多", "too many invalid invitations from here")
    body = await read_object(request)
    token = body.get("token")
    if not isinstance(token, str) or not 10 <= len(token) <= 100:
        limiter.fail(key)
        raise _json_error(web.HTTPBadRequest, "bad_request", "token: the invitation's token")
    consent = body.get("consent", {})
    if not isinstance(consent, dict) or not all(
            k in CONSENTS and isinstance(v, bool) for k, v in consent.items()):
        raise _json_error(web.HTTPBadRequest, "bad_request",
                          f"consent: booleans for {', '.join(CONSENTS)}")
    if not consent.get("recording"):
        raise _json_error(web.HTTPBadRequest, "consent_required",
                          "the call is recorded as evidence: consent to recording is needed "
                          "to join remotely")
    consents = {k: bool(consent.get(k)) for k in CONSENTS}
    now = time.time()
    ttl = request.app[CONFIG].auth.token_ttl

    def run(conn: sqlite3.Connection) -> dict[str, Any] | str:
        row = conn.execute("SELECT * FROM invitations WHERE token_hash = ?",
                           (token_hash(token),)).fetchone()
        if row is None:
            return "unknown"
        actor = f"party:{row['party_id']}"
        for column, code in (("revoked_at", "revoked"), ("used_at", "used")):
            if row[column] is not None:
                _audit(conn, actor, "invitation.refused", f"invitation:{row['id']}",
                       row["case_id"], code)
                return code
        if now > row["expires_at"]:
            _audit(conn, actor, "invitation.refused", f"invitation:{row['id']}",
                   row["case_id"], "expired")
            return "expired"
        if now < row["not_before"]:
            return "not_yet"
        session = conn.execute("SELECT * FROM sessions WHERE case_id = ? AND ended_at IS NULL",
                               (row["case_id"],)).fetchone()
        if session is None:
            return "no_session"
        party = conn.execute("SELECT * FROM parties WHERE id = ?", (row["party_id"],)).fetchone()
        conn.execute("UPDATE invitations SET used_at = ? WHERE id = ?", (now_iso(), row["id"]))
        conn.execute("UPDATE parties SET consent = ?, consent_at = ? WHERE id = ?",
                     (json.dumps(consents, sort_keys=True), now_iso(), party["id"]))
        _audit(conn, actor, "consent.given", f"party:{party['id']}", row["case_id"], "",
               **consents)
        _audit(conn, actor, "invitation.redeemed", f"invitation:{row['id']}", row["case_id"],
               room=session["room"])
        grant = issue_grant(conn, session["id"], f"party-{party['id']}", "party", ttl,
                            invitation_id=row["id"])
        return {"room": session["room"], "party_id": party["id"], "name": party["name"],
                "case_id": row["case_id"], "consent": consents, "grant": grant}

    result = await request.app[DB].run(run)
    if isinstance(result, str):
        statuses = {"unknown": (web.HTTPNotFound, "no such invitation"),
                    "revoked": (web.HTTPGone, "the invitation was revoked"),
                    "used": (web.HTTPGone, "the invitation has been used"),
                    "expired": (web.HTTPGone, "the invitation has expired"),
                    "not_yet": (web.HTTPConflict, "the invitation is not valid yet"),
                    "no_session": (web.HTTPConflict, "the officer has not opened the session")}
        if result in ("unknown", "revoked", "used", "expired"):
            limiter.fail(key)
        cls, message = statuses[result]
        raise _json_error(cls, result, message)
    participant = f"party-{result['party_id']}"
    result["participant"] = participant
    if not consents["face"]:
        await _forget_reference(request, result["case_id"], result["party_id"],
                                actor=f"party:{result['party_id']}",
                                reason="the party declined face checks")
    result["token"] = request.app[SIGNER].mint(
        result["room"], participant, name=result["name"], role="party", ttl=ttl,
        grant_id=result.pop("grant"))
    return web.json_response(result)


async def _forget_reference(request: web.Request, case_id: int, party_id: int, *,
                            actor: str, reason: str) -> None:
    from .app import VERIFIER

    if VERIFIER in request.app:
        await request.app[VERIFIER].forget(f"case-{case_id}", f"party-{party_id}",
                                           actor=actor, reason=reason, case=str(case_id))


async def close_case(request: web.Request) -> web.Response:
    """Close a case: no more sessions or invitations, and its parties' face data goes."""
    officer = await _officer(request)
    case_id = _case_id(request)
    reason = _text(await read_object(request), "reason", max_len=500)

    def run(conn: sqlite3.Connection) -> list[int]:
        _open_case(load_case(conn, officer, case_id))
        if conn.execute("SELECT 1 FROM sessions WHERE case_id = ? AND ended_at IS NULL",
                        (case_id,)).fetchone():
            raise _json_error(web.HTTPConflict, "session_open", "end the open session first")
        conn.execute("UPDATE cases SET status = 'closed' WHERE id = ?", (case_id,))
        conn.execute("UPDATE invitations SET revoked_at = ? WHERE case_id = ? "
                     "AND used_at IS NULL AND revoked_at IS NULL", (now_iso(), case_id))
        _audit(conn, officer.actor, "case.closed", f"case:{case_id}", case_id, reason)
        return [r["id"] for r in conn.execute("SELECT id FROM parties WHERE case_id = ?",
                                              (case_id,))]

    parties = await request.app[DB].run(run)
    for party_id in parties:
        await _forget_reference(request, case_id, party_id, actor=officer.actor,
                                reason=f"case closed: {reason}")
    return web.json_response({"closed": case_id})


async def get_audit(request: web.Request) -> web.Response:
    officer = await _officer(request)
    case_id = _case_id(request)

    def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
        load_case(conn, officer, case_id)
        return rows(conn.execute("SELECT * FROM audit WHERE case_id = ? ORDER BY id",
                                 (case_id,)))

    return web.json_response({"audit": await request.app[DB].run(run)})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/login", post_login)
    app.router.add_post("/api/logout", post_logout)
    app.router.add_post("/api/cases", post_case)
    app.router.add_get("/api/cases", list_cases)
    app.router.add_get("/api/cases/{case}", get_case)
    app.router.add_post("/api/cases/{case}/parties", post_party)
    app.router.add_post("/api/cases/{case}/sessions", post_session)
    app.router.add_post("/api/cases/{case}/sessions/{session}/end", end_session)
    app.router.add_post("/api/cases/{case}/sessions/{session}/token", session_token)
    app.router.add_post(
        "/api/cases/{case}/sessions/{session}/{action:remove|mute|unmute|lock|unlock}",
        session_action)
    app.router.add_post("/api/cases/{case}/invitations", post_invitation)
    app.router.add_post("/api/invitations/{invitation:[0-9]{1,18}}/revoke", revoke_invitation)
    app.router.add_post("/api/invitations/redeem", redeem_invitation)
    app.router.add_get("/api/cases/{case}/audit", get_audit)
    app.router.add_post("/api/cases/{case}/close", close_case)
