"""``remotecase bench verifier``: what face checks cost, and how many parties a core checks.

* CPU milliseconds per sample (detect + align + embed on a 640x480 frame showing a face),
  measured as process CPU time in one thread, for each FaceNet runtime side by side;
* the cost of decoding a party's video (VP8 640x480 at 30 fps), which sampling cannot skip;
* parties one core checks at 1 Hz = 1000 ms / (sample + one second of decoding);
* accuracy on a labelled set when one is given (``--dev-set``, e.g. ../shared/face-dev-set).
"""

from __future__ import annotations

import fractions
import json
import time
from pathlib import Path
from typing import Any

import av
import numpy as np


def _frame_with_face() -> np.ndarray:
    import skimage.data

    from .peer import ImageVideoTrack

    return ImageVideoTrack([(0, skimage.data.astronaut())])._render(1.0)


def sample_cost(engine: Any, rgb: np.ndarray, samples: int) -> float:
    faces = engine.faces(rgb)  # warm up
    if faces:
        engine.embed(rgb, faces[0])
    start = time.process_time()
    for _ in range(samples):
        faces = engine.faces(rgb)
        if faces:
            engine.embed(rgb, faces[0])
    return 1000 * (time.process_time() - start) / samples


def decode_cost(rgb: np.ndarray, seconds: int = 3, fps: int = 30) -> float:
    """CPU ms to decode one second of VP8 at 640x480."""
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
    encoder.time_base = fractions.Fraction(1, fps)
    encoder.bit_rate = 1_000_000
    rng = np.random.default_rng(0)
    packets = []
    for i in range(seconds * fps):
        moved = np.roll(rgb, i * 2, axis=1)
        noisy = np.clip(moved + rng.normal(0, 3, moved.shape), 0, 255).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(noisy, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets.extend(encoder.encode(frame))
    packets.extend(encoder.encode(None))
    decoder = av.CodecContext.create("vp8", "r")
    start = time.process_time()
    for packet in packets:
        decoder.decode(packet)  # sampled frames are converted later, in the worker
    return 1000 * (time.process_time() - start) / seconds


async def run_verifier_bench(*, samples: int, dev_set: str | None, as_json: bool) -> int:
    from verifier.engine import default_spec, load_engine
    from verifier.evaluate import evaluate
    from verifier.facenet import RUNTIMES

    rgb = _frame_with_face()
    decoding = decode_cost(rgb)
    runtimes: dict[str, dict[str, float]] = {}
    engine = None
    for runtime in RUNTIMES:  # the default first; both in the same run, side by side
        spec = default_spec(min_face=60, runtime=runtime)  # as live frames are checked
        candidate = load_engine(spec)
        engine = engine or candidate
        per_sample = sample_cost(candidate, rgb, samples)
        runtimes[runtime] = {
            "ms_per_sample": round(per_sample, 1),
            "parties_per_core_at_1hz": round(1000 / (per_sample + decoding), 1),
        }
    default = runtimes[RUNTIMES[0]]
    report: dict[str, Any] = {
        "engine": default_spec().name,
        "runtime": RUNTIMES[0],
        "ms_per_sample": default["ms_per_sample"],
        "decode_ms_per_second_of_video": round(decoding, 1),
        "parties_per_core_at_1hz": default["parties_per_core_at_1hz"],
        "runtimes": runtimes,
    }
    print(f"engine                         {report['engine']}")
    print(f"decoding 1 s of VP8 640x480@30 {report['decode_ms_per_second_of_video']} ms")
    print(f"{'FaceNet runtime':<16} {'CPU per sample':>15} {'parties per core at 1 Hz':>25}")
    for runtime, row in runtimes.items():
        label = runtime + (" (default)" if runtime == RUNTIMES[0] else "")
        print(f"{label:<22} {row['ms_per_sample']:>6.1f} ms {row['parties_per_core_at_1hz']:>21}")
    if dev_set:
        assert engine is not None
        accuracy = evaluate(Path(dev_set), engine, threshold=default_spec().threshold)
        report["dev_set"] = {
            k: accuracy[k]
            for k in (
                "pairs",
                "accuracy",
                "best_threshold",
                "d_prime",
                "detect_failures",
                "ms_per_image",
            )
        }
        print(
            f"accuracy on {dev_set}: {accuracy['accuracy']} over {accuracy['pairs']} pairs "
            f"(d' {accuracy['d_prime']}, {accuracy['detect_failures']} detection failures)"
        )
    if as_json:
        print(json.dumps(report))
    return 0
