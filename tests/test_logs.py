"""Every log line names its room, participant and track (``-`` when it has none), as text or
as one JSON object per line (``log.format``)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiortc.mediastreams import AudioStreamTrack

from bench.peer import PatternVideoTrack, PeerClient
from control.config import ConfigError, load_config
from control.logs import make_handler
from tests.conftest import Server, join, serve_process, wait_until


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    """The process's log at INFO through the server's own text handler, for one test."""
    stream = io.StringIO()
    handler = make_handler("text", stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_a_calls_lines_name_its_room_and_participant(
    server: Server, clients: list[PeerClient], text_log: io.StringIO
) -> None:
    alice = await join(server, clients, "r-logs", "alice")
    bob = await join(server, clients, "r-logs", "bob")
    await alice.publish(PatternVideoTrack(), AudioStreamTrack())
    await wait_until(lambda: len(bob.mids_for_participant("alice")) == 2, what="bob's offer")
    await alice.leave()
    await wait_until(
        lambda: "alice" not in server.sfu.rooms["r-logs"].participants, what="alice gone"
    )
    lines = text_log.getvalue().splitlines()
    closing = [line for line in lines if line.endswith("closing: left")]
    assert closing, lines
    assert all(" room=r-logs participant=alice " in line for line in closing), closing
    # the room's own lines name the room, and no participant
    assert any(
        " room=r-logs participant=- track=- participant alice joined" in line for line in lines
    ), lines
    # a line about nobody says so
    logging.getLogger("control.test").info("about nobody")
    assert (
        text_log.getvalue()
        .splitlines()[-1]
        .endswith("control.test room=- participant=- track=- about nobody")
    )


def test_json_lines_carry_the_ids_the_case_and_the_exception() -> None:
    stream = io.StringIO()
    handler = make_handler("json", stream)
    log = logging.getLogger("control.test.json")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        logging.LoggerAdapter(log, {"room": "case-12-ab34", "participant": "party-5"}).info(
            "closing: %s", "left"
        )
        logging.LoggerAdapter(log, {"room": "r", "participant": "p", "track": "TR_1"}).warning(
            "late"
        )
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("went wrong")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    first, track, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "closing: left"
    assert (first["room"], first["participant"], first["track"], first["case"]) == (
        "case-12-ab34",
        "party-5",
        None,
        "12",
    )
    assert first["level"] == "INFO" and first["logger"] == "control.test.json"
    assert first["exception"] is None and first["time"].endswith("+00:00")
    assert (track["room"], track["participant"], track["track"], track["case"]) == (
        "r",
        "p",
        "TR_1",
        None,
    )
    assert second["room"] is None and second["case"] is None
    assert "RuntimeError: boom" in second["exception"]


def test_log_format_is_checked() -> None:
    assert load_config(environ={}).log.format == "text"
    assert load_config(environ={"REMOTECASE_LOG__FORMAT": "json"}).log.format == "json"
    with pytest.raises(ConfigError, match=r"log\.format"):
        load_config(environ={"REMOTECASE_LOG__FORMAT": "xml"})


async def test_serve_writes_json_lines_that_name_who(tmp_path: Path) -> None:
    async with serve_process(
        tmp_path, log__level="INFO", log__format="json", auth__dev_join="true"
    ) as served:
        async with aiohttp.ClientSession() as http:
            tokens = []
            for name in ("alice", "bob"):
                async with http.post(
                    f"{served.base}/dev/token", json={"room": "r-json", "name": name}
                ) as response:
                    tokens.append(await response.json())
        peers = [PeerClient(served.base, t["token"]) for t in tokens]
        try:
            for peer in peers:
                await peer.connect()
            await peers[0].leave()
            alice = tokens[0]["participant"]

            def closed() -> bool:
                return any(
                    '"closing: left"' in line and alice in line
                    for line in served.log_text.splitlines()
                )

            await wait_until(closed, timeout=20, what="alice's closing line")
        finally:
            for peer in peers:
                await peer.close()
    records = [json.loads(line) for line in served.log_text.splitlines() if line.startswith("{")]
    assert records
    for record in records:
        assert {
            "time",
            "level",
            "logger",
            "message",
            "room",
            "participant",
            "track",
            "case",
            "exception",
        } <= set(record)
    closing = [r for r in records if r["message"] == "closing: left"]
    assert [(r["room"], r["participant"]) for r in closing] == [("r-json", alice)]
