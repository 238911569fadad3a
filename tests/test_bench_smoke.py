"""The forwarding benchmark runs end to end and reports its figures (numbers are not judged)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from control.config import ServerConfig


@pytest.mark.parametrize("record", [False, True])
def test_bench_forwarding_prints_json_figures(record: bool) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "control.cli",
            "bench",
            "forwarding",
            "--subscribers",
            "2",
            "--seconds",
            "1",
            "--json",
            *(["--record"] if record else []),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("subscribers", "forwarded_pps", "cpu_us_per_forwarded_packet", "loss_ratio"):
        assert key in report
    assert report["subscribers"] == 2
    assert report["forwarded_packets"] > 0
    assert 0.0 <= report["loss_ratio"] <= 1.0
    assert report["recorded"] is record


def test_load_plans_match_the_scenarios() -> None:
    from bench.load import plan_rooms

    assert [(p.publishers, p.viewers, p.streams) for p in plan_rooms("one_to_one", 2, "x")] == [
        (2, 0, 4),
        (2, 0, 4),
    ]
    (education,) = plan_rooms("education", 1, "x")
    assert (education.participants, education.streams) == (31, 60)
    mix = plan_rooms("mix", 10, "x")
    assert sorted(p.shape for p in mix).count("one_to_one") == 6
    assert {p.shape for p in plan_rooms("mix", 4, "x")} == {"one_to_one", "mediation", "education"}


def test_bench_load_measures_latency_loss_and_finds_a_knee(tmp_path: Path) -> None:
    """A tiny capacity search against a server the harness starts: real aiortc clients in two
    generator processes, figures in JSON and a plot."""
    plot = tmp_path / "load.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "control.cli",
            "bench",
            "load",
            "--scenario",
            "one_to_one",
            "--rooms",
            "1",
            "--capacity",
            "--max-rooms",
            "2",
            "--seconds",
            "2",
            "--warmup",
            "1",
            "--max-p99-ms",
            "500",
            "--plot",
            str(plot),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert [s["rooms"] for s in report["steps"]] == [1, 2]
    for step in report["steps"]:
        assert step["join_failures"] == []
        assert step["forwarded_pps"] > 0 and step["server_cpu_us_per_packet"] > 0
        assert step["loss_ratio"] is not None and step["loss_ratio"] < 0.05
        latency = step["latency_ms"]
        assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
        assert step["first_frame_ms"]["p50"] > 0 and step["join_ms"]["p50"] > 0
        assert step["server_rss_mb"] > 10
        assert step["streams_received"] == step["streams"]
        # the server's own side: its loop's lateness and its collector, from /metrics
        assert step["server_loop_lag"]["count"] > 0
        assert step["server_gc_collections"] is not None
    assert report["receivers"] == "light"
    assert report["knee"]["rooms"] in (1, 2)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "knee:" in result.stdout


def test_compare_janus_runs_both_servers_side_by_side(tmp_path: Path) -> None:
    """Debian's Janus (VideoRoom) and remotecase under the same clients and scenario in one
    run; the JSON carries both per-packet costs and their ratio."""
    import os
    import shutil

    if shutil.which("janus") is None:
        if os.environ.get("CI"):
            raise RuntimeError("janus missing: .ci/run should have installed it")
        pytest.skip("Debian's janus is not installed (apt-get install janus)")
    plot = tmp_path / "compare.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "control.cli",
            "bench",
            "compare-janus",
            "--scenario",
            "mediation",
            "--rooms",
            "1",
            "--no-capacity",
            "--seconds",
            "3",
            "--warmup",
            "1",
            "--plot",
            str(plot),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in (
        "remotecase_cpu_us_per_packet",
        "janus_cpu_us_per_packet",
        "efficiency_ratio",
        "remotecase_knee_streams",
        "janus_knee_streams",
    ):
        assert key in summary
    assert summary["remotecase_cpu_us_per_packet"] > 0
    assert summary["janus_cpu_us_per_packet"] > 0
    assert summary["efficiency_ratio"] == pytest.approx(
        summary["janus_cpu_us_per_packet"] / summary["remotecase_cpu_us_per_packet"], rel=0.01
    )
    for server in ("remotecase", "janus"):
        (step,) = summary[server]["steps"]
        assert step["join_failures"] == [] and step["streams"] == 24
        assert step["loss_ratio"] is not None and step["loss_ratio"] < 0.05
        assert step["received_pps"] > 100
        assert 0 < step["latency_ms"]["p50"] <= step["latency_ms"]["p99"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_load_shows_one_worker_against_two() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "control.cli",
            "bench",
            "load",
            "--scaling",
            "--rooms",
            "1",
            "--seconds",
            "2",
            "--warmup",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    one, two = summary["reports"]
    assert (one["server_workers"], two["server_workers"]) == (1, 2)
    for report in (one, two):
        (step,) = report["steps"]
        assert step["join_failures"] == [] and step["received_pps"] > 50
        assert step["loss_ratio"] is not None and step["loss_ratio"] < 0.05
    assert summary["scaling"]["two_workers"]["server_cpu_percent"] > 0


def test_light_receivers_count_decrypt_and_time_what_they_read() -> None:
    """The light subscriber path with real SRTP sessions: sequence numbers and markers are read
    in the clear, the first keyframe and each frame's last packet are decrypted, the latency
    trailer is read, and a forged packet is not counted."""
    import os
    import time

    from pylibsrtp import Policy, Session

    from bench.load import TRAILER_MAGIC, LatencySink, Member, rtp_payload
    from mediaserver import rtp

    key = os.urandom(30)
    tx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    rx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))

    class Receiver:
        class track:  # the shape of aiortc's receiver.track
            kind = "video"

    member = Member(time.monotonic())
    sink = LatencySink(member, "0")
    keyframe = bytes([0x10, 0x00, 0x00, 0x00]) + b"\x9d\x01\x2a" + bytes(40)  # VP8 key start
    inter = bytes([0x00]) + bytes(200)
    sent_ns = time.monotonic_ns() - 5_000_000  # sent 5 ms ago
    last = bytes([0x00]) + bytes(100) + TRAILER_MAGIC + sent_ns.to_bytes(8, "big")
    packets = [
        (100, 0, inter),
        (101, 0, keyframe),
        (102, 0, inter),
        (103, 1, last),
        (105, 0, inter),
    ]  # 104 is lost
    for seq, marker, payload in packets:
        data = tx.protect(rtp.build_packet(96, marker, seq, 9000, 0x1234, payload))
        sink.on_datagram(data, rx, Receiver())
    forged = bytearray(tx.protect(rtp.build_packet(96, 1, 106, 9000, 0x1234, last)))
    forged[-1] ^= 1
    sink.on_datagram(bytes(forged), rx, Receiver())

    state = sink.state
    assert state.count == 5 and state.expected == 6  # one lost, the forgery not counted
    assert state.keyframe_started
    assert len(state.latencies_ms) == 1 and 4.0 < state.latencies_ms[0] < 1000
    assert state.first_frame_at is not None
    assert member.sinks == [sink]
    # RFC 3550 header parts around the payload: CSRCs, an extension, padding
    header = bytes([0xB1, 96, 0, 1]) + bytes(8) + bytes(4) + bytes([0xBE, 0xDE, 0, 1]) + bytes(4)
    assert rtp_payload(header + b"media" + bytes([0, 0, 3])) == b"media"


def test_generator_line_protocol_round_trips_and_refuses_bad_lines() -> None:
    """The lines between the load harness and its generators: a job and each report come back
    as they were sent, lines of another kind are skipped, and a malformed one is refused."""
    from bench.load import protocol
    from bench.load.protocol import Job, Participant, Ready, Result, RoomJob, Stats

    job = Job(
        base="http://127.0.0.1:1",
        rooms=[RoomJob("r-0", [Participant("t", True), Participant("", False)])],
        bitrate=500_000,
        fps=30,
        server="janus",
        address="10.0.0.1",
        cpus=[1],
    )
    assert protocol.decode_job(protocol.encode_job(job)) == job
    # the fields a job leaves out take their defaults
    assert protocol.decode_job('{"base": "b", "rooms": [], "bitrate": 1, "fps": 1}') == Job(
        base="b",
        rooms=[],
        bitrate=1,
        fps=1,
        server="remotecase",
        address="127.0.0.1",
        receivers="light",
        cpus=None,
    )
    result = Result(
        joins_ms=[1.5],
        failures=["r-1: RuntimeError: no"],
        received=10,
        expected=11,
        latencies_ms=[2.0, 3.0],
        jitter_ms=[0.5],
        first_frame_ms=[900.0],
        loop_lag_buckets=[3, 0, 1],
        subscriptions=2,
        receiving=1,
    )
    ready, stats = Ready(joined=2, failures=[]), Stats(received=5, cpu=0.25)
    assert protocol.encode(stats).startswith("STATS {")
    assert protocol.decode(protocol.encode(ready) + "\n", Ready) == ready
    assert protocol.decode(protocol.encode(stats) + "\n", Stats) == stats
    assert protocol.decode(protocol.encode(result) + "\n", Result) == result
    assert protocol.decode(protocol.encode(Stats(received=1, cpu=0.1)), Ready) is None
    assert protocol.is_measure("MEASURE\n") and not protocol.is_measure("STOP\n")
    with pytest.raises(ValueError, match="不符合协议"):
        protocol.decode('READY {"joined": 1}', Ready)
    with pytest.raises(ValueError, match="不完整"):
        protocol.decode_job('{"base": "b"}')
    with pytest.raises(ValueError):
        protocol.decode("STATS [1, 2]", Stats)


def test_bench_education_runs_a_session_with_face_checks() -> None:
    """Three viewers enrolled with a real face, publishing it as video: the verifier judges
    their samples, the attendance checks are decided, and the figures come out as JSON."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "control.cli",
            "bench",
            "education",
            "--viewers",
            "3",
            "--seconds",
            "8",
            "--warmup",
            "4",
            "--processes",
            "1",
            # a join check has 45 s to see the face: a loaded machine judges late, not wrongly
            "--check-interval",
            "60",
            "--check-window",
            "45",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["viewers"] == report["joined"] == 3
    assert len(report["loss_per_viewer"]["all"]) == 3
    assert all(0.0 <= x <= 1.0 for x in report["loss_per_viewer"]["all"])
    assert report["server_cpu_percent"] > 0 and report["rss_mb"] > 0
    # the verifier's threads are told apart and did work; it is part of the server's CPU
    assert report["verifier_cpu_percent"] > 0
    assert 0.0 < report["verifier_share"] <= 1.0
    assert report["verdicts_per_second"] > 0
    # every viewer's join check was decided, and it passed: the face is the enrolled one
    assert report["checks"]["passed"] >= 3
    assert "server CPU" in result.stdout
    # where the presenter's packets went (issue 17): sent, received by the server, forwarded
    # to each viewer, received there; the kernel's UDP counters and the generators' CPU
    packets = report["packets"]
    sent = sum(packets["presenter_sent"].values())
    received = sum(packets["server_received_from_presenter"].values())
    assert 0 < received <= sent and packets["forwarded_per_viewer"] > 0
    assert 0 < packets["viewers_received"] <= packets["viewers_expected"]
    assert packets["server_send_dropped"] >= 0 and 0.0 <= packets["uplink_loss"] <= 1.0
    assert {"RcvbufErrors", "SndbufErrors", "InErrors"} <= set(report["udp_window"])
    assert set(report["clients_cpu_percent"]) == {"officer", "viewers-1"}
    assert "presenter's packets" in result.stdout
    # the server's loop: its wake-ups against a loop that keeps up (one each 20 ms)
    loop = report["loop"]
    # one wake-up each interval of the server's loop watch (its default, as the bench runs it)
    assert loop["expected"] == int(report["seconds"] / ServerConfig().loop_watch_interval)
    assert 0 < loop["wakeups"] <= loop["expected"] + 5
    assert set(loop["stalls_by_cause"]) == {"own", "gc", "core_wait", "off_core"}
    assert isinstance(report["worst_stalls"], list)
    assert "wake-ups" in result.stdout


