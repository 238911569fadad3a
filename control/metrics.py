"""Prometheus text exposition for ``/metrics``, built from the SFU's counters at scrape time.

Names follow ``namespace_subsystem_name``; labels take a handful of fixed values.
"""

from __future__ import annotations

import os
import resource
import time
from collections import Counter

from mediaserver.room import Sfu
from mediaserver.sockets import RECEIVE_BUFFER, SEND_BUFFER

from .loopwatch import LoopWatch

_KINDS = ("audio", "video")


def render_metrics(
    sfu: Sfu, signalling_errors: Counter[str], watch: LoopWatch | None = None
) -> str:
    stats = sfu.stats()
    out: list[str] = []

    def metric(
        name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], int | float]]
    ) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{v}"' for k, v in labels.items())
            out.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")

    metric("remotecase_sfu_rooms", "gauge", "Open rooms.", [({}, stats.get("rooms", 0))])
    metric(
        "remotecase_sfu_participants",
        "gauge",
        "Connected participants.",
        [({}, stats.get("participants", 0))],
    )
    metric(
        "remotecase_sfu_received_packets_total",
        "counter",
        "RTP packets received from publishers.",
        [({"kind": k}, stats.get(f"packets_in_{k}", 0)) for k in _KINDS],
    )
    metric(
        "remotecase_sfu_forwarded_packets_total",
        "counter",
        "RTP packets forwarded to subscribers.",
        [({"kind": k}, stats.get(f"forwarded_packets_{k}", 0)) for k in _KINDS],
    )
    roles = sorted(
        {
            k.removeprefix(prefix).rsplit("_", 1)[0]
            for k in stats
            for prefix in ("role_packets_in_", "role_forwarded_packets_")
            if k.startswith(prefix)
        }
    )
    metric(
        "remotecase_sfu_role_packets_total",
        "counter",
        "RTP packets of the live participants' tracks, by the participant's role: received "
        "from them (direction in) and forwarded to them (direction out).",
        [
            ({"role": r, "kind": k, "direction": d}, stats.get(f"role_{key}_{r}_{k}", 0))
            for r in roles
            for k in _KINDS
            for d, key in (("in", "packets_in"), ("out", "forwarded_packets"))
        ],
    )
    metric(
        "remotecase_sfu_send_dropped_packets_total",
        "counter",
        "RTP packets to subscribers lost on a full socket send buffer (the server's loss).",
        [({}, stats.get("send_dropped", 0))],
    )
    buffers: list[tuple[dict[str, str], int | float]] = [
        ({"buffer": "receive", "size": "asked"}, RECEIVE_BUFFER),
        ({"buffer": "send", "size": "asked"}, SEND_BUFFER),
    ]
    if stats.get("ice_sockets", 0):
        buffers += [
            ({"buffer": "receive", "size": "granted_min"}, stats["ice_receive_buffer_min"]),
            ({"buffer": "send", "size": "granted_min"}, stats["ice_send_buffer_min"]),
        ]
    metric(
        "remotecase_sfu_ice_socket_buffer_bytes",
        "gauge",
        "Kernel buffers of the connected ICE sockets: asked, and the smallest the kernel "
        "granted as it reports them (twice what it accounts; below twice the asked size, "
        "net.core.rmem_max/wmem_max capped it: see docs/performance.md).",
        buffers,
    )
    metric(
        "remotecase_sfu_ice_sockets",
        "gauge",
        "Nominated ICE sockets of connected peer connections.",
        [({}, stats.get("ice_sockets", 0))],
    )
    metric(
        "remotecase_sfu_forwarded_bytes_total",
        "counter",
        "RTP payload bytes forwarded to subscribers.",
        [({"kind": k}, stats.get(f"forwarded_bytes_{k}", 0)) for k in _KINDS],
    )
    metric(
        "remotecase_sfu_plis_total",
        "counter",
        "Picture loss indications.",
        [
            ({"direction": "from_subscribers"}, stats.get("plis_received", 0)),
            ({"direction": "to_publishers"}, stats.get("plis_sent", 0)),
        ],
    )
    metric(
        "remotecase_sfu_nacks_total",
        "counter",
        "Packets NACKed by subscribers.",
        [({}, stats.get("nacks", 0))],
    )
    metric(
        "remotecase_sfu_retransmitted_packets_total",
        "counter",
        "Packets retransmitted to subscribers from history.",
        [({}, stats.get("retransmitted", 0))],
    )
    metric(
        "remotecase_sfu_nacked_packets_total",
        "counter",
        "Sequence numbers NACKed by subscribers, by outcome: answered (sent again from the "
        "history), not_sent (this subscriber was never sent it: before its start, or not yet "
        "received from the publisher), not_in_history (never received, or gone from the "
        "history), failed (the retransmission could not be sent), paced (over the share of a "
        "congested link's estimate retransmissions may take).",
        [
            ({"result": "answered"}, stats.get("retransmitted", 0)),
            ({"result": "not_sent"}, stats.get("nack_not_sent", 0)),
            ({"result": "not_in_history"}, stats.get("nack_not_in_history", 0)),
            ({"result": "failed"}, stats.get("nack_failed", 0)),
            ({"result": "paced"}, stats.get("nack_paced", 0)),
        ],
    )
    metric(
        "remotecase_sfu_layer_dropped_frames_total",
        "counter",
        "Video frames left out for a subscriber whose link takes less than the publisher "
        "sends, by VP8 temporal layer (the receiver still decodes every frame it gets).",
        [({"layer": str(t)}, stats.get(f"layer_dropped_frames_{t}", 0)) for t in (1, 2, 3)],
    )
    metric(
        "remotecase_sfu_layer_switches_total",
        "counter",
        "Changes of the highest VP8 temporal layer forwarded to a subscriber, by direction.",
        [
            ({"direction": "down"}, stats.get("layer_switches_down", 0)),
            ({"direction": "up"}, stats.get("layer_switches_up", 0)),
        ],
    )
    metric(
        "remotecase_sfu_layer_padding_fills_total",
        "counter",
        "Sequence numbers a subscriber's VP8 stream with temporal layers kept free for a packet "
        "missing upstream that turned out to be of a frame left out, sent as padding instead.",
        [({}, stats.get("layer_holes_filled", 0))],
    )
    metric(
        "remotecase_sfu_congestion_pauses_total",
        "counter",
        "Times a subscriber's video paused until a keyframe because its link was behind.",
        [({}, stats.get("congestion_pauses", 0))],
    )
    metric(
        "remotecase_sfu_publisher_nacks_total",
        "counter",
        "NACK messages sent to publishers for packets missing on their uplink.",
        [({}, stats.get("publisher_nacks", 0))],
    )
    metric(
        "remotecase_sfu_publisher_gaps_total",
        "counter",
        "Publisher video resuming after a silence or a burst of loss (a keyframe is asked at "
        "once).",
        [({}, stats.get("gaps", 0))],
    )
    metric(
        "remotecase_sfu_participants_closed_total",
        "counter",
        "Participants closed, by reason.",
        [({"reason": r}, n) for r, n in sorted(sfu.close_reasons.items())],
    )
    metric(
        "remotecase_signalling_errors_total",
        "counter",
        "Error messages sent to signalling clients, by code.",
        [({"code": c}, n) for c, n in sorted(signalling_errors.items())],
    )
    # the standard process metrics: load testers read the server's CPU and memory here
    cpu = os.times()
    metric(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time of the process.",
        [({}, round(cpu.user + cpu.system, 3))],
    )
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of the process.",
        [({}, _resident_bytes())],
    )
    metric(
        "process_max_resident_memory_bytes",
        "gauge",
        "Peak resident memory.",
        [({}, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)],
    )
    metric(
        "process_start_time_seconds", "gauge", "Start of the process, Unix time.", [({}, _STARTED)]
    )
    if watch is not None:
        out += watch.render()
    return "\n".join(out) + "\n"


_STARTED = round(time.time(), 3)  # when the server loaded this module: its start, near enough


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
