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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from aiortc import RTCConfiguration, RTCPeerConnection, VideoStreamTrack
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtp import RtpPacket

from mediaserver import aiortc_hooks


class _Count:
    def __init__(self) -> None:
        self.packets = 0

    def on_rtp(self, packet: RtpPacket) -> None:
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
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop  # not a dependency: only for this measurement

        results = uvloop.run(run(args.packets, args.rounds))
    else:
        results = asyncio.run(run(args.packets, args.rounds))
    estimators = estimator_cost(args.frames, args.rounds)
    print(json.dumps({"loop": args.loop, "us_per_packet": results, "us_per_frame": estimators}))


if __name__ == "__main__":
    main()
