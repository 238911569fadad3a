"""``remotecase bench education``: an education session of N viewers with attendance checks.

One server process (``remotecase serve``, the real face model), one officer presenting (aiortc,
VP8 320x240 at 15 fps plus Opus, in this process) and N light viewers spread over worker
processes. Every viewer is a roster driver enrolled with a real face photo (skimage's astronaut,
the photo the tests use), redeems its own invitation as a party does, and publishes that face
as VP8 video (a moving, noisy picture of it, 320x240 at ``--fps``) so that the verifier samples
it every ``--sample-interval`` (``education.sample_interval``: from 3 s on a keyframe per
sample, nothing decoded between) and the attendance ledger runs its checks (join check, then
checks at random moments at most ``--check-interval`` apart). Viewers count the officer's
packets without decoding them, and unsubscribe from the other viewers' cameras (a viewer page
shows the presenter, not 99 faces; the server subscribes everyone to everything by default).

After the warm-up, over a window of ``--seconds``: the server's CPU (the process and its
children, user + system, from /proc), the verifier's share (its worker threads, named
``verifier`` by the service, and the ONNX Runtime threads they start, which inherit the name),
memory (resident set of the server and its children at the end, and the server's peak), loss
per viewer (the officer's streams, from RTP sequence numbers), the kernel's UDP drops by whose
sockets (server, officer, each viewer worker: /proc/net/udp), the verifier's verdicts per
second (the officer hears each one) and the attendance checks decided (from the session's
attendance API).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from .forwarding import _read_line, _wait_stop, free_port, wait_healthy
from .load import metrics as load_metrics

SIZE = (320, 240)


# -- /proc ------------------------------------------------------------------------------------
def _stat(pid: int, tid: int | None = None) -> list[str]:
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    with open(path) as fh:
        return fh.read().rsplit(")", 1)[1].split()


def _descendants(pid: int) -> list[int]:
    """The process and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(_stat(int(entry))[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of the process, its live descendants and the children it has
    waited for."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in _descendants(pid):
        try:
            f = _stat(p)
        except OSError:
            continue
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total / ticks


def named_threads_cpu(pid: int, prefix: str) -> float:
    """CPU seconds of the process's threads whose name starts with ``prefix``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as fh:
                name = fh.read().strip()
            if name.startswith(prefix):
                f = _stat(pid, int(tid))
                total += int(f[11]) + int(f[12])
        except OSError:
            continue
    return total / ticks


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def udp_receive_buffer_drops() -> int:
    """Datagrams this machine's kernel dropped for a full socket receive buffer so far
    (``RcvbufErrors`` of /proc/net/snmp; 0 where it cannot be read): a generator process too
    starved to read its sockets loses packets there, not in the server."""
    try:
        with open("/proc/net/snmp") as fh:
            rows = [line.split() for line in fh if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, IndexError, ValueError):
        return 0


def udp_counters() -> dict[str, int]:
    """The kernel's UDP counters so far (the ``Udp:`` rows of /proc/net/snmp, this network
    namespace: every process of the bench is on its loopback; empty where it cannot be read):
    ``RcvbufErrors`` (a datagram dropped for a full receive buffer: a reader too slow),
    ``SndbufErrors`` (a send refused for a full send buffer: the server's own drops show there
    too), ``InErrors`` (every datagram dropped on receipt, those included)."""
    try:
        with open("/proc/net/snmp") as fh:
            rows = [line.split() for line in fh if line.startswith("Udp:")]
        return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:], strict=True)}
    except (OSError, IndexError, ValueError):
        return {}


UDP_COUNTERS = ("InDatagrams", "OutDatagrams", "RcvbufErrors", "SndbufErrors", "InErrors")


def udp_counters_window(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What the kernel's UDP counters (:func:`udp_counters`) added between two readings."""
    return {k: after[k] - before[k] for k in UDP_COUNTERS if k in before and k in after}


def role_packets(text: str) -> dict[str, dict[str, float]]:
    """The server's packets by participant role from its /metrics text
    (``remotecase_sfu_role_packets_total``): ``{role: {"in_video": n, "out_audio": n, ...}}``,
    the live participants' tracks so far."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line.startswith("remotecase_sfu_role_packets_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        role = out.setdefault(labels.get("role", "?"), {})
        key = f"{labels.get('direction')}_{labels.get('kind')}"
        role[key] = role.get(key, 0.0) + value
    return out


def sent_packets(client: Any) -> dict[str, int]:
    """RTP packets a bench client's publisher connection has sent so far, by kind (aiortc's
    sender counts them for its sender reports)."""
    out: dict[str, int] = {}
    pc = getattr(client, "publisher_pc", None)
    for sender in pc.getSenders() if pc is not None else []:
        kind = str(getattr(sender, "kind", None) or "?")  # kept after its track ended
        # aiortc's private count (in PRIVATE_NAMES, so a rename fails the contract test), read
        # without a default: a missing count is an error, never a silent 0% uplink loss
        out[kind] = out.get(kind, 0) + int(sender._RTCRtpSender__packet_count)
    return out


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (its threads; not its children)."""
    try:
        f = _stat(pid)
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def loss_breakdown(
    *,
    viewers: int,
    sent: dict[str, int],
    server_in: dict[str, float],
    to_viewers: dict[str, float],
    send_dropped: float,
    viewers_expected: int,
    viewers_received: int,
    viewer_socket_drops: int,
) -> dict[str, Any]:
    """Where the presenter's packets went, over the run up to the end of the window (every
    figure is a count so far, read within a second of the others): the presenter sent them,
    the server received them (its up-track counters), numbered and sent them to each viewer
    (its down-track counters), lost some on its own full send buffer (counted in the writers),
    and each viewer received some of what was numbered for it (RTP sequence numbers).

    ``uplink_loss``: the share of the presenter's packets the server never received (lost on
    the way in: the server's socket, or the presenter's process too starved to send in time).
    ``server_send_loss``: the share of the packets sent to viewers the server's socket refused.
    ``viewer_side_loss``: what the viewers' sequence numbers miss beyond those two (the losses
    compound: kept = (1 - uplink) x (1 - server send) x (1 - viewer side)). It is client-side
    loss when the viewers' own sockets dropped (``viewers_socket_drops``); without such drops it
    is what the counters here do not place (the uplink counts cover the run to the window's end,
    the viewers' to their stop)."""
    sent_total = sum(sent.values())
    received = server_in.get("in_audio", 0.0) + server_in.get("in_video", 0.0)
    forwarded = to_viewers.get("out_audio", 0.0) + to_viewers.get("out_video", 0.0)
    lost_in = max(0.0, 1 - received / sent_total) if sent_total else 0.0
    refused = min(1.0, send_dropped / forwarded) if forwarded else 0.0
    missed = max(0.0, 1 - viewers_received / viewers_expected) if viewers_expected else 0.0
    kept = 1 - missed
    return {
        "presenter_sent": sent,
        "server_received_from_presenter": {
            k: int(v) for k, v in server_in.items() if k.startswith("in_")
        },
        "server_forwarded_to_viewers": {
            k: int(v) for k, v in to_viewers.items() if k.startswith("out_")
        },
        "forwarded_per_viewer": round(forwarded / viewers, 1) if viewers else 0.0,
        "server_send_dropped": int(send_dropped),
        "viewers_expected": viewers_expected,
        "viewers_received": viewers_received,
        "viewers_socket_drops": viewer_socket_drops,
        "uplink_loss": round(lost_in, 5),
        "server_send_loss": round(refused, 5),
        "viewers_missed": round(missed, 5),
        "viewer_side_loss": round(max(0.0, 1 - kept / (1 - lost_in) / (1 - refused)), 5)
        if lost_in < 1 and refused < 1
        else 0.0,
    }


