"""Reading a server's ``/metrics`` and summing histograms over a measured window.

Each step samples the server at both ends of its window: CPU seconds and resident memory
(``process_cpu_seconds_total``, ``process_resident_memory_bytes``), forwarded packets, and the
histograms of how late its event loop ran and how long its garbage collector paused it
(``control/loopwatch.py``): the latency the server itself adds, apart from the generators'.
"""

from __future__ import annotations

import math
from typing import Any

from control.loopwatch import BUCKETS

# the server's own histograms (control/loopwatch.py) that a step reads at both ends
HISTOGRAMS = {
    "remotecase_event_loop_lag_seconds_bucket": "lag",
    "python_gc_pause_seconds_bucket": "gc",
}


def parse(text: str) -> dict[str, float]:
    """A sample from Prometheus text: ``forwarded`` (packets), ``cpu`` (seconds), ``rss``
    (bytes), ``lag:<le>`` and ``gc:<le>`` (cumulative bucket counts), ``gc<generation>``
    (collections) and ``gc_pause`` (seconds); summed over workers, as counters are."""
    out: dict[str, float] = {"forwarded": 0.0}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        key = name.split("{")[0]
        if key == "remotecase_sfu_forwarded_packets_total":
            out["forwarded"] += float(value)
        elif key == "process_cpu_seconds_total":
            out["cpu"] = float(value)
        elif key == "process_resident_memory_bytes":
            out["rss"] = float(value)
        elif key in HISTOGRAMS and 'le="' in name:  # summed over workers, as counters are
            bound = name.split('le="')[1].split('"')[0]
            sample = f"{HISTOGRAMS[key]}:{bound}"
            out[sample] = out.get(sample, 0.0) + float(value)
        elif key == "python_gc_collections_total" and 'generation="' in name:
            generation = name.split('generation="')[1].split('"')[0]
            out[f"gc{generation}"] = out.get(f"gc{generation}", 0.0) + float(value)
        elif key == "python_gc_pause_seconds_sum":
            out["gc_pause"] = out.get("gc_pause", 0.0) + float(value)
    return out


def histogram_window(
    m0: dict[str, float], m1: dict[str, float], name: str
) -> dict[str, Any] | None:
    """Observations in the window, and the bucket bounds (ms) holding its p50, p99 and max."""
    bounds = sorted((float(k.split(":")[1]), k) for k in m1 if k.startswith(name + ":"))
    if not bounds:
        return None
    counts = [(bound, m1[k] - m0.get(k, 0.0)) for bound, k in bounds]
    total = counts[-1][1]
    if total <= 0:
        return {"count": 0}

    def at(q: float) -> float | None:
        for bound, cumulative in counts:
            if cumulative >= q * total - 1e-9:
                return None if math.isinf(bound) else round(1000 * bound, 1)
        return None

    return {"count": int(total), "p50_le_ms": at(0.5), "p99_le_ms": at(0.99), "max_le_ms": at(1.0)}


def bucket_summary(per_generator: list[list[int] | None]) -> dict[str, Any] | None:
    """The generators' loop-lag histograms added up, as :func:`histogram_window` reports."""
    rows = [r for r in per_generator if r]
    if not rows:
        return None
    counts = [sum(column) for column in zip(*rows, strict=True)]
    bounds = [*BUCKETS, math.inf]
    cumulative, m0, m1 = 0, dict[str, float](), dict[str, float]()
    for bound, n in zip(bounds, counts, strict=True):
        cumulative += n
        m1[f"lag:{bound}"] = float(cumulative)
    return histogram_window(m0, m1, "lag")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)], 2)
