"""The SQL of officer accounts and of the first start's setup links: plain functions over a
connection, each run as one transaction by ``db.run``; refusals are returned, not raised.

Passwords arrive here already hashed (``auth.hash_password`` runs in a thread of its own, never
on the database's thread). Every change is in the audit trail (case ``None``) with its actor.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from typing import Any

from ..access import audit
from ..auth import ACCOUNT_ROLES, Officer, now_iso
from ..refusals import CodedRefusal


class Refusal(CodedRefusal):
    """Why an account function did nothing: ``(code, message)``."""

    NO_OFFICER = ("not_found", "没有该民警账号 / no such officer")
    USERNAME_TAKEN = ("username_taken", "该用户名已被使用 / this user name is taken")
    LAST_SUPERVISOR = (
        "last_supervisor",
        "不能停用或降级最后一名启用的主管 / the last enabled supervisor cannot be disabled or "
        "given another role",
    )
    SELF = ("self", "不能停用自己的账号或更改自己的角色 / you cannot disable or demote yourself")
    SETUP_DONE = ("setup_done", "已有民警账号，初始设置已完成 / officers exist: setup is done")
    SETUP_LINK = (
        "setup_link_invalid",
        "设置链接无效、已使用或已过期，请重启服务器获取新链接 / the setup link is unknown, used "
        "or expired: restart the server for a new one",
    )


COLUMNS = "id, username, role, brigade, created_at, disabled"


def _public(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["disabled"] = bool(out["disabled"])
    return out


def list_officers(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(f"SELECT {COLUMNS} FROM officers ORDER BY id").fetchall()
    return [_public(r) for r in rows]


def officer_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM officers").fetchone()[0])


def _insert(
    conn: sqlite3.Connection, username: str, password_hash: str, role: str, brigade: str
) -> dict[str, Any] | Refusal:
    if role not in ACCOUNT_ROLES:
        raise ValueError(role)  # checked by the handler
    try:
        cursor = conn.execute(
            "INSERT INTO officers (username, password_hash, role, brigade, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (username, password_hash, role, brigade, now_iso()),
        )
    except sqlite3.IntegrityError:
        return Refusal.USERNAME_TAKEN
    row = conn.execute(f"SELECT {COLUMNS} FROM officers WHERE id = ?", (cursor.lastrowid,))
    return _public(row.fetchone())


def add_officer(
    conn: sqlite3.Connection,
    who: Officer,
    username: str,
    password_hash: str,
    role: str,
    brigade: str,
    reason: str,
) -> dict[str, Any] | Refusal:
    added = _insert(conn, username, password_hash, role, brigade)
    if not isinstance(added, Refusal):
        audit(
            conn,
            who.actor,
            "officer.created",
            f"officer:{username}",
            None,
            reason,
            role=role,
            brigade=brigade,
        )
    return added


def _enabled_supervisors(conn: sqlite3.Connection) -> int:
    return int(
        conn.execute(
            "SELECT COUNT(*) FROM officers WHERE role = 'supervisor' AND disabled = 0"
        ).fetchone()[0]
    )


def end_logins(conn: sqlite3.Connection, officer_id: int) -> int:
    """Revoke every open login of an officer; how many there were."""
    cursor = conn.execute(
        "UPDATE logins SET revoked_at = ? WHERE officer_id = ? AND revoked_at IS NULL",
        (now_iso(), officer_id),
    )
    return cursor.rowcount


def change_officer(
    conn: sqlite3.Connection,
    who: Officer,
    officer_id: int,
    *,
    disabled: bool | None = None,
    role: str | None = None,
    password_hash: str | None = None,
    reason: str = "",
) -> dict[str, Any] | Refusal:
    """Disable or enable an account, change its role, set a new password (what is given).
    Disabling or a new password ends the account's logins; the last enabled supervisor keeps
    its role and stays enabled, and nobody disables or demotes itself."""
    row = conn.execute(f"SELECT {COLUMNS} FROM officers WHERE id = ?", (officer_id,)).fetchone()
    if row is None:
        return Refusal.NO_OFFICER
    before = _public(row)
    target = f"officer:{before['username']}"
    weakens = (disabled is True and not before["disabled"]) or (
        role is not None and role != "supervisor" and before["role"] == "supervisor"
    )
    if weakens and officer_id == who.id:
        return Refusal.SELF
    if (
        weakens
        and before["role"] == "supervisor"
        and not before["disabled"]
        and _enabled_supervisors(conn) <= 1
    ):
        return Refusal.LAST_SUPERVISOR
    ended = 0
    if disabled is not None and disabled != before["disabled"]:
        conn.execute("UPDATE officers SET disabled = ? WHERE id = ?", (int(disabled), officer_id))
        if disabled:
            ended = end_logins(conn, officer_id)
        action = "officer.disabled" if disabled else "officer.enabled"
        audit(conn, who.actor, action, target, None, reason, logins_ended=ended)
    if role is not None and role != before["role"]:
        conn.execute("UPDATE officers SET role = ? WHERE id = ?", (role, officer_id))
        audit(
            conn,
            who.actor,
            "officer.role_changed",
            target,
            None,
            reason,
            old=before["role"],
            new=role,
        )
    if password_hash is not None:
        conn.execute(
            "UPDATE officers SET password_hash = ? WHERE id = ?", (password_hash, officer_id)
        )
        ended += end_logins(conn, officer_id)
        audit(conn, who.actor, "officer.password_reset", target, None, reason)
    after = _public(
        conn.execute(f"SELECT {COLUMNS} FROM officers WHERE id = ?", (officer_id,)).fetchone()
    )
    after["logins_ended"] = ended
    return after


def disable_by_name(conn: sqlite3.Connection, username: str, actor: str) -> dict[str, Any] | None:
    """The CLI's ``officer disable``: no checks but existence (the console's operator may lock
    out the last supervisor; ``officer add`` makes a new one)."""
    row = conn.execute("SELECT id, disabled FROM officers WHERE username = ?", (username,))
    found = row.fetchone()
    if found is None:
        return None
    ended = 0
    if not found["disabled"]:
        conn.execute("UPDATE officers SET disabled = 1 WHERE id = ?", (found["id"],))
        ended = end_logins(conn, found["id"])
        audit(
            conn, actor, "officer.disabled", f"officer:{username}", None, "cli", logins_ended=ended
        )
    return {"id": found["id"], "was_disabled": bool(found["disabled"]), "logins_ended": ended}


# -- the first start's setup link ----------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_setup_link(conn: sqlite3.Connection, token: str, ttl: float) -> bool:
    """Store a setup link's hash when no officer exists yet (True), else nothing (False)."""
    if officer_count(conn) > 0:
        return False
    conn.execute(
        "INSERT INTO setup_links (token_hash, created_at, expires_at) VALUES (?, ?, ?)",
        (_digest(token), now_iso(), time.time() + ttl),
    )
    return True


