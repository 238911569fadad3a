"""Recovery on impaired links (issue 18): real aiortc peers through the SFU, with the
impairment of :mod:`bench.impair` on a party's own sockets."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.impair import ImpairedLink, Impairment


class _Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append(data)


async def test_link_loses_delays_reorders_and_goes_dark() -> None:
    """The harness itself, on two UDP sockets of 127.0.0.1."""
    loop = asyncio.get_running_loop()
    rx_transport, rx = await loop.create_datagram_endpoint(_Collect, local_addr=("127.0.0.1", 0))
    tx_transport, tx = await loop.create_datagram_endpoint(_Collect, local_addr=("127.0.0.1", 0))
    addr = rx_transport.get_extra_info("sockname")
    link = ImpairedLink(up=Impairment(loss=0.2, delay=0.03, jitter=0.02), seed=7)
    link._wrap(tx)
    try:
        for i in range(500):
            tx.transport.sendto(i.to_bytes(2, "big"), addr)
        await asyncio.sleep(0.2)
        order = [int.from_bytes(d, "big") for d in rx.got]
        assert link.up.datagrams == 500 and link.up.lost + link.up.delivered == 500
        assert 50 < link.up.lost < 150  # about 20%
        assert len(order) == link.up.delivered
        assert order != sorted(order) and link.up.reordered > 0  # jitter reorders
        rx.got.clear()
        link.outage(0.3)
        tx.transport.sendto(b"dark", addr)
        await asyncio.sleep(0.1)
        assert rx.got == [] and link.up.outage_dropped == 1
        await asyncio.sleep(0.25)
        link.set_impairment(up=Impairment(rate_bps=80_000, queue=0.1))
        for _ in range(40):  # 40 x (1000 + 28) bytes at 80 kbit/s: 4 s; the queue holds 0.1 s
            tx.transport.sendto(bytes(1000), addr)
        assert link.up.queue_dropped > 30
    finally:
        link.close()
        rx_transport.close()
        tx_transport.close()