def udp_socket_drops() -> dict[int, int]:
    """Each UDP socket's datagrams dropped so far (its receive buffer full), by inode: the
    ``drops`` column of /proc/net/udp and udp6 (this network namespace; empty where it cannot
    be read)."""
    out: dict[int, int] = {}
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as fh:
                header = fh.readline().split()
                inode_at, drops_at = header.index("inode"), header.index("drops")
                # the header names "tx_queue rx_queue" and "tr tm->when" as four columns that
                # are two in the rows
                inode_at, drops_at = inode_at - 2, drops_at - 2
                for line in fh:
                    f = line.split()
                    try:
                        out[int(f[inode_at])] = int(f[drops_at])
                    except (IndexError, ValueError):
                        continue
        except (OSError, ValueError):
            continue
    return out


def socket_inodes(pids: list[int]) -> set[int]:
    """The inodes of the sockets the processes hold open (``socket:[N]`` in /proc/PID/fd)."""
    inodes: set[int] = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    return inodes


def drops_by_role(
    before: dict[int, int], after: dict[int, int], roles: dict[str, list[int]]
) -> dict[str, int]:
    """Datagrams each role's sockets dropped between two :func:`udp_socket_drops` readings
    (a socket opened meanwhile counts whole); ``other``: sockets of no role (another helper's
    process on a shared machine, or a socket closed before the second reading is lost)."""
    out: dict[str, int] = {}
    mine: set[int] = set()
    for role, pids in roles.items():
        inodes = socket_inodes(pids) - mine
        mine |= inodes
        out[role] = sum(after[i] - before.get(i, 0) for i in inodes if i in after)
    out["other"] = sum(d - before.get(i, 0) for i, d in after.items() if i not in mine)
    return out


def top_socket_drops(
    before: dict[int, int], after: dict[int, int], pids: list[int], count: int = 3
) -> list[int]:
    """The most datagrams any one of the processes' sockets dropped between two readings,
    largest first: one socket with nearly all of them is one stream read too slowly (the
    presenter's, at 110 packets a second), many alike a process not scheduled."""
    inodes = socket_inodes(pids)
    drops = sorted((after[i] - before.get(i, 0) for i in inodes if i in after), reverse=True)
    return [d for d in drops[:count] if d > 0]


SFU_COUNTERS = (
    "remotecase_sfu_forwarded_packets_total",
    "remotecase_sfu_congestion_pauses_total",
    "remotecase_sfu_layer_dropped_frames_total",
    "remotecase_sfu_nacked_packets_total",
    "remotecase_sfu_publisher_gaps_total",
    "remotecase_sfu_send_dropped_packets_total",
)