def test_bench_education_records_with_the_recorder_figures() -> None:
    """--record: the session is recorded as the product records it, and the report carries
    the recorder's own figures (its segments and bytes on disk, gaps by cause, the tracks'
    counters, the writer thread's CPU) and the server's threads by name."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.education",
            "run",
            "--viewers",
            "2",
            "--seconds",
            "6",
            "--warmup",
            "4",
            "--processes",
            "1",
            "--check-interval",
            "60",
            "--check-window",
            "45",
            "--record",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["recorded"] is True and report["joined"] == 2
    rec = report["recorder"]
    # one recording: the officer's video and audio and each viewer's camera
    assert rec["recordings"] == 1 and rec["tracks"] >= 4 and rec["failed_tracks"] == 0
    # 2 s segments over a 6 s window after the warm-up: sealed and stored
    assert rec["segments"] >= 4 and rec["stored_bytes"] > 0
    assert rec["window"]["segments"] > 0 and rec["window"]["stored_kbit_per_second"] > 0
    assert rec["counts"]["forwarded_frames"] > 0
    assert all(
        cause in ("loss", "outage", "muted", "left", "failure") for cause in rec["gaps_by_cause"]
    )
    # the writer thread is named for the operating system, so its CPU is told apart
    assert any(name.startswith("rec-") for name in report["threads_by_name"])
    assert rec["writer_cpu_percent"] >= 0
    assert "recorder" in result.stdout and report["loop_lag"]["count"] > 0


def test_bench_education_names_whose_sockets_drop() -> None:
    """A socket whose receive buffer overflows is found by inode in /proc/net/udp and counted
    for the process that holds it, not for another role."""
    import os
    import socket

    from bench.education import drops_by_role, udp_socket_drops

    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as reader,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.bind(("127.0.0.1", 0))
        before = udp_socket_drops()
        for _ in range(200):  # never read: most cannot fit the buffer
            sender.sendto(b"x" * 1000, reader.getsockname())
        after = udp_socket_drops()
        drops = drops_by_role(before, after, {"me": [os.getpid()], "init": [1]})
    assert drops["me"] >= 100
    assert drops["init"] == 0
    assert set(drops) == {"me", "init", "other"}


def test_threads_by_name_keeps_a_writer_whose_recording_id_ends_in_digits() -> None:
    """A writer thread named rec-<six digits> (a recording id whose tail is all digits, about
    one id in sixteen) is counted as ``rec-``, not taken for a number and cut to ``rec``."""
    import ctypes
    import os
    import threading

    from bench.education import threads_by_name

    named, release = threading.Event(), threading.Event()

    def writer() -> None:
        ctypes.CDLL(None).prctl(15, b"rec-123456", 0, 0, 0)  # PR_SET_NAME, as recorder.writer
        named.set()
        release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert named.wait(10)
        counted = threads_by_name(os.getpid())
    finally:
        release.set()
        thread.join()
    assert counted.get("rec-") == 1, counted
    assert "rec" not in counted


async def test_the_education_report_reads_the_loop_watchs_stalls() -> None:
    """The bench's reading of a real loop watch: a stall's cause counted in the window, the
    wake-ups against a loop that keeps up, and the worst warnings picked from a server log by
    their time."""
    import time

    from bench.education import loop_keeping_up, loop_stall_counters, worst_stalls
    from control.loopwatch import LoopWatch

    watch = LoopWatch(interval=0.01, stall_after=0.1)
    watch.start()
    try:
        await asyncio.sleep(0.05)
        before = loop_stall_counters("\n".join(watch.render()))
        time.sleep(0.2)  # noqa: ASYNC251 - a blocking call, off the core
        await asyncio.sleep(0.05)
        after = loop_stall_counters("\n".join(watch.render()))
    finally:
        await watch.close()
    assert before["interval"] == 0.01
    window = loop_keeping_up(before, after, wakeups=20, seconds=1.0)
    assert window["expected"] == 100 and window["share"] == 0.2
    assert (
        window["stalls_by_cause"]["off_core"] == 1 and sum(window["stalls_by_cause"].values()) == 1
    )
    assert window["stall_seconds_by_part"]["off_core"] >= 0.15
    log = "\n".join(
        [
            "2026-12-02 07:41:14,033 WARNING control.loopwatch room=- event loop 900 ms late "
            "(cause: core_wait; waiting for a core 800 ms)",
            "2026-12-02 07:41:24,033 WARNING control.loopwatch room=- event loop 2898 ms late "
            "(cause: off_core; off the core 2500 ms)",
            "2026-12-02 07:41:34,033 WARNING control.sfu room=r1 a socket closed",
            "2026-12-02 07:49:00,000 WARNING control.loopwatch room=- event loop 5000 ms late "
            "(cause: own)",
        ]
    )
    import datetime

    start = datetime.datetime(2026, 12, 2, 7, 41, 0).timestamp()
    end = datetime.datetime(2026, 12, 2, 7, 42, 0).timestamp()
    assert worst_stalls(log, start, end) == [
        "07:41:24 event loop 2898 ms late (cause: off_core; off the core 2500 ms)",
        "07:41:14 event loop 900 ms late (cause: core_wait; waiting for a core 800 ms)",
    ]
