"""Where a participant's memory goes: tracemalloc in a real server, diffed around joining
``--rooms`` one_to_one rooms (``python -m bench.load.memprobe``; measurement only).

A remotecase server (one worker, as ``bench load`` starts it) runs with this module's probe
loaded at start (a ``sitecustomize`` on its path): a thread that, once the server is idle and
healthy, starts tracemalloc (one frame per trace) and takes a snapshot, then every
``--every`` seconds another, each after a ``gc.collect()``, with the process's VmRSS. The
generators (``bench load``'s, real aiortc peers in their own processes) join the rooms and
publish VP8 and Opus for ``--seconds``; the snapshot with the most traced memory while they
are in (the window's end, histories full) is diffed against the idle one, by file and line,
and divided by the participants. So the figures are the server's own allocations, none of the
generators'.

Nothing of this runs in a normal server: the probe is loaded only through the ``PYTHONPATH``
this driver gives the server it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pickle
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent(
    '''
    """remotecase memprobe: loaded only by bench.load.memprobe's server."""
    import gc, os, pickle, sys, threading, time, tracemalloc
    _DIR = os.environ["REMOTECASE_MEMPROBE_DIR"]
    _EVERY = float(os.environ.get("REMOTECASE_MEMPROBE_EVERY", "2"))
    _TRACE = os.environ.get("REMOTECASE_MEMPROBE_TRACE", "1") == "1"

    def _heap():
        """glibc's heap in use (mallinfo2 uordblks): C libraries and Python's large blocks."""
        try:
            import ctypes

            class _Info(ctypes.Structure):
                _fields_ = [(n, ctypes.c_size_t) for n in (
                    "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                    "uordblks", "fordblks", "keepcost")]

            libc = ctypes.CDLL("libc.so.6")
            libc.mallinfo2.restype = _Info
            info = libc.mallinfo2()
            return info.uordblks + info.hblkhd
        except (OSError, AttributeError):
            return 0

    def _rss():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run():
        start = os.path.join(_DIR, "start")
        while not os.path.exists(start):
            time.sleep(0.2)
        if "control.app" not in sys.modules:
            return  # a generator, not the server
        if _TRACE:
            tracemalloc.start(1)
        n = 0
        while not os.path.exists(os.path.join(_DIR, "stop")):
            gc.collect()
            snap = tracemalloc.take_snapshot() if _TRACE else None
            traced = tracemalloc.get_traced_memory()[0] if _TRACE else 0
            path = os.path.join(_DIR, "snap-%03d.pickle" % n)
            with open(path + ".tmp", "wb") as f:
                pickle.dump({"t": time.time(), "rss": _rss(), "heap": _heap(),
                             "traced": traced, "snapshot": snap}, f)
            os.rename(path + ".tmp", path)
            n += 1
            time.sleep(_EVERY)

    threading.Thread(target=_run, name="memprobe", daemon=True).start()
    '''
)


def _summary(
    idle: dict[str, Any], peak: dict[str, Any], participants: int, top: int
) -> dict[str, Any]:
    whole = {
        "participants": participants,
        "rss_mb": [round(idle["rss"] / 1e6, 1), round(peak["rss"] / 1e6, 1)],
        "rss_mb_per_participant": round((peak["rss"] - idle["rss"]) / participants / 1e6, 3),
        "glibc_heap_mb_per_participant": round(
            (peak["heap"] - idle["heap"]) / participants / 1e6, 3
        ),
    }
    if peak["snapshot"] is None:
        return whole
    stats = peak["snapshot"].compare_to(idle["snapshot"], "lineno")
    by_file: dict[str, int] = {}
    for stat in stats:
        name = stat.traceback[0].filename
        for marker in ("site-packages/", "/mediaserver/", "/control/", "/recorder/"):
            if marker in name:
                name = (
                    name.split(marker, 1)[1]
                    if marker == "site-packages/"
                    else (marker.strip("/") + "/" + name.split(marker, 1)[1])
                )
                break
        by_file[name] = by_file.get(name, 0) + stat.size_diff
    lines = [
        {
            "where": f"{s.traceback[0].filename.rsplit('site-packages/', 1)[-1]}:"
            f"{s.traceback[0].lineno}",
            "kib_per_participant": round(s.size_diff / participants / 1024, 1),
            "blocks_per_participant": round(s.count_diff / participants, 1),
        }
        for s in stats[:top]
    ]
    files = sorted(by_file.items(), key=lambda kv: -kv[1])[:top]
    return {
        **whole,
        "traced_mb_per_participant": round(
            (peak["traced"] - idle["traced"]) / participants / 1e6, 3
        ),
        "by_file_kib_per_participant": {
            name: round(size / participants / 1024, 1) for name, size in files
        },
        "by_line": lines,
    }


async def probe(
    rooms: int, seconds: float, every: float, top: int, trace: bool = True, root: Path = _ROOT
) -> dict[str, Any]:
    from .cli import _options, add_arguments
    from .search import run_load

    work = Path(tempfile.mkdtemp(prefix="remotecase-memprobe-"))
    site = work / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(PROBE)
    snaps = work / "snaps"
    snaps.mkdir()
    names = (
        "PYTHONPATH",
        "REMOTECASE_MEMPROBE_DIR",
        "REMOTECASE_MEMPROBE_EVERY",
        "REMOTECASE_MEMPROBE_TRACE",
    )
    old = {k: os.environ.get(k) for k in names}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), str(root)])
    os.environ["REMOTECASE_MEMPROBE_DIR"] = str(snaps)
    os.environ["REMOTECASE_MEMPROBE_EVERY"] = str(every)
    os.environ["REMOTECASE_MEMPROBE_TRACE"] = "1" if trace else "0"
    try:
        from .server import serve_remotecase

        async with serve_remotecase(None) as target:
            import aiohttp

            async with aiohttp.ClientSession() as http:
                await target.wait_up(http)
            await asyncio.sleep(2)
            (snaps / "start").touch()
            # the server's probe writes it: another process, no event to wait on
            while not (snaps / "snap-000.pickle").exists():  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            parser = argparse.ArgumentParser()
            add_arguments(parser)
            options = _options(parser.parse_args([]))
            assert options is not None
            options.update(scenario="one_to_one", rooms=rooms, seconds=seconds, pin=False)
            options.pop("server_log")
            await run_load(url=target.base, progress=False, **options)
            (snaps / "stop").touch()
        loaded = []
        for path in sorted(snaps.glob("snap-*.pickle")):
            with path.open("rb") as f:
                loaded.append(pickle.load(f))
        # the peak: the most traced memory (or, untraced, the largest resident size)
        idle, peak = loaded[0], max(loaded, key=lambda s: s["traced"] or s["rss"])
        return _summary(idle, peak, rooms * 2, top)
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with contextlib.suppress(OSError):
            shutil.rmtree(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between snapshots")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--no-trace", action="store_true", help="resident size and glibc heap only (no tracemalloc)"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=_ROOT,
        help="the server's source tree (an older checkout, for a before and after)",
    )
    args = parser.parse_args()
    result = asyncio.run(
        probe(
            args.rooms, args.seconds, args.every, args.top, trace=not args.no_trace, root=args.root
        )
    )
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
