"""Officer accounts and logins.

Passwords are hashed with scrypt (N=2^17, r=8, p=1: 128 MiB and most of a second per check,
16-byte salt), stored as ``scrypt$ln=17,r=8,p=1$salt$digest``; an account stored at a lower
cost (the older ``scrypt$salt$digest`` is N=2^14) is rehashed at its next successful login.
The hashing runs in a thread, at most :data:`HASHING_AT_ONCE` at a time (memory), never on the
event loop nor on the database's thread. An unknown user name costs one check against a dummy
hash, as a known one does, so the answer's time does not tell which names exist.

A login gives a random token, stored only as its SHA-256, valid for ``LOGIN_TTL`` and revoked
by logout. Failed logins slow further attempts (:class:`Throttle`): per user name from every
address, and per client address over every name, with delays that grow with the failures and
are capped, never a lockout that an attacker could keep an owner in.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import functools
import hashlib
import hmac
import math
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .db import Database

LOGIN_TTL = 8 * 3600
ACCOUNT_ROLES = ("officer", "supervisor", "observer")
SCRYPT = {"n": 1 << 17, "r": 8, "p": 1}
_LEGACY_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1}  # hashes of the form scrypt$salt$digest
_MAXMEM = 256 * 1024 * 1024  # scrypt needs 128 * r * n bytes: 128 MiB at the current cost
HASHING_AT_ONCE = 2
_HASHING = threading.BoundedSemaphore(HASHING_AT_ONCE)
# the server's logins queue here, not in asyncio's default threads (which others need)
_HASHER = ThreadPoolExecutor(max_workers=HASHING_AT_ONCE, thread_name_prefix="scrypt")


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _scrypt(password: str, salt: bytes, cost: dict[str, int]) -> bytes:
    with _HASHING:
        return hashlib.scrypt(password.encode(), salt=salt, dklen=32, maxmem=_MAXMEM, **cost)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT)
    params = f"ln={SCRYPT['n'].bit_length() - 1},r={SCRYPT['r']},p={SCRYPT['p']}"
    return (
        f"scrypt${params}$"
        + base64.b64encode(salt).decode()
        + "$"
        + base64.b64encode(digest).decode()
    )


def _parse(stored: str) -> tuple[dict[str, int], bytes, bytes] | None:
    parts = stored.split("$")
    try:
        if len(parts) == 3 and parts[0] == "scrypt":
            cost = dict(_LEGACY_SCRYPT)
        elif len(parts) == 4 and parts[0] == "scrypt":
            fields = dict(item.split("=", 1) for item in parts[1].split(","))
            cost = {"n": 1 << int(fields["ln"]), "r": int(fields["r"]), "p": int(fields["p"])}
            if not (1 <= int(fields["ln"]) <= 20 and 1 <= cost["r"] <= 32 and 1 <= cost["p"] <= 4):
                return None
        else:
            return None
        return cost, base64.b64decode(parts[-2]), base64.b64decode(parts[-1])
    except (ValueError, KeyError):
        return None


def check_password(password: str, stored: str) -> bool:
    parsed = _parse(stored)
    if parsed is None:
        return False
    cost, salt, digest = parsed
    return hmac.compare_digest(_scrypt(password, salt, cost), digest)


def needs_rehash(stored: str) -> bool:
    """Stored at a lower cost than today's (rehashed at the next successful login)."""
    parsed = _parse(stored)
    return parsed is not None and any(parsed[0][k] < SCRYPT[k] for k in SCRYPT)


@functools.cache
def _dummy_hash() -> str:
    """What an unknown user name is checked against: today's cost, a digest nothing matches
    (random bytes: making it costs no hashing)."""
    params = f"ln={SCRYPT['n'].bit_length() - 1},r={SCRYPT['r']},p={SCRYPT['p']}"
    return (
        f"scrypt${params}$"
        + base64.b64encode(secrets.token_bytes(16)).decode()
        + "$"
        + base64.b64encode(secrets.token_bytes(32)).decode()
    )


def check_login(password: str, stored: str | None) -> tuple[bool, str | None]:
    """(password right, a new hash if the stored one is cheaper than today's); blocking.

    ``stored`` None (no such account) costs one check against a dummy hash, like a real one.
    """
    if stored is None:
        check_password(password, _dummy_hash())
        return False, None
    if not check_password(password, stored):
        return False, None
    return True, hash_password(password) if needs_rehash(stored) else None


def token_hash(token: str) -> str:
    """The SHA-256 a token is kept as. Tokens the server makes are ASCII (base64url), and
    every endpoint refuses one that is not (400/401) before it gets here; a text that is not
    ASCII, even lone surrogates (valid JSON, ``"\\ud800"``; a header's undecodable bytes),
    still hashes (UTF-8, surrogates as they are) to a value no token of ours has: it opens
    nothing, and never raises."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


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


def create_officer(
    conn: sqlite3.Connection, username: str, password: str, role: str, brigade: str
) -> int:
    if role not in ACCOUNT_ROLES:
        raise ValueError(
            f"角色须为以下之一：{', '.join(ACCOUNT_ROLES)} / role must be one of "
            f"{', '.join(ACCOUNT_ROLES)}"
        )
    if len(password) < MIN_PASSWORD:
        raise ValueError(
            f"密码至少 {MIN_PASSWORD} 个字符 / passwords have at least {MIN_PASSWORD} characters"
        )
    cursor = conn.execute(
        "INSERT INTO officers (username, password_hash, role, brigade, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (username, hash_password(password), role, brigade, now_iso()),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


async def hash_async(password: str) -> str:
    """``hash_password`` for the server: in the hashing threads, never on the event loop nor on
    the database's thread."""
    return await asyncio.get_running_loop().run_in_executor(_HASHER, hash_password, password)


