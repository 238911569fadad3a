"""Officer accounts and logins.

Passwords are hashed with scrypt (n=2^14, r=8, p=1, 16-byte salt). A login gives a random
token, stored only as its SHA-256, valid for ``LOGIN_TTL`` and revoked by logout. Failed logins
are rate-limited per user name and per client address.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import secrets
import sqlite3
import time
from collections import defaultdict, deque
from dataclasses import dataclass

LOGIN_TTL = 8 * 3600
ACCOUNT_ROLES = ("officer", "supervisor", "observer")
MAX_FAILURES = 5
FAILURE_WINDOW = 300.0
SCRYPT = {"n": 1 << 14, "r": 8, "p": 1}


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt_b64), dklen=32,
                            **SCRYPT)
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Officer:
    id: int
    username: str
    role: str  # officer | supervisor | observer (reads its brigade's cases, changes nothing)
    brigade: str

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.username}"

    def may_touch(self, brigade: str) -> bool:
        return self.role == "supervisor" or brigade == self.brigade


def create_officer(conn: sqlite3.Connection, username: str, password: str, role: str,
                   brigade: str) -> int:
    if role not in ACCOUNT_ROLES:
        raise ValueError(f"role must be one of {', '.join(ACCOUNT_ROLES)}")
    if len(password) < 10:
        raise ValueError("passwords have at least 10 characters")
    cursor = conn.execute(
        "INSERT INTO officers (username, password_hash, role, brigade, created_at) "
        "VALUES (?, ?, ?, ?, ?)", (username, hash_password(password), role, brigade, now_iso()))
    assert cursor.lastrowid is not None
    return cursor.lastrowid


class RateLimiter:
    """Failures per key in a sliding window (in memory: per server process)."""

    def __init__(self, limit: int = MAX_FAILURES, window: float = FAILURE_WINDOW) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def blocked(self, *keys: str) -> bool:
        now = time.monotonic()
        for key in keys:
            failures = self._failures[key]
            while failures and now - failures[0] > self.window:
                failures.popleft()
            if len(failures) >= self.limit:
                return True
        return False

    def fail(self, *keys: str) -> None:
        now = time.monotonic()
        for key in keys:
            self._failures[key].append(now)


def login(conn: sqlite3.Connection, username: str, password: str) -> tuple[str, Officer] | None:
    row = conn.execute("SELECT * FROM officers WHERE username = ? AND disabled = 0",
                       (username,)).fetchone()
    if row is None:
        check_password(password, hash_password("timing-equalizer"))  # same cost either way
        return None
    if not check_password(password, row["password_hash"]):
        return None
    token = secrets.token_urlsafe(32)
    conn.execute("INSERT INTO logins (token_hash, officer_id, created_at, expires_at) "
                 "VALUES (?, ?, ?, ?)", (token_hash(token), row["id"], now_iso(),
                                         time.time() + LOGIN_TTL))
    return token, Officer(row["id"], row["username"], row["role"], row["brigade"])


def officer_for(conn: sqlite3.Connection, token: str) -> Officer | None:
    row = conn.execute(
        "SELECT o.* FROM logins l JOIN officers o ON o.id = l.officer_id "
        "WHERE l.token_hash = ? AND l.revoked_at IS NULL AND l.expires_at > ? "
        "AND o.disabled = 0", (token_hash(token), time.time())).fetchone()
    return None if row is None else Officer(row["id"], row["username"], row["role"],
                                            row["brigade"])


def logout(conn: sqlite3.Connection, token: str) -> bool:
    cursor = conn.execute("UPDATE logins SET revoked_at = ? WHERE token_hash = ? "
                          "AND revoked_at IS NULL", (now_iso(), token_hash(token)))
    return cursor.rowcount == 1
