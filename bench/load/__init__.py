"""``remotecase bench load``: drive a server as real clients would, and find where it breaks.

N rooms of a scenario's shape, every participant a real aiortc peer connection, spread over
generator processes; a step measures end-to-end latency, jitter, loss, join time and time to
first frame at the subscribers, and the server's CPU, memory, event-loop lag and collector
pauses from its ``/metrics``. ``--capacity`` raises the load to the knee; ``compare-janus``
runs the same against Janus, ``--scaling`` against one worker and then two.

The parts, in the order a run goes through them:

* :mod:`~bench.load.plan`: the scenarios, as rooms of publishers and viewers;
* :mod:`~bench.load.server`: the server under load (started here or at ``--url``), and pinning
  the server and the generators to their own cores;
* :mod:`~bench.load.step`: one load level: generator processes, the measured window, the
  step's figures;
* :mod:`~bench.load.protocol`: the lines the harness and its generators exchange;
* :mod:`~bench.load.generator`: the generator process (``python -m bench.load generator``);
* :mod:`~bench.load.rooms`: how its participants join a room, on remotecase and on Janus;
* :mod:`~bench.load.media`: pre-encoded VP8 and Opus, and the latency trailer on each frame;
* :mod:`~bench.load.receivers`: what a subscriber measures, and the light receive path;
* :mod:`~bench.load.metrics`: the server's ``/metrics``, and histograms over a window;
* :mod:`~bench.load.search`: steps up to the knee, remotecase against Janus, one worker
  against two;
* :mod:`~bench.load.report`: tables, summary lines and the plot;
* :mod:`~bench.load.cli`: the command line (wired in by control/cli.py).
"""

from __future__ import annotations

from .cli import add_arguments, main, main_compare
from .media import TRAILER, TRAILER_MAGIC
from .plan import SCENARIOS, RoomPlan, plan_rooms
from .receivers import LatencySink, Member, Receiving, light_receive, rtp_payload
from .search import run_compare, run_load, search
from .step import run_step

__all__ = [
    "SCENARIOS",
    "TRAILER",
    "TRAILER_MAGIC",
    "LatencySink",
    "Member",
    "Receiving",
    "RoomPlan",
    "add_arguments",
    "light_receive",
    "main",
    "main_compare",
    "plan_rooms",
    "rtp_payload",
    "run_compare",
    "run_load",
    "run_step",
    "search",
]
