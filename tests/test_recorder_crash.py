"""kill -9 in the middle of a recording: at most the segment in progress is lost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp

from bench.forwarding import free_port
from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from control.sessions.tokens import TokenSigner

SEGMENT_SECONDS = 1.0


async def _serve(tmp_path: Path, port: int) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "REMOTECASE_SERVER__PORT": str(port),
        "REMOTECASE_STORAGE__DATA_DIR": str(tmp_path / "var"),
        "REMOTECASE_KEYS__DIR": str(tmp_path / "keys"),
        "REMOTECASE_MEDIA__HOST_ADDRESSES": '["127.0.0.1"]',
        "REMOTECASE_RECORDING__ALWAYS_ON": "true",
        # a room outside any case, joined with tokens minted here: development mode
        "REMOTECASE_AUTH__DEV_JOIN": "true",
        "REMOTECASE_RECORDING__SEGMENT_SECONDS": str(SEGMENT_SECONDS),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "control.cli",
        "serve",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(150):
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return proc
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start")


async def test_kill_minus_nine_mid_recording_then_restart_seals_it(tmp_path: Path) -> None:
    port = free_port()
    signer = TokenSigner.from_file(tmp_path / "var" / "secrets" / "token.key")
    server = await _serve(tmp_path, port)
    client = PeerClient(
        f"http://127.0.0.1:{port}", signer.mint("crash", "driver"), record_payloads=True
    )
    try:
        await client.connect()
        await client.publish(PatternVideoTrack(fps=15), ToneAudioTrack(), video_codec="video/VP8")
        await asyncio.sleep(4.5)
        server.send_signal(signal.SIGKILL)  # no shutdown handler runs
        await server.wait()
    finally:
        await client.close()
    assert client.publisher_pc is not None
    video_ssrc = next(
        t.sender._ssrc for t in client.publisher_pc.getTransceivers() if t.kind == "video"
    )
    sent = client.sent_timestamps[video_ssrc]

    recordings = list((tmp_path / "var" / "recordings").iterdir())
    assert len(recordings) == 1
    directory = recordings[0]
    assert json.loads((directory / "recording.json").read_bytes())["state"] == "recording"

    server = await _serve(tmp_path, port)  # the restart finds and seals it
    server.terminate()
    await server.wait()

    manifest = json.loads((directory / "manifest.json").read_bytes())
    assert manifest["status"] == "incomplete"
    assert "interrupted" in manifest["note"]
    # who was there and the publisher's clock mapping survive the crash
    (driver,) = manifest["participants"]
    assert driver["id"] == "driver" and driver["presence"][0]["joined_at"]
    assert [p["part"] for p in manifest["parts"]] == [1]
    video = next(t for t in manifest["tracks"] if t["kind"] == "video")
    assert video["sender_reports"] and {"ntp", "rtp"} <= set(video["sender_reports"][0])
    assert video["counts_at_last_save"]["forwarded_frames"] >= video["segments"][0]["frames"]
    assert len(video["segments"]) >= 2
    recorded_seconds = video["segments"][-1]["last_timestamp"] / 90000
    start = sent.index(video["first_rtp_timestamp"])
    sent_seconds = ((sent[-1] - sent[start]) & 0xFFFFFFFF) / 90000
    lost = sent_seconds - recorded_seconds
    print(f"sent {sent_seconds:.2f} s, recorded {recorded_seconds:.2f} s, lost {lost:.2f} s")
    # the segment in progress, plus the muxer's open cluster (250 ms), plus packets in flight
    assert 0 <= lost <= SEGMENT_SECONDS + 0.25 + 0.3, (sent_seconds, recorded_seconds)

    verify = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "control.cli",
        "custody",
        "verify",
        str(directory),
        "--public-key",
        str(tmp_path / "keys" / "custody-ed25519.pub.pem"),
        "--kek",
        str(tmp_path / "keys" / "recording-kek.key"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "REMOTECASE_KEYS__DIR": str(tmp_path / "keys"),
            "REMOTECASE_STORAGE__DATA_DIR": str(tmp_path / "var"),
        },
    )
    out, err = await verify.communicate()
    assert verify.returncode == 0, out.decode() + err.decode()
    assert "0 failed" in out.decode()
