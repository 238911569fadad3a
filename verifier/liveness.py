"""Passive liveness on one aligned face, from a model file the operator provides.

No liveness model installs from the package registry with its weights, so none ships: with
``verifier.liveness_model`` set, every sample whose face passed the quality checks is also scored
by that model before it is compared, and a score under ``verifier.liveness_threshold`` gives the
verdict ``liveness_failed``. The file's SHA-256 is pinned in configuration and checked before it
is loaded, like every other model file.

The model contract is the one insightface's liveness add-on uses: one float32 input
``[N, 3, 80, 80]`` (RGB scaled to 0..1) of the face aligned on five landmarks to a fixed 80x80
layout, one output ``[N]`` that is already a live probability. A face whose aligned crop would
be more than 30% outside the frame is not scored (too close to the edge: ``low_quality``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from common.hashing import sha256_file

from .align import similarity
from .engine import ModelError

SIZE = 80
# where the five landmarks (eyes, nose tip, mouth corners) sit in the model's 80x80 input
TEMPLATE_80 = np.array(
    [[32.03, 38.06], [47.89, 37.98], [40.01, 47.08], [33.50, 56.36], [46.63, 56.29]],
    dtype=np.float64,
)
MAX_OUTSIDE = 0.30


@dataclass(frozen=True)
class LivenessSpec:
    path: str
    sha256: str
    threshold: float = 0.8

    def identity(self) -> dict[str, object]:
        return {"liveness_sha256": self.sha256, "liveness_threshold": self.threshold}

    def check(self) -> None:
        if not Path(self.path).is_file():
            raise ModelError(f"liveness model {self.path} is missing")
        actual = sha256_file(Path(self.path))
        if actual != self.sha256:
            raise ModelError(
                f"liveness model {self.path} has SHA-256 {actual}, pinned "
                f"{self.sha256}; refusing to load a model that is not the one "
                "configured"
            )


class LivenessModel:
    """One per worker thread (an onnxruntime session with one thread)."""

    def __init__(self, spec: LivenessSpec) -> None:
        import onnxruntime as ort

        spec.check()
        self.spec = spec
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                spec.path, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelError(f"liveness model {spec.path} does not load: {exc}") from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        out_shape = list(outputs[0].shape) if len(outputs) == 1 else []
        if (
            len(inputs) != 1
            or len(outputs) != 1
            or inputs[0].type != "tensor(float)"
            or len(shape) != 4
            or shape[1:] != [3, SIZE, SIZE]
            or len(out_shape) != 1
            or outputs[0].type != "tensor(float)"
        ):
            raise ModelError(
                f"liveness model {spec.path}: expected one float input "
                f"[N, 3, {SIZE}, {SIZE}] and one output [N] (a live "
                f"probability); it has {[(i.name, i.shape) for i in inputs]} -> "
                f"{[(o.name, o.shape) for o in outputs]}"
            )
        self._input = inputs[0].name

    def score(self, rgb: np.ndarray, landmarks: np.ndarray) -> float | None:
        """The live probability of the face, or None when it is too near the frame's edge."""
        matrix = similarity(landmarks, TEMPLATE_80)
        inside = cv2.warpAffine(
            np.ones(rgb.shape[:2], np.float32),
            matrix,
            (SIZE, SIZE),
            flags=cv2.INTER_LINEAR,
            borderValue=0,
        )
        if 1.0 - float(inside.mean()) > MAX_OUTSIDE:
            return None
        crop = cv2.warpAffine(
            rgb, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        tensor = np.ascontiguousarray(crop.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
        out = np.asarray(self._session.run(None, {self._input: tensor})[0]).reshape(-1)
        value = float(out[0]) if out.size == 1 else math.nan
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ModelError(f"liveness model returned {out!r}, not one probability")
        return value
