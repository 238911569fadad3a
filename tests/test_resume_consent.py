"""ICE consent freshness as RFC 7675 has it (mediaserver/aiortc_hooks.py's query_consent): a
connection whose peer stops answering keeps consent until no answer at all came for
CONSENT_EXPIRY; aioice's own gave up after 6 unanswered single requests.

Two real aioice connections on 127.0.0.1; the answering side is made deaf to STUN requests
(its datagrams still flow the other way), so only the consent checks go unanswered. The
intervals are shortened so the test runs in seconds; the logic is the one the server runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aioice
import pytest

from mediaserver import aiortc_hooks
from tests.conftest import wait_until


async def _pair() -> tuple[aioice.Connection, aioice.Connection]:
    aiortc_hooks.install()
    aiortc_hooks.restrict_host_addresses(["127.0.0.1"])
    a = aioice.Connection(ice_controlling=True)
    b = aioice.Connection(ice_controlling=False)
    await asyncio.gather(a.gather_candidates(), b.gather_candidates())
    for this, other in ((a, b), (b, a)):
        for candidate in other.local_candidates:
            await this.add_remote_candidate(candidate)
        await this.add_remote_candidate(None)
        this.remote_username = other.local_username
        this.remote_password = other.local_password
    await asyncio.gather(a.connect(), b.connect())
    return a, b


def _deaf(connection: aioice.Connection, deaf: bool) -> None:
    """Make ``connection`` ignore every STUN request (a peer that went away), or hear again."""
    if deaf:
        connection.request_received = lambda *args, **kwargs: None  # type: ignore[method-assign]
    else:
        del connection.request_received


def _consenting(connection: aioice.Connection) -> bool:
    return connection._query_consent_task is not None and bool(connection._nominated)


async def test_consent_survives_many_misses_and_expires_after_the_silence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aiortc_hooks, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(aiortc_hooks, "CONSENT_RETRANSMISSIONS", 0)  # each check: 0.5 s
    monkeypatch.setattr(aiortc_hooks, "CONSENT_EXPIRY", 6.0)
    # (protocol, loop time) of every consent check that failed or was answered, both sides
    misses: list[tuple[Any, float]] = []
    answers: list[tuple[Any, float]] = []
    original_request = aioice.ice.StunProtocol.request

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            response = await original_request(self, *args, **kwargs)
        except aioice.stun.TransactionError:
            misses.append((self, asyncio.get_running_loop().time()))
            raise
        answers.append((self, asyncio.get_running_loop().time()))
        return response

    monkeypatch.setattr(aioice.ice.StunProtocol, "request", counted)
    a, b = await _pair()
    loop = asyncio.get_running_loop()

    mine = list(a._protocols)  # a's sockets (emptied when it closes)

    def of_a(events: list[tuple[Any, float]]) -> list[float]:
        return [t for protocol, t in events if protocol in mine]

    try:
        assert _consenting(a)
        # the peer stops answering for 4.8 s: more than aioice's six misses, less than expiry
        _deaf(b, True)
        await asyncio.sleep(4.8)
        assert len(of_a(misses)) >= 6, misses
        assert _consenting(a), "consent expired before CONSENT_EXPIRY without an answer"
        _deaf(b, False)
        answered = len(of_a(answers))
        await wait_until(
            lambda: len(of_a(answers)) > answered, what="a consent check answered again"
        )
        # now silent for good: consent goes, but not before CONSENT_EXPIRY
        _deaf(b, True)
        deaf_at = loop.time()
        await wait_until(lambda: not _consenting(a), timeout=15, what="consent expired")
        # from the last answer (a check in flight when the peer went deaf may still have had
        # one), at least CONSENT_EXPIRY
        assert loop.time() - of_a(answers)[-1] >= 6.0
        assert loop.time() - deaf_at >= 6.0 - 0.5
    finally:
        await a.close()
        await b.close()
