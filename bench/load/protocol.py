"""The line protocol between the harness and its generator processes.

A generator (``python -m bench.load generator``, :mod:`bench.load.generator`) reads one
:class:`Job` as the first line of its stdin: the server, the rooms it is to fill (a token and
whether to publish, per participant), the media and the cores. Then:

* it joins, and prints ``READY`` (:class:`Ready`);
* every second it prints ``STATS`` (:class:`Stats`): packets received so far, its CPU;
* ``MEASURE`` on stdin starts the measured window (the warm-up's latencies are dropped);
* ``STOP`` (or the end of stdin) ends it: it prints ``RESULT`` (:class:`Result`), leaves
  the rooms and exits.

Each report is one line, its tag, a space and a JSON object of the dataclass's fields; the
harness skips lines of other kinds (:func:`decode` returns None for them).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, TypeVar

MEASURE = "MEASURE"
STOP = "STOP"


@dataclass(frozen=True)
class Participant:
    token: str  # a development token of the server ("" for Janus, which takes none)
    publish: bool


@dataclass(frozen=True)
class RoomJob:
    room: str
    participants: list[Participant]


@dataclass(frozen=True)
class Job:
    """What one generator is to do: the first line of its stdin."""

    base: str  # the server's base URL
    rooms: list[RoomJob]
    bitrate: int  # video bits per second
    fps: int
    server: str = "remotecase"  # "remotecase" | "janus"
    address: str = "127.0.0.1"  # the address clients and server meet on
    receivers: str = "light"  # "light" | "full" (bench.load.receivers)
    cpus: list[int] | None = None  # the cores it runs on, or None for any


def encode_job(job: Job) -> bytes:
    return json.dumps(asdict(job)).encode() + b"\n"


def decode_job(line: str | bytes) -> Job:
    data = _object(line, "job")
    try:
        rooms = [
            RoomJob(
                r["room"], [Participant(p["token"], bool(p["publish"])) for p in r["participants"]]
            )
            for r in data["rooms"]
        ]
        return Job(
            base=data["base"],
            rooms=rooms,
            bitrate=data["bitrate"],
            fps=data["fps"],
            server=data.get("server") or "remotecase",
            address=data.get("address") or "127.0.0.1",
            receivers=data.get("receivers") or "light",
            cpus=data.get("cpus") or None,
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"生成器任务不完整 / incomplete generator job: {exc!r}") from exc


def is_measure(command: str) -> bool:
    """Whether a line the harness sent starts the measured window (anything else stops)."""
    return command.strip() == MEASURE


@dataclass(frozen=True)
class Ready:
    """Every room of the job joined (or failed to)."""

    TAG: ClassVar[str] = "READY"
    joined: int  # participants that joined
    failures: list[str]  # "room: error", per room that could not be filled


@dataclass(frozen=True)
class Stats:
    """Once a second."""

    TAG: ClassVar[str] = "STATS"
    received: int  # media packets received by all its subscribers so far
    cpu: float  # its CPU since the last report, in cores


@dataclass(frozen=True)
class Result:
    """The measured window, over every subscription of the generator."""

    TAG: ClassVar[str] = "RESULT"
    joins_ms: list[float]  # per participant: the signalling round trip
    failures: list[str]
    received: int  # packets, since each subscription began
    expected: int  # packets by sequence number over the same
    latencies_ms: list[float]  # end to end, a sample of at most 10,000 over the window
    jitter_ms: list[float]  # per subscription that read latencies
    first_frame_ms: list[float]  # per subscription: joining to a whole first keyframe
    loop_lag_buckets: list[int] | None  # its own event loop's lag histogram (LoopWatch)
    subscriptions: int  # forwarded tracks it subscribed to
    receiving: int  # of which at least one packet arrived


Report = Ready | Stats | Result
R = TypeVar("R", Ready, Stats, Result)


def encode(report: Report) -> str:
    return f"{report.TAG} {json.dumps(asdict(report))}"


def decode(line: str, kind: type[R]) -> R | None:
    """The report of this kind on the line, or None for a line of another kind."""
    if not line.startswith(kind.TAG + " "):
        return None
    data = _object(line[len(kind.TAG) + 1 :], kind.TAG)
    try:
        return kind(**data)
    except TypeError as exc:
        raise ValueError(
            f"生成器的 {kind.TAG} 行不符合协议 / a generator's {kind.TAG} "
            f"line does not fit the protocol: {exc}"
        ) from exc


def _object(text: str | bytes, what: str) -> dict[str, Any]:
    data = json.loads(text)  # a ValueError when it is not JSON
    if not isinstance(data, dict):
        raise ValueError(
            f"生成器的 {what} 不是 JSON 对象 / a generator's {what} is not a JSON object"
        )
    return data
