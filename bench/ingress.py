"""CPU per received packet of the SFU's ingress, aiortc's path against the fast one, in one
process and one sitting (``python -m bench.ingress``).

Two aiortc peer connections meet over loopback; the receiving one's receiver is an
:class:`~mediaserver.aiortc_hooks.SfuRtpReceiver` with a sink that counts. Packets protected
beforehand with the sender's SRTP session are handed to the receiving socket's
``datagram_received`` one at a time, each followed by one turn of the event loop (as a packet
that arrives alone is), until the sink has them all; the process's CPU time over that, per
packet, is the figure. Rounds alternate between the two paths, and on the fast one between the
SFU's REMB estimator and aiortc's (fed once a frame: the packets carry abs-send-time). Those
packets arrive back to back, which hides what aiortc's rate counter does per elapsed
millisecond; :func:`estimator_cost` times both estimators on a 30 fps stream's arrival times.

``--whole`` measures instead the whole path a one-to-one packet takes through the SFU
(:func:`whole_path`): the socket callback, SRTP unprotect, the header parse, the receiver's
bookkeeping (REMB, receiver-report statistics, NACK), the up-track (keyframe detection,
history) and one down-track that protects the packet and sends it with ``sendto``; and, beside
it, the same packets stage by stage. ``--against DIR`` runs that in alternated processes, one
with this tree's ``mediaserver`` and one with ``DIR``'s (an older checkout: ``git archive REV |
tar -x -C DIR``), so that a change is measured against what it replaced in one sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, VideoStreamTrack
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtp import RtpPacket

from mediaserver import aiortc_hooks
from mediaserver.forwarding import ForwardedUpTrack, RtpDownTrack
from mediaserver.protocols import CloseReason, TrackInfo


class _Count:
    def __init__(self) -> None:
        self.packets = 0

    def on_rtp(self, packet: aiortc_hooks.ReceivedRtp) -> None:
        self.packets += 1

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        pass


async def run(packets: int, rounds: int) -> dict[str, list[float]]:
    aiortc_hooks.install()
    aiortc_hooks.restrict_host_addresses(["127.0.0.1"])
    config = RTCConfiguration(iceServers=[])
    tx, rx = RTCPeerConnection(config), RTCPeerConnection(config)
    try:
        connected = asyncio.Event()

        def state_changed() -> None:
            if rx.connectionState == "connected" and tx.connectionState == "connected":
                connected.set()

        tx.on("connectionstatechange", state_changed)
        rx.on("connectionstatechange", state_changed)
        tx.addTrack(VideoStreamTrack())
        await tx.setLocalDescription(await tx.createOffer())
        await rx.setRemoteDescription(tx.localDescription)
        await rx.setLocalDescription(await rx.createAnswer())
        await tx.setRemoteDescription(rx.localDescription)
        await asyncio.wait_for(connected.wait(), 30)
        sender = tx.getSenders()[0]
        if sender.track is not None:
            sender.track.stop()  # only this bench's packets from now on
        await asyncio.sleep(0.5)
        receiver = rx.getReceivers()[0]
        assert isinstance(receiver, aiortc_hooks.SfuRtpReceiver)
        sink = _Count()
        receiver.attach_sink(sink)
        receiver._fast_tried = True  # installed by hand below
        dtls = receiver.transport
        assert aiortc_hooks.FastIngress.install(receiver)
        fast = dtls._remotecase_fast  # type: ignore[attr-defined]
        pair = dtls.transport._connection._nominated[1]
        protocol, addr = pair.protocol, pair.remote_addr
        tap = aiortc_hooks._tap(protocol)
        tx_dtls = sender.transport
        ssrc = sender._ssrc
        payload_type = next(iter(receiver._RTCRtpReceiver__codecs))  # type: ignore[attr-defined]
        payload = b"\x10\x00\x00" + os.urandom(1100)
        # after the last packet the track sent (the session refuses an index used before)
        nack = receiver._RTCRtpReceiver__nack_generator  # type: ignore[attr-defined]
        sequence = (nack.max_seq or 0) + 10
        # the REMB estimator each path's receiver uses: the SFU's (lean_estimator) on both
        # paths, and aiortc's own on the fast path for the estimator's A/B
        estimators = {
            "aiortc": aiortc_hooks.lean_estimator(),
            "fast": aiortc_hooks.lean_estimator(),
            "fast_aiortc_estimator": RemoteBitrateEstimator(),
        }
        estimator_name = "_RTCRtpReceiver__remote_bitrate_estimator"
        extensions = tx_dtls._rtp_header_extensions_map
        frame = 0
        results: dict[str, list[float]] = {path: [] for path in estimators}
        results["loop_turn_only"] = []
        for _ in range(rounds):
            before = time.process_time()
            for _ in range(packets):
                await asyncio.sleep(0)
            spent = time.process_time() - before
            results["loop_turn_only"].append(round(spent / packets * 1e6, 2))
            for path, estimator in estimators.items():
                tap.fast = None if path == "aiortc" else fast
                setattr(receiver, estimator_name, estimator)
                datagrams = []
                for k in range(packets):
                    sequence = (sequence + 1) & 0xFFFF
                    if k % 3 == 0:
                        frame += 1
                    packet = RtpPacket(
                        payload_type=payload_type,
                        marker=int(k % 3 == 2),  # three packets a frame
                        sequence_number=sequence,
                        timestamp=frame * 3000,
                        ssrc=ssrc,
                        payload=payload,
                    )
                    # a 30 fps sender's clock (6.18 fixed point), which the estimator reads
                    packet.extensions.abs_send_time = (frame * 262144 // 30) & 0xFFFFFF
                    datagrams.append(tx_dtls._tx_srtp.protect(packet.serialize(extensions)))
                start, before = sink.packets, time.process_time()
                for data in datagrams:
                    protocol.datagram_received(data, addr)
                    await asyncio.sleep(0)
                turns = 0
                # the loop's turns are what is measured: an Event would add its own
                while sink.packets < start + packets:
                    await asyncio.sleep(0)
                    turns += 1
                    if turns > 100 * packets:
                        raise RuntimeError(f"{path}: {start + packets - sink.packets} never came")
                spent = time.process_time() - before
                results[path].append(round(spent / packets * 1e6, 2))
        return results
    finally:
        await tx.close()
        await rx.close()


class _Subscriber:
    """The subscriber's end of the one down-track: an SSRC, and hooks attached."""

    _ssrc = 0x1111
    _rtx_ssrc = 0x2222
    transport = None
    hooks: Any = None

    def attach_hooks(self, hooks: Any) -> None:
        self.hooks = hooks


