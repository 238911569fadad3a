"""``remotecase bench load`` and ``remotecase bench compare-janus``: arguments, and the runs
they start (control/cli.py wires them in)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from .plan import SCENARIOS
from .report import plot, print_compare, print_report, print_scaling
from .search import compare_summary, label_by_workers, run_compare, run_load, scaling_summary


def add_arguments(parser: argparse.ArgumentParser, *, compare: bool = False) -> None:
    if not compare:
        parser.add_argument(
            "--url", help="a running server (with auth.dev_join); default: start one"
        )
    parser.add_argument("--scenario", choices=SCENARIOS, default="one_to_one")
    parser.add_argument(
        "--rooms", type=int, default=2, help="rooms (the first step with --capacity)"
    )
    parser.add_argument("--bitrate", type=int, default=500_000, help="video bits per second")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per step")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--generators", type=int, default=2, help="generator processes")
    parser.add_argument(
        "--server-log",
        help="keep the log (warnings) of the remotecase server the harness starts in this file",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not put the server it starts on one core and the generators "
        "on the others (pinning needs two cores and one server worker)",
    )
    parser.add_argument(
        "--receivers",
        choices=("light", "full"),
        default="light",
        help="light: subscribers count packets as they arrive and decrypt only "
        "what they read (no NACKs, no receiver reports); full: aiortc's "
        "whole receive path, ten times the CPU per packet",
    )
    if compare:
        parser.add_argument(
            "--no-capacity",
            dest="capacity",
            action="store_false",
            help="one step each instead of a search for each knee",
        )
    else:
        parser.add_argument("--capacity", action="store_true", help="raise the load to the knee")
    parser.add_argument("--max-rooms", type=int, default=200)
    parser.add_argument("--max-loss", type=float, default=0.01)
    parser.add_argument("--max-p99-ms", type=float, default=50.0)
    parser.add_argument("--plot", help="PNG: CPU per stream, latency and loss against load")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    if not compare:
        parser.add_argument(
            "--server-workers",
            type=int,
            default=1,
            help="worker processes of the server the harness starts",
        )
        parser.add_argument(
            "--scaling", action="store_true", help="the same load against one worker, then two"
        )


def _options(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.rooms < 1 or args.seconds <= 0 or args.generators < 1 or not 1 <= args.fps <= 60:
        print(
            "bench load: --rooms >= 1, --seconds > 0, --generators >= 1, --fps 1-60",
            file=sys.stderr,
        )
        return None
    return {
        "scenario": args.scenario,
        "rooms": args.rooms,
        "bitrate": args.bitrate,
        "fps": args.fps,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "generators": args.generators,
        "capacity": args.capacity,
        "max_rooms": args.max_rooms,
        "max_loss": args.max_loss,
        "max_p99_ms": args.max_p99_ms,
        "receivers": args.receivers,
        "pin": args.pin,
        "server_log": args.server_log,
    }


def main(args: argparse.Namespace) -> int:
    options = _options(args)
    if options is None:
        return 2
    if args.scaling:
        if args.url:
            print("bench load: --scaling starts its own servers; drop --url", file=sys.stderr)
            return 2
        return _scaling(args, options)
    report = asyncio.run(run_load(url=args.url, server_workers=args.server_workers, **options))
    print_report(report)
    _plot_and_json(args, [report], report)
    return 0


def _scaling(args: argparse.Namespace, options: dict[str, Any]) -> int:
    # two workers need both cores: neither run is pinned, so that they compare
    options["pin"] = False
    reports = [asyncio.run(run_load(url=None, server_workers=n, **options)) for n in (1, 2)]
    for report in reports:
        label_by_workers(report)
        print_report(report)
    summary = scaling_summary(*reports)
    print_scaling(summary, options["capacity"])
    _plot_and_json(args, reports, summary)
    return 0


def main_compare(args: argparse.Namespace) -> int:
    options = _options(args)
    if options is None:
        return 2
    from ..janus import janus_available

    problem = janus_available()
    if problem:
        print(f"bench compare-janus: {problem}", file=sys.stderr)
        return 2
    both = asyncio.run(run_compare(**options))
    ours, theirs = both["remotecase"], both["janus"]
    print_report(ours)
    print_report(theirs)
    summary = compare_summary(options["scenario"], ours, theirs)
    print_compare(summary, options["capacity"])
    _plot_and_json(args, [ours, theirs], summary)
    return 0


def _plot_and_json(
    args: argparse.Namespace, reports: list[dict[str, Any]], last: dict[str, Any]
) -> None:
    if args.plot:
        plot(reports, Path(args.plot))
        print(f"plot: {args.plot}")
    if args.json:
        print(json.dumps(last))
