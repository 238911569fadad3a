"""TURN credentials as coturn's shared-secret scheme issues them (``use-auth-secret``, the
"TURN REST API" of draft-uberti-behave-turn-rest): the username is ``<expiry>:<participant>``
(expiry in Unix seconds), the password base64(HMAC-SHA1(secret, username)). coturn accepts them
until the expiry without knowing anyone: the secret is all it shares with this server.

Each ``joined`` and ``resumed`` carries credentials made for that participant
(``media.ice_servers[].secret`` and ``.ttl``); the secret itself never leaves the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from ..config import Config


def turn_credentials(secret: str, ttl: int, user: str, now: float | None = None) -> tuple[str, str]:
    """(username, password) good for ``ttl`` seconds from ``now``."""
    expiry = int(time.time() if now is None else now) + ttl
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def client_ice_servers(config: Config, participant: str) -> list[dict[str, Any]]:
    """The ICE servers a client is told in ``joined``: fixed credentials as configured, and
    time-limited ones made for ``participant`` where a server has a shared secret."""
    servers: list[dict[str, Any]] = []
    for server in config.media.ice_servers:
        entry: dict[str, Any] = {"urls": list(server.urls)}
        if server.secret:
            username, credential = turn_credentials(server.secret, server.ttl, participant)
            entry |= {"username": username, "credential": credential}
        else:
            if server.username:
                entry["username"] = server.username
            if server.credential:
                entry["credential"] = server.credential
        servers.append(entry)
    return servers
