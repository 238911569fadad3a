"""The signalling WebSocket's heartbeat: a ping every ``interval``, a pong awaited ``timeout``.

aiohttp's own heartbeat waits half the interval for the pong, which ties two choices together:
ping often to notice a dead client soon, and the pong must come back within half of that,
so a link that drops out for two seconds (a tunnel, a handover between cells; TCP then backs
off its retransmissions) would end the call. Here they are set apart: pings every 2.5 s, and
a client is dead only when a pong is 8 s late (``server.ws_heartbeat``,
``server.ws_pong_timeout``). Any message from the client counts as alive too.
"""

from __future__ import annotations

from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from mediaserver.protocols import CloseReason

# Behind the front (control/front.py) a worker sees the front's socket, not the client's: the
# front closes it with this code when the client's connection ended without a WebSocket close
# (socket_end below: the participant leaves as ``gone``)
CLOSE_CLIENT_GONE = 4020


class HeartbeatSocket(web.WebSocketResponse):
    def __init__(self, *, interval: float, timeout: float, **kwargs: Any) -> None:
        """``interval`` 0 turns the pings off."""
        super().__init__(heartbeat=interval or None, **kwargs)
        if interval:
            # aiohttp 3.14 reads the pong deadline from here (set to heartbeat / 2 above);
            # tests/test_network_liveness.py fails if an upgrade stops honouring it
            self._pong_heartbeat = timeout


def dead_after(interval: float, timeout: float) -> float:
    """The longest a dead client goes unnoticed: a ping's interval, then its pong's wait."""
    return interval + timeout if interval else float("inf")


def socket_end(kind: WSMsgType, code: int | None, exc: BaseException | None) -> CloseReason:
    """Why a client's socket ended that said neither ``leave`` nor ``unload``, as far as the
    server can tell: ``kind`` is what ``receive()`` returned, ``code`` and ``exc`` the socket's
    ``close_code`` and ``exception()``. One rule for a worker's session and for the front.

    A missed pong is always ``signalling_lost`` (a network that went away sends nothing at all,
    not even a reset), however aiohttp reports it: ``ERROR`` with a ``TimeoutError`` when the
    deadline passed while the session waited in ``receive()``, but ``CLOSED`` with the same
    ``TimeoutError`` as the socket's exception when it passed while the session was busy
    (handling a ``publish``, or the front sending on): so the exception is looked at first.
    ``gone``: the page's process died, which the server sees two ways: its TCP connection
    ended (FIN or reset) without a WebSocket close (the browser killed: the kernel closes its
    sockets; aiohttp reads that end of the stream as ``CLOSED``, or as ``ERROR`` with a
    ``ConnectionError``), or a close 1001 "going away" with no ``unload`` before it (a renderer
    that crashed: Chromium's network service closes the page's sockets so; a page that is left
    normally says ``unload`` first). Anything else is ``signalling_lost``, waited for the whole
    resume grace: a close with another code is the client's own (a page closes a socket it
    found dead before it resumes on a new one). Behind the front the worker hears the front's
    socket: the front passes the client's 1001 on and says ``gone`` with ``CLOSE_CLIENT_GONE``."""
    if isinstance(exc, TimeoutError):
        return CloseReason.SIGNALLING_LOST
    if kind == WSMsgType.CLOSED:
        return CloseReason.GONE
    if kind in (WSMsgType.CLOSE, WSMsgType.CLOSING) and code in (
        WSCloseCode.GOING_AWAY,
        CLOSE_CLIENT_GONE,
    ):
        return CloseReason.GONE
    if kind == WSMsgType.ERROR and isinstance(exc, ConnectionError):
        return CloseReason.GONE
    return CloseReason.SIGNALLING_LOST
