"""Steps up to the knee, for one server, for remotecase against Janus, and for one worker
against two.

``--capacity`` raises the number of rooms step by step (by half each time) until loss passes
``--max-loss`` (1%) or p99 latency passes ``--max-p99-ms`` (50 ms), and reports the knee: the
last step within both.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import aiohttp

from .plan import plan_rooms
from .server import Target, harness_on, pinned, serve_janus, serve_remotecase, split_cores
from .step import run_step

KNEE_FIELDS = (
    "rooms",
    "participants",
    "streams",
    "forwarded_pps",
    "received_pps",
    "server_cpu_percent",
    "latency_ms",
    "loss_ratio",
)
NEAR_70_FIELDS = (
    "rooms",
    "streams",
    "server_cpu_percent",
    "latency_ms",
    "server_loop_lag",
    "loss_ratio",
)
SCALING_FIELDS = ("server_cpu_percent", "received_pps", "latency_ms", "loss_ratio")


def load_levels(start: int, limit: int) -> Iterator[int]:
    """Rooms per step: from ``start``, half as many again each time, up to ``limit``."""
    rooms = start
    while rooms <= limit:
        yield rooms
        rooms = max(rooms + 1, int(rooms * 1.5))


def within_limits(step: dict[str, Any], max_loss: float, max_p99_ms: float) -> bool:
    p99 = step["latency_ms"]["p99"]
    return (
        step["loss_ratio"] is not None
        and step["loss_ratio"] <= max_loss
        and p99 is not None
        and p99 <= max_p99_ms
        and not step["join_failures"]
    )


async def search(
    http: aiohttp.ClientSession,
    target: Target,
    *,
    scenario: str,
    rooms: int,
    bitrate: int,
    fps: int,
    seconds: float,
    warmup: float,
    generators: int,
    capacity: bool,
    max_rooms: int,
    max_loss: float,
    max_p99_ms: float,
    progress: bool,
    receivers: str = "light",
    generator_cpus: list[int] | None = None,
) -> dict[str, Any]:
    """One step, or steps up to the knee: the report for one server."""
    await target.wait_up(http)
    steps: list[dict[str, Any]] = []
    failed: dict[str, Any] | None = None
    knee: dict[str, Any] | None = None
    for n, level in enumerate(list(load_levels(rooms, max_rooms)) if capacity else [rooms]):
        if progress:
            print(f"{target.kind} step {n + 1}: {level} {scenario} room(s)", file=sys.stderr)
        try:
            step = await run_step(
                http,
                target,
                plan_rooms(scenario, level, f"load{n}"),
                bitrate=bitrate,
                fps=fps,
                seconds=seconds,
                warmup=warmup,
                generators=generators,
                progress=progress,
                receivers=receivers,
                cpus=generator_cpus,
            )
        except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
            # a step that could not run (a generator died, joins never finished) ends the
            # search as a finding; the steps before it stand
            failed = {"rooms": level, "error": f"{type(exc).__name__}: {exc}"}
            if progress:
                print(f"{target.kind} step {n + 1} failed: {failed['error']}", file=sys.stderr)
            if not steps:
                raise
            break
        steps.append(step)
        step["within_limits"] = within_limits(step, max_loss, max_p99_ms)
        if step["within_limits"]:
            knee = step
        elif capacity:
            break
    report: dict[str, Any] = {
        "server": target.kind,
        "scenario": scenario,
        "bitrate": bitrate,
        "fps": fps,
        "receivers": receivers,
        "steps": steps,
        "failed_step": failed,
        "limits": {"max_loss": max_loss, "max_p99_ms": max_p99_ms},
    }
    if capacity:
        report["knee"] = None if knee is None else {k: knee[k] for k in KNEE_FIELDS}
    # issue 6's latency target is stated at 70% CPU: the step that ran nearest to it
    near = min(steps, key=lambda s: abs(s["server_cpu_percent"] - 70.0))
    report["near_70_percent_cpu"] = {k: near.get(k) for k in NEAR_70_FIELDS}
    return report


async def run_load(
    *,
    url: str | None,
    server_workers: int = 1,
    progress: bool = True,
    pin: bool = True,
    server_log: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The search against the server at ``url``, or one started here with ``server_workers``."""
    server_cpus, generator_cpus = split_cores(pin and not url, server_workers)
    with harness_on(generator_cpus):
        async with (
            serve_remotecase(url, server_workers, server_cpus, server_log) as target,
            aiohttp.ClientSession() as http,
        ):
            report = await search(
                http, target, progress=progress, generator_cpus=generator_cpus, **options
            )
    report["server_workers"] = None if url else server_workers
    report["pinned"] = pinned(server_cpus, generator_cpus)
    return report


