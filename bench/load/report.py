"""What a run shows: a table per server, the summary lines, and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def print_report(report: dict[str, Any]) -> None:
    """One server's steps as a table, then its step nearest 70% CPU and its knee."""
    print(
        f"{'server':>10} {'rooms':>5} {'streams':>7} {'recv pkt/s':>10} {'CPU %':>6} "
        f"{'us/pkt':>7} {'RSS MB':>7} {'loss %':>7} {'p50':>6} {'p99':>6} {'join p99':>9} "
        f"{'ttff p99':>9} {'gen CPU':>8}"
    )
    for s in report["steps"]:
        print(
            f"{s['server']:>10} {s['rooms']:>5} {s['streams']:>7} {s['received_pps']:>10} "
            f"{s['server_cpu_percent']:>6} {s['server_cpu_us_per_packet']!s:>7} "
            f"{s['server_rss_mb']:>7} {100 * (s['loss_ratio'] or 0):>7.2f} "
            f"{s['latency_ms']['p50']!s:>6} {s['latency_ms']['p99']!s:>6} "
            f"{s['join_ms']['p99']!s:>9} {s['first_frame_ms']['p99']!s:>9} "
            f"{100 * s['generator_cpu_max']:>7.0f}%"
        )
        if s["generator_bound"]:
            print(
                "           a generator process used more than 85% of a core: the numbers "
                "may say more about the generator than the server (more --generators, or "
                "generators on another machine)"
            )
        for failure in s["join_failures"][:5]:
            print(f"           join failed: {failure}")
    if report.get("failed_step"):
        failed = report["failed_step"]
        print(
            f"{report['server']}: the step with {failed['rooms']} rooms did not run: "
            f"{failed['error']}"
        )
    near = report.get("near_70_percent_cpu")
    if near and near.get("server_loop_lag"):
        print(
            f"{report['server']} nearest 70% CPU: {near['rooms']} rooms at "
            f"{near['server_cpu_percent']}% CPU, end-to-end p99 {near['latency_ms']['p99']} ms,"
            f" event-loop lag p99 <= {near['server_loop_lag'].get('p99_le_ms')} ms"
        )
    if "knee" in report:
        knee = report["knee"]
        if knee is None:
            print(f"{report['server']} knee: even the first step exceeded the limits")
        else:
            print(
                f"{report['server']} knee: {knee['rooms']} rooms, {knee['streams']} streams, "
                f"{knee['received_pps']} packets/s delivered at "
                f"{knee['server_cpu_percent']}% server CPU"
            )


def print_scaling(summary: dict[str, Any], capacity: bool) -> None:
    """One worker against two (:func:`bench.load.search.scaling_summary`)."""
    scaling = summary["scaling"]
    one, two = scaling["one_worker"], scaling["two_workers"]
    print(
        f"at {scaling['rooms']} room(s): one worker p99 {one['latency_ms']['p99']} ms at "
        f"{one['server_cpu_percent']}% CPU, two workers p99 "
        f"{two['latency_ms']['p99']} ms at {two['server_cpu_percent']}% CPU"
    )
    if capacity:
        knees = scaling["knee_streams"]
        print(f"knees: one worker {knees[0]} streams, two workers {knees[1]} streams")


def print_compare(summary: dict[str, Any], capacity: bool) -> None:
    """remotecase against Janus (:func:`bench.load.search.compare_summary`)."""
    print(
        f"at {summary['rooms']} {summary['scenario']} room(s), {summary['streams']} streams: "
        f"remotecase {summary['remotecase_cpu_us_per_packet']} us/packet, Janus "
        f"{summary['janus_cpu_us_per_packet']} us/packet, efficiency ratio "
        f"{summary['efficiency_ratio']} (Janus CPU per packet / ours)"
    )
    if capacity:
        print(
            f"knees: remotecase {summary['remotecase_knee_streams']} streams, Janus "
            f"{summary['janus_knee_streams']} streams"
        )


def plot(reports: list[dict[str, Any]], path: Path) -> None:
    """CPU per stream, latency percentiles and loss against load (streams), one PNG; with two
    reports (remotecase and Janus) both servers on the same axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for report in reports:
        steps, name = report["steps"], report["server"]
        streams = [s["streams"] for s in steps]
        axes[0].plot(
            streams,
            [s["server_cpu_percent"] / max(1, s["streams"]) for s in steps],
            "o-",
            label=name,
        )
        for q, style in (("p50", "o-"), ("p99", "s--")):
            axes[1].plot(streams, [s["latency_ms"][q] for s in steps], style, label=f"{name} {q}")
        axes[2].plot(streams, [100 * (s["loss_ratio"] or 0) for s in steps], "o-", label=name)
    limits = reports[0]["limits"]
    axes[0].set(
        title="server CPU per stream", xlabel="forwarded streams", ylabel="% of a core per stream"
    )
    axes[1].axhline(limits["max_p99_ms"], color="red", linestyle=":", label="p99 limit")
    axes[1].set(
        title="end-to-end latency", xlabel="forwarded streams", ylabel="ms (log)", yscale="log"
    )
    axes[2].axhline(100 * limits["max_loss"], color="red", linestyle=":", label="limit")
    axes[2].set(title="loss", xlabel="forwarded streams", ylabel="%")
    for axis in axes:
        axis.legend(fontsize=8)
    first = reports[0]
    figure.suptitle(
        f"bench load: {first['scenario']}, {first['bitrate'] // 1000} kbps video, "
        f"{first['fps']} fps"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
