"""``remotecase bench forwarding``: the SFU's CPU per forwarded packet, measured.

One SFU process (``remotecase serve``), one publisher process (aiortc, VP8 640x480 at 30 fps plus
Opus) and the subscribers spread over two processes that count packets without decoding, all
over loopback. After a warm-up, the SFU process's CPU time (user + system, from /proc) and its
forwarded-packet counter (from /metrics) are read at both ends of the window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from control.sessions.tokens import TokenSigner

SUB_PROCESSES = 2


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (tests and the bench start servers on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_healthy(http: aiohttp.ClientSession, url: str, *, seconds: float = 30.0) -> None:
    """Wait until ``url`` (a server's health page) answers 200; RuntimeError after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        try:
            async with http.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing healthy answers at {url} after {seconds:.0f} s")


def _thread_cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU of one thread (the main thread, which runs the event loop)."""
    with open(f"/proc/{pid}/task/{tid or pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a whole process (all threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


async def _forwarded_packets(session: aiohttp.ClientSession, base: str) -> int:
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    total = 0
    for match in re.finditer(
        r'^remotecase_sfu_forwarded_packets_total\{kind="\w+"\} (\d+)$', text, re.M
    ):
        total += int(match.group(1))
    return total


async def _read_line(proc: asyncio.subprocess.Process, expect: str, limit: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + limit
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"worker did not say {expect}")
        line = (await asyncio.wait_for(proc.stdout.readline(), remaining)).decode().strip()
        if not line and proc.returncode is not None:
            raise RuntimeError(f"worker exited before {expect}")
        if line.startswith(expect):
            return line


async def run_forwarding_bench(
    *,
    subscribers: int,
    seconds: float,
    as_json: bool,
    bitrate: int = 1_000_000,
    warmup: float = 3.0,
    record: bool = False,
    verify: bool = False,
    face_video: bool = False,
    quiet: bool = False,
) -> int:
    report = await measure_forwarding(
        subscribers=subscribers,
        seconds=seconds,
        bitrate=bitrate,
        warmup=warmup,
        record=record,
        verify=verify,
        face_video=face_video,
    )
    if report is None:
        return 2
    if not quiet:
        print(
            f"subscribers            {subscribers}"
            + ("  (room recorded)" if record else "")
            + ("  (publisher's face verified)" if verify else "")
        )
        print(f"forwarded packets/s    {report['forwarded_pps']}")
        print(f"SFU CPU                {report['sfu_cpu_percent']}% of one core")
        print(
            f"CPU per forwarded pkt  {report['cpu_us_per_forwarded_packet']} us "
            f"(user {report['user_us_per_forwarded_packet']}, "
            f"system {report['system_us_per_forwarded_packet']})"
        )
        print(f"event-loop thread      {report['loop_us_per_forwarded_packet']} us per packet")
        print(f"loss ratio             {report['loss_ratio']}")
    if as_json:
        print(json.dumps(report))
    return 0


async def measure_forwarding(
    *,
    subscribers: int,
    seconds: float,
    bitrate: int = 1_000_000,
    warmup: float = 3.0,
    record: bool = False,
    verify: bool = False,
    face_video: bool = False,
) -> dict[str, Any] | None:
    if subscribers < 1 or seconds <= 0:
        print("bench: --subscribers >= 1 and --seconds > 0", file=sys.stderr)
        return None
    tmp = Path(tempfile.mkdtemp(prefix="remotecase-bench-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    signer = TokenSigner.from_file(tmp / "var" / "secrets" / "token.key")
    env = {
        **os.environ,
        "REMOTECASE_SERVER__PORT": str(port),
        "REMOTECASE_STORAGE__DATA_DIR": str(tmp / "var"),
        "REMOTECASE_KEYS__DIR": str(tmp / "keys"),
        "REMOTECASE_MEDIA__HOST_ADDRESSES": '["127.0.0.1"]',
        "REMOTECASE_MEDIA__MAX_PARTICIPANTS": str(subscribers + 10),
        "REMOTECASE_LOG__LEVEL": "WARNING",
        # the subscribers join the case's room with tokens minted here: development mode
        "REMOTECASE_AUTH__DEV_JOIN": "true",
        # the bench's room is a case session; it is recorded only when --record asks
        "REMOTECASE_RECORDING__SESSIONS": "true" if record else "false",
    }
    python = sys.executable
    procs: list[asyncio.subprocess.Process] = []
    try:
        return await _run(
            procs,
            python,
            env,
            base,
            signer,
            subscribers,
            seconds,
            bitrate,
            warmup,
            record,
            verify,
            face_video or verify,
        )
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


async def _run(
    procs: list[asyncio.subprocess.Process],
    python: str,
    env: dict[str, str],
    base: str,
    signer: TokenSigner,
    subscribers: int,
    seconds: float,
    bitrate: int,
    warmup: float,
    record: bool,
    verify: bool,
    face_video: bool,
) -> dict[str, Any]:
    # an officer account, so that the bench drives a case session as the control plane does
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
    sfu = await asyncio.create_subprocess_exec(
        python,
        "-m",
        "control.cli",
        "serve",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    procs.append(sfu)
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, f"{base}/healthz")

        case = await _case_session(session, base, password, verify)
        room = case["room"]
        groups = [list(range(i, subscribers, SUB_PROCESSES)) for i in range(SUB_PROCESSES)]
        subs = []
        for group in groups:
            if not group:
                continue
            tokens = [signer.mint(room, f"sub{i}", ttl=3600) for i in group]
            proc = await asyncio.create_subprocess_exec(
                python,
                "-m",
                "bench.forwarding",
                "subscriber",
                base,
                *tokens,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            procs.append(proc)
            subs.append(proc)
        for proc in subs:
            await _read_line(proc, "JOINED", 60)
        pub = await asyncio.create_subprocess_exec(
            python,
            "-m",
            "bench.forwarding",
            "publisher",
            base,
            case["party_token"],
            str(bitrate),
            "face" if face_video else "pattern",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        procs.append(pub)
        await _read_line(pub, "PUBLISHING", 60)
        for proc in subs:
            await _read_line(proc, "RECEIVING", 60)
        await asyncio.sleep(warmup)

        loop0 = _thread_cpu_seconds(sfu.pid)
        cpu0, fwd0, t0 = (
            _cpu_seconds(sfu.pid),
            await _forwarded_packets(session, base),
            time.monotonic(),
        )
        await asyncio.sleep(seconds)
        loop1 = _thread_cpu_seconds(sfu.pid)
        cpu1, fwd1, t1 = (
            _cpu_seconds(sfu.pid),
            await _forwarded_packets(session, base),
            time.monotonic(),
        )

        if record:
            # the session's room has been recorded since its first participant joined
            async with session.post(
                case["recording_url"],
                headers=case["officer"],
                json={"action": "stop", "reason": "bench"},
            ) as r:
                if r.status != 200:
                    raise RuntimeError(f"cannot stop recording: {await r.text()}")
        received = expected = 0
        for proc in subs:
            assert proc.stdin is not None
            proc.stdin.write(b"STOP\n")
            await proc.stdin.drain()
            result = json.loads((await _read_line(proc, "RESULT", 30))[len("RESULT ") :])
            received += result["received"]
            expected += result["expected"]

    forwarded = fwd1 - fwd0
    elapsed = t1 - t0
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    cpu = user + system
    report = {
        "subscribers": subscribers,
        "seconds": round(elapsed, 2),
        "forwarded_packets": forwarded,
        "forwarded_pps": round(forwarded / elapsed, 1),
        "sfu_cpu_percent": round(100 * cpu / elapsed, 1),
        "cpu_us_per_forwarded_packet": round(1e6 * cpu / forwarded, 2) if forwarded else None,
        # system time is mostly the kernel's loopback delivery to the subscriber processes
        "user_us_per_forwarded_packet": round(1e6 * user / forwarded, 2) if forwarded else None,
        "system_us_per_forwarded_packet": round(1e6 * system / forwarded, 2) if forwarded else None,
        "loss_ratio": round(max(0.0, 1 - received / expected), 5) if expected else None,
        # the event-loop thread alone: forwarding, signalling, RTCP; not the recorder's or the
        # verifier's worker threads
        "loop_us_per_forwarded_packet": round(1e6 * (loop1 - loop0) / forwarded, 2)
        if forwarded
        else None,
        "recorded": record,
        "verified": verify,
        "video": "face" if face_video else "pattern",
    }
    return report


# -- worker processes ----------------------------------------------------------------------


async def _wait_stop() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)


async def _subscriber(base: str, tokens: list[str]) -> None:
    from mediaserver import aiortc_hooks

    from .peer import PeerClient

    aiortc_hooks.install()  # count packets in the receivers instead of decoding them
    aiortc_hooks.restrict_host_addresses(["127.0.0.1"])
    clients = [PeerClient(base, token, decode=False) for token in tokens]
    for client in clients:
        await client.connect()
    print("JOINED", flush=True)
    while not all(len(c.received_packets) >= 2 for c in clients):  # noqa: ASYNC110 - polling counters
        await asyncio.sleep(0.1)
    print("RECEIVING", flush=True)
    await _wait_stop()
    received = expected = 0
    for client in clients:
        for first, highest, count in client.received_seq.values():
            received += count
            expected += ((highest - first) & 0xFFFF) + 1
    print("RESULT " + json.dumps({"received": received, "expected": expected}), flush=True)
    for client in clients:
        await client.close()


async def _case_session(
    session: aiohttp.ClientSession, base: str, password: str, verify: bool
) -> dict[str, Any]:
    """Log in, open a case with one party, enroll the bench face, open a session, and redeem
    the party's invitation: the publisher is that party."""

    async def call(method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with session.request(method, base + path, headers=headers, **kwargs) as r:
            if r.status >= 300:
                raise RuntimeError(f"{method} {path}: {r.status} {await r.text()}")
            return await r.json()

    login = await call("POST", "/api/login", json={"username": "bench", "password": password})
    token = login["token"]
    case = await call("POST", "/api/cases", token, json={"kind": "accident", "title": "bench"})
    party = await call(
        "POST",
        f"/api/cases/{case['id']}/parties",
        token,
        json={"role": "driver", "name": "bench publisher"},
    )
    if verify:
        await call(
            "PUT",
            f"/api/cases/{case['id']}/parties/{party['id']}/reference",
            token,
            data=_bench_face_png(),
        )
    opened = await call("POST", f"/api/cases/{case['id']}/sessions", token)
    invite = await call(
        "POST", f"/api/cases/{case['id']}/invitations", token, json={"party_id": party["id"]}
    )
    redeemed = await call(
        "POST",
        "/api/invitations/redeem",
        json={
            "token": invite["token"],
            "consent": {"recording": True, "face": True, "electronic_delivery": False},
        },
    )
    # the bench publisher is no person to check before the call: the officer admits it
    await call(
        "POST",
        f"/api/cases/{case['id']}/sessions/{opened['id']}/prejoin/{party['id']}/admit",
        token,
        json={"reason": "bench publisher"},
    )
    return {
        "room": opened["room"],
        "party_token": redeemed["token"],
        "officer": {"Authorization": f"Bearer {token}"},
        "recording_url": f"{base}/api/cases/{case['id']}/sessions/{opened['id']}/recording",
    }


def _bench_face_png() -> bytes:
    import cv2

    try:
        import skimage.data
    except ImportError:
        raise RuntimeError("--verify shows skimage's astronaut: pip install -e '.[dev]'") from None
    encoded, png = cv2.imencode(".png", cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    if not encoded:
        raise RuntimeError("cannot encode the bench face")
    return bytes(png.tobytes())


async def _publisher(base: str, token: str, bitrate: int, source: str = "pattern") -> None:
    from mediaserver import aiortc_hooks

    from .peer import PatternVideoTrack, PeerClient, ToneAudioTrack

    aiortc_hooks.restrict_host_addresses(["127.0.0.1"])
    client = PeerClient(base, token)
    await client.connect()
    if source == "face":
        import skimage.data

        from .peer import ImageVideoTrack

        video: Any = ImageVideoTrack([(0, skimage.data.astronaut())], fps=30)
    else:
        video = PatternVideoTrack(640, 480, 30)
    await client.publish(video, ToneAudioTrack(), video_codec="video/VP8")
    assert client.publisher_pc is not None
    for sender in client.publisher_pc.getSenders():
        _pin_bitrate(sender, bitrate)
    print("PUBLISHING", flush=True)
    await _wait_stop()
    await client.close()


def _pin_bitrate(sender: Any, bitrate: int) -> None:
    """Hold the VP8 encoder at the requested bitrate (aiortc otherwise follows REMB)."""
    original = sender._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        await original(packet)
        encoder = getattr(sender, "_RTCRtpSender__encoder", None)
        if encoder is not None and hasattr(encoder, "target_bitrate"):
            encoder.target_bitrate = bitrate

    sender._handle_rtcp_packet = handle


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.forwarding")
    sub = parser.add_subparsers(dest="role", required=True)
    s = sub.add_parser("subscriber")
    s.add_argument("base")
    s.add_argument("tokens", nargs="+")
    p = sub.add_parser("publisher")
    p.add_argument("base")
    p.add_argument("token")
    p.add_argument("bitrate", type=int)
    p.add_argument("source", choices=("pattern", "face"), default="pattern", nargs="?")
    args = parser.parse_args(argv)
    if args.role == "subscriber":
        asyncio.run(_subscriber(args.base, args.tokens))
    else:
        asyncio.run(_publisher(args.base, args.token, args.bitrate, args.source))


if __name__ == "__main__":
    main()
