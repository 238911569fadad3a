"""The event loop against a busy worker thread, at several interpreter switch intervals
(server.gil_switch_interval): how long one socket callback that reads and forwards datagrams takes
while another thread runs pure Python (as a PDF's signing or validation does in pyhanko).

    python -m bench.switch [--seconds 6] [--hogs 2] [--intervals 0.005,0.001,0.0005]
    python -m bench.switch --documents [--seconds 6] [--hogs 2] [--intervals 0.005,0.001]

``--documents``: the busy work is a real PDF signed over and over (the built-in CA's officer key,
pyhanko), in a thread of this process as before session 12, or in a document worker process
(documents/pool.py) while a thread here only waits for it; the two alternate.

``--hogs`` other processes spin meanwhile (a loaded machine: the thread that holds the lock is then
also preempted, which is when the wait for it grows). Every interval is run twice, interleaved, so
that a change of the machine's load shows as a spread, not as a difference."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from typing import Any

FANOUT = 4
BATCH = 64


def _busy_python(stop: threading.Event) -> None:
    while not stop.is_set():
        parts = [bytes([i % 256]) for i in range(2000)]  # allocation-heavy, like asn1crypto
        b"".join(parts)


async def _forwarding(seconds: float, rate: float) -> list[float]:
    """Callback durations (seconds) of a reader that forwards each datagram to FANOUT sockets."""
    loop = asyncio.get_running_loop()

    def udp() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        return s

    rx, tx, src = udp(), udp(), udp()
    sinks = [udp() for _ in range(FANOUT)]
    addresses = [s.getsockname() for s in sinks]
    took: list[float] = []

    def ready() -> None:
        start = time.perf_counter()
        for _ in range(BATCH):
            try:
                data = rx.recv(2048)
            except BlockingIOError:
                break
            for address in addresses:
                tx.sendto(data, address)
        took.append(time.perf_counter() - start)
        for s in sinks:
            try:
                while True:
                    s.recv(2048)
            except BlockingIOError:
                pass

    loop.add_reader(rx.fileno(), ready)
    try:
        target = rx.getsockname()
        for _ in range(int(seconds * rate)):
            src.sendto(b"x" * 1000, target)
            await asyncio.sleep(1 / rate)
    finally:
        loop.remove_reader(rx.fileno())
        for s in (rx, tx, src, *sinks):
            s.close()
    return took


def measure(interval: float, seconds: float, rate: float = 500.0) -> dict[str, float]:
    """One run in this process at ``interval``, a busy Python thread running meanwhile."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    stop = threading.Event()
    worker = threading.Thread(target=_busy_python, args=(stop,), name="busy")
    worker.start()
    try:
        took = sorted(asyncio.run(_forwarding(seconds, rate)))
    finally:
        stop.set()
        worker.join()
        sys.setswitchinterval(previous)
    return {
        "interval_ms": interval * 1000,
        "callbacks": len(took),
        "p50_ms": round(took[len(took) // 2] * 1000, 2),
        "p99_ms": round(took[int(0.99 * (len(took) - 1))] * 1000, 2),
        "max_ms": round(took[-1] * 1000, 2),
    }


def _signing(where: str, stop: threading.Event, done: list[int]) -> None:
    """Sign one rendered determination again and again, here or through a worker pool."""
    import tempfile
    from pathlib import Path

    from documents import load_templates
    from documents.appearance import name_card
    from documents.pool import DocumentPool, SetupSpec, render_job, sign_builtin
    from documents.samples import sample

    kind = "determination_ordinary"
    with tempfile.TemporaryDirectory() as keys:
        spec = SetupSpec(Path(keys))
        pdf = render_job(load_templates()[kind], sample(kind), "某公交认〔2026〕第0001号").pdf
        args = (
            spec,
            pdf,
            "officer-o1",
            "officer",
            {"officer_id": "o1", "name": "王警官", "department": "某大队"},
        )
        image = name_card(["王警官"])
        pool = DocumentPool(1 if where == "pool" else 0)
        pool.call(sign_builtin, *args, image)  # warm: keys made, the worker started
        done.append(0)  # ready
        while not stop.is_set():
            pool.call(sign_builtin, *args, image)
            done[0] += 1
        asyncio.run(pool.close())


def measure_documents(where: str, interval: float, seconds: float) -> dict[str, Any]:
    """Forwarding callbacks while a PDF is signed in a thread here or in a worker process."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    stop = threading.Event()
    done: list[int] = []
    worker = threading.Thread(target=_signing, args=(where, stop, done), name="signing")
    worker.start()
    try:
        while not done:
            if not worker.is_alive():
                raise RuntimeError("the signing thread failed (its error is above)")
            time.sleep(0.05)
        cpu, wall = time.process_time(), time.monotonic()
        took = sorted(asyncio.run(_forwarding(seconds, 500.0)))
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        signed = done[0]
    finally:
        stop.set()
        worker.join()
        sys.setswitchinterval(previous)
    return {
        "where": where,
        "interval_ms": interval * 1000,
        "signed": signed,
        "wall_s": round(wall, 2),
        "cpu_here_s": round(cpu, 2),
        "callbacks": len(took),
        "p50_ms": round(took[len(took) // 2] * 1000, 2),
        "p99_ms": round(took[int(0.99 * (len(took) - 1))] * 1000, 2),
        "max_ms": round(took[-1] * 1000, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.switch", description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--hogs", type=int, default=2, help="spinning processes meanwhile")
    parser.add_argument("--intervals", default="0.005,0.001,0.0005")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--documents", action="store_true", help="sign PDFs: thread vs worker")
    args = parser.parse_args(argv)
    intervals = [float(x) for x in args.intervals.split(",")]
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hogs)]
    results: list[dict[str, Any]] = []
    try:
        for _ in range(2):
            for interval in intervals:
                if args.documents:
                    for where in ("thread", "pool"):
                        results.append(measure_documents(where, interval, args.seconds))
                else:
                    results.append(measure(interval, args.seconds))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    if args.json:
        print(json.dumps(results))
        return
    if args.documents:
        print(f"forwarding callbacks ({BATCH} datagrams at most, each to {FANOUT} sockets) while")
        print(f"a PDF is signed over and over, {args.hogs} spinning processes meanwhile:")
        print("where   interval ms  signed  wall s  cpu here s  callbacks  p50 ms  p99 ms  max ms")
        for r in results:
            print(
                f"{r['where']:6}  {r['interval_ms']:11.2f}  {r['signed']:6d}  {r['wall_s']:6.2f}  "
                f"{r['cpu_here_s']:10.2f}  {r['callbacks']:9d}  {r['p50_ms']:6.2f}  "
                f"{r['p99_ms']:6.2f}  {r['max_ms']:6.2f}"
            )
        return
    print(f"forwarding callbacks ({BATCH} datagrams at most, each to {FANOUT} sockets) with a busy")
    print(f"Python thread, {args.hogs} spinning processes meanwhile:")
    print("interval ms  callbacks  p50 ms  p99 ms  max ms")
    for r in results:
        print(
            f"{r['interval_ms']:11.2f}  {r['callbacks']:9d}  {r['p50_ms']:6.2f}  "
            f"{r['p99_ms']:6.2f}  {r['max_ms']:6.2f}"
        )


if __name__ == "__main__":
    main()