def _sfu_counters(text: str) -> dict[str, float]:
    """The server's forwarding counters from its /metrics text, summed over their labels."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in SFU_COUNTERS and 'result="' in line:  # NACKed numbers: by what came of them
            name += "_" + line.split('result="', 1)[1].split('"', 1)[0]
        if name.startswith(SFU_COUNTERS):
            try:
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
    return {k.removeprefix("remotecase_sfu_"): v for k, v in out.items()}


def loop_stall_counters(text: str) -> dict[str, Any]:
    """The server's loop-watch counters from its /metrics text (control/loopwatch.py): the
    watch's interval, the stalls by cause and the stalls' seconds by part."""
    out: dict[str, Any] = {"interval": None, "stalls": {}, "seconds": {}}
    for line in text.splitlines():
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        if line.startswith("remotecase_event_loop_watch_interval_seconds "):
            out["interval"] = value
        elif line.startswith("remotecase_event_loop_stalls_total{"):
            out["stalls"][line.split('cause="', 1)[1].split('"', 1)[0]] = value
        elif line.startswith("remotecase_event_loop_stall_seconds_total{"):
            out["seconds"][line.split('part="', 1)[1].split('"', 1)[0]] = value
    return out


def loop_keeping_up(
    before: dict[str, Any], after: dict[str, Any], wakeups: int, seconds: float
) -> dict[str, Any]:
    """The loop's wake-ups in the window against those of a loop that keeps up (one each
    interval), and its stalls in the window by cause, with their seconds by part."""
    interval = after.get("interval")
    expected = int(seconds / interval) if interval else None
    return {
        "wakeups": wakeups,
        "expected": expected,
        "share": round(wakeups / expected, 3) if expected else None,
        "stalls_by_cause": {
            k: int(v - before["stalls"].get(k, 0.0)) for k, v in after["stalls"].items()
        },
        "stall_seconds_by_part": {
            k: round(v - before["seconds"].get(k, 0.0), 2) for k, v in after["seconds"].items()
        },
    }


_STALL_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ .*?(event loop (\d+) ms late.*)$")


def worst_stalls(log: str, start: float, end: float, count: int = 3) -> list[str]:
    """The loop watch's worst stall warnings in the server's log between two wall-clock times
    (each the worst of its ten seconds, with its cause and parts), worst first."""
    import datetime

    found: list[tuple[int, str]] = []
    for line in log.splitlines():
        m = _STALL_LINE.match(line)
        if m is None:
            continue
        at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
        if start - 1 <= at <= end + 1:
            found.append((int(m.group(3)), f"{m.group(1)[11:]} {m.group(2)}"))
    return [text for _, text in sorted(found, key=lambda x: -x[0])[:count]]


def tree_rss_mb(pid: int) -> float:
    return round(sum(_status_kb(p, "VmRSS") for p in _descendants(pid)) / 1024, 1)


def threads_by_name(pid: int) -> dict[str, int]:
    """The process's threads counted by their operating-system name (``/proc/PID/task/*/comm``)
    with a trailing number taken off (``verifier_0`` -> ``verifier``), every recording's writer
    (``rec-1a2b3c``) as ``rec-``: threads the server names itself apart from the rest
    (``python``: the event loop and unnamed Python threads; native libraries' own names)."""
    out: dict[str, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as fh:
                name = fh.read().strip()
        except OSError:
            continue
        if name.startswith("rec-"):
            # a recording's writer (rec-<the recording id's last six>): one name for them all;
            # the number rule below would eat an id that ends in digits ("rec-123456" -> "rec")
            name = "rec-"
        else:
            name = re.sub(r"[-_:.]?\d+$", "", name) or "?"
        out[name] = out.get(name, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def recorder_on_disk(recordings: Path) -> dict[str, Any]:
    """What the recorder has written so far, from its directory: recordings, tracks, sealed
    segments (files and bytes as stored, encrypted) and, from each ``recording.json`` (saved
    with every segment), the gaps by cause and the tracks' counters (frames forwarded to the
    recorder, recorded, dropped in gaps, late; packets missing; the local subscriber's queue
    overflow) summed over tracks, and the failed tracks."""
    segments = stored = 0
    tracks = failed = 0
    gaps: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    found = sorted(recordings.glob("REC_*")) if recordings.is_dir() else []
    for rec in found:
        for path in (rec / "segments").glob("*/*"):
            try:
                stored += path.stat().st_size
            except OSError:
                continue
            segments += 1
        try:
            meta = json.loads((rec / "recording.json").read_bytes())
        except (OSError, ValueError):
            continue
        for track in meta.get("tracks", {}).values():
            tracks += 1
            failed += track.get("failure") is not None
            for key, value in (track.get("counts") or {}).items():
                counts[key] = counts.get(key, 0) + int(value)
            for gap in track.get("gaps", []):
                g = gaps.setdefault(str(gap.get("cause")), {"gaps": 0, "frames": 0, "seconds": 0.0})
                g["gaps"] += 1
                g["frames"] += int(gap.get("frames") or 0)
                g["seconds"] = round(g["seconds"] + float(gap.get("duration") or 0.0), 3)
    return {
        "recordings": len(found),
        "tracks": tracks,
        "failed_tracks": failed,
        "segments": segments,
        "stored_bytes": stored,
        "gaps_by_cause": dict(sorted(gaps.items())),
        "counts": dict(sorted(counts.items())),
    }


def recorder_window(
    before: dict[str, Any], after: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """The recorder's figures for the report: the whole run's (``after``) with what the window
    added (segments and bytes per second)."""
    return {
        **after,
        "window": {
            "segments": after["segments"] - before["segments"],
            "stored_bytes": after["stored_bytes"] - before["stored_bytes"],
            "segments_per_second": round((after["segments"] - before["segments"]) / seconds, 2),
            "stored_kbit_per_second": round(
                8 * (after["stored_bytes"] - before["stored_bytes"]) / seconds / 1000, 1
            ),
        },
    }


# -- the run ----------------------------------------------------------------------------------
async def run_education_bench(
    *,
    viewers: int,
    seconds: float,
    as_json: bool,
    check_interval: float = 20.0,
    check_window: float = 10.0,
    sample_interval: float = 5.0,
    fps: int = 5,
    processes: int = 4,
    warmup: float = 10.0,
    quiet: bool = False,
    record: bool = False,
) -> int:
    report = await measure_education(
        viewers=viewers,
        seconds=seconds,
        check_interval=check_interval,
        check_window=check_window,
        sample_interval=sample_interval,
        fps=fps,
        processes=processes,
        warmup=warmup,
        record=record,
    )
    if report is None:
        return 2
    if not quiet:
        loss = report["loss_per_viewer"]
        print(f"viewers                {report['viewers']} (joined {report['joined']})")
        print(f"window                 {report['seconds']} s after {report['warmup']} s warm-up")
        print(f"server CPU             {report['server_cpu_percent']}% of one core (with children)")
        print(
            f"verifier               {report['verifier_cpu_percent']}% of one core, "
            f"{report['verifier_share']:.0%} of the server's"
        )
        print(
            f"memory                 {report['rss_mb']} MB resident (server peak "
            f"{report['server_peak_rss_mb']} MB), {report['server_threads']} threads"
        )
        print(
            f"loss per viewer        median {loss['median']:.2%}, max {loss['max']:.2%}, "
            f"viewers over 1%: {loss['over_1_percent']}"
        )
        print(
            "server                 " + ", ".join(f"{k} {v:.0f}" for k, v in report["sfu"].items())
        )
        print(
            f"kernel UDP drops       {report['udp_receive_buffer_drops']} datagrams in the window "
            "(full receive buffers, machine-wide: a starved reader, server or generators)"
        )
        print(
            "  by whose sockets     "
            + ", ".join(f"{k} {n}" for k, n in report["udp_drops_by_role"].items())
            + f"; the server's sockets that dropped most: {report['server_socket_drops_top']}"
        )
        p = report["packets"]
        print(
            f"presenter's packets    sent {sum(p['presenter_sent'].values())}, the server "
            f"received {sum(p['server_received_from_presenter'].values())} (uplink loss "
            f"{p['uplink_loss']:.2%}); forwarded to viewers "
            f"{sum(p['server_forwarded_to_viewers'].values())} ({p['forwarded_per_viewer']:.0f} "
            f"each), {p['server_send_dropped']} lost on the server's full send buffer "
            f"({p['server_send_loss']:.2%})"
        )
        print(
            f"  at the viewers       {p['viewers_received']} of {p['viewers_expected']} numbered "
            f"for them ({p['viewers_missed']:.2%} missed; beyond the uplink and the server's "
            f"send: {p['viewer_side_loss']:.2%}), their sockets dropped "
            f"{p['viewers_socket_drops']}"
            + (" (client-side loss)" if p["viewers_socket_drops"] else "")
        )
        print(
            "kernel UDP counters    in the window: "
            + ", ".join(f"{k} {n}" for k, n in report["udp_window"].items())
        )
        print(
            "clients' CPU           "
            + ", ".join(f"{k} {v}%" for k, v in report["clients_cpu_percent"].items())
            + " of one core"
        )
        print(
            f"verdicts               {report['verdicts_per_second']}/s "
            f"(asked {report['samples_asked_per_second']}/s)"
        )
        o = report["officer"]
        print(
            f"officer's signalling   {'connected' if o['connected'] else 'CLOSED'} (close code "
            f"{o['ws_close_code']}, bye {o['bye']}, errors {o['errors']}), "
            f"{o['verdicts_heard_whole_run']} verdicts heard in the whole run"
        )
        print(
            f"checks decided         {report['checks']['decided']} (passed "
            f"{report['checks']['passed']}, failed {report['checks']['failed']}"
            + "".join(f", {k} {n}" for k, n in report["checks"]["failed_by_reason"].items())
            + f"); viewers counting watch time {report['counting']}"
            + (
                " (at the end: "
                + ", ".join(f"{k} {n}" for k, n in report["attendance_states"].items())
                + ")"
                if report.get("attendance_states")
                else ""
            )
        )
        lag = report.get("loop_lag") or {}
        if lag.get("count"):

            def bound(ms: float | None) -> str:
                return f"<= {ms} ms" if ms is not None else "> 10 s"

            print(
                f"event loop lag         p50 {bound(lag['p50_le_ms'])}, p99 "
                f"{bound(lag['p99_le_ms'])}, max {bound(lag['max_le_ms'])}"
            )
        up = report.get("loop") or {}
        if up.get("expected"):
            print(
                f"  wake-ups             {up['wakeups']} of the {up['expected']} of a loop that "
                f"keeps up ({up['share']:.0%}); stalls (0.1 s late or more) by cause: "
                + ", ".join(f"{k} {n}" for k, n in up["stalls_by_cause"].items())
                + "; their seconds by part: "
                + ", ".join(f"{k} {n}" for k, n in up["stall_seconds_by_part"].items())
            )
        for line in report.get("worst_stalls") or []:
            print(f"  worst                {line}")
        print(
            "threads by name        "
            + ", ".join(f"{k} {n}" for k, n in report["threads_by_name"].items())
        )
        rec = report.get("recorder")
        if rec:
            w = rec["window"]
            print(
                f"recorder               {rec['recordings']} recording(s), {rec['tracks']} tracks "
                f"({rec['failed_tracks']} failed), {rec['segments']} segments, "
                f"{rec['stored_bytes'] / 1e6:.1f} MB stored; in the window "
                f"{w['segments_per_second']} segments/s, {w['stored_kbit_per_second']} kbit/s; "
                f"writer thread {rec['writer_cpu_percent']}% of one core"
            )
            print(
                "  gaps by cause        "
                + (
                    ", ".join(
                        f"{k} {g['gaps']} ({g['frames']} frames, {g['seconds']} s)"
                        for k, g in rec["gaps_by_cause"].items()
                    )
                    or "none"
                )
            )
            print(
                "  counts               " + ", ".join(f"{k} {n}" for k, n in rec["counts"].items())
            )
        print(
            f"machine                {report['machine']['cpus']} CPUs, load average "
            f"{report['machine']['load_average']}"
        )
    if as_json:
        print(json.dumps(report))
    return 0


async def measure_education(
    *,
    viewers: int,
    seconds: float,
    check_interval: float = 20.0,
    check_window: float = 10.0,
    sample_interval: float = 5.0,
    fps: int = 5,
    processes: int = 4,
    warmup: float = 10.0,
    record: bool = False,
) -> dict[str, Any] | None:
    """The run's figures (:func:`run_education_bench` prints them). ``record``: the session is
    recorded as the product records it (``recording.sessions``), into the run's temporary
    directory, and the recorder's own figures are in the report (``recorder``)."""
    if viewers < 1 or seconds <= 0 or not 10 <= check_interval or not 5 <= check_window:
        print(
            "bench: --viewers >= 1, --seconds > 0, --check-interval >= 10, --check-window >= 5",
            file=sys.stderr,
        )
        return None
    if not 0.1 <= sample_interval <= 600 or min(check_window, check_interval) < 2 * sample_interval:
        print(
            "bench: --sample-interval 应在 0.1 到 600 秒之间，且 --check-window 至少为其两倍"
            "（一次核验至少两次采样） / --sample-interval must be 0.1 to 600 s and "
            "--check-window at least twice it (a check sees two samples or more)",
            file=sys.stderr,
        )
        return None
    tmp = Path(tempfile.mkdtemp(prefix="remotecase-edubench-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "REMOTECASE_SERVER__PORT": str(port),
        "REMOTECASE_STORAGE__DATA_DIR": str(tmp / "var"),
        "REMOTECASE_KEYS__DIR": str(tmp / "keys"),
        "REMOTECASE_MEDIA__HOST_ADDRESSES": '["127.0.0.1"]',
        "REMOTECASE_MEDIA__MAX_PARTICIPANTS": str(viewers + 10),
        "REMOTECASE_LOG__LEVEL": "WARNING",
        # the product records every session; the bench only when asked (--record)
        "REMOTECASE_RECORDING__SESSIONS": "true" if record else "false",
        # the viewers' interval is education's own (an inquiry keeps verifier.sample_interval)
        "REMOTECASE_EDUCATION__SAMPLE_INTERVAL": str(sample_interval),
        "REMOTECASE_EDUCATION__CHECK_INTERVAL": str(check_interval),
        "REMOTECASE_EDUCATION__CHECK_WINDOW": str(min(check_window, check_interval)),
        # watch time stops once no matching verdict has come for the gap: the gap must outlast
        # a few samples, or it measures the verifier's queue, not attendance (the server
        # refuses less than two; docs/education.md)
        "REMOTECASE_EDUCATION__VERDICT_GAP": str(max(10.0, 3 * sample_interval)),
    }
    procs: list[asyncio.subprocess.Process] = []
    clients: list[Any] = []
    try:
        return await _run(
            procs,
            clients,
            env,
            base,
            viewers,
            seconds,
            fps,
            processes,
            warmup,
            sample_interval,
            tmp / "var" / "recordings" if record else None,
        )
    finally:
        for client in clients:
            await client.close()
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _roster(viewers: int) -> str:
    companies = [("顺达运输有限公司", "保定"), ("宏远物流", "石家庄")]
    lines = ["company,city,role,name,id_number"]
    for i in range(viewers):
        company, city = companies[i % len(companies)]
        lines.append(f"{company},{city},driver,学员{i + 1:03d},BENCH{i + 1:06d}")
    return "\n".join(lines) + "\n"


def bench_face() -> Any:
    """The astronaut's head (her face 76-78 pixels at 320x240, over verifier.min_live_face's
    60 in every frame: the head-and-shoulders crop of session 7 gave 60-62, so a keyframe taken
    at the loop's start was judged too small after VP8)."""
    import skimage.data

    return skimage.data.astronaut()[10:250, 120:360].copy()


async def _run(
    procs: list[asyncio.subprocess.Process],
    clients: list[Any],
    env: dict[str, str],
    base: str,
    viewers: int,
    seconds: float,
    fps: int,
    processes: int,
    warmup: float,
    sample_interval: float,
    recordings: Path | None,
) -> dict[str, Any]:
    from mediaserver import aiortc_hooks

    from .forwarding import _bench_face_png
    from .peer import PatternVideoTrack, PeerClient, ToneAudioTrack

    python = sys.executable
    password = secrets.token_urlsafe(16)
    add = await asyncio.create_subprocess_exec(
        python,
        "-m",
        "control.cli",
        "officer",
        "add",
        "--username",
        "bench",
        "--brigade",
        "bench",
        env={**env, "REMOTECASE_NEW_PASSWORD": password},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await add.communicate()
    if add.returncode != 0:
        raise RuntimeError(f"cannot create the bench officer: {err.decode()}")
    server_log = Path(env["REMOTECASE_STORAGE__DATA_DIR"]).parent / "server.log"
    log_fd = os.open(server_log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    server = await asyncio.create_subprocess_exec(
        python,
        "-m",
        "control.cli",
        "serve",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        # the server's warnings (a socket closed as too slow, an offer unanswered, a task that
        # failed) are kept, and shown when the viewers do not all receive the presenter
        stderr=log_fd,
    )
    os.close(log_fd)
    procs.append(server)
    # for a profiler or top -H alongside (py-spy record -p PID)
    print(
        f"bench: server pid {server.pid}, data in {env['REMOTECASE_STORAGE__DATA_DIR']}",
        file=sys.stderr,
        flush=True,
    )
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await wait_healthy(http, f"{base}/healthz", seconds=120)

        async def call(method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.request(method, base + path, headers=headers, **kwargs) as r:
                if r.status >= 300:
                    raise RuntimeError(f"{method} {path}: {r.status} {await r.text()}")
                return await r.json()

        token = (
            await call("POST", "/api/login", json={"username": "bench", "password": password})
        )["token"]
        people = (
            await call(
                "POST", "/api/education/roster/import", token, data=_roster(viewers).encode()
            )
        )["people"]
        photo = _bench_face_png()
        gate = asyncio.Semaphore(2)

        async def enroll(person: int) -> None:
            async with gate:
                await call(
                    "PUT",
                    f"/api/education/people/{person}/photo?consent=given&basis=bench",
                    token,
                    data=photo,
                )

        await asyncio.gather(*(enroll(p) for p in people))
        case = await call("POST", "/api/cases", token, json={"kind": "education", "title": "bench"})
        cid = case["id"]
        await call(
            "PUT",
            f"/api/cases/{cid}/education",
            token,
            json={"topic": "bench", "required_minutes": 1},
        )
        await call(
            "POST", f"/api/cases/{cid}/education/viewers", token, json={"person_ids": people}
        )
        session = await call("POST", f"/api/cases/{cid}/sessions", token)
        links = (await call("POST", f"/api/cases/{cid}/education/invitations", token, json={}))[
            "invitations"
        ]
        tokens = []
        for link in links:
            redeemed = await call(
                "POST",
                "/api/invitations/redeem",
                json={
                    "token": link["token"],
                    "consent": {"recording": True, "face": True, "electronic_delivery": False},
                },
            )
            tokens.append(redeemed["token"])
            # the identity check before the call is not what is measured (the join check in
            # the call is): the officer admits each bench viewer, as for the forwarding bench
            await call(
                "POST",
                f"/api/cases/{cid}/sessions/{session['id']}/prejoin/{link['party_id']}/admit",
                token,
                json={"reason": "bench viewer"},
            )

        # the officer's connections keep ICE consent as RFC 7675 has it, as the server's and the
        # viewer workers' do: aioice's own gives up after six unanswered single requests of
        # 0.5 s, which a loaded machine can cause while the call works. Issue 17: the officer's
        # media closed mid-run (peer_closed) left the later viewers without a presenter; this
        # process's stock consent is a suspect, not proven the cause
        aiortc_hooks.install()
        aiortc_hooks.restrict_host_addresses(["127.0.0.1"])
        officer = PeerClient(base, session["token"], decode=False)
        clients.append(officer)
        await officer.connect()
        await officer.publish(
            PatternVideoTrack(*SIZE, 15), ToneAudioTrack(), video_codec="video/VP8"
        )

        workers = []
        count = max(1, min(processes, viewers))
        for i in range(count):
            group = tokens[i::count]
            proc = await asyncio.create_subprocess_exec(
                python,
                "-m",
                "bench.education",
                "viewers",
                base,
                str(fps),
                *group,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            procs.append(proc)
            workers.append(proc)
        join_limit = 120 + 3 * viewers
        for proc in workers:
            await _read_line(proc, "JOINED", join_limit)
        try:
            for proc in workers:
                await _read_line(proc, "RECEIVING", join_limit)
        except (TimeoutError, RuntimeError):
            _say_why_not_receiving(officer, Path(env["REMOTECASE_STORAGE__DATA_DIR"]).parent)
            raise
        await asyncio.sleep(warmup)
        # steady state: every viewer's join check decided (bounded: a loaded machine may judge
        # late, and a viewer whose check never decides is in the report as such)
        attendance_url = f"/api/cases/{cid}/sessions/{session['id']}/attendance"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            seen = await call("GET", attendance_url, token)
            if all(_decided(v) for v in seen["viewers"]):
                break
            await asyncio.sleep(1.0)

        def verdicts() -> int:
            return sum(
                1 for m in officer.messages if m.get("type") == "verification" and m.get("verdict")
            )

        texts: list[str] = []

        async def scrape() -> dict[str, float]:
            async with http.get(base + "/metrics") as r:
                texts.append(await r.text())
                return load_metrics.parse(texts[-1])

        def clients_cpu() -> dict[str, float]:
            """The generators' CPU seconds: this process (the officer, presenting and
            receiving every camera) and each viewer worker."""
            out = {"officer": process_cpu(os.getpid())}
            for i, proc in enumerate(workers):
                out[f"viewers-{i + 1}"] = process_cpu(proc.pid)
            return out

        disk0 = await asyncio.to_thread(recorder_on_disk, recordings) if recordings else None
        udp0, clients0 = udp_counters(), clients_cpu()
        metrics0 = await scrape()
        stalls0, wall0 = loop_stall_counters(texts[-1]), time.time()
        cpu0, ver0, rec0, v0, t0, drops0, sockets0 = (
            tree_cpu(server.pid),
            named_threads_cpu(server.pid, "verifier"),
            named_threads_cpu(server.pid, "rec-"),
            verdicts(),
            time.monotonic(),
            udp_receive_buffer_drops(),
            udp_socket_drops(),
        )
        await asyncio.sleep(seconds)
        cpu1, ver1, rec1, v1, t1, drops1, sockets1 = (
            tree_cpu(server.pid),
            named_threads_cpu(server.pid, "verifier"),
            named_threads_cpu(server.pid, "rec-"),
            verdicts(),
            time.monotonic(),
            udp_receive_buffer_drops(),
            udp_socket_drops(),
        )
        udp1, clients1 = udp_counters(), clients_cpu()
        metrics1 = await scrape()
        # after the server's counters: the presenter has sent at least what they count (read
        # before them, the packets sent meanwhile were received but not yet counted as sent)
        presenter_sent = sent_packets(officer)
        stalls1, wall1 = loop_stall_counters(texts[-1]), time.time()
        log_path = Path(env["REMOTECASE_STORAGE__DATA_DIR"]).parent / "server.log"
        log_text = await asyncio.to_thread(log_path.read_text, errors="replace")
        by_role = role_packets(texts[-1])
        send_dropped = _sfu_counters(texts[-1]).get("send_dropped_packets_total", 0.0)
        named = threads_by_name(server.pid)
        recorder: dict[str, Any] | None = None
        if recordings is not None and disk0 is not None:
            disk1 = await asyncio.to_thread(recorder_on_disk, recordings)
            recorder = recorder_window(disk0, disk1, t1 - t0)
            recorder["writer_cpu_percent"] = round(100 * (rec1 - rec0) / (t1 - t0), 1)
        # whose sockets dropped them: the server, the officer (this process) or a worker
        roles = {"server": _descendants(server.pid), "officer": [os.getpid()]}
        for i, proc in enumerate(workers):
            roles[f"viewers-{i + 1}"] = [proc.pid]
        socket_drops = drops_by_role(sockets0, sockets1, roles)
        server_top = top_socket_drops(sockets0, sockets1, roles["server"])
        rss = tree_rss_mb(server.pid)
        threads = _status_kb(server.pid, "Threads")  # a count, read like the sizes
        peak = round(_status_kb(server.pid, "VmHWM") / 1024, 1)
        load = os.getloadavg()

        losses: list[float] = []
        joined = viewers_expected = viewers_received = 0
        for proc in workers:
            assert proc.stdin is not None
            proc.stdin.write(b"STOP\n")
            await proc.stdin.drain()
            result = json.loads((await _read_line(proc, "RESULT", 60))[len("RESULT ") :])
            joined += result["joined"]
            losses.extend(result["loss"])
            viewers_expected += result["expected"]
            viewers_received += result["received"]
        attendance = await call(
            "GET", f"/api/cases/{cid}/sessions/{session['id']}/attendance", token
        )
        async with http.get(base + "/metrics") as r:
            sfu = _sfu_counters(await r.text())

    elapsed = t1 - t0
    passed = failed = counting = 0
    states: dict[str, int] = {}  # the viewers' attendance at the end: state (and why not counting)
    reasons: dict[str, int] = {}  # failed checks by reason (no_picture: nothing judgeable came)
    for v in attendance["viewers"]:
        state = v["attendance"] or {}
        for check in state.get("checks", []):
            if check.get("result") == "passed":
                passed += 1
            elif check.get("result") == "failed":
                failed += 1
                why = str(check.get("reason") or "?")
                reasons[why] = reasons.get(why, 0) + 1
        counting += state.get("state") == "counting"
        key = str(state.get("state") or "none")
        if state.get("reason"):
            key += f" ({state['reason']})"
        states[key] = states.get(key, 0) + 1
    cpu = cpu1 - cpu0
    verifier = ver1 - ver0
    return {
        "viewers": viewers,
        "joined": joined,
        "seconds": round(elapsed, 1),
        "warmup": warmup,
        "fps": fps,
        "video": f"{SIZE[0]}x{SIZE[1]} VP8",
        "sample_interval": sample_interval,
        "check_interval": attendance["rules"]["check_interval"],
        "check_window": attendance["rules"]["check_window"],
        "server_cpu_percent": round(100 * cpu / elapsed, 1),
        "verifier_cpu_percent": round(100 * verifier / elapsed, 1),
        "verifier_share": round(verifier / cpu, 3) if cpu else 0.0,
        "rss_mb": rss,
        "server_threads": threads,
        # by the operating system's thread names (the event loop and unnamed Python threads
        # are "python"; the recorder's writer threads "rec-", the verifier's "verifier")
        "threads_by_name": named,
        # how late the server's event loop woke in the window (control/loopwatch.py)
        "loop_lag": load_metrics.histogram_window(metrics0, metrics1, "lag"),
        # its wake-ups against a loop that keeps up, and its stalls by cause (loopwatch.py)
        "loop": loop_keeping_up(
            stalls0,
            stalls1,
            int((load_metrics.histogram_window(metrics0, metrics1, "lag") or {}).get("count", 0)),
            elapsed,
        ),
        # the server's own warnings of its worst stalls in the window, with their parts
        "worst_stalls": worst_stalls(log_text, wall0, wall1),
        "recorded": recorder is not None,
        # with --record: the recorder's own account (recorder_on_disk), else None
        "recorder": recorder,
        "server_peak_rss_mb": peak,
        "loss_per_viewer": {
            "median": round(statistics.median(losses), 5) if losses else None,
            "max": round(max(losses), 5) if losses else None,
            "over_1_percent": sum(1 for x in losses if x > 0.01),
            "all": [round(x, 5) for x in losses],
        },
        # where the presenter's packets went (loss_breakdown), and what the kernel and the
        # generators' processes say about it in the window
        "packets": loss_breakdown(
            viewers=viewers,
            sent=presenter_sent,
            server_in=by_role.get("officer", {}),
            to_viewers=by_role.get("party", {}),
            send_dropped=send_dropped,
            viewers_expected=viewers_expected,
            viewers_received=viewers_received,
            viewer_socket_drops=sum(
                n for role, n in socket_drops.items() if role.startswith("viewers-")
            ),
        ),
        "udp_window": udp_counters_window(udp0, udp1),
        "clients_cpu_percent": {
            k: round(100 * (clients1[k] - clients0.get(k, 0.0)) / elapsed, 1) for k in clients1
        },
        "verdicts_per_second": round((v1 - v0) / elapsed, 2),
        "udp_receive_buffer_drops": drops1 - drops0,
        # the same by whose sockets (/proc/net/udp's drops column): server, officer, viewers-N
        "udp_drops_by_role": socket_drops,
        # the server's sockets that dropped most (top_socket_drops)
        "server_socket_drops_top": server_top,
        # the server's own account of where packets went (whole run, /metrics)
        "sfu": sfu,
        "samples_asked_per_second": round(viewers / sample_interval, 2),
        # the officer's signalling (its verification messages are the verdicts heard above):
        # still connected at the end, or closed by the server (4xxx codes) and why
        "officer": {
            "connected": officer.ws_close_code is None and officer.closed_reason is None,
            "ws_close_code": officer.ws_close_code,
            "bye": officer.closed_reason,
            "errors": sorted({str(e.get("code")) for e in officer.errors}),
            "verdicts_heard_whole_run": verdicts(),
        },
        "checks": {
            "decided": passed + failed,
            "passed": passed,
            "failed": failed,
            "failed_by_reason": dict(sorted(reasons.items())),
        },
        "counting": counting,
        "attendance_states": dict(sorted(states.items())),
        "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in load]},
    }


def _signalling_state(client: Any) -> dict[str, Any]:
    """What a bench client's signalling went through: to tell a socket the server closed from
    an offer that never came (issue 17's viewers that never received the presenter)."""
    kinds: dict[str, int] = {}
    for m in client.messages:
        kinds[str(m.get("type"))] = kinds.get(str(m.get("type")), 0) + 1
    return {
        "ws_close_code": client.ws_close_code,
        "bye": client.closed_reason,
        "errors": sorted({str(e.get("code")) for e in client.errors}),
        "messages": kinds,
    }


def _say_why_not_receiving(officer: Any, tmp: Path) -> None:
    """The officer's side and the server's warnings, when viewers never got the presenter."""
    print(
        "bench: not every viewer receives the presenter; the officer's signalling:",
        json.dumps(_signalling_state(officer)),
        file=sys.stderr,
        flush=True,
    )
    try:
        lines = (tmp / "server.log").read_text(errors="replace").splitlines()
    except OSError:
        return
    warnings = [line for line in lines if "WARNING" in line or "ERROR" in line]
    print(
        f"bench: the server's last warnings ({len(warnings)} in all):",
        *warnings[-40:],
        sep="\n",
        file=sys.stderr,
        flush=True,
    )


def _decided(viewer: dict[str, Any]) -> bool:
    checks = (viewer.get("attendance") or {}).get("checks", [])
    return any(c.get("result") in ("passed", "failed") for c in checks)


# -- the viewers' worker process ---------------------------------------------------------------
async def _viewers(base: str, fps: int, tokens: list[str]) -> None:
    from mediaserver import aiortc_hooks

    from .peer import EncodedLoopVideoTrack, ImageVideoTrack, PeerClient, encode_vp8_loop

    aiortc_hooks.install()  # count packets in the receivers instead of decoding them
    aiortc_hooks.restrict_host_addresses(["127.0.0.1"])
    face = bench_face()
    # one encoding of the moving, noisy face for every viewer of this process: 100 VP8 encoders
    # would take the two cores the server is measured on
    loop = encode_vp8_loop(ImageVideoTrack([(0, face)], *SIZE, fps=fps), fps, seconds=2.0)
    clients: list[PeerClient] = []
    officers: set[str] = set()
    dropped: dict[int, set[str]] = {}

    def presenter_mids(client: PeerClient) -> set[str]:
        """The mids that carry an officer's tracks: each offer and ``tracks`` message maps
        the mids it changes, so the map is every such message's in order."""
        owners: dict[str, str] = {}
        for m in client.messages:
            if m.get("type") in ("offer", "tracks"):
                for mid, t in (m.get("tracks") or {}).items():
                    owners[mid] = t.get("participant", "")
        return {mid for mid, owner in owners.items() if owner in officers}

    async def drop_other_viewers(client: PeerClient) -> None:
        """Unsubscribe from every track not an officer's (the other viewers' cameras)."""
        me = (client.joined or {}).get("participant", {}).get("id")
        seen = dropped.setdefault(id(client), set())
        tracks = []
        for m in [client.joined or {}, *client.messages]:
            for p in m.get("participants", []):
                if p.get("role") in ("officer", "supervisor"):
                    officers.add(p["id"])
                for t in p.get("tracks", []):
                    if p["id"] != me and p.get("role") not in ("officer", "supervisor"):
                        tracks.append(t["id"] if isinstance(t, dict) else t)
            if m.get("type") == "participant_joined":
                p = m["participant"]
                if p.get("role") in ("officer", "supervisor"):
                    officers.add(p["id"])
            if m.get("type") == "track_published":
                t = m["track"]
                if t.get("participant") not in officers and t.get("participant") != me:
                    tracks.append(t.get("id") or t.get("track_id"))
        fresh = [t for t in tracks if t and t not in seen]
        if fresh:
            seen.update(fresh)
            await client.send({"type": "unsubscribe", "tracks": fresh})

    async def prune() -> None:
        while True:
            for client in clients:
                try:
                    await drop_other_viewers(client)
                except Exception:  # a closed socket: the report shows its loss
                    pass
            await asyncio.sleep(0.2)

    # pruning from the first join on: each new viewer's camera is dropped by the others as soon
    # as it is announced
    pruner = asyncio.get_running_loop().create_task(prune())
    try:
        for token in tokens:
            client = PeerClient(base, token, decode=False)
            await client.connect()
            clients.append(client)
            await drop_other_viewers(client)
            camera = EncodedLoopVideoTrack(loop, fps)
            await client.publish(camera, video_codec="video/VP8")
        print("JOINED", flush=True)

        def presenter_heard(c: PeerClient) -> bool:
            return any(c.received_packets.get(mid) for mid in presenter_mids(c))

        waited = 0.0
        while not all(presenter_heard(c) for c in clients):
            await asyncio.sleep(0.2)
            waited += 0.2
            if abs(waited - 30.0) < 0.1:
                for c in clients:
                    if not presenter_heard(c):
                        # whether the presenter was in the room when it joined, what became
                        # of the presenter after, and of this viewer's own signalling
                        present = [
                            (p["id"], len(p.get("tracks") or []))
                            for p in (c.joined or {}).get("participants", [])
                            if p.get("id") in officers
                        ]
                        events = [
                            {k: m.get(k) for k in ("type", "participant", "reason", "track")}
                            for m in c.messages
                            if m.get("type")
                            in ("participant_left", "participant_reconnecting", "track_unpublished")
                            and m.get("participant") in officers
                        ]
                        leaves: dict[str, int] = {}
                        for m in c.messages:
                            if m.get("type") == "participant_left":
                                why = str(m.get("reason"))
                                leaves[why] = leaves.get(why, 0) + 1
                        offers = [
                            sorted({t.get("participant") for t in (m.get("tracks") or {}).values()})
                            for m in c.messages
                            if m.get("type") == "offer"
                        ]
                        print(
                            "bench: a viewer receives nothing of the presenter after 30 s "
                            "(officers, its mids, packets per mid):",
                            sorted(officers),
                            c.tracks,
                            dict(c.received_packets),
                            "| presenter at its join:",
                            present,
                            "| the presenter's events:",
                            events,
                            "| others' leaves by reason:",
                            leaves,
                            "| offers (whose tracks):",
                            offers,
                            "| its signalling:",
                            json.dumps(_signalling_state(c)),
                            file=sys.stderr,
                            flush=True,
                        )
        print("RECEIVING", flush=True)
        await _wait_stop()
    finally:
        pruner.cancel()
    loss = []
    all_received = all_expected = 0
    for client in clients:
        received = expected = 0
        mine = presenter_mids(client)
        for mid, (first, highest, count) in client.received_seq.items():
            if mid not in mine:
                continue  # a viewer's camera received before the unsubscribe took effect
            received += count
            expected += ((highest - first) & 0xFFFF) + 1
        loss.append(max(0.0, 1 - received / expected) if expected else 1.0)
        all_received += received
        all_expected += expected
    result = {
        "joined": sum(c.joined is not None for c in clients),
        "loss": loss,
        "received": all_received,  # the presenter's packets, summed over this worker's viewers
        "expected": all_expected,
    }
    print("RESULT " + json.dumps(result), flush=True)
    for client in clients:
        await client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.education")
    sub = parser.add_subparsers(dest="role", required=True)
    sub.add_parser(
        "run", help="the bench: the options of remotecase bench education", add_help=False
    )
    v = sub.add_parser("viewers")
    v.add_argument("base")
    v.add_argument("fps", type=int)
    v.add_argument("tokens", nargs="+")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:  # one set of options: the CLI's (control/cli.py)
        from control.cli import main as cli

        sys.exit(cli(["bench", "education", *argv[1:]]))
    args = parser.parse_args(argv)
    asyncio.run(_viewers(args.base, args.fps, args.tokens))


if __name__ == "__main__":
    main()
