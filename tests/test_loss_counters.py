"""Where a subscriber's packets go (issue 17): the server's counters by participant role and
its own send drops on /metrics, and the education bench's reading of them and of the kernel."""

from __future__ import annotations

import os
import socket

import aiohttp
import pylibsrtp

from bench import education
from bench.peer import PatternVideoTrack, PeerClient
from mediaserver import aiortc_hooks
from tests.conftest import Server, join, wait_until


async def test_metrics_count_packets_by_role_and_the_servers_send_drops(
    server: Server, clients: list[PeerClient]
) -> None:
    officer = PeerClient(server.base_url, server.token("roles", "off", role="officer"))
    clients.append(officer)
    await officer.connect()
    party = await join(server, clients, "roles", "party", decode=False)
    await officer.publish(PatternVideoTrack(fps=15))
    room = server.sfu.rooms["roles"]
    await wait_until(
        lambda: any(d.packets > 20 for d in room.participants["party"].down_tracks()),
        timeout=20,
        what="forwarding",
    )
    async with aiohttp.ClientSession() as http, http.get(f"{server.base_url}/metrics") as r:
        text = await r.text()
    by_role = education.role_packets(text)
    up = room.participants["off"].up_tracks
    down = room.participants["party"].down_tracks()
    # what the server received from the officer and forwarded to the party, at the scrape
    assert 0 < by_role["officer"]["in_video"] <= sum(t.packets_in for t in up.values())
    assert 0 < by_role["party"]["out_video"] <= sum(d.packets for d in down)
    assert by_role["party"]["in_video"] == 0 and by_role["officer"]["out_video"] == 0
    counters = education._sfu_counters(text)
    # the server's own drops: summed over its down-tracks (each counts its writer's), not a
    # process-wide count another server in this process could move
    assert counters["send_dropped_packets_total"] == sum(
        d.send_drops.packets for p in room.participants.values() for d in p.down_tracks()
    )
    # the presenter's side of the same count: aiortc's own sender
    sent = education.sent_packets(officer)
    assert sent["video"] >= by_role["officer"]["in_video"] > 0
    assert party.closed_reason is None


def test_the_loss_breakdown_tells_the_uplink_the_server_and_the_viewers_apart() -> None:
    got = education.loss_breakdown(
        viewers=10,
        sent={"audio": 500, "video": 500},
        # 10% lost on the way in (what the server forwards to the presenter is not counted)
        server_in={"in_audio": 450, "in_video": 450, "out_video": 7777},
        # and the viewers' own cameras are not what they were forwarded
        to_viewers={"out_audio": 4500, "out_video": 4500, "in_video": 8888},
        send_dropped=450,  # 5% of what went out refused by the server's socket
        viewers_expected=10000,
        viewers_received=7000,  # 30% missed at the viewers
        viewer_socket_drops=1500,
    )
    assert got["uplink_loss"] == 0.1
    assert got["server_send_loss"] == 0.05
    assert got["viewers_missed"] == 0.3
    # what neither the uplink nor the server explains: 0.7 = 0.9 x 0.95 x (1 - 0.18129)
    assert got["viewer_side_loss"] == 0.18129
    assert got["forwarded_per_viewer"] == 900
    assert sum(got["server_received_from_presenter"].values()) == 900
    assert sum(got["server_forwarded_to_viewers"].values()) == 9000
    nothing = education.loss_breakdown(
        viewers=0,
        sent={},
        server_in={},
        to_viewers={},
        send_dropped=0,
        viewers_expected=0,
        viewers_received=0,
        viewer_socket_drops=0,
    )
    assert nothing["uplink_loss"] == nothing["viewer_side_loss"] == 0.0


def test_the_kernels_udp_counters_are_read_and_differenced() -> None:
    before = education.udp_counters()
    assert {"InDatagrams", "RcvbufErrors", "SndbufErrors", "InErrors"} <= set(before)
    after = {k: v + 3 for k, v in before.items()}
    window = education.udp_counters_window(before, after)
    assert window == {k: 3 for k in education.UDP_COUNTERS}
    assert education.udp_counters_window({}, after) == {}


class _FullSocket(socket.socket):
    """A real UDP socket whose send buffer is "full" from the ``full_after``-th send on.

    Linux never refuses a loopback UDP send with EAGAIN (the datagram leaves the sender's
    buffer at once; a full receiver drops it silently), so a tiny SO_SNDBUF to an unread socket
    on 127.0.0.1 does not make ``_direct_writer`` see BlockingIOError: this socket raises it as
    a full buffer on a real link would."""

    full_after = 3

    def sendto(self, data: object, address: object) -> int:  # type: ignore[override]
        self.sends = getattr(self, "sends", 0) + 1
        if self.sends > self.full_after:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return super().sendto(data, address)  # type: ignore[call-overload, no-any-return]


def test_a_direct_writer_counts_what_a_full_send_buffer_refused_in_its_own_counter() -> None:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out = _FullSocket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(5)
        out.setblocking(False)
        policy = pylibsrtp.Policy(key=os.urandom(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        session = pylibsrtp.Session(policy=policy)
        mine, other = aiortc_hooks.SendDrops(), aiortc_hooks.SendDrops()
        write = aiortc_hooks._direct_writer(session, out, sink.getsockname(), drops=mine)
        for n in range(10):
            write(96, 0, n, n * 3000, 0x1234, bytes([n]) * 200)  # must not raise
        # the first three went out, protected (header, payload, the SRTP tag)
        for _ in range(3):
            assert len(sink.recv(2048)) == 12 + 200 + 10
        assert mine.packets == 7
        assert other.packets == 0  # another writer's (another SFU's) count is its own
    finally:
        out.close()
        sink.close()