def setup_open(conn: sqlite3.Connection, token: str) -> bool | Refusal:
    """Whether ``token`` would create the first supervisor now (nothing is changed)."""
    if officer_count(conn) > 0:
        return Refusal.SETUP_DONE
    row = conn.execute(
        "SELECT 1 FROM setup_links WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?",
        (_digest(token), time.time()),
    ).fetchone()
    return True if row is not None else Refusal.SETUP_LINK


def first_supervisor(
    conn: sqlite3.Connection,
    token: str,
    username: str,
    password_hash: str,
    brigade: str,
    actor: str,
) -> dict[str, Any] | Refusal:
    """Spend a setup link on the first supervisor, in one transaction: once an officer exists,
    every link is dead; a used or expired one never works."""
    if officer_count(conn) > 0:
        return Refusal.SETUP_DONE
    cursor = conn.execute(
        "UPDATE setup_links SET used_at = ? WHERE token_hash = ? AND used_at IS NULL "
        "AND expires_at > ?",
        (now_iso(), _digest(token), time.time()),
    )
    if cursor.rowcount != 1:
        return Refusal.SETUP_LINK
    added = _insert(conn, username, password_hash, "supervisor", brigade)
    if not isinstance(added, Refusal):
        audit(
            conn,
            actor,
            "officer.created",
            f"officer:{username}",
            None,
            "first start",
            role="supervisor",
            brigade=brigade,
            setup=True,
        )
    return added
