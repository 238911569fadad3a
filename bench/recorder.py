"""``remotecase bench recorder``: what recording costs.

1. Segment pipeline throughput: SHA-256, AES-256-GCM and an exclusive-create write with fsync,
   per segment, on this disk (what the writer thread does for every segment).
2. Recorder CPU per recorded stream: the forwarding bench (one publisher of VP8 + Opus, one
   subscriber, separate processes) run twice, without and with the room recorded; the SFU
   process's extra CPU divided by the two recorded streams.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .forwarding import measure_forwarding


def segment_throughput(size: int, count: int, directory: Path, fsync: bool) -> float:
    """MB/s of hash + encrypt + write for ``count`` segments of ``size`` bytes."""
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    data = secrets.token_bytes(size)
    start = time.perf_counter()
    for i in range(count):
        hashlib.sha256(data).digest()
        nonce = secrets.token_bytes(12)
        stored = nonce + aead.encrypt(nonce, data, f"bench/{i}".encode())
        hashlib.sha256(stored).digest()
        fd = os.open(
            directory / f"{size}-{i}-{fsync}.seg", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
        )
        try:
            os.write(fd, stored)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
    elapsed = time.perf_counter() - start
    return size * count / elapsed / 1e6


async def run_recorder_bench(*, seconds: float, as_json: bool) -> int:
    directory = Path(tempfile.mkdtemp(prefix="remotecase-segbench-"))
    report: dict[str, Any] = {"segment_mb_per_s": {}}
    try:
        for size, label in ((256 * 1024, "256KiB"), (1 << 20, "1MiB"), (4 << 20, "4MiB")):
            count = max(8, (64 << 20) // size)
            report["segment_mb_per_s"][label] = {
                "fsync": round(segment_throughput(size, count, directory, True), 1),
                "no_fsync": round(segment_throughput(size, count, directory, False), 1),
            }
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    plain = await measure_forwarding(subscribers=1, seconds=seconds)
    recorded = await measure_forwarding(subscribers=1, seconds=seconds, record=True)
    assert plain is not None and recorded is not None
    extra = recorded["sfu_cpu_percent"] - plain["sfu_cpu_percent"]
    report.update(
        {
            "sfu_cpu_percent_without_recording": plain["sfu_cpu_percent"],
            "sfu_cpu_percent_with_recording": recorded["sfu_cpu_percent"],
            "recorded_streams": 2,
            "recorder_cpu_percent_per_stream": round(extra / 2, 2),
        }
    )
    print("segment pipeline (SHA-256 + AES-256-GCM + write), MB/s:")
    for label, figures in report["segment_mb_per_s"].items():
        print(
            f"  {label:>7} segments: {figures['fsync']:>8} with fsync, "
            f"{figures['no_fsync']:>8} without"
        )
    print(
        f"SFU CPU, 1 publisher (VP8 1 Mbps + Opus), 1 subscriber: "
        f"{plain['sfu_cpu_percent']}% without recording, "
        f"{recorded['sfu_cpu_percent']}% recorded"
    )
    print(
        f"recorder CPU per recorded stream: {report['recorder_cpu_percent_per_stream']}% "
        "of one core"
    )
    if as_json:
        print(json.dumps(report))
    return 0
