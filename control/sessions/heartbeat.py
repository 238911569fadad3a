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

from aiohttp import web


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