def _vp8_payload(first: bool, keyframe: bool) -> bytes:
    # the VP8 descriptor's S bit on a frame's first packet; P (bit 0 of the payload header)
    # clear on a keyframe's
    start = (b"\x10" + (b"\x00" if keyframe else b"\x01")) if first else b"\x00\x9d"
    return start + bytes(1098)


def _watch_silence(pc: RTCPeerConnection) -> None:
    """What the participant's silence watch adds to every datagram on ``pc``'s socket, as the
    server's code under measurement does it (so that ``--against`` an older checkout counts
    it too): a count read at the watch's checks now, a callback and a clock read per datagram
    before (session 10's ``on_datagram``)."""
    counter = getattr(aiortc_hooks, "datagram_counter", None)
    if counter is not None:
        assert counter(pc) is not None
        return
    loop = asyncio.get_running_loop()
    heard: dict[str, float] = {}

    def arrived() -> None:
        heard["publisher"] = loop.time()

    assert aiortc_hooks.on_datagram(pc, arrived)  # type: ignore[attr-defined]


async def whole_path(packets: int, rounds: int, paced: float = 0.0) -> dict[str, list[float]]:
    """CPU per packet (us) of the SFU's whole path for one one-to-one packet, and per stage.

    The publisher is a real aiortc peer connection over loopback and the server's side an
    :class:`~mediaserver.aiortc_hooks.SfuRtpReceiver` with its fast ingress installed, feeding a
    real :class:`~mediaserver.forwarding.ForwardedUpTrack` with one
    :class:`~mediaserver.forwarding.RtpDownTrack`, whose writer is the direct one
    (``_direct_writer``: header into the SRTP buffer, protect, ``sendto``) to a loopback socket
    nobody reads (the kernel drops what overflows it; the send costs what it costs).
    ``whole``: datagrams handed to the socket's ``datagram_received`` back to back (the
    fast path is synchronous: no loop turn is in the figure). The stages, on other packets of
    the same stream in the same order, each timed alone: ``unprotect``, ``parse``,
    ``receiver`` (``_ingest``: REMB once a frame, statistics, NACK), ``up_track``
    (``on_rtp`` with the down-track's rewrite, its writer a no-op) and ``writer`` (build,
    protect, sendto). VP8 at 30 fps, three packets a frame of 1,100 bytes, mid and
    abs-send-time on every packet (as aiortc and browsers send them); a keyframe first. A
    first round warms up (the estimator's first frames, allocations) and is not counted."""
    aiortc_hooks.install()
    aiortc_hooks.restrict_host_addresses(["127.0.0.1"])
    config = RTCConfiguration(iceServers=[])
    tx, rx = RTCPeerConnection(config), RTCPeerConnection(config)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    up: ForwardedUpTrack | None = None
    try:
        sink.bind(("127.0.0.1", 0))
        out.bind(("127.0.0.1", 0))
        out.setblocking(False)
        connected = asyncio.Event()

        def state_changed() -> None:
            if rx.connectionState == "connected" and tx.connectionState == "connected":
                connected.set()

        tx.on("connectionstatechange", state_changed)
        rx.on("connectionstatechange", state_changed)
        tx.addTrack(VideoStreamTrack())
        await tx.setLocalDescription(await tx.createOffer())
        await rx.setRemoteDescription(tx.localDescription)
        await rx.setLocalDescription(await rx.createAnswer())
        await tx.setRemoteDescription(rx.localDescription)
        await asyncio.wait_for(connected.wait(), 30)
        sender = tx.getSenders()[0]
        if sender.track is not None:
            sender.track.stop()
        await asyncio.sleep(0.5)
        receiver = rx.getReceivers()[0]
        assert isinstance(receiver, aiortc_hooks.SfuRtpReceiver)
        codecs = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
        payload_type = next(pt for pt, c in codecs.items() if c.mimeType == "video/VP8")
        info = TrackInfo("TR_bench", "publisher", "video", "video/VP8", 90000, None, ())
        up = ForwardedUpTrack(info, receiver, pli_min_interval=1.0, log_extra={})
        # the track's first packets came before the sink, on aiortc's own path, whose
        # statistics are aiortc's: a server's receiver has its sink from the start, and its
        # statistics are made by the SFU's own receive path
        receiver._RTCRtpReceiver__remote_streams.clear()  # type: ignore[attr-defined]
        down = RtpDownTrack("subscriber/TR_bench", up, _Subscriber())  # type: ignore[arg-type]
        down.on_negotiated(97, 98, (1, "0"), 3)
        rx_dtls = receiver.transport
        writer = aiortc_hooks._direct_writer(
            rx_dtls._tx_srtp, out, sink.getsockname(), down._extension, down._abs_at
        )
        receiver._fast_tried = True
        assert aiortc_hooks.FastIngress.install(receiver)
        fast = rx_dtls._remotecase_fast  # type: ignore[attr-defined]
        pair = rx_dtls.transport._connection._nominated[1]
        protocol, addr = pair.protocol, pair.remote_addr
        aiortc_hooks._tap(protocol)
        _watch_silence(rx)
        tx_dtls = sender.transport
        protect = tx_dtls._tx_srtp.protect
        extensions = tx_dtls._rtp_header_extensions_map
        rx_extensions = rx_dtls._rtp_header_extensions_map
        nack = receiver._RTCRtpReceiver__nack_generator  # type: ignore[attr-defined]
        sequence = (nack.max_seq or 0) + 10
        frame = 0
        mid = sender._RTCRtpSender__mid  # type: ignore[attr-defined]

        def datagrams(count: int) -> list[bytes]:
            nonlocal sequence, frame
            made = []
            for k in range(count):
                sequence = (sequence + 1) & 0xFFFF
                if k % 3 == 0:
                    frame += 1
                packet = RtpPacket(
                    payload_type=payload_type,
                    marker=int(k % 3 == 2),
                    sequence_number=sequence,
                    timestamp=frame * 3000,
                    ssrc=sender._ssrc,
                    payload=_vp8_payload(k % 3 == 0, frame == 1),
                )
                packet.extensions.abs_send_time = (frame * 262144 // 30) & 0xFFFFFF
                packet.extensions.mid = mid
                made.append(protect(packet.serialize(extensions)))
            return made

        # the header parse each tree has: this one's own (FastIngress.parse) or aiortc's
        lean_parse = getattr(fast, "parse", None)

        def parse(clear: bytes) -> Any:
            if lean_parse is not None:
                return lean_parse(clear)
            return RtpPacket.parse(clear, rx_extensions)

        def noop(*fields: Any) -> None:
            pass

        results: dict[str, list[float]] = {
            k: [] for k in ("whole", "unprotect", "parse", "receiver", "up_track", "writer")
        }
        if paced:
            return await _paced(paced, packets, rounds, datagrams, tx_dtls, up, down, writer)
        clock = time.process_time
        arrival = int(time.time() * 1000) + 2208988800 * 1000
        written = 0
        for turn in range(rounds + 1):  # the first round warms up, not counted
            batch = datagrams(packets)
            down._writer = writer
            start, sent = up.packets_in, down.packets
            before = clock()
            for data in batch:
                protocol.datagram_received(data, addr)
            spent = clock() - before
            if up.packets_in - start != packets or down.packets - sent != packets:
                raise RuntimeError(
                    f"whole: {up.packets_in - start} received, {down.packets - sent} sent"
                    f" of {packets}"
                )
            figures = {"whole": spent}

            batch = datagrams(packets)
            unprotect = getattr(fast, "unprotect", fast.srtp.unprotect)
            before = clock()
            clear = [unprotect(data) for data in batch]
            figures["unprotect"] = clock() - before
            before = clock()
            parsed = [parse(data) for data in clear]
            figures["parse"] = clock() - before
            ingest = receiver._ingest
            before = clock()
            forward = [p for packet in parsed if (p := ingest(packet, arrival)) is not None]
            if len(forward) != packets:
                raise RuntimeError(f"receiver: {packets - len(forward)} not forwarded")
            figures["receiver"] = clock() - before
            receiver._pending_remb = receiver._pending_nack = None
            down._writer = noop  # type: ignore[assignment]
            on_rtp = up.on_rtp
            before = clock()
            for packet in forward:
                on_rtp(packet)
            figures["up_track"] = clock() - before
            # its own SSRC and numbering: libsrtp refuses an index it protected before
            before = clock()
            for packet in forward:
                written += 1
                seq = written & 0xFFFF
                writer(97, packet.marker, seq, packet.timestamp, 0x3333, packet.payload)
            figures["writer"] = clock() - before
            if turn:
                for stage, seconds in figures.items():
                    results[stage].append(round(seconds / packets * 1e6, 2))
            await asyncio.sleep(0)
        results["stages_sum"] = [
            round(sum(results[k][i] for k in results if k != "whole"), 2) for i in range(rounds)
        ]
        return results
    finally:
        if up is not None:
            await up.close(CloseReason.SHUTDOWN)
        sink.close()
        out.close()
        await tx.close()
        await rx.close()


async def _paced(
    rate: float,
    packets: int,
    rounds: int,
    datagrams: Callable[[int], list[bytes]],
    tx_dtls: Any,
    up: ForwardedUpTrack,
    down: RtpDownTrack,
    writer: Any,
) -> dict[str, list[float]]:
    """The whole path at ``rate`` packets a second, each datagram sent from the publisher's
    own ICE socket and received by the event loop as a server receives it (a wake-up, a
    ``recvfrom``, the callback): process CPU over the round, less the same round's datagrams
    sent to a socket nobody reads (the sending and the pacing), per packet (``paced_path``).
    ``paced_wakeup``: the same for an asyncio datagram endpoint that does nothing with what
    it receives (the loop's wake-up, ``recvfrom``, the callback), so that ``paced_path``
    less it is what the SFU's own work costs on a packet that arrives alone. Rounds alternate
    the three. What a packet costs on a core that was idle between packets: the figure a
    lightly loaded server's CPU per packet is made of."""
    pair = tx_dtls.transport._connection._nominated[1]
    udp, server_addr = pair.protocol.transport, pair.remote_addr
    nobody = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    nobody.bind(("127.0.0.1", 0))
    noop, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    down._writer = writer
    results: dict[str, list[float]] = {
        "paced_received": [],
        "paced_noop_received": [],
        "paced_sent_only": [],
    }
    try:
        for turn in range(rounds + 1):
            for name, target in (
                ("paced_received", server_addr),
                ("paced_noop_received", noop.get_extra_info("sockname")),
                ("paced_sent_only", nobody.getsockname()),
            ):
                batch = datagrams(packets)
                start = up.packets_in
                before = time.process_time()
                for data in batch:
                    udp.sendto(data, target)
                    await asyncio.sleep(1 / rate)
                await asyncio.sleep(0.05)
                spent = time.process_time() - before
                if name == "paced_received" and up.packets_in - start < packets * 0.99:
                    raise RuntimeError(f"paced: {up.packets_in - start} of {packets} arrived")
                if turn:
                    results[name].append(round(spent / packets * 1e6, 2))
        sent = results["paced_sent_only"]
        results["paced_path"] = [
            round(a - b, 2) for a, b in zip(results["paced_received"], sent, strict=True)
        ]
        results["paced_wakeup"] = [
            round(a - b, 2) for a, b in zip(results["paced_noop_received"], sent, strict=True)
        ]
        return results
    finally:
        noop.close()
        nobody.close()


def against(
    tree: str, packets: int, rounds: int, paced: float = 0.0
) -> dict[str, dict[str, list[float]]]:
    """:func:`whole_path` in alternated processes: this tree's ``mediaserver`` (``now``)
    and ``tree``'s (``before``), one round each per process, ``rounds`` times."""
    here = Path(__file__).resolve().parent.parent
    script = Path(__file__).resolve()
    figures: dict[str, dict[str, list[float]]] = {"before": {}, "now": {}}
    for _ in range(rounds):
        for name, root in (("before", tree), ("now", str(here))):
            env = {**os.environ, "PYTHONPATH": root}
            done = subprocess.run(
                [
                    sys.executable,
                    str(script),
                    "--whole",
                    "--packets",
                    str(packets),
                    "--rounds",
                    "1",
                    "--paced",
                    str(paced),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                cwd=root,
            )
            for stage, values in json.loads(done.stdout)["us_per_packet"].items():
                figures[name].setdefault(stage, []).extend(values)
    return figures


def estimator_cost(frames: int, rounds: int) -> dict[str, list[float]]:
    """CPU per call of the REMB estimator's ``add`` (once a video frame), aiortc's against
    :func:`~mediaserver.aiortc_hooks.lean_estimator`, on one synthetic 30 fps stream with real
    inter-frame times (the packet rounds above arrive back to back, which hides what aiortc's
    rate counter does per elapsed millisecond). Rounds alternate; the same frames for both."""
    from aiortc.rate import RemoteBitrateEstimator

    stream = []
    arrival = 3_900_000_000_000
    for k in range(frames):
        send = k / 30
        arrival_ms = arrival + int(send * 1000) + (k * 7919) % 4  # a little jitter
        stream.append((arrival_ms, int(send * 262144) & 0xFFFFFF, 1500 + (k * 104729) % 3000))
    results: dict[str, list[float]] = {"aiortc_estimator": [], "lean_estimator": []}
    for _ in range(rounds):
        for name, make in (
            ("aiortc_estimator", RemoteBitrateEstimator),
            ("lean_estimator", aiortc_hooks.lean_estimator),
        ):
            estimator = make()
            add = estimator.add
            before = time.process_time()
            for arrival_ms, abs_send_time, size in stream:
                add(arrival_ms, abs_send_time, size, 1)
            spent = time.process_time() - before
            results[name].append(round(spent / frames * 1e6, 2))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="the event loop"
    )
    parser.add_argument("--frames", type=int, default=20000, help="of the estimator's rounds")
    parser.add_argument(
        "--whole", action="store_true", help="the whole one-to-one path, and by stage"
    )
    parser.add_argument(
        "--paced",
        type=float,
        default=0.0,
        metavar="PPS",
        help="--whole: packets at this rate through the socket, one at a time",
    )
    parser.add_argument(
        "--against", metavar="DIR", help="--whole against an older checkout's mediaserver"
    )
    args = parser.parse_args()
    if args.against:
        figures = against(args.against, args.packets, args.rounds, args.paced)
        print(json.dumps({"us_per_packet": figures}))
        return
    if args.whole:
        path = asyncio.run(whole_path(args.packets, args.rounds, args.paced))
        print(json.dumps({"us_per_packet": path}))
        return
    if args.loop == "uvloop":
        import uvloop  # not a dependency: only for this measurement

        results = uvloop.run(run(args.packets, args.rounds))
    else:
        results = asyncio.run(run(args.packets, args.rounds))
    estimators = estimator_cost(args.frames, args.rounds)
    print(json.dumps({"loop": args.loop, "us_per_packet": results, "us_per_frame": estimators}))


if __name__ == "__main__":
    main()