MIN_PASSWORD = 10


class Throttle:
    """Growing delays after failures, per key (a user name, a client address), in memory.

    The first ``free`` failures of a key cost nothing; after them each further attempt waits
    ``base * 2 ** (failures - free)`` seconds after the last failure, at most ``cap``. An
    attempt made before that is refused (and not counted), with the time left. A key's
    failures are forgotten after ``forget`` seconds without one. At most ``max_keys`` keys are
    kept (the quietest go first), so that a flood of names cannot fill memory.
    """

    def __init__(
        self,
        *,
        free: int = 5,
        base: float = 1.0,
        cap: float = 60.0,
        forget: float = 900.0,
        max_keys: int = 100_000,
    ) -> None:
        self.free, self.base, self.cap, self.forget = free, base, cap, forget
        self.max_keys = max_keys
        self._keys: OrderedDict[str, tuple[int, float]] = OrderedDict()  # failures, last

    def _state(self, key: str, now: float) -> tuple[int, float]:
        failures, last = self._keys.get(key, (0, 0.0))
        if failures and now - last > self.forget:
            del self._keys[key]
            return 0, 0.0
        return failures, last

    def delay(self, failures: int) -> float:
        if failures < self.free:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(failures - self.free, 60))

    def wait(self, *keys: str) -> float:
        """Seconds until an attempt for all ``keys`` is checked (0: now)."""
        now = time.monotonic()
        left = 0.0
        for key in keys:
            failures, last = self._state(key, now)
            left = max(left, last + self.delay(failures) - now)
        return left

    def fail(self, *keys: str) -> None:
        now = time.monotonic()
        for key in keys:
            failures, _ = self._state(key, now)
            self._keys[key] = (failures + 1, now)
            self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)

    def forgive(self, *keys: str) -> None:
        for key in keys:
            self._keys.pop(key, None)

    def restart(self, *keys: str) -> None:
        """Count the delay from now (a charged attempt has been found wrong)."""
        now = time.monotonic()
        for key in keys:
            failures, _ = self._state(key, now)
            if failures:
                self._keys[key] = (failures, now)

    def refund(self, *keys: str) -> None:
        """Take back one failure (an attempt charged up front that succeeded)."""
        now = time.monotonic()
        for key in keys:
            failures, last = self._state(key, now)
            if failures > 1:
                self._keys[key] = (failures - 1, last)
            else:
                self._keys.pop(key, None)


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


def _account(conn: sqlite3.Connection, username: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT * FROM officers WHERE username = ? AND disabled = 0", (username,)
    ).fetchone()
    return None if row is None else dict(row)


def _open_login(
    conn: sqlite3.Connection, account: dict[str, Any], new_hash: str | None
) -> tuple[str, Officer]:
    if new_hash is not None:
        conn.execute(
            "UPDATE officers SET password_hash = ? WHERE id = ? AND password_hash = ?",
            (new_hash, account["id"], account["password_hash"]),
        )
    token = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO logins (token_hash, officer_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        (token_hash(token), account["id"], now_iso(), time.time() + LOGIN_TTL),
    )
    return token, Officer(account["id"], account["username"], account["role"], account["brigade"])


def login(conn: sqlite3.Connection, username: str, password: str) -> tuple[str, Officer] | None:
    """A login in one transaction, hashing included (command-line tools and tests)."""
    account = _account(conn, username)
    ok, new_hash = check_login(password, None if account is None else account["password_hash"])
    if account is None or not ok:
        return None
    return _open_login(conn, account, new_hash)


async def login_async(
    database: Database, username: str, password: str
) -> tuple[str, Officer] | None:
    """A login for the server: the account is read, the password checked in a thread of its
    own (the database's thread goes on serving), then the login is stored."""
    account = await database.run(lambda c: _account(c, username))
    ok, new_hash = await asyncio.get_running_loop().run_in_executor(
        _HASHER, check_login, password, None if account is None else account["password_hash"]
    )
    if account is None or not ok:
        return None
    return await database.run(lambda c: _open_login(c, account, new_hash))


def officer_for(conn: sqlite3.Connection, token: str) -> Officer | None:
    row = conn.execute(
        "SELECT o.* FROM logins l JOIN officers o ON o.id = l.officer_id "
        "WHERE l.token_hash = ? AND l.revoked_at IS NULL AND l.expires_at > ? "
        "AND o.disabled = 0",
        (token_hash(token), time.time()),
    ).fetchone()
    return None if row is None else Officer(row["id"], row["username"], row["role"], row["brigade"])


def logout(conn: sqlite3.Connection, token: str) -> bool:
    cursor = conn.execute(
        "UPDATE logins SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL",
        (now_iso(), token_hash(token)),
    )
    return cursor.rowcount == 1