async def run_compare(
    *, progress: bool = True, pin: bool = True, server_log: str | None = None, **options: Any
) -> dict[str, Any]:
    """The same scenario against remotecase and against Janus, one after the other."""
    server_cpus, generator_cpus = split_cores(pin)
    with harness_on(generator_cpus):
        async with aiohttp.ClientSession() as http:
            async with serve_remotecase(None, 1, server_cpus, server_log) as target:
                ours = await search(
                    http, target, progress=progress, generator_cpus=generator_cpus, **options
                )
            async with serve_janus(server_cpus) as target:
                theirs = await search(
                    http, target, progress=progress, generator_cpus=generator_cpus, **options
                )
    ours["pinned"] = theirs["pinned"] = pinned(server_cpus, generator_cpus)
    return {"remotecase": ours, "janus": theirs}


def common_step(
    ours: dict[str, Any], theirs: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The heaviest load both servers ran: fixed costs (timers, RTCP, ICE consent) weigh least
    there, so CPU per packet compares what forwarding costs."""
    by_rooms = {s["rooms"]: s for s in theirs["steps"]}
    common = [s for s in ours["steps"] if s["rooms"] in by_rooms]
    step = common[-1]
    return step, by_rooms[step["rooms"]]


def label_by_workers(report: dict[str, Any]) -> None:
    """Name the server of a scaling run's report, and of its steps, by its workers."""
    report["server"] = f"{report['server_workers']} worker(s)"
    for step in report["steps"]:
        step["server"] = report["server"]


def scaling_summary(one_worker: dict[str, Any], two_workers: dict[str, Any]) -> dict[str, Any]:
    """One worker against two at the heaviest load both ran, and their knees."""
    one, two = common_step(one_worker, two_workers)
    knees = [(r.get("knee") or {}).get("streams") for r in (one_worker, two_workers)]
    return {
        "scaling": {
            "rooms": one["rooms"],
            "streams": one["streams"],
            "one_worker": {k: one[k] for k in SCALING_FIELDS},
            "two_workers": {k: two[k] for k in SCALING_FIELDS},
            "knee_streams": knees,
        },
        "reports": [one_worker, two_workers],
    }


def compare_summary(scenario: str, ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """remotecase against Janus: CPU per packet at the heaviest load both ran, its ratio, and
    the knees."""
    a, b = common_step(ours, theirs)
    ours_us, theirs_us = a["server_cpu_us_per_packet"], b["server_cpu_us_per_packet"]
    return {
        "scenario": scenario,
        "rooms": a["rooms"],
        "streams": a["streams"],
        "remotecase_cpu_us_per_packet": ours_us,
        "janus_cpu_us_per_packet": theirs_us,
        # Janus CPU per packet over ours: 1.0 means as efficient as Janus
        "efficiency_ratio": round(theirs_us / ours_us, 3) if ours_us and theirs_us else None,
        "remotecase_latency_ms": a["latency_ms"],
        "janus_latency_ms": b["latency_ms"],
        "remotecase_loss": a["loss_ratio"],
        "janus_loss": b["loss_ratio"],
        "ratio_by_rooms": {
            s["rooms"]: round(t["server_cpu_us_per_packet"] / s["server_cpu_us_per_packet"], 3)
            for s in ours["steps"]
            for t in theirs["steps"]
            if s["rooms"] == t["rooms"]
            and s["server_cpu_us_per_packet"]
            and t["server_cpu_us_per_packet"]
        },
        "remotecase_knee_streams": (ours.get("knee") or {}).get("streams"),
        "janus_knee_streams": (theirs.get("knee") or {}).get("streams"),
        "remotecase": ours,
        "janus": theirs,
    }
