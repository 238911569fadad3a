"""The bench's frame log: whose a gap in the officer's picture is (issue 18, session 12).

``bench.browsernet --frames`` logs every frame the officer's page shows (requestVideoFrameCallback:
shown time, receive time, RTP timestamp) and, on the SFU, when each of the party's frames reached
its socket and was handled (``ArrivalLog``). ``frame_gaps`` lists the gaps in what is shown with
the same frames' gap in RTP time (the sender's capture clock) and in receive time, and the late
frame's extra delay at the SFU's kernel, in the SFU and at the page (the page's timestamps
shifted by the down-track's offset, which ``rtp_offset`` finds). These rows are built by
hand, at 30 fps (3,000 ticks of the 90 kHz clock a frame), with one gap of each kind.
"""

from __future__ import annotations

from typing import Any

from bench.browsernet import ArrivalLog, frame_gaps, rtp_offset

TICK = 3000  # 90 kHz ticks a frame at 30 fps
OFFSET = 0x9000_0000  # the down-track's RTP timestamp offset (forwarding shifts the timestamps)


def rows() -> tuple[list[list[Any]], ArrivalLog]:
    """20 frames shown 1/30 s apart, received 5 ms before, the SFU 2 ms before that; then:
    the sender skips 9 frames (RTP gap 300 ms); frame 10 reaches the SFU's socket 250 ms late;
    frame 15 waits 250 ms in the page (received on time, shown late)."""
    arrivals = ArrivalLog()
    frames: list[list[Any]] = []
    base_rtp = 0xFFFFFFFF - 4 * TICK  # the RTP clock wraps inside the window
    late = 0.0  # the page's shown delay, accumulating
    for i in range(20):
        n = i + 9 if i >= 5 else i  # frames 5.. come after 9 skipped ones
        rtp = (base_rtp + n * TICK) & 0xFFFFFFFF
        capture = 100.0 + n / 30
        kernel = capture + 0.010 + (0.25 if i == 10 else 0.0)
        handled = kernel + 0.001
        received = handled + 0.002
        if i in (10, 15):
            late += 0.25
        shown = max(received + 0.005, capture + 0.017 + late)
        arrivals.frames[rtp] = (kernel, handled)
        frames.append([shown, received, (rtp + OFFSET) & 0xFFFFFFFF, 320, 240, ""])
    frames.append([0.5, 0.0, 0, 320, 240, "local"])  # the page's own camera: no receive time
    return frames, arrivals


def test_each_gap_is_named_by_its_clocks() -> None:
    frames, arrivals = rows()
    gaps = frame_gaps(frames, start=0.0, end=1000.0, least=0.15, arrivals=arrivals)
    assert len(gaps) == 3, gaps
    skip, net, page = (gaps[i] for i in range(3))
    # the sender's skip: the RTP gap is the shown gap
    assert abs(skip["rtp_ms"] - 333) <= 1 and abs(skip["shown_ms"] - 333) <= 20
    assert skip["delay_kernel_sfu_page_ms"] == [0, 0, 0]
    # late at the SFU's socket: RTP gap one frame, receive gap and shown gap 250 ms more
    assert abs(net["rtp_ms"] - 33) <= 1 and net["received_ms"] >= 270
    assert net["delay_kernel_sfu_page_ms"] == [250, 250, 250]
    # waited in the page: received on time, shown late
    assert abs(page["rtp_ms"] - 33) <= 1 and page["received_ms"] <= 40
    assert page["shown_ms"] >= 250
    assert page["delay_kernel_sfu_page_ms"] == [0, 0, 0]
    assert [round(g["at"] - 100, 2) for g in gaps] == [0.15, 0.62, 1.03]
    assert all(g["size"] == "320x240->320x240" for g in gaps)


def test_without_the_sfu_log_or_a_kernel_stamp() -> None:
    frames, arrivals = rows()
    assert all("delay_kernel_sfu_page_ms" not in g for g in frame_gaps(frames, 0.0, 1000.0))
    # a REMB socket takes no stamps: the kernel's column is None, the others still count
    arrivals.frames = {rtp: (None, handled) for rtp, (_, handled) in arrivals.frames.items()}
    net = frame_gaps(frames, 0.0, 1000.0, arrivals=arrivals)[1]
    assert net["delay_kernel_sfu_page_ms"] == [None, 250, 250]
    assert rtp_offset([f for f in frames if f[1] > 0], arrivals) == OFFSET
    # frames the SFU did not log: no delays rather than wrong ones
    arrivals.frames = {rtp ^ 0x5555: seen for rtp, seen in arrivals.frames.items()}
    assert all(
        "delay_kernel_sfu_page_ms" not in g
        for g in frame_gaps(frames, 0.0, 1000.0, arrivals=arrivals)
    )
    # nothing in the window, nothing listed
    assert frame_gaps(frames, 2000.0, 3000.0, arrivals=arrivals) == []
