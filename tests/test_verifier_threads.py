"""The verifier's worker threads convert frames without starting threads of their own.

Issue 17: a recorded 100-viewer session had 194 idle threads named ``verifier``. They were
libswscale's: ``VideoFrame.to_ndarray`` made a converter per frame, kept on the frame, with a
thread per core, so every frame still held (a watch's last one) kept two. The verifier now
converts through one converter per worker thread, with one thread.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import av
import numpy as np
import pytest

from bench.peer import ImageVideoTrack
from tests.test_verifier import ASTRONAUT
from verifier.engine import default_spec
from verifier.service import Verifier, VerifierSettings


def _named(name: str) -> int:
    """This process's threads whose operating-system name is ``name``."""
    count = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as fh:
                count += fh.read().strip() == name
        except OSError:
            continue
    return count


@pytest.fixture
def verifier() -> Iterator[Verifier]:
    made = Verifier(default_spec(), VerifierSettings(workers=2), store=None)  # type: ignore[arg-type]
    yield made
    made._pool.shutdown()


def _camera_frames(count: int) -> list[av.VideoFrame]:
    """Frames as a decoder gives them (yuv420p, 320x240), each its own object."""
    track = ImageVideoTrack([(0, ASTRONAUT)], width=320, height=240)
    return [
        av.VideoFrame.from_ndarray(track._render(i / 5), format="rgb24").reformat(
            format="yuv420p", threads=1
        )
        for i in range(count)
    ]


def test_held_frames_keep_no_converter_threads(verifier: Verifier) -> None:
    engine_warm = verifier._pool.submit(verifier._engine)  # load the models outside the count
    engine_warm.result()
    frames = _camera_frames(24)
    reference = np.zeros(512, dtype=np.float32)
    before = _named("verifier")
    verdicts = [
        verifier._pool.submit(verifier._sample, "party-1", reference, frame, 0.0).result()
        for frame in frames
    ]
    # every frame is still held (as watches hold their last one): no thread was left with them
    assert _named("verifier") <= max(before, verifier.settings.workers)
    assert all(v.participant == "party-1" for v in verdicts)
    # the same pixels as PyAV's own conversion: the verdict hashes and judges the same picture
    for frame, verdict in zip(frames[:3], verdicts, strict=False):
        theirs = frame.to_ndarray(format="rgb24")
        assert np.array_equal(verifier._pool.submit(verifier._rgb, frame).result(), theirs)
        assert verdict.frame_sha256 == hashlib.sha256(theirs.tobytes()).hexdigest()
