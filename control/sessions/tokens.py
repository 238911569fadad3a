"""Signed join tokens: bound to a room and a participant, with an expiry.

Format: ``v1.<base64url(JSON claims)>.<base64url(HMAC-SHA256(secret, "v1." + claims part))>``.
Claims: ``room``, ``sub`` (participant ID), ``name``, ``role``, ``iat``, ``exp``, and ``gid`` when
the control plane issued the token for a case session: the ID of its row in ``call_grants``,
against which every join is checked (:func:`control.access.admission`). Tokens without ``gid``
(``remotecase token``, ``POST /dev/token``) are admitted only in development mode.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from .. import i18n
from ..config import AuthConfig

VERSION = "v1"
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
ROLES = ("party", "officer", "supervisor", "observer")


class TokenError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Grant:
    room: str
    participant: str
    name: str
    role: str
    expires_at: int
    grant_id: str | None = None  # the call_grants row of a case call's token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def valid_id(value: str) -> bool:
    return bool(_ID.match(value))


class TokenSigner:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("token secret must be at least 32 bytes")
        self._secret = secret

    @classmethod
    def from_file(cls, path: Path) -> TokenSigner:
        """Load the secret, creating it (0600, exclusive create) on first use."""
        try:
            return cls(path.read_bytes().strip())
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret = secrets.token_hex(32).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race
            return cls(path.read_bytes().strip())
        with os.fdopen(fd, "wb") as fh:
            fh.write(secret)
        return cls(secret)

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._secret, f"{VERSION}.{body}".encode(), hashlib.sha256).digest())

    def mint(
        self,
        room: str,
        participant: str,
        *,
        name: str = "",
        role: str = "party",
        ttl: int = AuthConfig.token_ttl,
        now: float | None = None,
        grant_id: str | None = None,
    ) -> str:
        if not valid_id(room) or not valid_id(participant):
            raise ValueError("room and participant IDs: 1-64 of A-Z a-z 0-9 _ . : -")
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        issued = int(time.time() if now is None else now)
        claims = {
            "room": room,
            "sub": participant,
            "name": name[:100] or participant,
            "role": role,
            "iat": issued,
            "exp": issued + int(ttl),
        }
        if grant_id is not None:
            if not valid_id(grant_id):
                raise ValueError("grant IDs: 1-64 of A-Z a-z 0-9 _ . : -")
            claims["gid"] = grant_id
        body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        return f"{VERSION}.{body}.{self._sign(body)}"

    def verify(
        self, token: object, *, now: float | None = None, check_expiry: bool = True
    ) -> Grant:
        """The grant a token carries; ``check_expiry=False`` also takes one past its expiry
        (still only with a valid signature: which admission a page holds, not a way in)."""
        if not isinstance(token, str) or len(token) > 2048:
            raise TokenError("bad_token", i18n.both("bad_token.missing"))
        if not token.isascii():  # never one of ours (base64url), and hmac compares ASCII only
            raise TokenError("bad_token", i18n.both("bad_token.signature"))
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise TokenError("bad_token", i18n.both("bad_token.version"))
        _, body, signature = parts
        if not hmac.compare_digest(self._sign(body), signature):
            raise TokenError("bad_token", i18n.both("bad_token.signature"))
        try:
            claims = json.loads(_unb64(body))
            gid = claims.get("gid")
            if gid is not None and not isinstance(gid, str):
                raise TypeError("gid")
            grant = Grant(
                str(claims["room"]),
                str(claims["sub"]),
                str(claims["name"]),
                str(claims["role"]),
                int(claims["exp"]),
                gid,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TokenError("bad_token", i18n.both("bad_token.claims")) from None
        if check_expiry and grant.expires_at <= int(time.time() if now is None else now):
            raise TokenError("token_expired", i18n.both("token_expired"))
        return grant
